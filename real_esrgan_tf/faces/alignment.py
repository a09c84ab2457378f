"""Five-point face alignment to the 512 FFHQ template and the warps of facexlib's `FaceRestoreHelper`.

`estimate_similarity` is `cv2.estimateAffinePartial2D(landmarks, template, method=cv2.LMEDS)`: a least-
median-of-squares search over point pairs drawn with OpenCV's own random sequence (its `cv::RNG`
multiply-with-carry generator seeded with all ones, 13 draws for 5 points at confidence 0.99), the inliers
within 2.5 * 1.4826 * (1 + 5 / (n - 2)) * sqrt(best median), then the least-squares similarity over the
inliers (OpenCV refines with Levenberg-Marquardt, which converges to the same linear least-squares
solution). `warp_affine` is `cv2.warpAffine` with bilinear interpolation and a constant border: OpenCV 5
samples 8-bit images at exact float coordinates (and rounds) but float64 images on a 1/32-pixel grid
(its older fixed-point remap tables); facexlib warps its float64 paste mask, hence `grid=True`.

Reference: facexlib 0.3.0 `utils/face_restoration_helper.py`; OpenCV `estimateAffinePartial2D`,
`warpAffine`, `invertAffineTransform`, `GaussianBlur`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

# FaceRestoreHelper's five landmarks (eyes, nose, mouth corners) of an FFHQ face at 512 x 512, (x, y).
FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
     [201.26117, 371.41043], [313.08905, 371.15118]], np.float64)
# cv2.warpAffine's borderValue in facexlib, (135, 133, 132) in OpenCV's BGR order: RGB here.
FACE_BORDER_RGB = (132.0, 133.0, 135.0)

_LMEDS_CONFIDENCE = 0.99
_LMEDS_OUTLIER_RATIO = 0.45  # OpenCV's fixed assumption for LMEDS
_LMEDS_MAX_ITERS = 2000


class _OpenCvRng:
    """cv::RNG: 64-bit multiply-with-carry, `uniform(a, b)` = next() % (b - a) + a."""

    def __init__(self, state: int = (1 << 64) - 1):
        self.state = state

    def next(self) -> int:
        self.state = ((self.state & 0xFFFFFFFF) * 4164903690 + (self.state >> 32)) & ((1 << 64) - 1)
        return self.state & 0xFFFFFFFF

    def uniform(self, low: int, high: int) -> int:
        return low if low == high else self.next() % (high - low) + low


def _pair_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The similarity [[a, -b, tx], [b, a, ty]] mapping two points exactly onto two others."""
    (x1, y1), (x2, y2) = src.astype(np.float64)
    (u1, v1), (u2, v2) = dst.astype(np.float64)
    dx, dy, du, dv = x1 - x2, y1 - y2, u1 - u2, v1 - v2
    norm = dx * dx + dy * dy
    if norm == 0:
        return None
    a = (dx * du + dy * dv) / norm
    b = (dx * dv - dy * du) / norm
    return np.array([[a, -b, u1 - a * x1 + b * y1], [b, a, v1 - b * x1 - a * y1]])


