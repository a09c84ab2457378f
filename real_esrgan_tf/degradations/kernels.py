"""Blur kernels of the degradation, sampled per sample inside the graph.

Everything is stateless-seeded and built from ops that have GPU kernels and compile with XLA
(notably a hand-written Bessel J1: `tf.math.special.bessel_j1` does not compile with XLA). Kernels
are evaluated on the full 21x21 grid and masked to the drawn odd size, which equals the official
"compute k x k, normalise, zero-pad to 21" while keeping every shape static.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from real_esrgan_tf.degradations.config import BlurConfig, DegradationConfig, KernelType

KERNEL_SIZE = 21  # every kernel is zero-padded to 21x21
_HALF = KERNEL_SIZE // 2


def bessel_j1(x: tf.Tensor) -> tf.Tensor:
    """Bessel function of the first kind, order 1, in float64 (abs error < 1e-7 against scipy).

    Rational approximation on |x| < 8 and the Hankel asymptotic form with polynomial corrections
    beyond (Hart's coefficients, as tabulated in Numerical Recipes' `bessj1`). Built from
    elementwise ops only, so it runs on GPU and under XLA where `BesselJ1` does not compile.
    """
    x = tf.convert_to_tensor(x, tf.float64)
    ax = tf.abs(x)
    # |x| < 8: x * P(x^2) / Q(x^2)
    y = x * x
    num = x * (72362614232.0 + y * (-7895059235.0 + y * (242396853.1 + y * (
        -2972611.439 + y * (15704.48260 + y * (-30.16036606))))))
    den = 144725228442.0 + y * (2300535178.0 + y * (18583304.74 + y * (
        99447.43394 + y * (376.9991397 + y * 1.0))))
    small = num / den
    # |x| >= 8: sqrt(2 / (pi x)) * (P cos(xx) - z Q sin(xx)), xx = x - 3 pi / 4
    safe = tf.maximum(ax, 8.0)
    z = 8.0 / safe
    z2 = z * z
    xx = safe - 2.356194491
    p = 1.0 + z2 * (0.183105e-2 + z2 * (-0.3516396496e-4 + z2 * (0.2457520174e-5 + z2 * (-0.240337019e-6))))
    q = 0.04687499995 + z2 * (-0.2002690873e-3 + z2 * (0.8449199096e-5 + z2 * (
        -0.88228987e-6 + z2 * 0.105787412e-6)))
    large = tf.sqrt(0.636619772 / safe) * (tf.cos(xx) * p - z * tf.sin(xx) * q)
    large = tf.where(x < 0, -large, large)
    return tf.where(ax < 8.0, small, large)


def _grid() -> tuple[tf.Tensor, tf.Tensor]:
    """Offsets from the centre of the 21x21 grid: x along columns, y along rows (official mesh_grid)."""
    ax = np.arange(-_HALF, _HALF + 1, dtype=np.float32)
    xx, yy = np.meshgrid(ax, ax)
    return tf.constant(xx), tf.constant(yy)


def _size_mask(size: tf.Tensor) -> tf.Tensor:
    """[B] odd sizes -> [B, 21, 21] float mask of the centred size x size square."""
    xx, yy = _grid()
    half = tf.cast(size // 2, tf.float32)[:, None, None]
    inside = (tf.abs(xx)[None] <= half) & (tf.abs(yy)[None] <= half)
    return tf.cast(inside, tf.float32)


def _normalise(kernel: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    kernel = kernel * mask
    return kernel / tf.reduce_sum(kernel, axis=[1, 2], keepdims=True)


def mixed_kernel(kind, size, sigma_x, sigma_y, theta, beta) -> tf.Tensor:
    """Gaussian / generalized Gaussian / plateau kernels, [B] parameters -> [B, 21, 21], sum 1.

    The quadratic form is x^T S^-1 x with S = R diag(sx^2, sy^2) R^T and R the rotation by theta;
    iso kinds use sigma_y = sigma_x and theta = 0 (the caller draws them so). Gaussians use beta 1.
    """
    xx, yy = _grid()
    c, s = tf.cos(theta), tf.sin(theta)
    ix, iy = 1.0 / (sigma_x * sigma_x), 1.0 / (sigma_y * sigma_y)
    a = (c * c * ix + s * s * iy)[:, None, None]
    b = (c * s * (ix - iy))[:, None, None]
    d = (s * s * ix + c * c * iy)[:, None, None]
    quad = a * xx * xx + 2.0 * b * xx * yy + d * yy * yy  # [B, 21, 21]
    beta = beta[:, None, None]
    powered = tf.where(quad > 0, tf.pow(tf.maximum(quad, 1e-30), beta), tf.zeros_like(quad))
    kind = kind[:, None, None]
    is_plateau = (kind == int(KernelType.PLATEAU_ISO)) | (kind == int(KernelType.PLATEAU_ANISO))
    kernel = tf.where(is_plateau, 1.0 / (powered + 1.0), tf.exp(-0.5 * powered))
    return _normalise(kernel, _size_mask(size))


def sinc_kernel(omega_c, size) -> tf.Tensor:
    """Circular low-pass `wc J1(wc r) / (2 pi r)`, centre `wc^2 / (4 pi)`: [B] -> [B, 21, 21], sum 1."""
    xx, yy = _grid()
    r = tf.sqrt(tf.cast(xx * xx + yy * yy, tf.float64))[None]  # [1, 21, 21]
    wc = tf.cast(omega_c, tf.float64)[:, None, None]
    safe_r = tf.where(r > 0, r, tf.ones_like(r))
    values = wc * bessel_j1(wc * safe_r) / (2.0 * math.pi * safe_r)
    values = tf.where(r > 0, values, wc * wc / (4.0 * math.pi))
    return _normalise(tf.cast(values, tf.float32), _size_mask(size))


def identity_pulse(batch: int | tf.Tensor) -> tf.Tensor:
    """[B, 21, 21] kernels with a single 1 at the centre (filtering with it is the identity)."""
    pulse = np.zeros((KERNEL_SIZE, KERNEL_SIZE), np.float32)
    pulse[_HALF, _HALF] = 1.0
    return tf.tile(tf.constant(pulse)[None], [batch, 1, 1])


def _pick(u: tf.Tensor, choices) -> tf.Tensor:
    """Uniform u in [0, 1) -> one of `choices` with equal probability."""
    n = len(choices)
    idx = tf.minimum(tf.cast(tf.floor(u * n), tf.int32), n - 1)
    return tf.gather(tf.constant(choices, tf.int32), idx)


def categorical(u: tf.Tensor, probs) -> tf.Tensor:
    """Uniform u in [0, 1) -> index i with probability probs[i] (inverse CDF)."""
    edges = tf.constant(np.cumsum(probs)[:-1], tf.float32)
    return tf.reduce_sum(tf.cast(u[..., None] >= edges, tf.int32), axis=-1)


def _between(u: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
    return lo + (hi - lo) * u


_BLUR_DRAWS = 9  # uniforms used per blur kernel
_FINAL_DRAWS = 3


def _blur_kernel(cfg: BlurConfig, u: tf.Tensor, sinc: bool = True) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """One stage's blur kernel from 9 uniforms per sample ([B, 9] -> [B, 21, 21], parameters).

    sinc=False (the no-sinc ablation) never picks the sinc kernel; every other draw is unchanged.
    """
    size = _pick(u[:, 0], cfg.kernel_sizes)
    kind = categorical(u[:, 1], cfg.kernel_mix.as_tuple())
    use_sinc = u[:, 2] < (cfg.sinc_prob if sinc else 0.0)
    omega_c = tf.where(size < 13, _between(u[:, 3], math.pi / 3, math.pi),
                       _between(u[:, 3], math.pi / 5, math.pi))
    anisotropic = (kind == int(KernelType.ANISO)) | (kind == int(KernelType.GENERALIZED_ANISO)) | (
        kind == int(KernelType.PLATEAU_ANISO))
    sigma_x = _between(u[:, 4], *cfg.blur_sigma)
    sigma_y = tf.where(anisotropic, _between(u[:, 5], *cfg.blur_sigma), sigma_x)
    theta = tf.where(anisotropic, _between(u[:, 6], -math.pi, math.pi), tf.zeros_like(sigma_x))
    is_generalized = (kind == int(KernelType.GENERALIZED_ISO)) | (kind == int(KernelType.GENERALIZED_ANISO))
    is_plateau = (kind == int(KernelType.PLATEAU_ISO)) | (kind == int(KernelType.PLATEAU_ANISO))
    low_half = u[:, 7] < 0.5

    def beta_from(lo, hi):
        return tf.where(low_half, _between(u[:, 8], lo, 1.0), _between(u[:, 8], 1.0, hi))

    beta = tf.where(is_generalized, beta_from(*cfg.betag_range),
                    tf.where(is_plateau, beta_from(*cfg.betap_range), tf.ones_like(sigma_x)))
    kernel = tf.where(use_sinc[:, None, None], sinc_kernel(omega_c, size),
                      mixed_kernel(kind, size, sigma_x, sigma_y, theta, beta))
    params = {"size": size, "type": kind, "sinc": use_sinc, "omega_c": omega_c, "sigma_x": sigma_x,
              "sigma_y": sigma_y, "theta": theta, "beta": beta}
    return kernel, params


def sample_kernels(config: DegradationConfig, seed, batch_size: int | None = None,
                   return_params: bool = False):
    """Draws kernel1, kernel2 and the final sinc kernel like the official dataset does, per sample.

    seed: int32/int64 tensor [2] (as `tf.random.stateless_*` take). Returns
    {"kernel1", "kernel2", "sinc_kernel"}, each [21, 21] float32, or [B, 21, 21] with batch_size;
    with return_params also a dict of the drawn parameters ([B] or scalars), for previews and tests.
    Usable inside `tf.data.map` and under `tf.function(jit_compile=True)`. With `config.sinc` off
    (ablation) no kernel is a sinc and the final "sinc" is the identity pulse, from the same draws.
    """
    batch = 1 if batch_size is None else batch_size
    u = tf.random.stateless_uniform([batch, 2 * _BLUR_DRAWS + _FINAL_DRAWS], seed=seed, dtype=tf.float32)
    kernel1, params1 = _blur_kernel(config.blur1, u[:, :_BLUR_DRAWS], config.sinc)
    kernel2, params2 = _blur_kernel(config.blur2, u[:, _BLUR_DRAWS:2 * _BLUR_DRAWS], config.sinc)
    f = u[:, 2 * _BLUR_DRAWS:]
    use_final = f[:, 0] < (config.final_sinc_prob if config.sinc else 0.0)
    final_size = _pick(f[:, 1], config.blur2.kernel_sizes)
    final_omega = _between(f[:, 2], math.pi / 3, math.pi)
    final = tf.where(use_final[:, None, None], sinc_kernel(final_omega, final_size), identity_pulse(batch))
    kernels = {"kernel1": kernel1, "kernel2": kernel2, "sinc_kernel": final}
    params = {**{f"kernel1_{k}": v for k, v in params1.items()},
              **{f"kernel2_{k}": v for k, v in params2.items()},
              "final_sinc": use_final, "final_sinc_size": final_size, "final_sinc_omega_c": final_omega}
    if batch_size is None:
        kernels = {k: v[0] for k, v in kernels.items()}
        params = {k: v[0] for k, v in params.items()}
    return (kernels, params) if return_params else kernels
