"""Upscaling images of any size with a super-resolution generator (`Upscaler`, behind `upscale`).

Follows the official RealESRGANer conventions (reflect pre-pad, reflect padding to a multiple of
4/scale for the x2/x1 unshuffle nets, tiles with a padded border that is cropped away, Lanczos
resize to `outscale` after the net, 16-bit in -> 16-bit out, gray in -> gray out, alpha through
the net), with what users asked for on top: only one tile is ever on the device, every tile has the
same shape (one trace), smaller tiles on ResourceExhaustedError, fp16/bf16 with an fp32 fallback
when the output is not finite, 8-way TTA and the denoise-strength weight blend.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
from collections.abc import Callable
from typing import Protocol

import numpy as np
from absl import logging
from PIL import Image

from real_esrgan_tf.images import BT601_LUMA
from real_esrgan_tf.serve.keras_backend import KerasSuperResolver, Precision
from real_esrgan_tf.tiling import (
    pad_to_window,
    plan_tiles,
    reflect_pad_to_multiple,
    round_up,
    scale_alignment,
)

_LUMA = np.array(BT601_LUMA, np.float32)


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

    def __call__(self, lq: np.ndarray) -> np.ndarray: ...


class NonFiniteOutputError(RuntimeError):
    """The network produced inf/NaN (fp16 overflow)."""

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

    Follows the official `RealESRGANer` (realesrgan/utils.py): reflect pre-pad, mod-pad for the x2/x1
    nets, padded tiles whose borders are cropped, Lanczos to `outscale` after the net.

    Args:
      model: a Keras generator (RRDBNet, SRVGGNetCompact, any functional model) or a `SuperResolver`
        backend (TFLite, SavedModel). Only a Keras model can change precision.
      tile: core tile side in LR pixels (0 = whole image; sides over `auto_tile` are tiled anyway).
      tile_pad: context around each tile, cropped away (10). pre_pad: reflect padding (official).
      precision: "fp32", "fp16", "bf16" (non-finite output falls back to fp32) or "auto": the
        device's native one (`serve.precision`; fp32 for a non-Keras backend).
      tta: average the 8 flips/transposes. alpha: "model", "bicubic" or "none".
      outscale: final scale (None: the net's). jit_compile: XLA for the network.
      min_tile / auto_tile: limits of the out-of-memory retry and of whole-image mode.
      progress: a tqdm bar over tiles.
    Use `upscale(pixels)` for one image, `upscale_batch(frames)` for equal-size video frames.
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
        # auto keeps a 16-bit image's depth: such images run in fp32 (bf16 holds 8 significant bits,
        # fp16 11; a 16-bit level is 1/65535), 8-bit ones in the device's native precision.
        self._auto_precision = self.options.precision is Precision.AUTO
        self._fp32_backend: SuperResolver | None = None
        if isinstance(model, keras.Model):
            if self.options.precision is Precision.AUTO:
                from real_esrgan_tf.serve.precision import auto_precision, detect_device

                self.options = dataclasses.replace(self.options, precision=auto_precision(detect_device()))
            self._model = model
            self.backend: SuperResolver = KerasSuperResolver(model, self.options.precision, jit_compile)
        else:
            if self.options.precision is Precision.AUTO:  # a file runs in the precision it was written in
                self.options = dataclasses.replace(self.options, precision=Precision.FP32)
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
        with self._precision_for(max_value):
            self._with_fp32_fallback(lambda: self._upscale_into(pixels, max_value, out, keep_alpha))
        out_h, out_w = self.output_size(h, w)
        if (out_h, out_w) != out.shape[:2]:
            out = resize_planes(out, (out_w, out_h))
        return out[..., 0] if squeeze else out

    def upscale_batch(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8/uint16 RGB frames of one size -> (N, H', W', 3), each as `upscale` gives it.

        One tile plan for the whole batch; each tile's windows of all N frames go through a Keras
        backend as one (N, h, w, 3) call (a video's frames share their size). Other backends (a TFLite
        model with a fixed input) run the frames one by one.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[3] != 3 or min(frames.shape[:3]) < 1:
            raise ValueError(f"expected (N, H, W, 3) frames; got shape {frames.shape}")
        max_value, dtype = _value_range(frames)
        n, h, w, _ = frames.shape
        out = np.empty((n, h * self.scale, w * self.scale, 3), dtype)
        rgb = frames.astype(np.float32) / max_value
        with self._precision_for(max_value):
            self._with_fp32_fallback(lambda: self._enhance_into(rgb, out, False, max_value))
        out_h, out_w = self.output_size(h, w)
        if (out_h, out_w) != out.shape[1:3]:
            out = np.stack([resize_planes(frame, (out_w, out_h)) for frame in out])
        return out

    # ------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _precision_for(self, max_value: float):
        """With precision auto, a 16-bit image (max_value 65535) runs in fp32; anything else as set."""
        if max_value <= 255 or not self._auto_precision or self.precision is Precision.FP32:
            yield
            return
        if self._fp32_backend is None:
            self._fp32_backend = KerasSuperResolver(self._model, Precision.FP32, self.options.jit_compile)
        saved = self.backend, self.precision
        self.backend, self.precision = self._fp32_backend, Precision.FP32
        try:
            yield
        finally:
            self.backend, self.precision = saved

    def _with_fp32_fallback(self, fill) -> None:
        """Runs `fill()`; when an fp16/bf16 output is not finite, this Upscaler switches to fp32 for
        good (warning once) and runs `fill()` again."""
        try:
            fill()
        except NonFiniteOutputError:
            if self._model is None or self.precision is Precision.FP32:
                raise
            logging.warning("%s output is not finite (overflow); falling back to fp32", self.precision.value)
            self.precision = Precision.FP32
            self.backend = KerasSuperResolver(self._model, Precision.FP32, self.options.jit_compile)
            fill()

    def _upscale_into(self, pixels, max_value, out, keep_alpha) -> None:
        c = pixels.shape[2]
        s = self.scale
        h, w = pixels.shape[:2]
        gray = c <= 2  # gray or gray + alpha: run as RGB, written as luma
        colour = 1 if gray else 3  # colour channels of `pixels` and `out`; the alpha follows them
        rgb = np.repeat(pixels[..., :1], 3, axis=2) if gray else pixels[..., :3]
        image = (rgb.astype(np.float32) / max_value)[None]  # a batch of one
        self._enhance_into(image, out[None, ..., :colour], gray, max_value)
        if not keep_alpha:
            return
        alpha = pixels[..., colour]
        if alpha.min() == alpha.max():
            # A constant plane (an opaque PNG saved as RGBA): nothing for a network to add.
            out[..., colour] = alpha.flat[0]
        elif self.options.alpha is AlphaMode.MODEL:
            alpha_rgb = np.repeat(alpha[..., None], 3, axis=2).astype(np.float32) / max_value
            self._enhance_into(alpha_rgb[None], out[None, ..., colour:colour + 1], True, max_value)
        else:
            big = resize_planes(alpha[..., None], (w * s, h * s), Image.Resampling.BICUBIC)
            out[..., colour] = big[..., 0]

    def _enhance_into(self, image: np.ndarray, out: np.ndarray, to_gray: bool, max_value: float) -> None:
        """Runs the net over float (N, H, W, 3) images tile by tile, writing quantised tiles into out
        (N, H*s, W*s, C); all N share one tile plan and go through the backend together."""
        h, w = image.shape[1:3]
        pad = self.options.pre_pad
        # Two separate reflections at the bottom/right, as the official code (not one of pad + mod:
        # the second reflects the first's padding).
        padded = np.pad(image, ((0, 0), (0, pad), (0, pad), (0, 0)), mode="reflect") if pad else image
        padded = reflect_pad_to_multiple(padded, self.align)
        import tensorflow as tf

        while True:
            try:
                self._run_tiles(padded, (h, w), out, to_gray, max_value)
                return
            except tf.errors.ResourceExhaustedError:
                current = self.tile or min(max(padded.shape[1:3]), self.options.auto_tile or 1 << 30)
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
        if tile == 0 and 0 < self.options.auto_tile < max(padded.shape[1:3]):
            tile = self.options.auto_tile
        plan = plan_tiles(
            padded.shape[1], padded.shape[2], tile, self.options.tile_pad, self.align,
            getattr(self.backend, "input_size", None),
        )
        # Tiles whose core lies entirely in the bottom/right padding are never run.
        tiles = [t for t in plan.tiles if t.y0 < h and t.x0 < w]
        for t in tqdm(tiles, desc="tiles", unit="tile", leave=False,
                      disable=not self.options.progress or len(tiles) < 2):
            window = padded[:, t.win_y:t.win_y + plan.win_h, t.win_x:t.win_x + plan.win_w]
            sr = self._run_window(window)  # (N, win_h*s, win_w*s, 3)
            y1, x1 = min(t.y1, h), min(t.x1, w)
            oy, ox = (t.y0 - t.win_y) * s, (t.x0 - t.win_x) * s
            core = sr[:, oy:oy + (y1 - t.y0) * s, ox:ox + (x1 - t.x0) * s]
            if to_gray:
                core = (core @ _LUMA)[..., None]
            out[:, t.y0 * s:y1 * s, t.x0 * s:x1 * s] = _quantize(core, max_value, out.dtype)

    def _run_window(self, window: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) float32 -> (N, h*s, w*s, 3) float32, with TTA if asked."""
        lq = np.ascontiguousarray(window, dtype=np.float32)
        if not self.options.tta:
            sr = self._call_backend(lq)
        else:
            sr = None
            for forward, inverse in _d4_transforms():
                part = inverse(self._call_backend(np.ascontiguousarray(forward(lq))))
                sr = part if sr is None else sr + part
            sr = sr / 8.0
        if not np.isfinite(sr).all() and self.precision is not Precision.FP32:
            raise NonFiniteOutputError()
        return sr

    def _call_backend(self, lq: np.ndarray) -> np.ndarray:
        """Pads the window up to a fixed backend input size if there is one, and crops back.

        Keras backends take the (N, h, w, 3) batch in one call; others (TFLite, a SavedModel, any
        `SuperResolver` with its batch-1 contract) get the frames one at a time.
        """
        if lq.shape[0] > 1 and not isinstance(self.backend, KerasSuperResolver):
            return np.concatenate([self._call_backend(lq[i:i + 1]) for i in range(lq.shape[0])])
        input_size = getattr(self.backend, "input_size", None)
        _, h, w, _ = lq.shape
        if input_size is None or (h, w) == tuple(input_size):
            return self.backend(lq)
        full = pad_to_window(lq, tuple(input_size))  # as the TFLite runner pads images smaller than T
        s = self.scale
        return self.backend(full)[:, : h * s, : w * s]


