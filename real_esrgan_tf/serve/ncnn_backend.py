"""ncnn `.param/.bin` files as an upscaling backend, on the CPU with the `ncnn` pip package.

`NcnnSuperResolver` is a `serve.upscaler.SuperResolver`: NHWC float32 [1, h, w, 3] in [0, 1] ->
[1, h*s, w*s, 3]. The input and output blobs are read from the file (its Input layer and the blob
no layer reads), so files exported with other `--ncnn_blobs` names load as they are; the scale is
measured on a small probe (it covers the official x2/x3 animevideov3 files, which end in a resize).
Files with a Reorg (the x2/x1 RRDBNet's pixel-unshuffle) need sides that are multiples of its
stride: inputs are reflect-padded to one and the output cropped (the Upscaler's mod-pad already does
this for whole images).

ncnn's own CPU options are the defaults kept here (BUILD_NOTES "ncnn export and backend" has what
each one measured on x4plus): Winograd and sgemm convolutions and the packed layouts on, and fp16
storage/arithmetic off, because on x86 ncnn's fp16 paths round activations to fp16 (fp16 storage
is what the .bin holds; compute stays fp32).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from real_esrgan_tf.serve.backends import BackendError
from real_esrgan_tf.tiling import reflect_pad_to_multiple
from real_esrgan_tf.weights.ncnn_format import NcnnFormatError, parse_param, read_weights

_PROBE = 16  # LR side of the scale probe: a multiple of every Reorg stride we write (2, 4)


def _ncnn():
    try:
        import ncnn
    except ImportError:  # the `ncnn` extra
        raise BackendError("ncnn files need the ncnn package (pip install 'real-esrgan-tf[ncnn]')") from None
    return ncnn


def _check_files(param_path: str, bin_path: str) -> int:
    """Parses the .param and checks the .bin against it (ncnn itself accepts a truncated or foreign
    .bin silently); returns the input side multiple (product of Reorg strides)."""
    if not os.path.isfile(param_path):
        raise BackendError(f"{param_path}: no such ncnn .param file")
    if not os.path.isfile(bin_path):
        raise BackendError(f"{param_path}: its weights {os.path.basename(bin_path)} are missing beside it")
    try:
        layers = parse_param(param_path)
    except NcnnFormatError as e:
        raise BackendError(str(e)) from None
    try:
        read_weights(layers, bin_path)
    except NcnnFormatError as e:
        if "unsupported ncnn layer type" not in str(e):  # other layers: ncnn checks what it can
            raise BackendError(str(e)) from None
    multiple = 1
    for layer in layers:
        if layer.type == "Reorg":
            multiple *= int(layer.param(0, 1))
    return multiple


class NcnnSuperResolver:
    """An ncnn network run on the CPU.

    Args:
      param_path, bin_path: the files (bin_path None: NAME.bin beside NAME.param).
      threads: CPU threads (None: ncnn's default, the number of big cores).
      winograd, sgemm, packing: ncnn's convolution algorithms and packed (SIMD-blocked) layouts.
      fp16: ncnn's fp16 storage, packing and arithmetic for activations (lossy on x86).
    """

    def __init__(
        self,
        param_path: str,
        bin_path: str | None = None,
        *,
        threads: int | None = None,
        winograd: bool = True,
        sgemm: bool = True,
        packing: bool = True,
        fp16: bool = False,
    ):
        ncnn = _ncnn()
        param_path = os.fspath(param_path)
        if bin_path is None:
            stem = param_path[: -len(".param")] if param_path.endswith(".param") else param_path
            bin_path = stem + ".bin"
        self.path = param_path
        self.align = _check_files(param_path, bin_path)
        net = ncnn.Net()
        opt = net.opt
        opt.use_vulkan_compute = False
        if threads:
            opt.num_threads = int(threads)
        opt.use_winograd_convolution = winograd
        opt.use_winograd23_convolution = opt.use_winograd43_convolution = winograd
        opt.use_winograd63_convolution = winograd
        opt.use_sgemm_convolution = sgemm
        opt.use_packing_layout = packing
        opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = fp16
        opt.use_bf16_storage = False
        if net.load_param(param_path) != 0 or net.load_model(bin_path) != 0:
            raise BackendError(f"{param_path}: the ncnn runtime cannot load this model")
        inputs, outputs = list(net.input_names()), list(net.output_names())
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"{param_path}: needs one input and one output blob, has {inputs} / {outputs}")
        self._net = net
        self.input_blob, self.output_blob = inputs[0], outputs[0]
        self.threads = opt.num_threads
        self.input_size = None
        side = max(_PROBE, self.align)
        out = self._run(np.zeros((side, side, 3), np.float32))
        if out.shape[0] % side or out.shape[0] != out.shape[1] or out.shape[2] != 3:
            shape = list(out.shape)
            raise BackendError(f"{param_path}: maps a {side}x{side} RGB image to {shape}, not an upscale")
        self.scale = out.shape[0] // side

    def _run(self, image: np.ndarray) -> np.ndarray:
        """[h, w, 3] float32 -> [H, W, C] float32 through the net."""
        ncnn = _ncnn()
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), np.float32)
        with self._net.create_extractor() as ex:
            ex.input(self.input_blob, ncnn.Mat(chw))
            ret, out = ex.extract(self.output_blob)
        if ret != 0:
            h, w = image.shape[:2]
            raise RuntimeError(f"{self.path}: ncnn failed on a {w}x{h} image (error {ret})")
        return np.array(out, np.float32).transpose(1, 2, 0)

    def __call__(self, lq) -> np.ndarray:
        """[1, h, w, 3] float32 in [0, 1] -> [1, h*s, w*s, 3] float32 (not clipped)."""
        lq = np.asarray(lq, np.float32)
        if lq.ndim != 4 or lq.shape[0] != 1 or lq.shape[3] != 3:
            raise ValueError(f"expected [1, h, w, 3], got {list(lq.shape)}")
        h, w = lq.shape[1:3]
        out = self._run(reflect_pad_to_multiple(lq[0], self.align))
        return out[None, : h * self.scale, : w * self.scale]


def _resolver_kwargs(options) -> dict:
    return {"threads": getattr(options, "threads", None)}


def open_model(path: str, options) -> NcnnSuperResolver:
    """An ncnn `.param` file (its `.bin` beside it) as a backend; BackendError names a bad file."""
    return NcnnSuperResolver(os.fspath(path), **_resolver_kwargs(options))


def from_generator(generator, options) -> NcnnSuperResolver:
    """A Keras generator exported to ncnn (a temporary folder) and loaded back."""
    from real_esrgan_tf.export.ncnn import write_ncnn

    with tempfile.TemporaryDirectory(prefix="real-esrgan-ncnn-") as folder:
        param_path = write_ncnn(generator, os.path.join(folder, "model.param"))
        return NcnnSuperResolver(param_path, **_resolver_kwargs(options))
