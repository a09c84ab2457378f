"""Splitting an image into equally sized overlapping windows for tiled super-resolution.

The official RealESRGANer clamps each padded tile at the image border, so edge tiles are smaller
and every new tile shape retraces (or recompiles) the network. Here every window has the same
shape: a window that would cross the border is slid back inside the image instead. Each tile's
core still gets at least `tile_pad` pixels of context on every side that is not an image border
(often more), and the network is traced once per image size class, not once per edge tile.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile, in input pixels of the padded image.

    The network runs on the window `[win_y, win_y + win_h) x [win_x, win_x + win_w)`; only the
    core `[y0, y1) x [x0, x1)` of its output (times the scale) is kept.
    """

    y0: int
    y1: int
    x0: int
    x1: int
    win_y: int
    win_x: int


@dataclasses.dataclass(frozen=True)
class TilePlan:
    win_h: int
    win_w: int
    tiles: tuple[Tile, ...]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def scale_alignment(scale: int) -> int:
    """Input sides must be multiples of this for a net of `scale` known only by its scale (a TFLite
    file, a callable): the official RRDBNet x2 / x1 pixel-unshuffle by 2 / 4, as its mod_pad assumes."""
    return {2: 2, 1: 4}.get(scale, 1)


def window_size(size, core, pad, minimum=min):
    """The window along an axis of `size` pixels for cores of `core` > 0 pixels: core + 2 * pad,
    at most the axis. With `minimum=tf.minimum` it runs on int tensors (the exported graph)."""
    return minimum(core + 2 * pad, size)


def tile_count(size, core):
    """Number of cores of `core` > 0 pixels covering `size` pixels (ints or int tensors)."""
    return (size + core - 1) // core


def core_span(index, size, core, pad, window, minimum=min, maximum=max):
    """(core start, core end, window start) of tile `index` along an axis of `size` pixels.

    The window is slid back inside the image at the border rather than shrunk. The one rule for the
    Upscaler, the TFLite runner and, with `tf.minimum` / `tf.maximum`, the exported graph.
    """
    c0 = index * core
    return c0, minimum(c0 + core, size), maximum(0, minimum(c0 - pad, size - window))


def _axis(size: int, core: int, pad: int, window: int | None) -> tuple[int, list[tuple[int, int, int]]]:
    """(window size, [(core start, core end, window start)]) along one axis."""
    if window is None:
        core = size if core <= 0 else core
        window = window_size(size, core, pad)
    elif size <= window:  # fixed window (e.g. a TFLite model) that holds the whole axis
        core = size
    else:  # fixed window: the core is what remains inside the pad
        core = max(window - 2 * pad, 1)
    return window, [core_span(i, size, core, pad, window) for i in range(tile_count(size, core))]


def plan_tiles(
    height: int,
    width: int,
    tile: int,
    tile_pad: int,
    align: int = 1,
    window: tuple[int, int] | None = None,
) -> TilePlan:
    """Tiles covering a (height, width) image.

    tile: core size (0 = one window over the whole image); tile_pad: context on each side.
    align: tile, pad and window starts become multiples of it (the x2/x1 RRDBNet unshuffles 2x2 /
    4x4 blocks, so a window must start on a block boundary to see the same blocks as the whole
    image). window: a fixed (h, w) the model requires; a window larger than the image is padded by
    the caller.
    """
    if tile > 0:
        tile = round_up(tile, align)
    tile_pad = round_up(tile_pad, align)
    win_h, ys = _axis(height, tile, tile_pad, None if window is None else window[0])
    win_w, xs = _axis(width, tile, tile_pad, None if window is None else window[1])
    tiles = tuple(Tile(y0, y1, x0, x1, wy, wx) for (y0, y1, wy) in ys for (x0, x1, wx) in xs)
    return TilePlan(win_h, win_w, tiles)


def reflect_pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """(..., h, w, C) -> H and W reflect-padded at the bottom/right up to multiples of `multiple`.

    The official mod_pad before RRDBNet x2 / x1 (pixel-unshuffle by 2 / 4). numpy's 'reflect' repeats
    the reflection, so any side works, even 1 pixel (TF's MirrorPad refuses pads >= the side).
    """
    h, w = image.shape[-3:-1]
    mod_h, mod_w = -h % multiple, -w % multiple
    if not (mod_h or mod_w):
        return image
    pads = [(0, 0)] * (image.ndim - 3) + [(0, mod_h), (0, mod_w), (0, 0)]
    return np.pad(image, pads, mode="reflect")


def pad_to_window(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., h, w, C) -> (..., H, W, C), padded at the bottom/right up to `size` = (H, W) >= (h, w).

    How an image smaller than a fixed model input (a TFLite window) is filled, the same for
    `serve.upscaler.Upscaler` and `serve.tflite_backend.TFLiteGenerator` (the caller crops the output back):
    numpy 'reflect' when every pad is shorter than its side; else 'symmetric' (numpy repeats the
    mirroring for pads longer than the side) when both sides are > 1 px; else 'edge' (a 1 px side).
    One mode for both axes.
    """
    h, w = image.shape[-3:-1]
    fh, fw = size
    if h > fh or w > fw:
        raise ValueError(f"window {h}x{w} larger than the model's fixed input {fh}x{fw}")
    if (h, w) == (fh, fw):
        return image
    mode = "reflect" if h > fh - h and w > fw - w else "symmetric" if h > 1 and w > 1 else "edge"
    pads = [(0, 0)] * (image.ndim - 3) + [(0, fh - h), (0, fw - w), (0, 0)]
    return np.pad(image, pads, mode=mode)
