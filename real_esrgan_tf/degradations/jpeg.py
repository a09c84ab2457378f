"""DiffJPEG (as used by Real-ESRGAN, non-differentiable rounding) in float TensorFlow.

JPEG's lossy steps are simulated without an entropy coder: RGB -> YCbCr, 4:2:0 chroma by 2x2
averaging, 8x8 DCT (a matmul), quantisation by the libjpeg tables scaled by the per-sample float
quality, rounding, dequantisation, IDCT, chroma upsampling by repetition, YCbCr -> RGB, clip.
`tf.io.encode_jpeg` would be CPU-only, integer-quality and not XLA-compilable.
Like the official DiffJPEG, the tables are used transposed (`.T` in mlomnitz/DiffJPEG and BasicSR):
we keep that to reproduce the official degradation; the luma table is nearly symmetric.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

# libjpeg's standard tables (ITU T.81 Annex K), natural order.
_LUMA = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], np.float32)
_CHROMA = np.full((8, 8), 99, np.float32)
_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
LUMA_TABLE = _LUMA.T.copy()  # as the official code uses them
CHROMA_TABLE = _CHROMA.T.copy()

_RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                         np.float32)
_YCBCR_TO_RGB = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], np.float32)


def _dct_matrix() -> np.ndarray:
    """C[u, x] = alpha(u) / 2 cos((2x + 1) u pi / 16): coefficients = C @ block @ C^T (orthonormal)."""
    c = np.zeros((8, 8), np.float64)
    for u in range(8):
        alpha = 1 / math.sqrt(2) if u == 0 else 1.0
        for x in range(8):
            c[u, x] = 0.5 * alpha * math.cos((2 * x + 1) * u * math.pi / 16)
    return c.astype(np.float32)


_DCT = _dct_matrix()


def quality_to_factor(quality: tf.Tensor) -> tf.Tensor:
    """libjpeg's quality scaling as a float: q < 50 -> 50 / q, else 2 - q / 50 (table multiplier)."""
    quality = tf.cast(quality, tf.float32)
    return tf.where(quality < 50, 5000.0 / quality, 200.0 - 2.0 * quality) / 100.0


_DCT2 = np.kron(_DCT, _DCT)  # [(u, v), (x, y)]: the 2-D DCT of a row-major flattened 8x8 block


def _compress_plane(plane: tf.Tensor, table: np.ndarray, factor: tf.Tensor) -> tf.Tensor:
    """[B, H, W] (H, W multiples of 8) -> the same plane after DCT, quantise, round, dequantise, IDCT.

    Blocks become 64-vectors with space_to_depth (row-major within the block), so the DCT and its
    inverse are single [N, 64] x [64, 64] matmuls.
    """
    blocks = tf.nn.space_to_depth(plane[..., None] - 128.0, 8)  # [B, H/8, W/8, 64]
    coef = tf.linalg.matmul(blocks, tf.constant(_DCT2), transpose_b=True)  # index u * 8 + v
    step = tf.constant(table.reshape(64)) * factor[:, None, None, None]  # [B, 1, 1, 64]
    # libjpeg clamps table entries to >= 1; without it quality 100 divides by zero. This changes
    # nothing for qualities <= 95 (the smallest official step is 10 * 0.1 = 1).
    step = tf.maximum(step, 1.0)
    coef = tf.round(coef / step) * step
    pixels = tf.linalg.matmul(coef, tf.constant(_DCT2)) + 128.0
    return tf.nn.depth_to_space(pixels, 8)[..., 0]


def diff_jpeg(images: tf.Tensor, quality: tf.Tensor, fused: bool = True) -> tf.Tensor:
    """images float32 [B, H, W, 3] in [0, 1]; quality float [B] in (0, 100] -> [B, H, W, 3] in [0, 1].

    Sides that are not multiples of 16 are zero-padded at the bottom/right and cropped back, as the
    official DiffJPEG does (so pass a zero-filled canvas to reproduce an image of another size).
    fused: in a graph, run as one XLA cluster (2.6x faster on CPU than op-by-op: the work is a chain
    of memory-bound elementwise steps; inside an outer XLA function it is simply inlined). Eager
    calls run op by op (a compile per new shape would cost more than it saves).
    """
    fused = fused and not tf.executing_eagerly()
    return (_diff_jpeg_fused if fused else _diff_jpeg)(images, quality)


def _diff_jpeg(images: tf.Tensor, quality: tf.Tensor) -> tf.Tensor:
    _, height, width, _ = images.shape
    pad_h, pad_w = -height % 16, -width % 16
    x = tf.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]]) * 255.0
    factor = quality_to_factor(quality)
    ycbcr = tf.einsum("bhwc,dc->bhwd", x, tf.constant(_RGB_TO_YCBCR)) + tf.constant([0.0, 128.0, 128.0])
    luma = _compress_plane(ycbcr[..., 0], LUMA_TABLE, factor)
    chroma = tf.nn.avg_pool2d(ycbcr[..., 1:], 2, 2, "VALID")  # [B, H/2, W/2, 2], 4:2:0
    cb = _compress_plane(chroma[..., 0], CHROMA_TABLE, factor)
    cr = _compress_plane(chroma[..., 1], CHROMA_TABLE, factor)
    chroma = tf.stack([cb, cr], axis=-1)
    chroma = tf.repeat(tf.repeat(chroma, 2, axis=1), 2, axis=2)
    ycbcr = tf.concat([luma[..., None], chroma], axis=-1) - tf.constant([0.0, 128.0, 128.0])
    rgb = tf.einsum("bhwd,cd->bhwc", ycbcr, tf.constant(_YCBCR_TO_RGB))
    rgb = tf.clip_by_value(rgb, 0.0, 255.0) / 255.0
    return rgb[:, :height, :width, :]


_diff_jpeg_fused = tf.function(_diff_jpeg, jit_compile=True, autograph=False)
