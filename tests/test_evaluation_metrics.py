"""PSNR, SSIM, NIQE and MATLAB imresize against the real BasicSR 1.4.2 code (values in
tests/fixtures/metrics_reference.json, made by tests/fixtures/make_metrics_fixtures.py), plus
hand-computed cases."""

import base64
import json
import math
import os

import numpy as np
import pytest

from real_esrgan_tf.evaluation import (
    EvaluationError,
    bicubic_upscale,
    calculate_niqe,
    calculate_psnr,
    calculate_ssim,
    imresize,
    rgb_to_y,
)
from real_esrgan_tf.evaluation.matlab_resize import resize_matrix
from tests.fixtures.make_metrics_fixtures import build_inputs, sha256

REFERENCE = os.path.join(os.path.dirname(__file__), "fixtures", "metrics_reference.json")


@pytest.fixture(scope="module")
def reference():
    with open(REFERENCE) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def inputs(reference):
    images = build_inputs()
    changed = [k for k, h in reference["inputs_sha256"].items() if sha256(images[k]) != h]
    assert not changed, f"fixture inputs no longer reproduce (regenerate the reference?): {changed}"
    return images


def test_psnr_and_ssim_match_basicsr(reference, inputs):
    worst_psnr = worst_ssim = 0.0
    for case in reference["psnr_ssim"]:
        args = (inputs[case["img"]], inputs[case["img2"]], case["crop_border"], case["test_y_channel"])
        psnr, ssim = calculate_psnr(*args), calculate_ssim(*args)
        assert psnr == pytest.approx(case["psnr"], abs=1e-4), case
        assert ssim == pytest.approx(case["ssim"], abs=1e-5), case
        worst_psnr = max(worst_psnr, abs(psnr - case["psnr"]))
        worst_ssim = max(worst_ssim, abs(ssim - case["ssim"]))
    assert len(reference["psnr_ssim"]) >= 30
    # measured: PSNR bit-identical, SSIM within 1e-13 (OpenCV filters with a DFT, we do not)
    assert worst_psnr < 1e-9 and worst_ssim < 1e-10


def test_niqe_matches_basicsr(reference, inputs):
    for case in reference["niqe"]:
        value = calculate_niqe(inputs[case["img"]], case["crop_border"], convert_to=case["convert_to"])
        assert value == pytest.approx(case["niqe"], abs=1e-3), case


def test_imresize_matches_basicsr_matlab_imresize(reference, inputs):
    for case in reference["imresize"]:
        expected = np.frombuffer(base64.b64decode(case["float32_le_base64"]), "<f4").reshape(case["shape"])
        out = imresize((inputs[case["img"]] / 255.0).astype(np.float32), case["scale"])
        assert out.shape == expected.shape
        # BasicSR computes in float32: measured max difference 1.5e-7 on [0, 1]
        np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)


def test_identical_images_give_infinite_psnr_and_ssim_one(photos):
    img = photos["astronaut"][:64, :80]
    for y in (True, False):
        assert calculate_psnr(img, img.copy(), 4, y) == math.inf
        assert calculate_ssim(img, img.copy(), 4, y) == pytest.approx(1.0, abs=1e-12)


def test_constant_offset_gives_its_psnr(photos):
    img = np.clip(photos["coffee"][:48, :64], 0, 240)
    brighter = img + np.uint8(10)
    # all channels: every difference is 10 -> MSE 100
    expected = 10 * math.log10(255**2 / 100)
    assert calculate_psnr(img, brighter, 0, test_y_channel=False) == pytest.approx(expected)
    # Y: an offset d on R, G, B moves Y by d * (65.481 + 128.553 + 24.966) / 255 = d * 219 / 255
    dy = 10 * 219 / 255
    assert calculate_psnr(img, brighter, 2) == pytest.approx(20 * math.log10(255 / dy), abs=1e-4)


def test_ssim_of_two_flat_images_is_the_luminance_term():
    a, b = np.full((20, 24, 3), 100, np.uint8), np.full((20, 24, 3), 140, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 140 + c1) / (100**2 + 140**2 + c1)  # flat: no variance, contrast term = 1
    assert calculate_ssim(a, b, 0, test_y_channel=False) == pytest.approx(expected, abs=1e-9)


def test_y_channel_reads_rgb_order():
    # pure red, green, blue: Y = 16 + (65.481, 128.553, 24.966) (BT.601 on [0, 1] input)
    pixels = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    np.testing.assert_allclose(rgb_to_y(pixels)[0, :, 0], [81.481, 144.553, 40.966], atol=1e-4)


def test_16_bit_images_measure_like_their_8_bit_values(photos):
    a = photos["chelsea"][:40, :56]
    b = np.clip(a.astype(int) + np.random.default_rng(1).integers(-6, 7, a.shape), 0, 255).astype(np.uint8)
    a16, b16 = a.astype(np.uint16) * 257, b.astype(np.uint16) * 257
    assert calculate_psnr(a16, b16, 2) == pytest.approx(calculate_psnr(a, b, 2), abs=1e-6)
    assert calculate_ssim(a16, b16, 2) == pytest.approx(calculate_ssim(a, b, 2), abs=1e-8)
    assert calculate_psnr(a16, b, 2) == pytest.approx(calculate_psnr(a, b, 2), abs=1e-6)  # mixed dtypes


def test_bad_inputs_raise_evaluation_errors(photos):
    img = photos["astronaut"][:32, :32]
    with pytest.raises(EvaluationError, match="shapes differ"):
        calculate_psnr(img, img[:30], 0)
    with pytest.raises(EvaluationError, match="leaves nothing"):
        calculate_psnr(img, img, 16)
    with pytest.raises(EvaluationError, match="11x11"):
        calculate_ssim(img, img, 11)
    with pytest.raises(EvaluationError, match="two 96x96 blocks"):
        calculate_niqe(photos["astronaut"][:150, :150], 0)
    with pytest.raises(EvaluationError, match="dtype"):
        calculate_psnr(img.astype(np.int32), img.astype(np.int32), 0)


def test_imresize_properties():
    # rows of each axis matrix sum to 1; a flat image stays flat; sizes are ceil(scale * side)
    for n_in, n_out, scale in ((17, 9, 0.5), (5, 20, 4.0), (30, 8, 0.25)):
        np.testing.assert_allclose(resize_matrix(n_in, n_out, scale).sum(axis=1), 1.0, atol=1e-12)
    flat = np.full((13, 7, 3), 0.3)
    out = imresize(flat, 0.5)
    assert out.shape == (7, 4, 3)
    np.testing.assert_allclose(out, 0.3, atol=1e-12)
    up = bicubic_upscale(np.full((5, 6, 3), 77, np.uint8), 4)
    assert up.dtype == np.uint8 and up.shape == (20, 24, 3) and np.all(up == 77)
