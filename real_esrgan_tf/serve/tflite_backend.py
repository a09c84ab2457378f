"""Run an exported TFLite generator (fixed [1, T, T, 3] input, builtin ops) with `ai_edge_litert`.

`TFLiteGenerator` is a backend for `serve.upscaler.Upscaler` (`SuperResolver`): NHWC float32
[1, h, w, 3] -> [1, h*s, w*s, 3] with `scale` and the fixed `input_size` (T, T); the Upscaler plans
the tiles and hands it T x T windows. Called directly on a larger image, it covers the image with
T x T windows from the same planner (`tiling.plan_tiles`), so both give the same pixels: windows
keep the full size T and slide back inside the image, every kept pixel has `tile_pad` LR pixels of
context (or the image border), and only images smaller than T are padded up to it
(`tiling.pad_to_window`). For the x2 / x1 RRDBNet (pixel-unshuffle by 2 / 4) the image is first
reflect-padded to a multiple of 2 / 4 and windows start on multiples of it (official mod_pad).
"""

from __future__ import annotations

import numpy as np

from real_esrgan_tf.tiling import pad_to_window, plan_tiles, reflect_pad_to_multiple, scale_alignment


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter
    except ImportError as e:  # the `tflite` extra
        raise ImportError(f"TFLite models need ai-edge-litert (the `tflite` extra): {e}") from None
    return interpreter


class TFLiteModelError(Exception):
    """A TFLite file that cannot be used here; the message names the file and the reason."""


def check_builtin_ops(model_content: bytes, name: str = "<tflite>") -> set[str]:
    """Op names of the flatbuffer; raises if it needs anything beyond the builtin op set.

    Loaded with the builtin-only resolver and no delegates, so Flex (TensorFlow) and custom ops
    fail to resolve here exactly as they would on a phone without the Flex delegate.
    """
    litert = _interpreter_module()
    try:
        interp = litert.Interpreter(
            model_content=model_content,
            experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interp.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        reason = str(e).splitlines()[0]
        raise TFLiteModelError(f"{name}: not runnable with builtin TFLite ops ({reason})") from None
    ops = {op["op_name"] for op in interp._get_ops_details()}
    foreign = {op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")}
    if foreign:
        raise TFLiteModelError(f"{name}: non-builtin ops {sorted(foreign)}")
    return ops


class TFLiteGenerator:
    """A fixed-input TFLite generator made to work on any image size.

    path: the .tflite file; num_threads: CPU threads (XNNPACK delegate, on by default);
    tile_pad: LR context kept around each window's core.
    """

    def __init__(self, path: str, *, num_threads: int = 2, tile_pad: int = 10):
        litert = _interpreter_module()
        self.path = path
        try:
            self._interp = litert.Interpreter(model_path=path, num_threads=num_threads)
            self._interp.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise TFLiteModelError(f"{path}: cannot load TFLite model ({str(e).splitlines()[0]})") from None
        inputs, outputs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise TFLiteModelError(
                f"{path}: expected one input and one output, got {len(inputs)}/{len(outputs)}"
            )
        in_shape, out_shape = tuple(inputs[0]["shape"]), tuple(outputs[0]["shape"])
        if len(in_shape) != 4 or in_shape[0] != 1 or in_shape[1] != in_shape[2] or in_shape[3] != 3:
            raise TFLiteModelError(f"{path}: input must be [1, T, T, 3], got {list(in_shape)}")
        if out_shape[1] % in_shape[1] or out_shape[3] != 3:
            raise TFLiteModelError(f"{path}: output {list(out_shape)} is not an upscaled {list(in_shape)}")
        self._input, self._output = inputs[0], outputs[0]
        self.tile_size = int(in_shape[1])  # T
        self.input_size = (self.tile_size, self.tile_size)  # what `serve.upscaler.SuperResolver` reads
        self.scale = int(out_shape[1] // in_shape[1])
        # The x2 / x1 RRDBNet pixel-unshuffle 2x2 / 4x4 blocks first (as `serve.upscaler.Upscaler`): windows
        # must start on block boundaries to see the blocks of the whole image, so the image is
        # reflect-padded to a multiple (official mod_pad) and the context is a multiple too.
        self.align = scale_alignment(self.scale)
        if self.tile_size % self.align:
            raise TFLiteModelError(f"{path}: input side {self.tile_size} is not a multiple of {self.align}")
        largest_pad = (self.tile_size - 1) // 2 // self.align * self.align  # windows need T > 2 * pad
        self.tile_pad = min(-(-int(tile_pad) // self.align) * self.align, largest_pad)
        self.dtype = np.dtype(inputs[0]["dtype"])

    def run_window(self, window: np.ndarray) -> np.ndarray:
        """[T, T, 3] float32 -> [T*s, T*s, 3] float32."""
        x = window[None].astype(np.float32)
        if self.dtype != np.float32:  # a model exported with integer I/O
            scale, zero = self._input["quantization"]
            x = np.clip(np.round(x / scale + zero), np.iinfo(self.dtype).min, np.iinfo(self.dtype).max)
            x = x.astype(self.dtype)
        self._interp.set_tensor(self._input["index"], x)
        self._interp.invoke()
        y = self._interp.get_tensor(self._output["index"])[0]
        if y.dtype != np.float32:
            scale, zero = self._output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    def __call__(self, lq) -> np.ndarray:
        """[1, h, w, 3] float32 in [0, 1] -> [1, h*s, w*s, 3] float32 (not clipped)."""
        lq = np.asarray(lq, np.float32)
        if lq.ndim != 4 or lq.shape[0] != 1 or lq.shape[3] != 3:
            raise ValueError(f"expected [1, h, w, 3], got {list(lq.shape)}")
        image = lq[0]
        h, w = image.shape[:2]
        size, s = self.tile_size, self.scale
        image = reflect_pad_to_multiple(image, self.align)
        if image.shape[0] < size or image.shape[1] < size:  # the Upscaler's padding up to its window
            image = pad_to_window(image, (max(size, image.shape[0]), max(size, image.shape[1])))
        ph, pw = image.shape[:2]
        plan = plan_tiles(ph, pw, 0, self.tile_pad, self.align, (size, size))  # the Upscaler's planner
        out = np.empty((ph * s, pw * s, 3), np.float32)
        for t in plan.tiles:
            sr = self.run_window(image[t.win_y : t.win_y + size, t.win_x : t.win_x + size])
            oy, ox = (t.y0 - t.win_y) * s, (t.x0 - t.win_x) * s
            out[t.y0 * s : t.y1 * s, t.x0 * s : t.x1 * s] = sr[
                oy : oy + (t.y1 - t.y0) * s, ox : ox + (t.x1 - t.x0) * s
            ]
        return out[None, : h * s, : w * s]


def open_model(path: str, options) -> TFLiteGenerator:
    """The `serve.backends` entry point: a .tflite file as a backend (BackendError: one line)."""
    from real_esrgan_tf.serve.backends import BackendError

    try:
        return TFLiteGenerator(path, num_threads=options.threads or 2)
    except (TFLiteModelError, ImportError) as e:
        raise BackendError(str(e).splitlines()[0]) from None
