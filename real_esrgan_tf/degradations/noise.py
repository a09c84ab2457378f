"""Gaussian and Poisson noise with per-sample strength, built only from ops with GPU kernels.

TF's Poisson samplers are CPU-only and do not compile with XLA, so `poisson_quantile` is our own:
exact inversion of the CDF for small rates, and for rates >= 8 a third-order Cornish-Fisher expansion
of the quantile with a continuity correction (its pmf is within 4e-4 of Poisson's at rate 8, and
mean/variance within 0.05%), which costs a handful of flops instead of a long CDF loop.
Gray variants reuse the first channel of the colour draw: every pixel still gets an independent
draw, and it saves a second random field.
"""

from __future__ import annotations

import tensorflow as tf

# Rates below this are inverted exactly from a CDF table of _TERMS entries (P(X >= 31 | rate < 8) is
# about 1e-9); larger rates use the Cornish-Fisher quantile.
_INVERSION_BELOW = 8.0
_TERMS = 32
_GRAY = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale, used by the official Poisson gray noise


def poisson_quantile(u: tf.Tensor, rate_index: tf.Tensor, rates: tf.Tensor) -> tf.Tensor:
    """Inverse-CDF Poisson draws: u uniform in [0, 1), rate_index int32 into rates [R] (>= 0).

    Every pixel of an 8-bit image has one of 256 rates per sample, so the CDFs of the small rates
    fit in a [R, 32] table and inversion is a 5-step binary search of gathers (instead of a loop of
    32 passes over the image). Large rates: X = floor(rate + sd w + 1/2) with w the Cornish-Fisher
    expansion (skewness 1/sqrt(rate), excess kurtosis 1/rate) of z = ndtri(u); sd = sqrt(rate - 1/12)
    because rounding adds a variance of 1/12 (Sheppard). Its pmf is within 4e-4 of Poisson's at 8.
    """
    rates = tf.cast(rates, tf.float32)
    small = tf.minimum(rates, _INVERSION_BELOW)[:, None]  # [R, 1]
    k = tf.range(_TERMS, dtype=tf.float32)[None, :]
    log_pmf = k * tf.math.log(tf.maximum(small, 1e-30)) - small - tf.math.lgamma(k + 1.0)
    pmf = tf.where((small > 0) | (k == 0), tf.exp(log_pmf), tf.zeros_like(log_pmf))  # rate 0: X = 0
    table = tf.reshape(tf.cumsum(pmf, axis=1), [-1])  # [R * 32]
    base = rate_index * _TERMS
    count = tf.zeros_like(rate_index)
    step = _TERMS // 2
    while step >= 1:  # count = #{k : CDF(k) < u}
        probe = tf.gather(table, base + count + step - 1)
        count = tf.where(probe < u, count + step, count)
        step //= 2
    lam = tf.gather(rates, rate_index)
    big = tf.maximum(lam, _INVERSION_BELOW)
    z = tf.math.ndtri(tf.clip_by_value(u, 1e-7, 1.0 - 1e-7))
    root, z3 = tf.sqrt(big), z * z * z
    skew = (z * z - 1.0) / 6.0 + (z3 - 3.0 * z) / (24.0 * root) - (2.0 * z3 - 5.0 * z) / (36.0 * root)
    approx = tf.maximum(tf.floor(big + tf.sqrt(big - 1.0 / 12.0) * z + skew + 0.5), 0.0)
    return tf.where(lam < _INVERSION_BELOW, tf.cast(count, tf.float32), approx)


def poisson_sample(lam: tf.Tensor, seed) -> tf.Tensor:
    """Poisson(lam) draws for any float rates >= 0 (same shape), stateless-seeded.

    The rates are deduplicated (tf.unique works under XLA) and sampled with `poisson_quantile`.
    """
    lam = tf.convert_to_tensor(lam, tf.float32)
    rates, index = tf.unique(tf.reshape(lam, [-1]))
    u = tf.random.stateless_uniform(tf.shape(index), seed=seed)
    return tf.reshape(poisson_quantile(u, index, rates), tf.shape(lam))


