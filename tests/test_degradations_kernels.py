"""Kernels and their sampling against closed forms, scipy and the configured distributions."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from real_esrgan_tf.degradations import DegradationConfig, DegradationConfigError, KernelMix, KernelType
from real_esrgan_tf.degradations import config as cfgmod
from real_esrgan_tf.degradations.kernels import bessel_j1, mixed_kernel, sample_kernels, sinc_kernel


def _closed_form(kind, size, sx, sy, theta, beta):
    """The paper's formulas on a size x size grid (x = column offset), normalised, padded to 21."""
    ax = np.arange(size) - size // 2
    x, y = np.meshgrid(ax, ax)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    inv = np.linalg.inv(rot @ np.diag([sx * sx, sy * sy]) @ rot.T)
    quad = inv[0, 0] * x * x + (inv[0, 1] + inv[1, 0]) * x * y + inv[1, 1] * y * y
    if kind in (KernelType.PLATEAU_ISO, KernelType.PLATEAU_ANISO):
        k = 1.0 / (quad**beta + 1.0)
    else:
        k = np.exp(-0.5 * quad**beta)
    k /= k.sum()
    pad = (21 - size) // 2
    return np.pad(k, pad)


@pytest.mark.parametrize("kind,size,sx,sy,theta,beta", [
    (KernelType.ISO, 21, 2.0, 2.0, 0.0, 1.0),
    (KernelType.ANISO, 15, 3.0, 0.7, 0.6, 1.0),
    (KernelType.GENERALIZED_ANISO, 11, 1.5, 2.5, -2.0, 0.6),
    (KernelType.GENERALIZED_ISO, 7, 1.2, 1.2, 0.0, 3.5),
    (KernelType.PLATEAU_ANISO, 19, 2.2, 0.9, 1.1, 1.7),
    (KernelType.PLATEAU_ISO, 9, 1.0, 1.0, 0.0, 1.0),
])
def test_mixed_kernels_match_closed_forms(kind, size, sx, sy, theta, beta):
    got = mixed_kernel(tf.constant([int(kind)]), tf.constant([size]), tf.constant([sx]),
                       tf.constant([sy]), tf.constant([theta]), tf.constant([beta]))[0].numpy()
    np.testing.assert_allclose(got, _closed_form(kind, size, sx, sy, theta, beta), atol=2e-7)
    assert abs(got.sum() - 1) < 1e-5


def test_anisotropic_kernel_rotates_with_theta():
    """A kernel rotated by pi/2 is the transpose of the unrotated one; by pi it is unchanged."""
    def k(theta):
        return mixed_kernel(tf.constant([1]), tf.constant([21]), tf.constant([3.0]), tf.constant([0.8]),
                            tf.constant([theta]), tf.constant([1.0]))[0].numpy()
    np.testing.assert_allclose(k(math.pi / 2), k(0.0).T, atol=1e-7)
    np.testing.assert_allclose(k(math.pi), k(0.0), atol=1e-7)
    wide = k(0.0)  # sigma_x > sigma_y: spread along columns (x)
    assert wide[10, 13] > wide[13, 10]


def test_bessel_j1_matches_scipy():
    x = np.linspace(-60, 60, 240001)
    np.testing.assert_allclose(bessel_j1(x).numpy(), special.j1(x), atol=1e-6, rtol=0)


