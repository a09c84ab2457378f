"""NIQE (Mittal, Soundararajan, Bovik: "Making a 'Completely Blind' Image Quality Analyzer", 2013),
computed as BasicSR 1.4.2's `calculate_niqe` computes it (`basicsr/metrics/niqe.py`).

Lower is better. Recipe: Y (or gray) on the uint8 scale, rounded; cropped to whole 96x96 blocks
(no overlap, as the official MATLAB release uses); at two scales (the image, then MATLAB-bicubic
halved): MSCN coefficients with the 7x7 Gaussian window (edge-replicated borders, as
scipy.ndimage.convolve mode='nearest'), per block 18 features: the GGD fit of the MSCN map (shape,
scale) and AGGD fits (shape, mean, left and right scales) of the products with the four neighbours
(right, down, down-right, down-left, circular at the block edge); shapes are searched on the grid
0.2:0.001:10 by moment matching. The multivariate Gaussian of the blocks' features (nan-rows
dropped for the covariance) is compared with the pristine model: sqrt(d' pinv((C_p + C_d) / 2) d).

`niqe_pris_params.npz` (mu_pris_param, cov_pris_param, gaussian_window) is vendored from BasicSR
1.4.2 (Apache-2.0), which converted it from the NIQE authors' MATLAB release (modelparameters.mat).
Arithmetic follows BasicSR's dtypes (float32 image and MSCN map, float64 features).
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import numpy as np

from real_esrgan_tf.evaluation.matlab_resize import imresize
from real_esrgan_tf.evaluation.metrics import EvaluationError, _crop, _hwc, rgb_to_y, to_uint8_range

BLOCK_SIZE = 96
_PARAMS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "niqe_pris_params.npz")
_NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@functools.lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu_pris_param [1, 36], cov_pris_param [36, 36], gaussian_window [7, 7]), float64."""
    with np.load(_PARAMS_FILE) as params:
        return params["mu_pris_param"], params["cov_pris_param"], params["gaussian_window"]


@functools.lru_cache(maxsize=1)
def _shape_grid() -> tuple[np.ndarray, np.ndarray]:
    """Shape parameters 0.2:0.001:10 and the moment ratio Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))."""
    shapes = np.arange(0.2, 10.001, 0.001)
    inv = np.reciprocal(shapes)
    g1 = np.array([math.gamma(v) for v in inv])
    g2 = np.array([math.gamma(v) for v in inv * 2])
    g3 = np.array([math.gamma(v) for v in inv * 3])
    return shapes, np.square(g2) / (g1 * g3)


def _fit_aggd(block: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalized Gaussian fit by moment matching: (shape, left scale, right scale)."""
    shapes, ratios = _shape_grid()
    x = block.ravel()
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # an empty side gives nan, as in BasicSR
        left_std = np.sqrt(np.mean(x[x < 0] ** 2))
        right_std = np.sqrt(np.mean(x[x > 0] ** 2))
        asym = left_std / right_std
        ratio = (np.mean(np.abs(x))) ** 2 / np.mean(x**2)
        ratio_norm = (ratio * (asym**3 + 1) * (asym + 1)) / ((asym**2 + 1) ** 2)
    shape = shapes[np.argmin((ratios - ratio_norm) ** 2)]
    spread = np.sqrt(math.gamma(1 / shape) / math.gamma(3 / shape))
    return shape, left_std * spread, right_std * spread


def _block_features(block: np.ndarray) -> list[float]:
    shape, left, right = _fit_aggd(block)
    features = [shape, (left + right) / 2]
    for shift in _NEIGHBOUR_SHIFTS:
        shape, left, right = _fit_aggd(block * np.roll(block, shift, axis=(0, 1)))
        mean = (right - left) * (math.gamma(2 / shape) / math.gamma(1 / shape))
        features.extend([shape, mean, left, right])
    return features


def _smooth(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """float32 (H, W) filtered with the (symmetric) window, edge-replicated borders, float64
    accumulation in row-major tap order, as scipy.ndimage.convolve(mode='nearest') does."""
    kh, kw = window.shape
    h, w = img.shape
    padded = np.pad(img.astype(np.float64), ((kh // 2, kh // 2), (kw // 2, kw // 2)), mode="edge")
    flipped = window[::-1, ::-1]
    acc = np.zeros((h, w))
    for i in range(kh):
        for j in range(kw):
            acc += padded[i : i + h, j : j + w] * flipped[i, j]
    return acc.astype(img.dtype)


def _mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    mu = _smooth(img, window)
    sigma = np.sqrt(np.abs(_smooth(np.square(img), window) - np.square(mu)))
    return (img - mu) / (sigma + 1)


def niqe_of_plane(img: np.ndarray) -> float:
    """NIQE of a float32 (H, W) plane on the [0, 255] scale (already rounded, as BasicSR rounds).

    Raises EvaluationError when fewer than two whole 96x96 blocks fit (one block has no covariance).
    """
    mu_pris, cov_pris, window = pristine_model()
    h, w = img.shape
    blocks_h, blocks_w = h // BLOCK_SIZE, w // BLOCK_SIZE
    if blocks_h * blocks_w < 2:
        raise EvaluationError(
            f"NIQE needs at least two {BLOCK_SIZE}x{BLOCK_SIZE} blocks, the image is {h}x{w}"
        )
    img = img[: blocks_h * BLOCK_SIZE, : blocks_w * BLOCK_SIZE]
    per_scale = []
    for scale in (1, 2):
        mscn = _mscn(img, window)
        size = BLOCK_SIZE // scale
        rows = []
        for bw in range(blocks_w):
            for bh in range(blocks_h):
                rows.append(_block_features(mscn[bh * size : (bh + 1) * size, bw * size : (bw + 1) * size]))
        per_scale.append(np.array(rows))
        if scale == 1:
            img = imresize(img / 255.0, 0.5, antialiasing=True).astype(np.float32) * 255.0
    features = np.concatenate(per_scale, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = np.nanmean(features, axis=0)
        cov = np.cov(features[~np.isnan(features).any(axis=1)], rowvar=False)
    diff = mu_pris - mu
    quality = diff @ np.linalg.pinv((cov_pris + cov) / 2) @ diff.T
    return float(np.squeeze(np.sqrt(quality)))


def calculate_niqe(img, crop_border: int, convert_to: str = "y") -> float:
    """NIQE of an (H, W, 3) RGB or (H, W[, 1]) gray image (uint8, uint16 or float on [0, 255]).

    Args:
        crop_border: pixels dropped on each side first (BasicSR applies it after the conversion).
        convert_to: 'y' (BT.601 luma, BasicSR's default) or 'gray' (0.299 R + 0.587 G + 0.114 B,
            as cv2.COLOR_BGR2GRAY); a one-channel image is used as it is.
    """
    if convert_to not in ("y", "gray"):
        raise EvaluationError(f"convert_to {convert_to!r} is not 'y' or 'gray'")
    img = _hwc(to_uint8_range(np.asarray(img))).astype(np.float32)
    if convert_to == "gray" and img.shape[2] == 3:
        unit = img / 255.0
        r, g, b = unit[..., 0], unit[..., 1], unit[..., 2]
        plane = (b * np.float32(0.114) + g * np.float32(0.587) + r * np.float32(0.299)) * 255.0
    else:
        plane = rgb_to_y(img)[..., 0]
    plane = _crop(plane, crop_border)
    return niqe_of_plane(plane.round())
