"""Per-sample 2-D filtering with reflect padding (BasicSR `filter2D`) and the USM sharpener.

The per-sample blur folds the batch into channels (`[1, H, W, B*C]` with a depthwise filter), the
same trick as the official grouped conv. Reflect padding of an image that occupies only the
top-left [h, w] of a static canvas is a gather with reflected indices, so shapes stay static.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _reflect_indices(length, capacity: int, pad: int) -> tf.Tensor:
    """Indices into [0, length) of a reflect-padded axis of `capacity + 2 pad` (torch 'reflect')."""
    q = tf.range(-pad, capacity + pad, dtype=tf.int32)
    last = tf.cast(length, tf.int32) - 1
    q = tf.abs(q)
    q = tf.where(q > last, 2 * last - q, q)
    return tf.clip_by_value(q, 0, capacity - 1)  # positions far outside the valid region: any index


def filter2d(images: tf.Tensor, kernels: tf.Tensor, valid_hw=None) -> tf.Tensor:
    """Cross-correlates each sample with its own kernel after reflect padding by k // 2.

    images [B, H, W, C]; kernels [B, k, k] (k odd); valid_hw: the (h, w) of the valid top-left
    region when images is a canvas (default: the whole image). Returns [B, H, W, C]; outside the
    valid region the values are meaningless (callers mask them).
    """
    batch, height, width, channels = images.shape
    k = kernels.shape[-1]
    pad = k // 2
    if valid_hw is None:
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    else:
        padded = tf.gather(images, _reflect_indices(valid_hw[0], height, pad), axis=1)
        padded = tf.gather(padded, _reflect_indices(valid_hw[1], width, pad), axis=2)
    # [B, Hp, Wp, C] -> [1, Hp, Wp, B*C]; filter [k, k, B*C, 1] (each sample's kernel for its C channels)
    folded = tf.reshape(tf.transpose(padded, [1, 2, 0, 3]), [1, height + 2 * pad, width + 2 * pad, -1])
    depthwise = tf.repeat(tf.transpose(kernels, [1, 2, 0]), channels, axis=2)[..., None]
    out = tf.nn.depthwise_conv2d(folded, depthwise, strides=[1, 1, 1, 1], padding="VALID")
    out = tf.reshape(out, [height, width, batch if batch is not None else -1, channels])
    return tf.transpose(out, [2, 0, 1, 3])


def gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """OpenCV `getGaussianKernel`: exp(-(i - (size-1)/2)^2 / (2 sigma^2)), normalised (float64)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def reflect_filter_matrix(length: int, taps: np.ndarray) -> np.ndarray:
    """[length, length] matrix M with `M @ v` = 1-D correlation of v with taps after reflect padding.

    Requires length > len(taps) // 2 (torch's reflect padding has the same limit).
    """
    radius = len(taps) // 2
    if length <= radius:
        raise ValueError(f"reflect padding of {radius} needs a side longer than {radius}, got {length}")
    m = np.zeros((length, length), np.float64)
    for i in range(length):
        for t, w in enumerate(taps):
            j = i + t - radius
            j = -j if j < 0 else (2 * (length - 1) - j if j >= length else j)
            m[i, j] += w
    return m.astype(np.float32)


class USMSharp:
    """Unsharp masking of the GT as in BasicSR's USMSharp (51x51 Gaussian, sigma 8, weight 0.5, thr 10).

    The 2-D Gaussian is the outer product of two 1-D ones, so its reflect-padded filtering is
    `M_h @ img @ M_w^T` with per-axis matrices (built once per image size): exact, static-shaped,
    matmul-only (fast under XLA), instead of the official 51x51 = 2601-tap conv.
    """

    def __init__(self, kernel_size: int = 51, sigma: float = 8.0, weight: float = 0.5,
                 threshold: float = 10.0):
        self.taps = gaussian_kernel_1d(kernel_size, sigma)
        self.weight = weight
        self.threshold = threshold
        self._matrices: dict[int, np.ndarray] = {}

    @classmethod
    def from_config(cls, config) -> USMSharp:
        """The sharpener a `DegradationConfig` describes (usm_kernel_size, usm_sigma, usm_weight,
        usm_threshold)."""
        return cls(config.usm_kernel_size, config.usm_sigma, config.usm_weight, config.usm_threshold)

    def _matrix(self, length: int) -> tf.Tensor:
        if length not in self._matrices:  # numpy cache: a tf.constant would belong to one graph
            self._matrices[length] = reflect_filter_matrix(length, self.taps)
        return tf.constant(self._matrices[length])

    def blur(self, images: tf.Tensor) -> tf.Tensor:
        """images [B, H, W, C] (static H, W) -> Gaussian-blurred [B, H, W, C]."""
        _, height, width, _ = images.shape
        out = tf.einsum("ih,bhwc->biwc", self._matrix(height), images)
        return tf.einsum("jw,biwc->bijc", self._matrix(width), out)

    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        """images float32 [B, H, W, C] in [0, 1] -> sharpened, same shape."""
        images = tf.convert_to_tensor(images, tf.float32)
        blurred = self.blur(images)
        residual = images - blurred
        mask = tf.cast(tf.abs(residual) * 255.0 > self.threshold, tf.float32)
        soft_mask = self.blur(mask)
        sharp = tf.clip_by_value(images + self.weight * residual, 0.0, 1.0)
        return soft_mask * sharp + (1.0 - soft_mask) * images