def test_sinc_kernel_closed_form_and_frequency_response():
    wc, size = math.pi / 2, 21
    got = sinc_kernel(tf.constant([wc]), tf.constant([size]))[0].numpy().astype(np.float64)
    ax = np.arange(size) - size // 2
    x, y = np.meshgrid(ax, ax)
    r = np.hypot(x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = wc * special.j1(wc * r) / (2 * np.pi * r)
    ref[size // 2, size // 2] = wc**2 / (4 * np.pi)
    np.testing.assert_allclose(got, ref / ref.sum(), atol=1e-7)
    # frequency response on a fine grid: ~1 well below the cutoff, small well above it
    response = np.abs(np.fft.fftshift(np.fft.fft2(got, s=(256, 256))))
    f = np.fft.fftshift(np.fft.fftfreq(256)) * 2 * np.pi
    radius = np.hypot(*np.meshgrid(f, f))
    # (the 21-tap truncation leaves a Gibbs ripple of about 15% in the pass band)
    passband = response[radius < 0.8 * wc]
    assert np.all(np.abs(passband - 1) < 0.17) and abs(passband.mean() - 1) < 0.08
    stopband = response[(radius > 1.3 * wc) & (radius < np.pi)]
    assert stopband.max() < 0.07 and stopband.mean() < 0.02


def test_kernels_sum_to_one_and_are_zero_outside_the_drawn_size():
    kernels, params = sample_kernels(DegradationConfig(), tf.constant([3, 4]), batch_size=64,
                                     return_params=True)
    for name in ("kernel1", "kernel2", "sinc_kernel"):
        k = kernels[name].numpy()
        assert k.shape == (64, 21, 21)
        np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-5)
    sizes = params["kernel1_size"].numpy()
    k1 = kernels["kernel1"].numpy()
    for k, size in zip(k1, sizes, strict=True):
        pad = (21 - size) // 2
        outside = np.ones((21, 21), bool)
        outside[pad:21 - pad, pad:21 - pad] = False
        assert np.all(k[outside] == 0)
    identity = ~params["final_sinc"].numpy()
    assert identity.any()
    np.testing.assert_array_equal(kernels["sinc_kernel"].numpy()[identity][:, 10, 10], 1.0)


def test_sampling_is_stateless_and_per_sample():
    a = sample_kernels(DegradationConfig(), tf.constant([1, 2]), batch_size=8)
    b = sample_kernels(DegradationConfig(), tf.constant([1, 2]), batch_size=8)
    c = sample_kernels(DegradationConfig(), tf.constant([1, 3]), batch_size=8)
    np.testing.assert_array_equal(a["kernel1"].numpy(), b["kernel1"].numpy())
    assert not np.array_equal(a["kernel1"].numpy(), c["kernel1"].numpy())
    assert len({a["kernel1"].numpy()[i].tobytes() for i in range(8)}) == 8
    single = sample_kernels(DegradationConfig(), tf.constant([5, 6], tf.int64))
    assert single["kernel2"].shape == (21, 21)


def test_sampled_parameters_follow_the_configured_distributions():
    n = 6000
    _, p = sample_kernels(DegradationConfig(), tf.constant([7, 7]), batch_size=n, return_params=True)
    p = {k: v.numpy() for k, v in p.items()}
    expected = np.array(KernelMix().as_tuple()) * n
    assert stats.chisquare(np.bincount(p["kernel1_type"], minlength=6), expected).pvalue > 1e-3
    assert stats.chisquare(np.bincount(p["kernel2_size"], minlength=22)[7::2]).pvalue > 1e-3
    assert stats.kstest(p["kernel1_sigma_x"], stats.uniform(0.2, 2.8).cdf).pvalue > 1e-3
    assert stats.kstest(p["kernel2_sigma_x"], stats.uniform(0.2, 1.3).cdf).pvalue > 1e-3
    aniso = np.isin(p["kernel1_type"], [1, 3, 5])
    assert stats.kstest(p["kernel1_theta"][aniso], stats.uniform(-math.pi, 2 * math.pi).cdf).pvalue > 1e-3
    assert np.all(p["kernel1_theta"][~aniso] == 0)
    assert np.all(p["kernel1_sigma_y"][~aniso] == p["kernel1_sigma_x"][~aniso])
    assert stats.binomtest(int(p["kernel1_sinc"].sum()), n, 0.1).pvalue > 1e-3
    assert stats.binomtest(int(p["final_sinc"].sum()), n, 0.8).pvalue > 1e-3
    # generalized beta: half below 1 (U(0.5, 1)), half above (U(1, 4))
    beta = p["kernel1_beta"][np.isin(p["kernel1_type"], [2, 3])]
    assert stats.binomtest(int((beta < 1).sum()), len(beta), 0.5).pvalue > 1e-3
    assert beta.min() >= 0.5 and beta.max() <= 4.0
    # sinc cutoff: U(pi/3, pi) below size 13, else U(pi/5, pi)
    small = p["kernel1_size"] < 13
    omega = p["kernel1_omega_c"]
    assert stats.kstest(omega[small], stats.uniform(math.pi / 3, 2 * math.pi / 3).cdf).pvalue > 1e-3
    assert stats.kstest(omega[~small], stats.uniform(math.pi / 5, 4 * math.pi / 5).cdf).pvalue > 1e-3


def test_config_defaults_and_validation():
    c = DegradationConfig()
    assert (c.scale, c.gt_size, c.queue_size, c.lq_size) == (4, 256, 180, 64)
    assert c.blur2.blur_sigma == (0.2, 1.5) and c.stage2.resize_prob.as_tuple() == (0.3, 0.4, 0.3)
    assert c.stage1.noise_range == (1.0, 30.0) and c.stage2.poisson_scale_range == (0.05, 2.5)
    with pytest.raises(DegradationConfigError, match="sum to"):
        KernelMix(iso=0.5)
    with pytest.raises(DegradationConfigError, match="empty range"):
        cfgmod.NoiseResizeConfig(noise_range=(5.0, 5.0))
    with pytest.raises(DegradationConfigError, match="resize_prob"):
        cfgmod.ResizeChoice(0.5, 0.5, 0.5)
    with pytest.raises(DegradationConfigError, match="not divisible"):
        c.check_batch_size(7)
    c.check_batch_size(12)


def test_no_sinc_ablation_removes_every_sinc_and_changes_nothing_else():
    """`sinc=False`: over 2,000 samples, no blur kernel is a sinc and the final kernel is the identity
    pulse; from the same seed every non-sinc kernel is the one the official config draws."""
    official = DegradationConfig()
    no_sinc = DegradationConfig(sinc=False)
    seed = tf.constant([11, 12])
    ref, ref_p = sample_kernels(official, seed, batch_size=2000, return_params=True)
    got, got_p = sample_kernels(no_sinc, seed, batch_size=2000, return_params=True)
    for key in ("kernel1_sinc", "kernel2_sinc", "final_sinc"):
        assert not got_p[key].numpy().any(), key
        assert ref_p[key].numpy().sum() > 50, key  # the official config does draw sincs from this seed
    pulse = np.zeros((21, 21), np.float32)
    pulse[10, 10] = 1.0
    np.testing.assert_array_equal(got["sinc_kernel"].numpy(), np.broadcast_to(pulse, (2000, 21, 21)))
    for stage in ("kernel1", "kernel2"):
        plain = ~ref_p[f"{stage}_sinc"].numpy()
        np.testing.assert_array_equal(got[stage].numpy()[plain], ref[stage].numpy()[plain])
        for name in ("size", "type", "sigma_x", "sigma_y", "theta", "beta"):
            np.testing.assert_array_equal(got_p[f"{stage}_{name}"], ref_p[f"{stage}_{name}"])
        # where the official drew a sinc, the ablation uses the mixed kernel of the same draws
        assert not np.allclose(got[stage].numpy()[~plain], ref[stage].numpy()[~plain])
