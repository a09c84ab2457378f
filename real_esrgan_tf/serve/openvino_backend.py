"""OpenVINO (CPU plugin) as an upscaling backend, reading the same `.onnx` files as ONNX Runtime.

`OpenVINOGenerator` is a `serve.upscaler.SuperResolver` (NHWC float32 in and out, like
`serve.onnx_backend.OnnxRuntimeGenerator`). The plugin compiles the dynamic-shape model once and
specialises it per input shape on first use (the Upscaler's tiles share one shape).

Inference precision is f32 unless asked: on a CPU with AVX512_BF16 or AMX the plugin's default is
bf16, which changes the pixels (BUILD_NOTES "ONNX Runtime and OpenVINO settings").
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from real_esrgan_tf.serve.backends import BackendError, BackendOptions
from real_esrgan_tf.serve.onnx_backend import first_line, scale_from, to_nchw, to_nhwc

PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
PRECISIONS = ("f32", "bf16", "f16")


def _openvino():
    try:
        import openvino
    except ImportError as e:  # the `openvino` extra
        raise BackendError(
            f"--backend openvino needs openvino (pip install 'real-esrgan-tf[openvino]'): {e}"
        ) from None
    return openvino


def _reason(e: BaseException) -> str:
    """The line of an OpenVINO exception that says what is wrong (the first ones name C++ sources)."""
    noise = ("Exception from ", "Check '", "FrontEnd API failed")
    lines = [line.strip() for line in str(e).splitlines() if line.strip() and not line.startswith(noise)]
    return lines[0] if lines else first_line(e)


class OpenVINOGenerator:
    """An ONNX generator on OpenVINO's CPU plugin.

    Args:
      path: the .onnx file.
      threads: INFERENCE_NUM_THREADS (None: the plugin's default, every core).
      hint: PERFORMANCE_HINT, "LATENCY" (one request at a time: what the Upscaler sends) or
        "THROUGHPUT".
      precision: INFERENCE_PRECISION_HINT, "f32" (the file's numbers), "bf16" or "f16" where the CPU
        has them.
      name: names the model in errors (default: the path).
    """

    input_size = None

    def __init__(self, path: str, *, threads: int | None = None, hint: str = "LATENCY",
                 precision: str = "f32", name: str | None = None):
        ov = _openvino()
        self.name = name or path
        if hint not in PERFORMANCE_HINTS or precision not in PRECISIONS:
            raise ValueError(f"hint must be one of {PERFORMANCE_HINTS} and precision one of {PRECISIONS}")
        if not os.path.isfile(path):
            raise BackendError(f"{self.name}: ONNX file not found")
        if os.path.getsize(path) == 0:
            raise BackendError(f"{self.name}: not a loadable ONNX model (empty file)")
        core = ov.Core()
        config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            # The ONNX frontend itself: Core.read_model would also try the others (TensorFlow's logs
            # parse errors of a corrupt file to stderr) and hide the reason behind theirs.
            onnx_frontend = ov.frontend.FrontEndManager().load_by_framework("onnx")
            model = onnx_frontend.convert(onnx_frontend.load(path))
            self._check_io(model, ov)
            self._compiled = core.compile_model(model, "CPU", config)
        except BackendError:
            raise
        except Exception as e:  # OpenVINO raises RuntimeError/OVError subclasses with long traces
            raise BackendError(f"{self.name}: not a loadable ONNX model ({_reason(e)})") from None
        self._request = self._compiled.create_infer_request()
        self.dtype = np.dtype(np.float16 if model.inputs[0].get_element_type() == ov.Type.f16 else np.float32)
        shape = model.inputs[0].get_partial_shape()
        if shape[2].is_static and shape[3].is_static:
            self.input_size = (shape[2].get_length(), shape[3].get_length())
        self.metadata = self._metadata(model)
        self.scale = scale_from(self.metadata, self, self.input_size, self.name)

    def _check_io(self, model, ov) -> None:
        counts = f"{len(model.inputs)}/{len(model.outputs)}"
        if counts != "1/1":
            raise BackendError(f"{self.name}: expected one input and one output, got {counts}")
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4 or not shape[1].compatible(ov.Dimension(3)):
            raise BackendError(f"{self.name}: input must be NCHW RGB [N, 3, H, W], got {shape}")

    @staticmethod
    def _metadata(model) -> dict[str, str]:
        """The ONNX metadata_props (OpenVINO keeps them under rt_info['framework'])."""
        keys = model.get_rt_info()["framework"] if model.has_rt_info(["framework"]) else None
        if not isinstance(keys, dict):
            return {}
        return {str(k): model.get_rt_info(["framework", k]).astype(str) for k in keys}

    def __call__(self, lq: np.ndarray) -> np.ndarray:
        """[N, h, w, 3] float32 in [0, 1] -> [N, h*s, w*s, 3] float32 (not clipped)."""
        result = self._request.infer([to_nchw(lq, self.dtype)])
        return to_nhwc(result[self._compiled.outputs[0]])


def open_model(path: str, options: BackendOptions) -> OpenVINOGenerator:
    """`upscale --model x.onnx --backend openvino` (the `serve.backends` entry point)."""
    return OpenVINOGenerator(path, threads=options.threads)


def from_generator(generator, options: BackendOptions) -> OpenVINOGenerator:
    """A Keras generator on OpenVINO: exported to an fp32 ONNX file in a temporary folder, compiled,
    and the file removed (the compiled model keeps the weights)."""
    from real_esrgan_tf.export.onnx import to_bytes

    name = getattr(generator, "name", "generator")
    with tempfile.TemporaryDirectory(prefix="real-esrgan-openvino-") as tmp:
        path = os.path.join(tmp, "generator.onnx")
        with open(path, "wb") as f:
            f.write(to_bytes(generator, source=name))
        return OpenVINOGenerator(path, threads=options.threads, name=name)
