"""PyTorch `F.interpolate` semantics (area, bilinear, bicubic) as matrix multiplies with static shapes.

Why matrices: TF's bicubic uses a = -0.5 (PyTorch a = -0.75), its area is not adaptive pooling, and
`ResizeBicubic`/`ResizeArea` have no GPU kernel and do not compile with XLA. A separable resize is
`out = A_h @ img @ A_w^T`; the per-axis matrices are built in-graph from the (dynamic) input and
output sizes but have a static *capacity* shape, so images of a per-batch random size live in a
fixed-size canvas (valid region at the top-left, zeros elsewhere) and XLA sees static shapes only.
Rows of A beyond the output size and columns beyond the input size are zero, which keeps the
canvas outside the valid region at zero.
"""

from __future__ import annotations

import tensorflow as tf

from real_esrgan_tf.degradations.config import ResizeMode

_CUBIC_A = -0.75  # PyTorch's bicubic coefficient (TF uses -0.5)


def output_size(in_size, scale) -> tf.Tensor:
    """`F.interpolate(scale_factor=s)` output length: floor(in * s), computed in float64 as torch does."""
    size = tf.floor(tf.cast(in_size, tf.float64) * tf.cast(scale, tf.float64))
    return tf.cast(size, tf.int32)


def _source_scale(in_size, out_size, scale):
    """in/out, or 1/scale_factor when the caller passed one (torch then ignores the sizes' ratio)."""
    if scale is None:
        return tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    return tf.cast(1.0 / tf.cast(scale, tf.float64), tf.float32)


def _cubic_weights(t):
    """Keys cubic convolution weights for taps at offsets -1, 0, 1, 2 from floor(src); t in [0, 1]."""
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)


def resize_matrix(in_size, out_size, in_capacity: int, out_capacity: int, mode, scale=None) -> tf.Tensor:
    """[out_capacity, in_capacity] float32 matrix A with `A @ column` = torch's 1-D interpolation.

    in_size/out_size: int32 scalars (may be dynamic) <= the capacities. mode: `ResizeMode` (Python
    int or scalar tensor, selecting among the three matrices). scale: the `scale_factor` given to
    torch, if any (used by bilinear/bicubic source coordinates; area only depends on the sizes).
    """
    in_size = tf.cast(in_size, tf.int32)
    out_size = tf.cast(out_size, tf.int32)
    dst = tf.range(out_capacity, dtype=tf.int32)  # [O]
    cols = tf.range(in_capacity, dtype=tf.int32)[None, :]  # [1, I]
    row_valid = tf.cast(dst < out_size, tf.float32)[:, None]
    col_valid = cols < in_size

    # area = adaptive average pooling: [floor(o * in / out), ceil((o + 1) * in / out))
    safe_out = tf.maximum(out_size, 1)
    start = (dst * in_size) // safe_out
    end = ((dst + 1) * in_size + safe_out - 1) // safe_out
    inside = (cols >= start[:, None]) & (cols < end[:, None])
    area = tf.cast(inside, tf.float32) / tf.cast(tf.maximum(end - start, 1), tf.float32)[:, None]

    rscale = _source_scale(in_size, out_size, scale)
    src = rscale * (tf.cast(dst, tf.float32) + 0.5) - 0.5  # [O], half-pixel centres
    last = in_size - 1

    # bilinear: source clamped at 0, second tap clamped at the last pixel
    src_lin = tf.maximum(src, 0.0)
    i0 = tf.minimum(tf.cast(tf.floor(src_lin), tf.int32), last)
    lam = tf.clip_by_value(src_lin - tf.cast(i0, tf.float32), 0.0, 1.0)
    i1 = tf.minimum(i0 + 1, last)
    bilinear = (tf.cast(cols == i0[:, None], tf.float32) * (1.0 - lam)[:, None]
                + tf.cast(cols == i1[:, None], tf.float32) * lam[:, None])

    # bicubic: 4 taps around floor(src), indices clamped to the border
    ic = tf.minimum(tf.cast(tf.floor(src), tf.int32), last)
    t = tf.clip_by_value(src - tf.cast(ic, tf.float32), 0.0, 1.0)
    bicubic = tf.zeros_like(area)
    for offset, weight in zip((-1, 0, 1, 2), _cubic_weights(t), strict=True):
        idx = tf.clip_by_value(ic + offset, 0, last)
        bicubic += tf.cast(cols == idx[:, None], tf.float32) * weight[:, None]

    matrix = tf.gather(tf.stack([area, bilinear, bicubic]), tf.cast(mode, tf.int32))
    return matrix * row_valid * tf.cast(col_valid, tf.float32)


def resize(images, in_hw, out_hw, out_capacity: tuple[int, int], mode, scale=None) -> tf.Tensor:
    """Resizes the valid [:h, :w] region of `images` [B, H, W, C] to out_hw inside an out_capacity canvas.

    in_hw / out_hw: pairs of int32 scalars; mode: `ResizeMode`; scale: torch's scale_factor or None.
    Returns [B, out_capacity[0], out_capacity[1], C], zero outside the valid output region.
    """
    _, height, width, _ = images.shape
    rows = resize_matrix(in_hw[0], out_hw[0], height, out_capacity[0], mode, scale)  # [Ho, H]
    cols = resize_matrix(in_hw[1], out_hw[1], width, out_capacity[1], mode, scale)  # [Wo, W]
    out = tf.einsum("oh,bhwc->bowc", rows, images)
    return tf.einsum("pw,bowc->bopc", cols, out)


def resize_static(images, out_hw: tuple[int, int], mode, scale=None) -> tf.Tensor:
    """`F.interpolate(images, size=out_hw, mode)` for a whole static-shaped [B, H, W, C] image."""
    _, height, width, _ = images.shape
    return resize(images, (height, width), out_hw, out_hw, mode, scale)


__all__ = ["ResizeMode", "output_size", "resize", "resize_matrix", "resize_static"]
