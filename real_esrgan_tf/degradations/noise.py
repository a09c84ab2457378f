"""Gaussian and Poisson noise with per-sample strength, built only from ops with GPU kernels.

TF's Poisson samplers are CPU-only and do not compile with XLA, so `poisson_sample` is our own:
exact inversion of the CDF for small rates, and for rates >= 8 a third-order Cornish-Fisher expansion
of the quantile with a continuity correction (its pmf is within 4e-4 of Poisson's at rate 8, and
mean/variance within 0.05%), which costs a handful of flops instead of a long CDF loop.
"""

from __future__ import annotations

import tensorflow as tf

# Rates below this use exact inversion with a fixed number of CDF terms; P(X >= _TERMS | lam < 8)
# is below 4e-6.
_INVERSION_BELOW = 8.0
_TERMS = 24
_GRAY = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale, used by the official Poisson gray noise


def poisson_sample(lam: tf.Tensor, seed) -> tf.Tensor:
    """Poisson(lam) draws (float32, same shape as lam >= 0), stateless-seeded."""
    lam = tf.convert_to_tensor(lam, tf.float32)
    seeds = tf.random.stateless_uniform([2, 2], seed=seed, minval=-(2**31) + 1, maxval=2**31 - 1,
                                        dtype=tf.int32)
    u = tf.random.stateless_uniform(tf.shape(lam), seed=seeds[0])
    z = tf.random.stateless_normal(tf.shape(lam), seed=seeds[1])
    # inversion: X = #{k : u > CDF(k)}, as a loop (a small graph; XLA keeps it a fused loop)
    small = tf.minimum(lam, _INVERSION_BELOW)

    def term(k, p, cdf, count):
        count += tf.cast(u > cdf, tf.float32)
        p = p * small / tf.cast(k + 1, tf.float32)
        return k + 1, p, cdf + p, count

    p0 = tf.exp(-small)
    start = (tf.constant(0), p0, p0, tf.zeros_like(lam))
    _, _, _, count = tf.while_loop(lambda k, *_: k < _TERMS, term, start, maximum_iterations=_TERMS)
    # Cornish-Fisher: x = lam + sd w, skewness 1/sqrt(lam), excess kurtosis 1/lam; the spread uses
    # sqrt(lam - 1/12) because rounding to integers adds a variance of 1/12 (Sheppard).
    big = tf.maximum(lam, _INVERSION_BELOW)
    root = tf.sqrt(big)
    z3 = z * z * z
    skew = (z * z - 1.0) / 6.0 + (z3 - 3.0 * z) / (24.0 * root) - (2.0 * z3 - 5.0 * z) / (36.0 * root)
    approx = tf.floor(big + tf.sqrt(big - 1.0 / 12.0) * z + skew + 0.5)
    return tf.where(lam < _INVERSION_BELOW, count, tf.maximum(approx, 0.0))


def gaussian_noise(images, sigma, gray, seed) -> tf.Tensor:
    """Noise (not yet added) of per-sample sigma (0..255 scale); gray samples share it across RGB.

    images [B, H, W, 3]; sigma [B] float; gray [B] bool. Returns [B, H, W, 3].
    """
    seeds = tf.random.stateless_uniform([2, 2], seed=seed, minval=-(2**31) + 1, maxval=2**31 - 1,
                                        dtype=tf.int32)
    shape = tf.shape(images)
    scale = (tf.cast(sigma, tf.float32) / 255.0)[:, None, None, None]
    color = tf.random.stateless_normal(shape, seed=seeds[0]) * scale
    mono = tf.random.stateless_normal(tf.concat([shape[:3], [1]], 0), seed=seeds[1]) * scale
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


def _poisson_of(images, valid, seed):
    """Official per-sample Poisson: round to 8 bits, vals = 2^ceil(log2(#levels)), Poisson(img*vals)/vals."""
    rounded = tf.clip_by_value(tf.round(images * 255.0), 0.0, 255.0) / 255.0
    count = count_levels(images, valid)[:, None]
    # 2^ceil(log2(count)) without float log rounding: the smallest power of two >= count
    exponent = tf.reduce_sum(tf.cast(count > tf.constant([2.0**k for k in range(9)]), tf.float32), axis=1)
    vals = tf.pow(2.0, exponent)[:, None, None, None]
    return poisson_sample(rounded * vals, seed) / vals - rounded


def poisson_noise(images, scale, gray, seed, valid=None) -> tf.Tensor:
    """Poisson noise (not yet added) times per-sample scale; gray samples use the luma's noise.

    images [B, H, W, 3] in [0, 1]; scale [B]; gray [B] bool; valid optional [B, H, W, 1] bool.
    """
    seeds = tf.random.stateless_uniform([2, 2], seed=seed, minval=-(2**31) + 1, maxval=2**31 - 1,
                                        dtype=tf.int32)
    color = _poisson_of(images, valid, seeds[0])
    luma = tf.reduce_sum(images * tf.constant(_GRAY), axis=-1, keepdims=True)
    mono = tf.broadcast_to(_poisson_of(luma, valid, seeds[1]), tf.shape(images))
    noise = tf.where(gray[:, None, None, None], mono, color)
    return noise * tf.cast(scale, tf.float32)[:, None, None, None]
