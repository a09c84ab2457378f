"""The runtimes a generator can run on: one table from `--backend` names to backend modules.

A backend module (one per runtime, in `serve/`) defines
- `open_model(path, options: BackendOptions)` -> a `serve.upscaler.SuperResolver` over a model file
  made for that runtime (the file types in `Backend.suffixes`), and optionally
- `from_generator(generator, options: BackendOptions)` -> a SuperResolver running a Keras generator
  on that runtime (exported in memory or to a temporary file).
It raises `BackendError` with one line naming the file and the reason. `serve.loading` is the only
reader of this table; a new runtime is one module plus one row of `BACKENDS` (and, when measured
faster, a place in `AUTO`). No TensorFlow import here.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util

TENSORFLOW = "tensorflow"


class BackendError(ValueError):
    """A model file a runtime cannot use, or a runtime that is not installed; one line."""


@dataclasses.dataclass(frozen=True)
class BackendOptions:
    """threads: CPU threads for the runtime (None: the runtime's default)."""

    threads: int | None = None


@dataclasses.dataclass(frozen=True)
class Backend:
    """One `--backend`.

    Args:
      name: the `--backend` value.
      module: the module with `open_model` (and `from_generator` where it can run Keras generators).
      suffixes: the model files it opens itself ('.onnx'); the TensorFlow backend opens every weights
        file `weights.load_generator` reads.
      runtime: the import name of the package it needs (None: TensorFlow itself).
      extra: the pip extra that installs it.
      description: one line for `--help`.
    """

    name: str
    module: str
    suffixes: tuple[str, ...]
    runtime: str | None
    extra: str | None
    description: str

    def available(self) -> bool:
        return self.runtime is None or importlib.util.find_spec(self.runtime) is not None


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend(TENSORFLOW, "real_esrgan_tf.serve.keras_backend", (".pth", ".weights.h5", ".keras", ".param"),
                None, None, "TensorFlow/Keras: every generator; --precision, --xla"),
        Backend("saved_model", "real_esrgan_tf.serve.saved_model_backend", (), None, None,
                "an exported SavedModel folder (what TF Serving serves)"),
        Backend("tflite", "real_esrgan_tf.serve.tflite_backend", (".tflite",), "ai_edge_litert", "tflite",
                "TFLite (ai-edge-litert, XNNPACK)"),
        Backend("onnxruntime", "real_esrgan_tf.serve.onnx_backend", (".onnx",), "onnxruntime", "onnx",
                "ONNX Runtime, CPU execution provider"),
        Backend("openvino", "real_esrgan_tf.serve.openvino_backend", (".onnx",), "openvino", "openvino",
                "OpenVINO CPU plugin, on the same .onnx files (f32)"),
        Backend("ncnn", "real_esrgan_tf.serve.ncnn_backend", (".param",), "ncnn", "ncnn",
                "ncnn on the CPU: .param/.bin files (official, Upscayl, ours) as they are"),
    )
}

# What `--backend auto` runs, in order of preference (the first one installed wins): per model file
# type, and per architecture for a Keras generator (pretrained names, .pth, .weights.h5, ...) keyed by
# `generator_key`. The architecture rows come from benchmarks/bench_backends.py (BUILD_NOTES "CPU
# backends side by side"): on a CPU in fp32, ncnn's Winograd convolutions run SRVGGNetCompact 1.8-2.3x
# faster than TensorFlow's oneDNN direct ones; ONNX Runtime and OpenVINO (f32) are not faster than
# TensorFlow there, and for RRDBNet nothing measured clearly faster in fp32.
AUTO: dict[str, tuple[str, ...]] = {
    ".tflite": ("tflite",),
    ".param": (TENSORFLOW,),
    "RRDBNet": (TENSORFLOW,),
    "SRVGGNetCompact": ("ncnn",),
}


def generator_key(
    architecture: str, precision: str = "auto", resolved: str = "fp32", device: str = "cpu"
) -> str:
    """The `AUTO` key of a Keras generator run with `--precision precision`, which resolved to
    `resolved` on `device` (cpu, gpu, tpu).

    The architecture rows were measured where they apply: `--precision auto` resolving to fp32 on a
    CPU (a CPU without native bf16). A runtime there may keep the weights in fp16 as the official
    ncnn files do (PSNR >= 45 dB against fp32 weights, less change than the bf16 that auto runs on
    other CPUs). Everything else is keyed 'ARCH/RESOLVED/DEVICE' and stays on TensorFlow unless
    listed: an explicit `--precision fp32` (exact fp32 weights), fp16/bf16 (TensorFlow is the one
    backend that computes a Keras generator in them) and accelerators.
    """
    if (precision, resolved, device) == ("auto", "fp32", "cpu"):
        return architecture
    return f"{architecture}/{resolved}/{device}"


def backend_names() -> list[str]:
    """The `--backend` choices: auto, then the table."""
    return ["auto", *BACKENDS]


def file_backends(path: str) -> list[Backend]:
    """The backends that open `path` themselves (by its file type), in table order."""
    lower = path.lower()
    return [b for b in BACKENDS.values() if any(lower.endswith(s) for s in b.suffixes)]


def pick(requested: str, key: str, allowed: list[Backend] | None = None) -> Backend:
    """The backend to run `key` (a file type such as '.onnx', or a generator's architecture) on.

    Args:
      requested: a `--backend` value; `auto` takes the first installed backend of `AUTO[key]`,
        then of `allowed`, then TensorFlow.
      allowed: the backends that can open the model (a runtime's own file), or None for a Keras
        generator (every backend: TensorFlow runs it, the others through `from_generator`).
    Raises BackendError (one line) for an unknown, unsuitable or missing backend.
    """
    if requested != "auto":
        backend = BACKENDS.get(requested)
        if backend is None:
            raise BackendError(f"unknown backend {requested!r} (known: {', '.join(backend_names())})")
        if allowed is not None and backend not in allowed:
            raise BackendError(f"--backend {backend.name} does not open {key} models "
                               f"(these do: {', '.join(b.name for b in allowed)})")
        if not backend.available():
            raise BackendError(f"--backend {backend.name} needs the {backend.runtime} package "
                               f"(pip install 'real-esrgan-tf[{backend.extra}]')")
        return backend
    preference = [*AUTO.get(key, ()), *(b.name for b in allowed or ()), TENSORFLOW]
    for name in preference:
        backend = BACKENDS.get(name)
        if backend is not None and (allowed is None or backend in allowed) and backend.available():
            return backend
    missing = ", ".join(f"{b.runtime} ([{b.extra}])" for b in allowed or ())
    raise BackendError(f"{key} models need one of: {missing}")


def load_module(backend: Backend):
    """The backend's module (imported on first use)."""
    return importlib.import_module(backend.module)
