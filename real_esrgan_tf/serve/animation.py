"""Animated GIF / WEBP / APNG: read every frame with its duration and the loop count, write them back.

The official inference script reads images with cv2, which returns the first frame of an animation only.
Here an animation is decoded to full-canvas frames (Pillow applies each frame's disposal and blending),
upscaled frame by frame by the caller, and written in the same kind of file with the same timing.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from real_esrgan_tf.images import ImageError, write_bytes_atomic

ANIMATED_FORMATS = ("gif", "webp", "png")  # png: APNG


@dataclasses.dataclass
class Animation:
    """Full-canvas frames, (H, W, 3|4) uint8, with durations in milliseconds.

    loop: 0 plays forever, n > 0 repeats n times (GIF/WEBP/APNG semantics of the stored count);
    None: the file had no loop count (a GIF without a NETSCAPE block plays once).
    """

    frames: list[np.ndarray]
    durations: list[int]
    loop: int | None
    format: str

    def __post_init__(self):
        if len(self.frames) != len(self.durations) or not self.frames:
            raise ValueError("an animation needs one duration per frame and at least one frame")


def frame_count(path: str) -> int:
    """Frames in an image file (1 for a still image or anything Pillow cannot open)."""
    try:
        with Image.open(path) as im:
            fmt = (im.format or "").lower()
            return int(getattr(im, "n_frames", 1) or 1) if fmt in ANIMATED_FORMATS else 1
    except (OSError, UnidentifiedImageError, ValueError):
        return 1


def read_animation(path: str) -> Animation:
    """Decodes every frame of an animated GIF/WEBP/APNG; raises ImageError naming the file and reason."""
    frames: list[np.ndarray] = []
    durations: list[int] = []
    try:
        with Image.open(path) as im:
            fmt = (im.format or "").lower()
            if fmt not in ANIMATED_FORMATS:
                raise ImageError(path, f"{fmt or 'unknown'} files are not animations")
            loop = im.info.get("loop")
            for i in range(int(getattr(im, "n_frames", 1) or 1)):
                im.seek(i)
                im.load()
                durations.append(int(round(float(im.info.get("duration") or 0))))
                frames.append(_to_array(im))
    except UnidentifiedImageError:
        raise ImageError(path, "not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(path, f"cannot decode frame {len(frames)} ({e})") from None
    if all(f.shape[-1] == 3 or (f[..., 3] == 255).all() for f in frames):  # opaque (WEBP decodes as RGBA)
        frames = [f[..., :3] for f in frames]
    else:  # one channel layout for all frames
        opaque = np.uint8(255)
        frames = [f if f.shape[-1] == 4 else np.dstack([f, np.full(f.shape[:2], opaque)]) for f in frames]
    return Animation(frames, durations, None if loop is None else int(loop), fmt)


def _to_array(im: Image.Image) -> np.ndarray:
    transparent = "A" in im.mode or "transparency" in im.info
    return np.asarray(im.convert("RGBA" if transparent else "RGB"))


def upscale_animation(animation: Animation, upscale: Callable[[np.ndarray], np.ndarray]) -> Animation:
    """Applies `upscale` to every frame; durations, loop and format are kept."""
    frames = [np.asarray(upscale(f)) for f in animation.frames]
    return dataclasses.replace(animation, frames=frames)


def encode_animation(animation: Animation, fmt: str, quality: int = 95) -> bytes:
    """GIF (palette per frame), WEBP (lossy at `quality`, lossless at 100) or APNG bytes."""
    fmt = fmt.lower()
    if fmt not in ANIMATED_FORMATS:
        raise ValueError(f"{fmt!r} cannot hold an animation; use one of {', '.join(ANIMATED_FORMATS)}")
    images = [Image.fromarray(f) for f in animation.frames]
    options: dict = {"save_all": True, "append_images": images[1:], "duration": list(animation.durations)}
    if animation.loop is not None:
        options["loop"] = animation.loop
    if fmt == "gif":
        options.update(optimize=False, disposal=2 if images[0].mode == "RGBA" else 1)
    elif fmt == "webp":
        options.update(quality=quality, lossless=quality >= 100, method=4)
    else:
        options.update(disposal=0, blend=0)
    buf = io.BytesIO()
    images[0].save(buf, {"gif": "GIF", "webp": "WEBP", "png": "PNG"}[fmt], **options)
    return buf.getvalue()


def write_animation(path: str, animation: Animation, fmt: str | None = None, quality: int = 95) -> None:
    """Encodes and writes atomically; the format defaults to the file's extension."""
    fmt = (fmt or os.path.splitext(path)[1].lstrip(".") or animation.format).lower()
    try:
        write_bytes_atomic(path, encode_animation(animation, fmt, quality))
    except OSError as e:
        raise ImageError(path, f"cannot write ({e.strerror or e})") from None
