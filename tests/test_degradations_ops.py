"""Resize, filtering, USM, DiffJPEG and noise against torch oracles (BasicSR), hand cases, statistics."""

import numpy as np
import pytest
import tensorflow as tf
import torch
import torch.nn.functional as F
from scipy import stats

from real_esrgan_tf.degradations import USMSharp
from real_esrgan_tf.degradations.filtering import filter2d, gaussian_kernel_1d
from real_esrgan_tf.degradations.jpeg import diff_jpeg
from real_esrgan_tf.degradations.noise import count_levels, gaussian_noise, poisson_noise, poisson_sample
from real_esrgan_tf.degradations.resize import ResizeMode, output_size, resize, resize_static
from tests import torch_oracles
from tests.torch_oracles import to_nchw as _nchw
from tests.torch_oracles import to_nhwc as _nhwc

_TORCH_MODE = {ResizeMode.AREA: "area", ResizeMode.BILINEAR: "bilinear", ResizeMode.BICUBIC: "bicubic"}


@pytest.mark.parametrize("mode", list(ResizeMode))
@pytest.mark.parametrize("hw,scale",
                         [((37, 41), 0.15), ((40, 32), 0.8137), ((25, 30), 1.0), ((24, 20), 1.4321)])
def test_resize_with_scale_factor_matches_torch(mode, hw, scale):
    x = np.random.default_rng(hash(hw) % 1000).random((2, *hw, 3), dtype=np.float32)
    ref = _nhwc(F.interpolate(_nchw(x), scale_factor=scale, mode=_TORCH_MODE[mode]))
    out_hw = (int(output_size(hw[0], scale)), int(output_size(hw[1], scale)))
    assert out_hw == ref.shape[1:3]
    capacity = (out_hw[0] + 16, out_hw[1] + 5)  # inside a larger canvas: zeros around
    out = resize(tf.constant(x), hw, out_hw, capacity, int(mode), scale=scale).numpy()
    np.testing.assert_allclose(out[:, : out_hw[0], : out_hw[1]], ref, atol=1e-5, rtol=0)
    assert not out[:, out_hw[0]:].any() and not out[:, :, out_hw[1]:].any()


@pytest.mark.parametrize("mode", list(ResizeMode))
@pytest.mark.parametrize("in_hw,out_hw", [((53, 47), (16, 16)), ((11, 13), (30, 17)), ((64, 64), (64, 64))])
def test_resize_to_size_from_a_canvas_matches_torch(mode, in_hw, out_hw):
    x = np.random.default_rng(1).random((2, *in_hw, 3), dtype=np.float32)
    canvas = np.zeros((2, 80, 64, 3), np.float32)
    canvas[:, : in_hw[0], : in_hw[1]] = x
    canvas[:, in_hw[0]:] = 7.0  # garbage outside the valid region must not leak in
    ref = _nhwc(F.interpolate(_nchw(x), size=out_hw, mode=_TORCH_MODE[mode]))
    out = resize(tf.constant(canvas), in_hw, out_hw, out_hw, int(mode)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


def test_resize_hand_computed_cases():
    row = tf.constant(np.array([0.0, 1.0, 2.0, 3.0], np.float32).reshape(1, 1, 4, 1))
    # area 4 -> 2 averages pairs; 4 -> 3 uses windows [0,2), [1,3), [2,4)
    area = int(ResizeMode.AREA)
    np.testing.assert_allclose(resize_static(row, (1, 2), area).numpy().ravel(), [0.5, 2.5])
    np.testing.assert_allclose(resize_static(row, (1, 3), area).numpy().ravel(), [0.5, 1.5, 2.5])
    # bilinear x2 up, half-pixel: sources -0.25 (clamped to 0), 0.25, 0.75, ... 3.25 (clamped to 3)
    up = resize_static(row, (1, 8), int(ResizeMode.BILINEAR)).numpy().ravel()
    np.testing.assert_allclose(up, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0], atol=1e-6)
    # bicubic a = -0.75 at t = 0.25: taps (-1, 0, 1, 2) weigh (-0.10546875, 0.87890625, 0.26171875,
    # -0.03515625) (Keys' formulas by hand), so a ramp i -> i gives j + 0.296875 (and j + 0.703125 at
    # t = 0.75): unlike a = -0.5 (TF's), PyTorch's cubic does not reproduce linear ramps.
    ramp = tf.constant(np.arange(16, dtype=np.float32).reshape(1, 1, 16, 1))
    cubic = resize_static(ramp, (1, 32), int(ResizeMode.BICUBIC)).numpy().ravel()
    j = np.floor(np.arange(32) / 2 - 0.25)
    expected = j + np.where(np.arange(32) % 2 == 1, 0.296875, 0.703125)
    np.testing.assert_allclose(cubic[4:-4], expected[4:-4], atol=1e-5)


def _torch_filter2d(x, kernels):
    return _nhwc(torch_oracles.filter2d(_nchw(x), torch.from_numpy(kernels)))