def gaussian_noise(images, sigma, gray, seed) -> tf.Tensor:
    """Noise (not yet added) of per-sample sigma (0..255 scale); gray samples share it across RGB.

    images [B, H, W, 3]; sigma [B] float; gray [B] bool. Returns [B, H, W, 3].
    """
    shape = tf.shape(images)
    scale = (tf.cast(sigma, tf.float32) / 255.0)[:, None, None, None]
    color = tf.random.stateless_normal(shape, seed=seed) * scale
    mono = color[..., :1]  # an independent draw per pixel as well; saves a second normal field
    return tf.where(gray[:, None, None, None], tf.broadcast_to(mono, shape), color)


def count_levels(images, valid=None) -> tf.Tensor:
    """Per-sample number of distinct 8-bit levels (over all channels and valid pixels): [B] float.

    A 256-bin presence histogram via a segment max (GPU and XLA friendly), instead of torch.unique.
    valid: optional [B, H, W, 1] bool mask of the pixels that count.
    """
    batch = tf.shape(images)[0]
    levels = tf.cast(tf.clip_by_value(tf.round(images * 255.0), 0.0, 255.0), tf.int32)
    ids = levels + 256 * tf.range(batch)[:, None, None, None]
    if valid is not None:
        ids = tf.where(tf.broadcast_to(valid, tf.shape(ids)), ids, 256 * batch)  # dropped segment
    ones = tf.ones_like(ids, dtype=tf.float32)
    present = tf.math.unsorted_segment_max(tf.reshape(ones, [-1]), tf.reshape(ids, [-1]), 256 * batch + 1)
    present = tf.reshape(present[: 256 * batch], [batch, 256]) > 0
    return tf.reduce_sum(tf.cast(present, tf.float32), axis=1)


def _poisson_of(images, valid, u):
    """Official per-sample Poisson: round to 8 bits, vals = 2^ceil(log2(#levels)), Poisson(img*vals)/vals.

    Returns the noise Poisson(img * vals) / vals - img (img rounded), from uniforms u (same shape).
    """
    levels = tf.cast(tf.clip_by_value(tf.round(images * 255.0), 0.0, 255.0), tf.int32)
    count = count_levels(images, valid)[:, None]
    # 2^ceil(log2(count)) without float log rounding: the smallest power of two >= count
    exponent = tf.reduce_sum(tf.cast(count > tf.constant([2.0**k for k in range(9)]), tf.float32), axis=1)
    vals = tf.pow(2.0, exponent)  # [B]
    rates = tf.reshape(tf.range(256, dtype=tf.float32)[None, :] / 255.0 * vals[:, None], [-1])  # [B * 256]
    batch = tf.shape(images)[0]
    index = levels + 256 * tf.reshape(tf.range(batch), [-1, 1, 1, 1])
    vals = vals[:, None, None, None]
    rounded = tf.cast(levels, tf.float32) / 255.0
    return poisson_quantile(u, index, rates) / vals - rounded


def poisson_noise(images, scale, gray, seed, valid=None, fused: bool = True) -> tf.Tensor:
    """Poisson noise (not yet added) times per-sample scale; gray samples use the luma's noise.

    images [B, H, W, 3] in [0, 1]; scale [B]; gray [B] bool; valid optional [B, H, W, 1] bool;
    fused: as in `diff_jpeg`.
    """
    # The random field stays outside the XLA cluster (XLA's CPU Philox is very slow); the rest is
    # gathers and elementwise math that XLA fuses (about 2x faster on CPU than op-by-op).
    u = tf.random.stateless_uniform(tf.shape(images), seed=seed)
    if valid is None:
        valid = tf.ones_like(images[..., :1], dtype=tf.bool)
    poisson = _poisson_noise_fused if fused and not tf.executing_eagerly() else _poisson_noise
    return poisson(images, tf.cast(scale, tf.float32), gray, valid, u)


def _poisson_noise(images, scale, gray, valid, u):
    color = _poisson_of(images, valid, u)
    luma = tf.reduce_sum(images * tf.constant(_GRAY), axis=-1, keepdims=True)
    mono = tf.broadcast_to(_poisson_of(luma, valid, u[..., :1]), tf.shape(images))
    noise = tf.where(gray[:, None, None, None], mono, color)
    return noise * scale[:, None, None, None]


_poisson_noise_fused = tf.function(_poisson_noise, jit_compile=True, autograph=False)