def _squared_errors(matrix: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    m = matrix.astype(np.float32)
    ex = m[0, 0] * src[:, 0] + m[0, 1] * src[:, 1] + m[0, 2] - dst[:, 0]
    ey = m[1, 0] * src[:, 0] + m[1, 1] * src[:, 1] + m[1, 2] - dst[:, 1]
    return ex * ex + ey * ey  # float32 as OpenCV's


def _least_squares_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """argmin over (a, b, tx, ty) of sum |[[a, -b], [b, a]] p + t - q|^2 (linear)."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    n = len(src)
    rows = np.zeros((2 * n, 4))
    rows[0::2] = np.stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)], 1)
    rows[1::2] = np.stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)], 1)
    a, b, tx, ty = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def _lmeds_iterations(points_per_model: int = 2) -> int:
    num = math.log(max(1.0 - _LMEDS_CONFIDENCE, np.finfo(np.float64).tiny))
    denom = math.log(1.0 - (1.0 - _LMEDS_OUTLIER_RATIO) ** points_per_model)
    if denom >= 0 or -num >= _LMEDS_MAX_ITERS * -denom:
        return _LMEDS_MAX_ITERS
    return max(int(np.rint(num / denom)), 3)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) float64 similarity taking `src` (N, 2) points onto `dst` (N, 2), as
    `cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)[0]`. Points are float32 as OpenCV's."""
    src = np.asarray(src, np.float32).reshape(-1, 2)
    dst = np.asarray(dst, np.float32).reshape(-1, 2)
    n = len(src)
    if n < 2 or len(dst) != n:
        raise ValueError(f"need two equal sets of >= 2 points, got {len(src)} and {len(dst)}")
    if n == 2:
        best = _pair_similarity(src, dst)
        if best is None:
            raise ValueError("the two source points coincide")
        return _least_squares_similarity(src, dst)
    rng = _OpenCvRng()
    best, best_median = None, np.inf
    for _ in range(_lmeds_iterations()):
        first = rng.uniform(0, n)
        second = first
        while second == first:
            second = rng.uniform(0, n)
        model = _pair_similarity(src[[first, second]], dst[[first, second]])
        if model is None:
            continue
        median = float(np.partition(_squared_errors(model, src, dst), n // 2)[n // 2])
        if median < best_median:
            best, best_median = model, median
    if best is None:
        raise ValueError("all source points coincide")
    sigma = max(2.5 * 1.4826 * (1 + 5.0 / (n - 2)) * math.sqrt(best_median), 0.001)
    inliers = _squared_errors(best, src, dst) <= np.float32(sigma * sigma)
    if inliers.sum() < 2:
        return best
    return _least_squares_similarity(src[inliers], dst[inliers])


def all_pairs_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """LMedS over every pair instead of OpenCV's 13 random draws (for comparison in tests)."""
    src = np.asarray(src, np.float32)
    dst = np.asarray(dst, np.float32)
    fits = [m for i, j in itertools.combinations(range(len(src)), 2)
            if (m := _pair_similarity(src[[i, j]], dst[[i, j]])) is not None]
    return min(fits, key=lambda m: np.median(_squared_errors(m, src, dst)))


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """`cv2.invertAffineTransform` (a singular matrix gives zeros, as OpenCV)."""
    (a, b, c), (d, e, f) = np.asarray(matrix, np.float64)
    det = a * e - b * d
    det = 1.0 / det if det != 0 else 0.0
    a11, a12, a21, a22 = e * det, -b * det, -d * det, a * det
    return np.array([[a11, a12, -a11 * c - a12 * f], [a21, a22, -a21 * c - a22 * f]])


def _source_coordinates(inverse: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid: bool):
    """Source (x, y) of the destination pixels rows x cols: (floor, fraction) pairs."""
    if grid:  # OpenCV's fixed point: 10 fractional bits per term, then a 1/32-pixel grid
        col_x = np.rint(inverse[0, 0] * cols * 1024).astype(np.int64)
        col_y = np.rint(inverse[1, 0] * cols * 1024).astype(np.int64)
        row_x = np.rint((inverse[0, 1] * rows + inverse[0, 2]) * 1024).astype(np.int64) + 16
        row_y = np.rint((inverse[1, 1] * rows + inverse[1, 2]) * 1024).astype(np.int64) + 16
        x = (row_x[:, None] + col_x[None]) >> 5
        y = (row_y[:, None] + col_y[None]) >> 5
        return x >> 5, (x & 31).astype(np.float32) / 32, y >> 5, (y & 31).astype(np.float32) / 32
    x = inverse[0, 0] * cols[None] + inverse[0, 1] * rows[:, None] + inverse[0, 2]
    y = inverse[1, 0] * cols[None] + inverse[1, 1] * rows[:, None] + inverse[1, 2]
    x0, y0 = np.floor(x), np.floor(y)
    return x0.astype(np.int64), x - x0, y0.astype(np.int64), y - y0


def warp_affine(
    image: np.ndarray,
    matrix: np.ndarray,
    size: tuple[int, int],
    border_value=0.0,
    *,
    grid: bool | None = None,
    window: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """`cv2.warpAffine(image, matrix, size, INTER_LINEAR, BORDER_CONSTANT, border_value)`.

    image: (H, W) or (H, W, C) uint8 or float. matrix: (2, 3) source -> destination. size: (width,
    height) of the destination. border_value: a number or one per channel. grid: sample on OpenCV's
    1/32-pixel grid (default: for float64 images, as OpenCV 5 does). window: (y0, y1, x0, x1) computes
    only that part of the destination (what lies outside is the border value).
    Returns the image's dtype (uint8 rounded, as OpenCV).
    """
    image = np.asarray(image)
    squeeze = image.ndim == 2
    planes = image[..., None] if squeeze else image
    h, w, channels = planes.shape
    if grid is None:
        grid = image.dtype == np.float64
    y0, y1, x0, x1 = window if window is not None else (0, size[1], 0, size[0])
    inverse = invert_affine(matrix)
    sx, fx, sy, fy = _source_coordinates(inverse, np.arange(y0, y1, dtype=np.float64),
                                         np.arange(x0, x1, dtype=np.float64), grid)
    padded = np.empty((h + 2, w + 2, channels), np.float64)
    padded[:] = np.broadcast_to(np.asarray(border_value, np.float64), (channels,))
    padded[1:-1, 1:-1] = planes
    # Pixels outside the source read the border value; clipping to the one-pixel frame keeps that exact.
    cx0, cx1 = np.clip(sx, -1, w) + 1, np.clip(sx + 1, -1, w) + 1
    cy0, cy1 = np.clip(sy, -1, h) + 1, np.clip(sy + 1, -1, h) + 1
    fx = fx.astype(np.float64)[..., None]  # on the grid, multiples of 1/32: the weights are exact
    fy = fy.astype(np.float64)[..., None]
    value = (padded[cy0, cx0] * ((1 - fx) * (1 - fy)) + padded[cy0, cx1] * (fx * (1 - fy))
             + padded[cy1, cx0] * ((1 - fx) * fy) + padded[cy1, cx1] * (fx * fy))
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        value = np.clip(np.rint(value), info.min, info.max)
    value = value.astype(image.dtype)
    return value[..., 0] if squeeze else value


def destination_window(matrix: np.ndarray, source_size: tuple[int, int], size: tuple[int, int]):
    """(y0, y1, x0, x1): the destination pixels a (width, height) source can reach under `matrix`, with
    a one-pixel margin, clipped to the destination (width, height) `size`."""
    w, h = source_size
    corners = np.array([[-1, -1, 1], [w, -1, 1], [-1, h, 1], [w, h, 1]], np.float64) @ np.asarray(
        matrix, np.float64).T
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - 1, 0, size[0]))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + 2, 0, size[0]))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - 1, 0, size[1]))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + 2, 0, size[1]))
    return y0, max(y0, y1), x0, max(x0, x1)


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """`cv2.getGaussianKernel(size, sigma, CV_64F)`."""
    x = np.arange(size, dtype=np.float64) - (size - 1) * 0.5
    kernel = np.exp(-(x * x) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def gaussian_blur(image: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """`cv2.GaussianBlur(image, (size, size), sigma)` of a float64 (H, W) plane (reflect-101 border)."""
    kernel = gaussian_kernel(size, sigma)
    r = size // 2
    padded = np.pad(np.asarray(image, np.float64), r, mode="reflect")
    h, w = image.shape
    rows = np.zeros((h + 2 * r, w))
    for k, weight in enumerate(kernel):
        rows += weight * padded[:, k:k + w]
    out = np.zeros((h, w))
    for k, weight in enumerate(kernel):
        out += weight * rows[k:k + h]
    return out