def test_filter2d_matches_torch_grouped_conv_and_works_in_a_canvas():
    rng = np.random.default_rng(2)
    x = rng.random((3, 30, 26, 3), dtype=np.float32)
    kernels = rng.random((3, 21, 21), dtype=np.float32)
    kernels /= kernels.sum(axis=(1, 2), keepdims=True)
    ref = _torch_filter2d(x, kernels)
    np.testing.assert_allclose(filter2d(tf.constant(x), tf.constant(kernels)).numpy(), ref, atol=1e-5)
    canvas = np.full((3, 48, 48, 3), 5.0, np.float32)
    canvas[:, :30, :26] = x
    out = filter2d(tf.constant(canvas), tf.constant(kernels), (30, 26)).numpy()
    np.testing.assert_allclose(out[:, :30, :26], ref, atol=1e-5)


def test_usm_matches_the_official_formula_with_a_2d_kernel(photos):
    img = photos["astronaut"][100:164, 200:260].astype(np.float32)[None] / 255.0
    g = gaussian_kernel_1d(51, 8.0)
    kernel = torch.from_numpy(np.outer(g, g).astype(np.float32))
    ref = _nhwc(torch_oracles.usm_sharp(_nchw(img), kernel))
    out = USMSharp()(tf.constant(img)).numpy()
    np.testing.assert_allclose(out, ref, atol=2e-5)
    assert np.abs(out - img).max() > 0.05  # it does sharpen


def _psnr(a, b):
    return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def _random_jpeg_inputs(rng, photos, count):
    """Batches of 1-5 images of odd and even sizes (8..70), photos and noise, with per-sample qualities
    over the official range [30, 95] (both ends included, both sides of the q = 50 branch)."""
    crops = list(photos.values())
    for i in range(count):
        b = int(rng.integers(1, 6))
        h, w = (int(v) for v in rng.integers(8, 71, size=2))
        if i % 2:
            x = rng.random((b, h, w, 3), dtype=np.float32)
        else:
            p = crops[i % len(crops)]
            tops, lefts = rng.integers(0, p.shape[0] - h, size=b), rng.integers(0, p.shape[1] - w, size=b)
            x = np.stack([p[t:t + h, u:u + w] for t, u in zip(tops, lefts, strict=True)]) / np.float32(255)
        q = rng.uniform(30, 95, size=b).astype(np.float32)
        q[: min(2, b)] = [30.0, 95.0][: min(2, b)] if i % 3 == 0 else q[: min(2, b)]
        yield x.astype(np.float32), q


