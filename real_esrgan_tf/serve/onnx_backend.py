"""ONNX Runtime (CPU execution provider) as an upscaling backend for `.onnx` generators.

`OnnxRuntimeGenerator` is a `serve.upscaler.SuperResolver`: NHWC float32 [N, h, w, 3] in [0, 1] ->
[N, h*s, w*s, 3] float32, over an ONNX file in the layout `export.onnx` writes and the official
`scripts/pytorch2onnx.py` gives (NCHW RGB, one input, one output, float32 or float16 I/O). Any
input size: the x2 / x1 files we write pad to their multiple themselves, and the Upscaler pads
anyway (official mod_pad). The scale comes from the file's `scale` metadata, else from running a
16 x 16 input.
"""

from __future__ import annotations

import os

import numpy as np

from real_esrgan_tf.serve.backends import BackendError, BackendOptions

# How ORT optimises the graph (BUILD_NOTES "ONNX Runtime and OpenVINO settings": ENABLE_ALL fuses
# Conv + activation / Add and uses NCHWc blocked layouts on x86).
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
PROBE_SIDE = 16  # a multiple of every pixel-unshuffle factor


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def to_nchw(lq: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """[N, h, w, 3] float -> contiguous [N, 3, h, w] of the model's input dtype."""
    lq = np.asarray(lq)
    if lq.ndim != 4 or lq.shape[3] != 3:
        raise ValueError(f"expected [N, h, w, 3], got {list(lq.shape)}")
    return np.ascontiguousarray(lq.transpose(0, 3, 1, 2), dtype=dtype)


def to_nhwc(sr: np.ndarray) -> np.ndarray:
    """[N, 3, H, W] -> [N, H, W, 3] float32."""
    return np.ascontiguousarray(np.asarray(sr).transpose(0, 2, 3, 1), dtype=np.float32)


def scale_from(metadata: dict, run, input_size: tuple[int, int] | None, name: str) -> int:
    """The file's `scale` metadata, else the output/input ratio of a zero image (16 x 16, or the
    file's fixed input size) run through `run` ([1, h, w, 3] -> [1, H, W, 3])."""
    value = metadata.get("scale")
    if value is not None:
        try:
            scale = int(value)
        except ValueError:
            raise BackendError(f"{name}: metadata scale {value!r} is not an integer") from None
    else:
        h, w = input_size or (PROBE_SIDE, PROBE_SIDE)
        sr = run(np.zeros((1, h, w, 3), np.float32))
        scale = sr.shape[1] // h
        if sr.shape[1:3] != (scale * h, scale * w):
            raise BackendError(f"{name}: output {list(sr.shape)} is not an upscaled [1, {h}, {w}, 3]")
    if scale < 1:
        raise BackendError(f"{name}: scale {scale} is not an upscaling factor")
    return scale


def _ort():
    try:
        import onnxruntime
    except ImportError as e:  # the `onnx` extra
        raise BackendError(f"ONNX models need onnxruntime (pip install 'real-esrgan-tf[onnx]'): {e}") \
            from None
    return onnxruntime


class OnnxRuntimeGenerator:
    """An ONNX generator on ONNX Runtime's CPU execution provider.

    Args:
      model: the .onnx path, or the serialised model (bytes).
      threads: intra-op threads (None: ORT's default, one per physical core).
      optimization: graph optimisation level, one of OPTIMIZATION_LEVELS ("all": fusions and
        NCHWc layouts).
      name: names the model in errors (default: the path).
    """

    input_size = None  # any size

    def __init__(self, model: str | bytes, *, threads: int | None = None, optimization: str = "all",
                 name: str | None = None):
        ort = _ort()
        self.name = name or (model if isinstance(model, str) else "<onnx model>")
        if isinstance(model, str) and not os.path.isfile(model):
            raise BackendError(f"{self.name}: ONNX file not found")
        if optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization must be one of {OPTIMIZATION_LEVELS}, got {optimization!r}")
        so = ort.SessionOptions()
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3  # errors only: the user sees our one line, not ORT's warnings
        try:
            self._session = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/... types
            raise BackendError(f"{self.name}: not a loadable ONNX model ({first_line(e)})") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(
                f"{self.name}: expected one input and one output, got {len(inputs)}/{len(outputs)}"
            )
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] != 3:
            raise BackendError(f"{self.name}: input must be NCHW RGB [N, 3, H, W], got {shape}")
        if inputs[0].type not in ("tensor(float)", "tensor(float16)"):
            raise BackendError(f"{self.name}: input type {inputs[0].type} is not float32 or float16")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.dtype = np.dtype(np.float16 if inputs[0].type == "tensor(float16)" else np.float32)
        if all(isinstance(d, int) for d in shape[2:]):  # a file with a fixed input size
            self.input_size = (int(shape[2]), int(shape[3]))
        self.metadata = dict(self._session.get_modelmeta().custom_metadata_map)
        self.scale = scale_from(self.metadata, self, self.input_size, self.name)

    def __call__(self, lq: np.ndarray) -> np.ndarray:
        """[N, h, w, 3] float32 in [0, 1] -> [N, h*s, w*s, 3] float32 (not clipped)."""
        (sr,) = self._session.run([self.output_name], {self.input_name: to_nchw(lq, self.dtype)})
        return to_nhwc(sr)


def open_model(path: str, options: BackendOptions) -> OnnxRuntimeGenerator:
    """`upscale --model x.onnx --backend onnxruntime` (the `serve.backends` entry point)."""
    return OnnxRuntimeGenerator(path, threads=options.threads)


def from_generator(generator, options: BackendOptions) -> OnnxRuntimeGenerator:
    """A Keras generator on ONNX Runtime: exported to ONNX in memory (fp32), then opened."""
    from real_esrgan_tf.export.onnx import to_bytes

    name = getattr(generator, "name", "generator")
    return OnnxRuntimeGenerator(to_bytes(generator, source=name), threads=options.threads, name=name)
