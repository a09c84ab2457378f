"""MATLAB's `imresize(img, scale, 'bicubic')` (antialiased when shrinking), as BasicSR implements it
in `basicsr/utils/matlab_functions.py` and uses for NIQE's second scale and for bicubic LQ/baselines.

The rules MATLAB follows (imresize.m): output side ceil(scale * side); output pixel x (1-based) maps
to u = x / scale + 0.5 * (1 - 1 / scale); the cubic kernel with a = -0.5 (Keys); when shrinking with
antialiasing the kernel is stretched by 1 / scale (width 4 / scale, weights scale * cubic(scale * d));
each row of weights is normalised to sum 1; pixels outside the image are mirrored symmetrically
(index -1 is pixel 0). Here each axis is a weighted sum of a few gathered taps with the mirroring
folded into the indices, in float64 (BasicSR computes in float32 torch: results agree to about
1e-7 relative).
"""

from __future__ import annotations

import math

import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def _mirror(index: np.ndarray, length: int) -> np.ndarray:
    """Symmetric (half-sample) reflection of 0-based indices into [0, length)."""
    period = 2 * length
    index = np.mod(index, period)
    return np.where(index >= length, period - 1 - index, index)


def axis_weights(in_length: int, out_length: int, scale: float, antialiasing: bool = True):
    """(weights, indices), both (out_length, taps): output i = sum_t weights[i, t] * in[indices[i, t]],
    indices 0-based and already mirrored into [0, in_length)."""
    width = 4.0
    shrink_aa = scale < 1 and antialiasing
    if shrink_aa:
        width = width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    index = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based
    distance = u[:, None] - index
    weights = scale * _cubic(distance * scale) if shrink_aa else _cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    return weights, _mirror(index.astype(np.int64) - 1, in_length)


def resize_matrix(in_length: int, out_length: int, scale: float, antialiasing: bool = True) -> np.ndarray:
    """(out_length, in_length) float64 matrix W with out = W @ in along one axis."""
    weights, indices = axis_weights(in_length, out_length, scale, antialiasing)
    matrix = np.zeros((out_length, in_length))
    np.add.at(matrix, (np.arange(out_length)[:, None], indices), weights)
    return matrix


def _resize_axis0(img: np.ndarray, out_length: int, scale: float, antialiasing: bool) -> np.ndarray:
    weights, indices = axis_weights(img.shape[0], out_length, scale, antialiasing)
    expand = (slice(None),) + (None,) * (img.ndim - 1)
    out = np.zeros((out_length,) + img.shape[1:])
    for t in range(weights.shape[1]):  # a few taps: memory stays O(output), unlike a dense matrix
        out += weights[:, t][expand] * img[indices[:, t]]
    return out


def imresize(img: np.ndarray, scale: float, antialiasing: bool = True) -> np.ndarray:
    """MATLAB bicubic resize of (H, W) or (H, W, C) float values, same scale on both axes.

    Returns float64 of size (ceil(H * scale), ceil(W * scale)[, C]), unrounded and unclipped.
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize: image of shape {img.shape} is not (H, W) or (H, W, C)")
    if scale <= 0:
        raise ValueError(f"imresize: scale {scale} must be positive")
    h, w = img.shape[:2]
    out = _resize_axis0(img, math.ceil(h * scale), scale, antialiasing)  # rows first, as BasicSR
    out = _resize_axis0(np.swapaxes(out, 0, 1), math.ceil(w * scale), scale, antialiasing)
    return np.ascontiguousarray(np.swapaxes(out, 0, 1))


def bicubic_upscale(pixels: np.ndarray, scale: int) -> np.ndarray:
    """An integer image (uint8 or uint16, (H, W[, C])) enlarged scale x with MATLAB bicubic,
    rounded and clipped back to its dtype: the classic bicubic baseline of SR papers."""
    pixels = np.asarray(pixels)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"bicubic_upscale: dtype {pixels.dtype} is not uint8 or uint16")
    peak = float(np.iinfo(pixels.dtype).max)
    out = imresize(pixels / peak, scale, antialiasing=True)
    return np.clip(np.round(out * peak), 0, peak).astype(pixels.dtype)