def test_diff_jpeg_equals_basicsr_diffjpeg(photos):
    """Against BasicSR 1.4.2's DiffJPEG(differentiable=False) (the oracle in tests/torch_oracles.py):
    equal to float32 rounding (max |diff| 3e-7 seen) over 16 batches, per-sample qualities, odd sizes."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for x, q in _random_jpeg_inputs(rng, photos, 16):
        ref = _nhwc(torch_oracles.diff_jpeg(_nchw(x), torch.from_numpy(q)))
        out = diff_jpeg(tf.constant(x), tf.constant(q), fused=False).numpy()
        assert out.shape == x.shape
        worst = max(worst, float(np.abs(out - ref).max()))
    assert worst <= 1e-5, worst
    # the oracle's scalar-quality path (one quality for the batch) agrees too
    x = photos["coffee"][:40, :56][None].astype(np.float32) / 255.0
    ref = _nhwc(torch_oracles.diff_jpeg(_nchw(x), 47.0))
    np.testing.assert_allclose(diff_jpeg(tf.constant(x), tf.constant([47.0]), fused=False).numpy(), ref,
                               atol=1e-5, rtol=0)


def test_fused_diff_jpeg_equals_basicsr_but_for_rare_rounding_ties():
    """The XLA-fused DiffJPEG (the degrader's graph path) computes the same DCT in another float order,
    so a quantised coefficient that lies within float32 noise of a .5 tie can round the other way
    (about 1e-4 of the values, in whole 8x8 blocks). Everything else equals the oracle to 1e-5."""
    rng = np.random.default_rng(1)
    fused = tf.function(lambda x, q: diff_jpeg(x, q, fused=True))
    off = total = 0
    for _ in range(4):
        x = rng.random((4, 64, 64, 3), dtype=np.float32)
        q = rng.uniform(30, 95, size=4).astype(np.float32)
        ref = _nhwc(torch_oracles.diff_jpeg(_nchw(x), torch.from_numpy(q)))
        diff = np.abs(fused(tf.constant(x), tf.constant(q)).numpy() - ref)
        off += int((diff > 1e-5).sum())
        total += diff.size
    assert off / total < 1e-3, off / total


def test_diff_jpeg_q100_is_near_identity_and_low_quality_is_blocky(photos):
    img = photos["chelsea"][:128, :144].astype(np.float32) / 255.0  # 144 is not a multiple of 16: padded
    out = diff_jpeg(tf.constant(img[None]), tf.constant([100.0])).numpy()[0]
    assert out.shape == img.shape
    assert _psnr(out * 255, img * 255) > 40
    # at low quality, jumps across 8x8 block edges exceed those inside blocks
    low = diff_jpeg(tf.constant(img[None]), tf.constant([10.0])).numpy()[0].mean(-1)
    jumps = np.abs(np.diff(low, axis=1))
    on_grid = jumps[:, 7::8].mean()
    off_grid = np.delete(jumps, np.s_[7::8], axis=1).mean()
    assert on_grid > 1.5 * off_grid
    # per-sample quality: lower quality, larger error
    both = diff_jpeg(tf.constant(np.stack([img, img])), tf.constant([20.0, 90.0])).numpy()
    assert np.abs(both[0] - img).mean() > np.abs(both[1] - img).mean()


@pytest.mark.parametrize("lam", [0.5, 3.0, 30.0, 200.0])
def test_poisson_sampler_moments(lam):
    x = poisson_sample(tf.fill([200_000], lam), tf.constant([int(lam * 10), 3])).numpy()
    assert np.all(x == np.round(x)) and x.min() >= 0
    assert abs(x.mean() / lam - 1) < 0.02
    assert abs(x.var() / lam - 1) < 0.02
    assert abs((x == 0).mean() - np.exp(-lam)) < 0.01


def test_poisson_sampler_distribution_chi_square():
    for lam in (2.0, 8.5, 40.0):
        x = poisson_sample(tf.fill([50_000], lam), tf.constant([11, int(lam)])).numpy().astype(int)
        k = np.arange(int(lam + 6 * np.sqrt(lam) + 4))
        expected = stats.poisson.pmf(k, lam) * len(x)
        keep = expected > 20
        observed = np.bincount(x, minlength=len(k))[: len(k)][keep]
        expected = expected[keep] * observed.sum() / expected[keep].sum()
        assert stats.chisquare(observed, expected).pvalue > 1e-4, lam


def test_gaussian_noise_sigma_and_gray_channels():
    img = tf.fill([3, 64, 64, 3], 0.5)
    sigma = tf.constant([5.0, 20.0, 30.0])
    noise = gaussian_noise(img, sigma, tf.constant([False, True, False]), tf.constant([1, 1])).numpy()
    np.testing.assert_allclose(noise.std(axis=(1, 2, 3)) * 255, sigma.numpy(), rtol=0.03)
    assert np.all(noise[1, ..., 0] == noise[1, ..., 2])
    assert not np.any(noise[0, ..., 0] == noise[0, ..., 2])


def test_count_levels_matches_numpy_unique(photos):
    img = photos["coffee"][:40, :50].astype(np.float32) / 255.0
    dark = np.random.default_rng(0).choice([3, 60, 61, 200], size=img.shape) / 255.0  # 4 levels
    batch = tf.constant(np.stack([img, dark]))
    counts = count_levels(batch).numpy()
    assert counts[0] == len(np.unique(photos["coffee"][:40, :50])) and counts[1] == 4
    valid = np.zeros((2, 40, 50, 1), bool)
    valid[:, :10, :10] = True
    counts = count_levels(batch, tf.constant(valid)).numpy()
    assert counts[0] == len(np.unique(photos["coffee"][:10, :10]))


def test_poisson_noise_levels_and_gray():
    # 3 distinct levels -> vals = 4: noisy * vals is an integer count whose mean is img * vals
    levels = np.array([0, 64, 128], np.float32) / 255.0
    img = np.broadcast_to(np.tile(levels, 100)[None, :, None, None], (2, 300, 30, 3)).copy()
    noise = poisson_noise(tf.constant(img), tf.constant([1.0, 1.0]), tf.constant([False, True]),
                          tf.constant([4, 2])).numpy()
    counts = (noise[0] + img[0]) * 4
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)
    for level in levels[1:]:
        sel = img[0] == level
        assert abs(counts[sel].mean() / (level * 4) - 1) < 0.05
    assert np.all(noise[1, ..., 0] == noise[1, ..., 1])
    half = poisson_noise(tf.constant(img), tf.constant([0.5, 0.5]), tf.constant([False, False]),
                         tf.constant([4, 2])).numpy()
    np.testing.assert_allclose(half[0], 0.5 * noise[0], atol=1e-7)  # same draw, scaled per sample


def test_fused_xla_paths_equal_the_op_by_op_ones(photos):
    """DiffJPEG and the Poisson math run as nested XLA clusters in graph mode: same results."""
    img = tf.constant(photos["coffee"][:64, :96][None].astype(np.float32) / 255.0)
    quality = tf.constant([37.5])
    fused = tf.function(lambda x: diff_jpeg(x, quality, fused=True))(img)
    np.testing.assert_allclose(fused.numpy(), diff_jpeg(img, quality, fused=False).numpy(), atol=2e-5)
    args = (img, tf.constant([1.5]), tf.constant([False]), tf.constant([3, 1]))
    noise = tf.function(lambda *a: poisson_noise(*a, fused=True))(*args)
    np.testing.assert_allclose(noise.numpy(), poisson_noise(*args, fused=False).numpy(), atol=1e-5)
