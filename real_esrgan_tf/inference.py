"""Upscaling images of any size with a super-resolution generator, and the `upscale` command.

Follows the official RealESRGANer conventions (reflect pre-pad, reflect padding to a multiple of
4/scale for the x2/x1 unshuffle nets, tiles with a padded border that is cropped away, Lanczos
resize to `outscale` after the net, 16-bit in -> 16-bit out, gray in -> gray out, alpha through
the net), with what users asked for on top: only one tile is ever on the device, every tile has the
same shape (one trace), smaller tiles on ResourceExhaustedError, fp16/bf16 with an fp32 fallback
when the output is not finite, 8-way TTA and the denoise-strength weight blend.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import sys
from collections.abc import Callable
from typing import Protocol

import numpy as np
from absl import flags, logging
from PIL import Image

from real_esrgan_tf.tiling import (
    pad_to_window,
    plan_tiles,
    reflect_pad_to_multiple,
    round_up,
    scale_alignment,
)

# ITU-R BT.601 luma, as cv2.COLOR_BGR2GRAY which the official code uses for gray and alpha outputs.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class Precision(enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @property
    def keras_dtype(self) -> str:
        return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[self.value]


class AlphaMode(enum.Enum):
    MODEL = "model"  # alpha runs through the network as a gray RGB image (official 'realesrgan')
    BICUBIC = "bicubic"  # plain bicubic resize of the alpha plane
    NONE = "none"  # drop alpha, write RGB


class SuperResolver(Protocol):
    """A model backend: (1, h, w, 3) float32 in [0, 1] -> (1, h*scale, w*scale, 3) float32.

    input_size: the (h, w) the backend requires (a TFLite model with a fixed input), or None.
    """

    scale: int
    input_size: tuple[int, int] | None

    def __call__(self, lr: np.ndarray) -> np.ndarray: ...


class NonFiniteOutputError(RuntimeError):
    """The network produced inf/NaN (fp16 overflow)."""


def rebuild_model(model, dtype: str | None = None):
    """A fresh copy of `model` (same architecture and weights), with its layers in `dtype`.

    Our generators rebuild from their config with a `dtype` argument; other functional models are
    cloned layer by layer. Weights are cast on assignment.
    """
    import keras

    config = model.get_config()
    if "dtype" in config and hasattr(type(model), "from_config") and type(model) is not keras.Model:
        copy = type(model).from_config({**config, "dtype": dtype or config["dtype"]})
    else:
        def clone_layer(layer):
            layer_config = layer.get_config()
            if dtype is not None:
                layer_config["dtype"] = dtype
            return layer.__class__.from_config(layer_config)

        input_dtype = dtype or model.inputs[0].dtype
        copy = keras.models.clone_model(
            model,
            input_tensors=keras.Input(model.inputs[0].shape[1:], dtype=input_dtype),
            clone_function=clone_layer,
        )
    copy.set_weights(model.get_weights())
    if hasattr(model, "scale"):
        copy.scale = model.scale
    return copy


def blend_generators(general, wdn, strength: float):
    """Official denoise-strength control: weights = strength * general + (1 - strength) * wdn.

    realesr-general-x4v3 (strength 1) keeps noise, its wdn variant (strength 0) removes it.
    """
    a, b = general.get_weights(), wdn.get_weights()
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        raise ValueError("the two models have different architectures, cannot blend their weights")
    blended = rebuild_model(general)
    blended.set_weights([strength * x + (1.0 - strength) * y for x, y in zip(a, b, strict=True)])
    return blended


def infer_scale(model) -> int:
    """The model's `scale` attribute, else measured on a 16x16 input (a multiple of every unshuffle)."""
    if getattr(model, "scale", None):
        return int(model.scale)
    out = model(np.zeros((1, 16, 16, 3), np.float32))
    return int(out.shape[1]) // 16


