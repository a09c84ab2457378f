"""PSNR and SSIM computed as BasicSR 1.4.2 computes them (`basicsr/metrics/psnr_ssim.py`).

Inputs are (H, W, C) or (H, W) arrays in the uint8 range, as in BasicSR, but in RGB channel order:
BasicSR reads BGR with cv2 and its `bgr2ycbcr(y_only=True)` weighs B, G, R by 24.966, 128.553,
65.481; we reverse our RGB channels and apply the same weights in the same order, so the Y channel
is bit-identical. Every intermediate keeps BasicSR's dtype (float32 for the colour conversion,
float64 for the metric) so results agree to rounding, not just to the formula.

Bit depth: uint8 arrays are used as they are. uint16 arrays (16-bit PNGs) are mapped to the same
[0, 255] scale in float64 (x * 255 / 65535) without rounding, so a 16-bit image keeps its precision
and the peak stays 255 (equivalently, 65535 on the raw 16-bit values). Float arrays are taken to be
on the [0, 255] scale already, as BasicSR takes them. Two images may differ in dtype (a uint16 GT
against a uint8 output): each is mapped by its own dtype.

SSIM is the Wang et al. (2004) single-scale SSIM with the 11x11 Gaussian window (sigma 1.5, the
window `cv2.getGaussianKernel(11, 1.5)` gives), over the 'valid' region only (BasicSR filters with
cv2.filter2D and drops 5 pixels per side), averaged over channels when not on Y.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# BT.601 "studio swing" luma on [0, 1] input (MATLAB rgb2ycbcr); BGR order as BasicSR applies it.
_Y_WEIGHTS_BGR = [24.966, 128.553, 65.481]
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2


class EvaluationError(Exception):
    """Inputs that cannot be evaluated (shapes, sizes, missing partners); the message says which."""


def to_uint8_range(img: np.ndarray) -> np.ndarray:
    """uint8 as is; uint16 -> float64 on [0, 255] (x * 255 / 65535); floats as is (BasicSR's range)."""
    img = np.asarray(img)
    if img.dtype == np.uint8 or np.issubdtype(img.dtype, np.floating):
        return img
    if img.dtype == np.uint16:
        return img.astype(np.float64) * (255.0 / 65535.0)
    raise EvaluationError(f"unsupported image dtype {img.dtype} (expected uint8, uint16 or float)")


def _hwc(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img[..., None]
    if img.ndim != 3:
        raise EvaluationError(f"image of shape {img.shape} is not (H, W) or (H, W, C)")
    return img


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y of YCbCr (BT.601, [16, 235]) as float32 (H, W, 1) on the [0, 255] scale, unrounded.

    Three channels are RGB; one channel is taken as it is. Same arithmetic as BasicSR's
    `to_y_channel` on the BGR image (float32 / 255, float64 dot + 16, back to float32, * 255).
    """
    img = _hwc(to_uint8_range(img))
    unit = img.astype(np.float32) / 255.0
    if unit.shape[2] == 3:
        bgr = np.ascontiguousarray(unit[..., ::-1])
        y = (np.dot(bgr, _Y_WEIGHTS_BGR) + 16.0) / 255.0
        unit = y.astype(np.float32)[..., None]
    return unit * 255.0


def _crop(img: np.ndarray, crop_border: int) -> np.ndarray:
    if crop_border < 0:
        raise EvaluationError(f"crop_border {crop_border} is negative")
    if crop_border == 0:
        return img
    h, w = img.shape[:2]
    if 2 * crop_border >= min(h, w):
        raise EvaluationError(f"crop_border {crop_border} leaves nothing of a {h}x{w} image")
    return img[crop_border:-crop_border, crop_border:-crop_border, ...]


def _prepare(img, img2, crop_border: int, test_y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    img, img2 = _hwc(np.asarray(img)), _hwc(np.asarray(img2))
    if img.shape != img2.shape:
        raise EvaluationError(f"image shapes differ: {img.shape} and {img2.shape}")
    out = []
    for x in (img, img2):
        x = _crop(x, crop_border)
        x = rgb_to_y(x) if test_y_channel else to_uint8_range(x)
        out.append(x.astype(np.float64))
    return out[0], out[1]


def calculate_psnr(img, img2, crop_border: int, test_y_channel: bool = True) -> float:
    """PSNR in dB with peak 255 (BasicSR `calculate_psnr`, HWC); identical images give inf.

    Args:
        img, img2: (H, W, 3) RGB or (H, W[, 1]) arrays of the same shape (see module docstring).
        crop_border: pixels dropped on each side before measuring (BasicSR: the scale).
        test_y_channel: measure on Y of YCbCr (the SR convention); False: on all channels.
    """
    a, b = _prepare(img, img2, crop_border, test_y_channel)
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0 * 255.0 / mse))


def gaussian_kernel_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The float64 kernel `cv2.getGaussianKernel(size, sigma)` returns: exp(-x^2 / (2 sigma^2)),
    normalised by multiplying with 1 / (running sum), as OpenCV computes it."""
    scale2 = -0.5 / (sigma * sigma)
    values = [math.exp(scale2 * x * x) for x in (i - (size - 1) * 0.5 for i in range(size))]
    total = 0.0
    for v in values:
        total += v
    return np.array(values) * (1.0 / total)


def _filter_valid(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D correlation with the separable window outer(kernel, kernel), 'valid' region only."""
    rows = sliding_window_view(img, kernel.size, axis=0) @ kernel
    return sliding_window_view(rows, kernel.size, axis=1) @ kernel


def _ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    k = gaussian_kernel_1d(11, 1.5)
    mu1, mu2 = _filter_valid(a, k), _filter_valid(b, k)
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = _filter_valid(a * a, k) - mu1_sq
    sigma2_sq = _filter_valid(b * b, k) - mu2_sq
    sigma12 = _filter_valid(a * b, k) - mu1_mu2
    num = (2 * mu1_mu2 + _SSIM_C1) * (2 * sigma12 + _SSIM_C2)
    den = (mu1_sq + mu2_sq + _SSIM_C1) * (sigma1_sq + sigma2_sq + _SSIM_C2)
    return float((num / den).mean())


def calculate_ssim(img, img2, crop_border: int, test_y_channel: bool = True) -> float:
    """SSIM (BasicSR `calculate_ssim`, HWC): mean SSIM map over the valid region, mean of channels.

    Args as `calculate_psnr`; the image after crop_border must be at least 11x11.
    """
    a, b = _prepare(img, img2, crop_border, test_y_channel)
    if min(a.shape[:2]) < 11:
        raise EvaluationError(f"SSIM needs at least 11x11 pixels after crop_border, got {a.shape[:2]}")
    return float(np.mean([_ssim_plane(a[..., c], b[..., c]) for c in range(a.shape[2])]))