# RRDBNet's layers after the trunk, in order: all local (nearest x2, 3x3 convs), so they can run on
# row strips of the trunk features. An output row depends on trunk rows within 2 of it (two 3x3 convs
# at 4x, one at 2x, one at 4x after the nearest upsamplings): a halo of 2 rows makes strips exact.
RRDB_TAIL = ("up1", "conv_up1", "up2", "conv_up2", "conv_hr", "conv_last")
RRDB_TAIL_HALO = 2


def split_rrdbnet(model):
    """(trunk, tail) of an RRDBNet-like functional model, or None when `model` is not one.

    trunk: a Keras model lr -> trunk features (B, h', w', C) (h' = h for x4, h/2 for x2, h/4 for
    x1); tail: the callable features -> SR (4x the features' size) made of the same layers.
    """
    import keras

    names = {layer.name for layer in model.layers}
    if "trunk_skip" not in names or not set(RRDB_TAIL) <= names:
        return None
    trunk = keras.Model(model.inputs, model.get_layer("trunk_skip").output)
    layers = [model.get_layer(name) for name in RRDB_TAIL]

    def tail(features):
        for layer in layers:
            features = layer(features, training=False)
        return features

    return trunk, tail


class KerasSuperResolver:
    """A Keras generator as a backend, traced once per window shape (optionally XLA-compiled).

    RRDBNet runs its trunk on the whole window and its 4x-resolution tail on row strips of the trunk
    features (plus a 2-row halo, cropped away: same pixels) when one 64-channel HR activation of the
    whole window would exceed `tail_activation_bytes`. Those activations are what bounds memory:
    x4plus on a 276x276 window needs ~1.1 GB in one piece, ~0.35 GB in three strips. Strips of one
    size (the last one slid up) keep it to one trace per window shape. 0: never strips.
    """

    input_size = None

    def __init__(
        self,
        model,
        precision: Precision = Precision.FP32,
        jit_compile: bool = False,
        tail_activation_bytes: int = 128 * 2**20,
    ):
        import tensorflow as tf

        self.scale = infer_scale(model)
        self.precision = precision
        self.model = model if precision is Precision.FP32 else rebuild_model(model, precision.keras_dtype)
        compute_dtype = precision.keras_dtype
        net = self.model
        split = split_rrdbnet(net) if tail_activation_bytes else None
        self.tail_activation_bytes = tail_activation_bytes if split else 0

        def compiled(fn):
            return tf.function(fn, reduce_retracing=True, jit_compile=jit_compile)

        @compiled
        def forward(lr):  # (1, h, w, 3) float32 -> (1, h*s, w*s, 3) float32
            return tf.cast(net(tf.cast(lr, compute_dtype), training=False), tf.float32)

        self._forward = forward
        if split:
            trunk, tail = split
            self._trunk = compiled(lambda lr: trunk(tf.cast(lr, compute_dtype), training=False))
            self._tail = compiled(lambda features: tf.cast(tail(features), tf.float32))

    def strip_rows(self, rows: int, width: int, channels: int, itemsize: int) -> int:
        """Trunk rows per tail strip for (rows, width, channels) features: `rows` means one piece."""
        if not self.tail_activation_bytes:
            return rows
        limit = max(1, self.tail_activation_bytes // (16 * width * channels * itemsize) - 2 * RRDB_TAIL_HALO)
        count = -(-rows // limit)
        return rows if count == 1 else -(-rows // count)

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        if not self.tail_activation_bytes:
            return self._forward(lr).numpy()
        features = self._trunk(lr)  # (1, h', w', C): the output is 4x its size
        _, rows, width, channels = (int(d) for d in features.shape)
        strip = self.strip_rows(rows, width, channels, features.dtype.size)
        if strip >= rows:
            return self._tail(features).numpy()
        halo = RRDB_TAIL_HALO
        span = min(rows, strip + 2 * halo)  # rows of every strip (the last one slid up inside)
        out = np.empty((1, 4 * rows, 4 * width, int(self.model.outputs[0].shape[-1])), np.float32)
        for top in range(0, rows, strip):
            bottom = min(top + strip, rows)
            start = min(max(top - halo, 0), rows - span)
            sr = self._tail(features[:, start:start + span])
            out[:, 4 * top:4 * bottom] = sr[:, 4 * (top - start):4 * (bottom - start)]
        return out


@dataclasses.dataclass(frozen=True)
class UpscaleOptions:
    """tile: core tile size in LR pixels (0 = whole image); outscale: final scale (None = net scale)."""

    tile: int = 0
    tile_pad: int = 10
    pre_pad: int = 0
    precision: Precision = Precision.FP32
    tta: bool = False
    alpha: AlphaMode = AlphaMode.MODEL
    outscale: float | None = None
    jit_compile: bool = False
    min_tile: int = 32  # the ResourceExhausted retry stops halving here
    # With tile 0, a side longer than this is tiled anyway (0 = never): on the CPU an oversized
    # graph does not raise ResourceExhaustedError, the process is killed (x4plus on a 2000x2000
    # input holds several 16 GB HR activations at once).
    auto_tile: int = 512
    progress: bool = False  # a tqdm bar over tiles

    def __post_init__(self):
        if self.tile < 0 or self.tile_pad < 0 or self.pre_pad < 0:
            raise ValueError("tile, tile_pad and pre_pad must be >= 0")
        if self.outscale is not None and not 0 < self.outscale < float("inf"):
            raise ValueError(f"outscale must be a finite number > 0, got {self.outscale}")


def _value_range(pixels: np.ndarray) -> tuple[float, np.dtype]:
    """(max value, output dtype). uint8/uint16 are trusted; other integers use the official rule
    (max > 256 means 16-bit)."""
    if pixels.dtype == np.uint8:
        return 255.0, np.dtype(np.uint8)
    if pixels.dtype == np.uint16:
        return 65535.0, np.dtype(np.uint16)
    if np.issubdtype(pixels.dtype, np.integer):
        if pixels.max(initial=0) > 256:
            return 65535.0, np.dtype(np.uint16)
        return 255.0, np.dtype(np.uint8)
    raise ValueError(f"pixels must be an integer array (uint8 or uint16), got {pixels.dtype}")


def _quantize(values: np.ndarray, max_value: float, dtype: np.dtype) -> np.ndarray:
    values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(values, 0.0, 1.0) * max_value).astype(dtype)


def resize_planes(pixels: np.ndarray, size: tuple[int, int], resample=Image.Resampling.LANCZOS) -> np.ndarray:
    """(H, W, C) array -> (h, w, C) of the same dtype with Pillow, plane by plane in float32.

    size is (width, height) as in PIL. Pillow's LANCZOS is Lanczos-3 and widens its support when
    shrinking (antialiased), which matters because outscale < net scale is a downscale.
    """
    out = np.empty((size[1], size[0], pixels.shape[2]), pixels.dtype)
    is_int = np.issubdtype(pixels.dtype, np.integer)
    for c in range(pixels.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(pixels[..., c], dtype=np.float32), "F")
        resized = np.asarray(plane.resize(size, resample))
        if is_int:
            resized = np.clip(np.rint(resized), 0, np.iinfo(pixels.dtype).max)
        out[..., c] = resized
    return out


# The 8 symmetries of the square as (forward, inverse) on (1, H, W, C) arrays.
def _d4_transforms() -> list[tuple[Callable, Callable]]:
    def rot(k):
        return lambda x: np.rot90(x, k, axes=(1, 2))

    def flip_rot(k):
        return lambda x: np.rot90(x[:, :, ::-1], k, axes=(1, 2))

    def unflip_rot(k):
        return lambda x: np.rot90(x, -k, axes=(1, 2))[:, :, ::-1]

    return [(rot(k), rot(-k)) for k in range(4)] + [(flip_rot(k), unflip_rot(k)) for k in range(4)]


class Upscaler:
    """Upscales (H, W, C) uint8/uint16 images, C in {1, 2, 3, 4}, with a generator of any input size.

    C = 2 is gray + alpha: the gray plane is upscaled as a gray image (C = 1), the alpha as for RGBA.

    model: a Keras generator (RRDBNet, SRVGGNetCompact, any functional model) or a `SuperResolver`
    backend such as a TFLite runner. Only a Keras model can change precision.
    """

    def __init__(
        self,
        model,
        *,
        tile: int = 0,
        tile_pad: int = 10,
        pre_pad: int = 0,
        precision: Precision | str = Precision.FP32,
        tta: bool = False,
        alpha: AlphaMode | str = AlphaMode.MODEL,
        outscale: float | None = None,
        jit_compile: bool = False,
        min_tile: int = 32,
        auto_tile: int = 512,
        progress: bool = False,
    ):
        import keras

        self.options = UpscaleOptions(
            tile=tile,
            tile_pad=tile_pad,
            pre_pad=pre_pad,
            precision=Precision(precision),
            tta=tta,
            alpha=AlphaMode(alpha),
            outscale=outscale,
            jit_compile=jit_compile,
            min_tile=min_tile,
            auto_tile=auto_tile,
            progress=progress,
        )
        if isinstance(model, keras.Model):
            self._model = model
            self.backend: SuperResolver = KerasSuperResolver(model, self.options.precision, jit_compile)
        else:
            if self.options.precision is not Precision.FP32:
                raise ValueError("precision can only be changed for a Keras model")
            if not isinstance(getattr(model, "scale", None), int) or not callable(model):
                raise TypeError("model must be a keras.Model or a callable with an int `scale` attribute")
            self._model = None
            self.backend = model
        self.scale = int(self.backend.scale)
        self.precision = self.options.precision
        self.align = scale_alignment(self.scale)  # official mod padding
        self.tile = self.options.tile  # shrinks after a ResourceExhaustedError, for later images too
        input_size = getattr(self.backend, "input_size", None)
        if input_size is not None and self.options.tta and input_size[0] != input_size[1]:
            raise ValueError("TTA transposes tiles and needs a square fixed input size")

    # ------------------------------------------------------------------ public API
    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of `upscale`'s result for an input of that size."""
        outscale = self.options.outscale
        if outscale is None or outscale == self.scale:
            return height * self.scale, width * self.scale
        return max(1, int(height * outscale)), max(1, int(width * outscale))  # official: int() truncates

    def upscale(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W[, C]) uint8/uint16 -> (H*outscale, W*outscale[, C']) of the same dtype.

        C' == C, except that alpha mode 'none' drops the alpha (RGBA -> RGB, gray + alpha -> gray).
        """
        pixels = np.asarray(pixels)
        squeeze = pixels.ndim == 2
        if squeeze:
            pixels = pixels[..., None]
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or min(pixels.shape[:2]) < 1:
            raise ValueError(f"expected an (H, W, C) image with C in 1, 2, 3, 4; got shape {pixels.shape}")
        max_value, dtype = _value_range(pixels)
        h, w, c = pixels.shape
        keep_alpha = c in (2, 4) and self.options.alpha is not AlphaMode.NONE
        out_channels = (1 if c <= 2 else 3) + keep_alpha
        out = np.empty((h * self.scale, w * self.scale, out_channels), dtype)
        try:
            self._upscale_into(pixels, max_value, out, keep_alpha)
        except NonFiniteOutputError:
            if self._model is None or self.precision is Precision.FP32:
                raise
            logging.warning("%s output is not finite (overflow); falling back to fp32", self.precision.value)
            self.precision = Precision.FP32
            self.backend = KerasSuperResolver(self._model, Precision.FP32, self.options.jit_compile)
            self._upscale_into(pixels, max_value, out, keep_alpha)
        out_h, out_w = self.output_size(h, w)
        if (out_h, out_w) != out.shape[:2]:
            out = resize_planes(out, (out_w, out_h))
        return out[..., 0] if squeeze else out

    # ------------------------------------------------------------------ internals
    def _upscale_into(self, pixels, max_value, out, keep_alpha) -> None:
        c = pixels.shape[2]
        s = self.scale
        h, w = pixels.shape[:2]
        gray = c <= 2  # gray or gray + alpha: run as RGB, written as luma
        colour = 1 if gray else 3  # colour channels of `pixels` and `out`; the alpha follows them
        rgb = np.repeat(pixels[..., :1], 3, axis=2) if gray else pixels[..., :3]
        self._enhance_into(rgb.astype(np.float32) / max_value, out[..., :colour], gray, max_value)
        if not keep_alpha:
            return
        alpha = pixels[..., colour]
        if alpha.min() == alpha.max():
            # A constant plane (an opaque PNG saved as RGBA): nothing for a network to add.
            out[..., colour] = alpha.flat[0]
        elif self.options.alpha is AlphaMode.MODEL:
            alpha_rgb = np.repeat(alpha[..., None], 3, axis=2).astype(np.float32) / max_value
            self._enhance_into(alpha_rgb, out[..., colour:colour + 1], True, max_value)
        else:
            big = resize_planes(alpha[..., None], (w * s, h * s), Image.Resampling.BICUBIC)
            out[..., colour] = big[..., 0]

    def _enhance_into(self, image: np.ndarray, out: np.ndarray, to_gray: bool, max_value: float) -> None:
        """Runs the net over a float (H, W, 3) image tile by tile, writing quantised tiles into out."""
        h, w = image.shape[:2]
        pad = self.options.pre_pad
        # Two separate reflections at the bottom/right, as the official code (not one of pad + mod:
        # the second reflects the first's padding).
        padded = np.pad(image, ((0, pad), (0, pad), (0, 0)), mode="reflect") if pad else image
        padded = reflect_pad_to_multiple(padded, self.align)
        import tensorflow as tf

        while True:
            try:
                self._run_tiles(padded, (h, w), out, to_gray, max_value)
                return
            except tf.errors.ResourceExhaustedError:
                current = self.tile or min(max(padded.shape[:2]), self.options.auto_tile or 1 << 30)
                smaller = round_up(current // 2, self.align)
                if smaller < self.options.min_tile or smaller >= current:
                    raise
                logging.warning("out of memory at tile %d; retrying with tile %d", current, smaller)
                self.tile = smaller

    def _run_tiles(self, padded, size, out, to_gray, max_value) -> None:
        from tqdm import tqdm

        h, w = size
        s = self.scale
        tile = self.tile
        if tile == 0 and 0 < self.options.auto_tile < max(padded.shape[:2]):
            tile = self.options.auto_tile
        plan = plan_tiles(
            padded.shape[0], padded.shape[1], tile, self.options.tile_pad, self.align,
            getattr(self.backend, "input_size", None),
        )
        # Tiles whose core lies entirely in the bottom/right padding are never run.
        tiles = [t for t in plan.tiles if t.y0 < h and t.x0 < w]
        for t in tqdm(tiles, desc="tiles", unit="tile", leave=False,
                      disable=not self.options.progress or len(tiles) < 2):
            window = padded[t.win_y:t.win_y + plan.win_h, t.win_x:t.win_x + plan.win_w]
            sr = self._run_window(window)  # (win_h*s, win_w*s, 3)
            y1, x1 = min(t.y1, h), min(t.x1, w)
            oy, ox = (t.y0 - t.win_y) * s, (t.x0 - t.win_x) * s
            core = sr[oy:oy + (y1 - t.y0) * s, ox:ox + (x1 - t.x0) * s]
            if to_gray:
                core = (core @ _LUMA)[..., None]
            out[t.y0 * s:y1 * s, t.x0 * s:x1 * s] = _quantize(core, max_value, out.dtype)

    def _run_window(self, window: np.ndarray) -> np.ndarray:
        """(h, w, 3) float32 -> (h*s, w*s, 3) float32, with TTA if asked."""
        lr = np.ascontiguousarray(window[None], dtype=np.float32)
        if not self.options.tta:
            sr = self._call_backend(lr)
        else:
            sr = None
            for forward, inverse in _d4_transforms():
                part = inverse(self._call_backend(np.ascontiguousarray(forward(lr))))
                sr = part if sr is None else sr + part
            sr = sr / 8.0
        if not np.isfinite(sr).all() and self.precision is not Precision.FP32:
            raise NonFiniteOutputError()
        return sr[0]

    def _call_backend(self, lr: np.ndarray) -> np.ndarray:
        """Pads the window up to a fixed backend input size if there is one, and crops back."""
        input_size = getattr(self.backend, "input_size", None)
        _, h, w, _ = lr.shape
        if input_size is None or (h, w) == tuple(input_size):
            return self.backend(lr)
        full = pad_to_window(lr, tuple(input_size))  # as the TFLite runner pads images smaller than T
        s = self.scale
        return self.backend(full)[:, : h * s, : w * s]


# ---------------------------------------------------------------------------- CLI
EXTENSIONS = ("auto", "png", "jpg", "webp")
_WRITABLE = {"png", "jpg", "jpeg", "webp", "bmp"}


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("input", None, "An image file or a folder of images.", flag_values=fv)
    flags.DEFINE_string("output", "results", "Output folder (created if missing).", flag_values=fv)
    flags.DEFINE_string(
        "model", "realesrgan-x4plus",
        "Pretrained model name (realesrgan-x4plus, realesrgan-x4plus-anime-6b, realesr-animevideov3[-x2|-x3])"
        " or a path to a .pth, .weights.h5, .keras or .tflite file.", flag_values=fv)
    flags.DEFINE_float("outscale", None, "Final upscaling factor (Lanczos after the net); default: the "
                       "model's.", flag_values=fv)
    flags.DEFINE_integer("tile", 0, "Tile size in input pixels, 0 = whole image (images with a side "
                         "over 512 are tiled at 512 anyway; tiles are seam-free).", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_integer("tile_pad", 10, "Overlap around each tile, cropped away.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_integer("pre_pad", 0, "Reflect padding at the bottom/right before the net.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_enum("precision", "fp32", [p.value for p in Precision],
                      "Compute precision; fp16/bf16 fall back to fp32 when the output is not finite.",
                      flag_values=fv)
    flags.DEFINE_enum("alpha", "model", [a.value for a in AlphaMode],
                      "Alpha channel: through the model, bicubic, or dropped.", flag_values=fv)
    flags.DEFINE_enum("ext", "auto", list(EXTENSIONS), "Output format; auto = the input's (PNG for RGBA).",
                      flag_values=fv)
    flags.DEFINE_string("suffix", "out", "Output name is {stem}_{suffix}.{ext} ({stem}.{ext} if empty; "
                        "then an existing file of that name in an input's own folder is never overwritten).",
                        flag_values=fv)
    flags.DEFINE_boolean("tta", False, "Average the 8 flips/transposes (8x slower).", flag_values=fv)
    flags.DEFINE_float("denoise_strength", 0.5,
                       "realesr-general-x4v3 only: 1 keeps noise, 0 removes it (blend with the wdn weights).",
                       lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    flags.DEFINE_string("wdn_model", None, "The realesr-general-wdn-x4v3 weights; default: beside --model.",
                        flag_values=fv)
    flags.DEFINE_boolean("xla", False, "Compile the network with XLA.", flag_values=fv)
    flags.DEFINE_enum("act", None, ["prelu", "relu", "leakyrelu"],
                      "SRVGGNetCompact .pth without PReLU weights: the activation it was trained with "
                      "(relu or leakyrelu; it cannot be told from the weights).", flag_values=fv)


class _UserError(Exception):
    """A one-line problem with the command line, a file or a model."""


def _error(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"real-esrgan-tf upscale: error: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"real-esrgan-tf upscale: warning: {message}", file=sys.stderr)


def _list_inputs(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        try:
            names = sorted(n for n in os.listdir(path) if not n.startswith("."))
        except OSError as e:
            raise _UserError(f"{path}: cannot list the folder ({e.strerror or e})") from None
        return [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
    raise _UserError(f"{path}: no such file or folder")


def _prepare_output(folder: str) -> None:
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise _UserError(f"{folder}: cannot create output folder ({e.strerror or e})") from None
    if not os.path.isdir(folder):
        raise _UserError(f"{folder}: output is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _UserError(f"{folder}: output folder is not writable")


def _wdn_path(model_path: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    folder, name = os.path.split(model_path)
    return os.path.join(folder, name.replace("realesr-general-x4v3", "realesr-general-wdn-x4v3"))


def load_model(fv) -> tuple[object, float | None]:
    """(Keras model or SuperResolver backend, default outscale or None)."""
    spec = fv.model
    if spec.endswith(".tflite"):
        if fv.act:
            raise _UserError(f"{spec}: --act is for SRVGGNetCompact .pth files, not TFLite models")
        if not os.path.isfile(spec):
            raise _UserError(f"{spec}: weights file not found")
        try:
            from real_esrgan_tf import tflite_runner
        except ImportError as e:
            raise _UserError(f"{spec}: TFLite models need real_esrgan_tf.tflite_runner ({e})") from None
        try:
            return tflite_runner.TFLiteSuperResolver(spec), None
        except Exception as e:  # TFLiteModelError, or ImportError without ai-edge-litert
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise _UserError(message if spec in message else f"{spec}: {message}") from None
    try:
        from real_esrgan_tf import weights
    except ImportError as e:
        raise _UserError(f"{spec}: cannot load models, real_esrgan_tf.weights unavailable ({e})") from None
    model = _load_generator(weights, spec, fv.act)
    strength = fv.denoise_strength
    if "realesr-general-x4v3" in os.path.basename(spec) and strength != 1.0:
        wdn = _wdn_path(spec, fv.wdn_model)
        if os.path.isfile(wdn):
            model = blend_generators(model, _load_generator(weights, wdn, fv.act), strength)
        elif fv["denoise_strength"].present or fv.wdn_model:
            raise _UserError(f"{wdn}: wdn weights for --denoise_strength not found")
        else:
            logging.warning("%s not found; using realesr-general-x4v3 without denoise blending", wdn)
    elif fv.wdn_model or fv["denoise_strength"].present:
        raise _UserError(f"{spec}: --denoise_strength needs realesr-general-x4v3 weights")
    return model, _default_outscale(weights, spec)


def _load_generator(weights, spec: str, act: str | None = None):
    try:
        return weights.load_generator(spec, act=act)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _UserError(message if spec in message else f"{spec}: {message}") from None


def _default_outscale(weights, spec: str) -> float | None:
    """The pretrained model's own output scale (animevideov3-x2/-x3 are the x4 net + a downscale)."""
    find = getattr(weights, "find_pretrained", None)
    info = find(spec) if find is not None and not os.path.exists(spec) else None
    return None if info is None else float(info.outscale)


# Largest side each format can store (libwebp: 16383, libjpeg: 65500); PNG's limit is 2**31 - 1.
MAX_SIDE = {"webp": 16383, "jpg": 65500, "jpeg": 65500}


def output_path(
    input_path: str, folder: str, ext: str, suffix: str, has_alpha: bool, size: tuple[int, int] | None = None
) -> str:
    """Official naming: {stem}_{suffix}.{ext}; ext auto keeps the input's; RGBA forces PNG, and so does
    an output `size` (height, width) larger than the format can hold."""
    stem, in_ext = os.path.splitext(os.path.basename(input_path))
    extension = in_ext.lstrip(".").lower() if ext == "auto" else ext
    if extension not in _WRITABLE or (has_alpha and extension in ("jpg", "jpeg")):
        extension = "png"
    if size is not None and max(size) > MAX_SIDE.get(extension, 2**31 - 1):
        _warn(f"{input_path}: the {size[1]}x{size[0]} output is too large for {extension.upper()} "
              f"(max side {MAX_SIDE[extension]}); writing PNG")
        extension = "png"
    name = f"{stem}_{suffix}" if suffix else stem
    return os.path.join(folder, f"{name}.{extension}")


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def run(fv) -> int:
    from tqdm import tqdm

    from real_esrgan_tf.images import ImageError, read_image, write_image

    if not fv.input:
        _error("--input is required (an image file or a folder)")
        return 1
    try:
        inputs = _list_inputs(fv.input)
        _prepare_output(fv.output)
        model, default_outscale = load_model(fv)
        outscale = default_outscale if fv.outscale is None else fv.outscale  # --outscale 0 is an error
        upscaler = Upscaler(
            model, tile=fv.tile, tile_pad=fv.tile_pad, pre_pad=fv.pre_pad, precision=fv.precision,
            tta=fv.tta, alpha=fv.alpha, outscale=outscale, jit_compile=fv.xla, progress=True,
        )
    except (_UserError, ValueError, TypeError) as e:
        _error(str(e))
        return 1
    if not inputs:
        _error(f"{fv.input}: no files in the folder")
        return 1
    input_real = {os.path.realpath(p) for p in inputs}
    # (device, inode) also finds an input under another spelling (case-insensitive file systems)
    input_ids = {file_id for file_id in map(_file_id, inputs) if file_id is not None}
    # With --suffix "" an output is named like an image ({stem}.{ext}): in an input's own folder an
    # existing file of that name is the user's (photo.jpg beside a single input photo.png), never
    # overwritten. Elsewhere, and with a suffix, an existing output is a previous run's and replaced.
    input_folders = {os.path.realpath(os.path.dirname(os.path.abspath(p))) for p in inputs}
    input_folders |= {os.path.dirname(p) for p in input_real}  # an input that is a symlink: its target's
    guard_siblings = not fv.suffix and os.path.realpath(fv.output) in input_folders
    written: dict[str, str] = {}
    failures = 0
    for path in tqdm(inputs, desc="images", unit="img", disable=len(inputs) < 2):
        try:
            # outputs carry no EXIF; gray + alpha stays 2 channels (written as an LA PNG)
            image = read_image(path, exif_orientation=True, keep_gray_alpha=True)
            has_alpha = image.channels in (2, 4) and upscaler.options.alpha is not AlphaMode.NONE
            size = upscaler.output_size(*image.pixels.shape[:2])
            target = output_path(path, fv.output, fv.ext, fv.suffix, has_alpha, size)
            real_target = os.path.realpath(target)
            if real_target in input_real or _file_id(target) in input_ids:
                raise _UserError(
                    f"{path}: output {target} would overwrite an input; change --suffix or --output")
            if real_target in written:
                raise _UserError(f"{path}: output {target} already written from {written[real_target]}")
            if guard_siblings and os.path.lexists(target):
                raise _UserError(
                    f"{path}: output {target} would overwrite an existing file in the input's folder "
                    "(--suffix \"\" names outputs like images); change --suffix or --output")
            if image.frames > 1:
                _warn(f"{path}: {image.frames} frames (animated); only the first is upscaled")
            result = upscaler.upscale(image.pixels)
            write_image(target, result, icc_profile=image.icc_profile)  # e.g. Display P3 photos
            written[real_target] = path
        except (ImageError, _UserError) as e:
            _error(str(e))
            failures += 1
        except Exception as e:  # keep going with the other images
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            _error(f"{path}: {type(e).__name__}: {reason[:200]}")
            failures += 1
    logging.info("upscaled %d of %d images into %s", len(inputs) - failures, len(inputs), fv.output)
    return 1 if failures else 0
