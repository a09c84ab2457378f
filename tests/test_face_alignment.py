"""Face alignment and paste-back warps against OpenCV (what facexlib's FaceRestoreHelper calls), over many
random landmark sets: near-template faces at random scale, angle and position with noise of 0.1 to 30 px,
a third of them with one landmark thrown far off (where LMEDS's random pair draws decide the inliers)."""

from __future__ import annotations

import numpy as np
import pytest

from real_esrgan_tf.faces import alignment

cv2 = pytest.importorskip("cv2")  # test-only: OpenCV is the oracle, never a runtime dependency

TEMPLATE = alignment.FFHQ_TEMPLATE_512


def _landmarks(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale, angle = rng.uniform(0.05, 2.0), rng.uniform(-0.8, 0.8)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (TEMPLATE - rng.uniform(-100, 400, 2)) @ np.linalg.inv(rotation).T
    points += rng.normal(0, rng.choice([0.1, 1.0, 5.0, 30.0]), points.shape)
    if seed % 3 == 0:
        points[rng.integers(5)] += rng.normal(0, 100, 2)
    return points.astype(np.float32)


def _cv2_similarity(points):
    return cv2.estimateAffinePartial2D(points, TEMPLATE, method=cv2.LMEDS)[0]


def test_similarity_equals_estimate_affine_partial_2d_lmeds():
    exhaustive_differs = 0
    for seed in range(600):
        points = _landmarks(seed)
        expected = _cv2_similarity(points)
        ours = alignment.estimate_similarity(points, TEMPLATE)
        # OpenCV ends with Levenberg-Marquardt; we solve the same least squares exactly.
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * np.abs(expected).max(),
                                   err_msg=f"seed {seed}")
        best_pair = alignment.all_pairs_similarity(points, TEMPLATE)
        exhaustive_differs += not np.allclose(best_pair, ours, atol=1e-3) and seed % 3 == 0
    # The draws matter: the best of all pairs is not what OpenCV's 13 draws find on some outlier sets.
    assert exhaustive_differs > 0


def test_similarity_is_exact_for_a_similarity_and_rejects_an_outlier():
    rng = np.random.default_rng(7)
    matrix = np.array([[0.8, -0.3, 40.0], [0.3, 0.8, -12.0]])
    points = rng.uniform(0, 300, (5, 2)).astype(np.float32)
    target = points @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(alignment.estimate_similarity(points, target), matrix, atol=1e-4)
    target[2] += 80  # one landmark far off: LMEDS drops it
    np.testing.assert_allclose(alignment.estimate_similarity(points, target), matrix, atol=1e-4)
    with pytest.raises(ValueError):
        alignment.estimate_similarity(points[:1], target[:1])


@pytest.mark.parametrize("seed", range(12))
def test_face_crop_equals_warp_affine(seed):
    """align_warp_face: cv2.warpAffine to 512 x 512 with border (135, 133, 132) BGR, bilinear."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (int(rng.integers(40, 160)), int(rng.integers(40, 160)), 3), np.uint8)
    points = _landmarks(seed) * np.float32(0.1) + np.float32(rng.uniform(0, 40))
    matrix = alignment.estimate_similarity(points, TEMPLATE)
    expected = cv2.warpAffine(np.ascontiguousarray(image[..., ::-1]), matrix, (512, 512),
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(135, 133, 132))[..., ::-1]
    ours = alignment.warp_affine(image, matrix, (512, 512), alignment.FACE_BORDER_RGB)
    diff = np.abs(ours.astype(int) - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # OpenCV 5 rounds float32 sums; ours float64
    # 16-bit images: facexlib warps value / 65535 * 255 as float64, on OpenCV's 1/32-pixel grid
    deep = image.astype(np.float64) * (65535 / 255) / 65535 * 255
    expected = cv2.warpAffine(np.ascontiguousarray(deep[..., ::-1]), matrix, (512, 512),
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(135, 133, 132))[..., ::-1]
    np.testing.assert_allclose(alignment.warp_affine(deep, matrix, (512, 512), alignment.FACE_BORDER_RGB),
                               expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("factor", [1, 2, 3.5, 4])
def test_paste_back_warps_equal_opencv(seed, factor):
    """get_inverse_affine + paste_faces_to_input_image: invertAffineTransform * upscale (+ 0.5 * upscale),
    the uint8 face warped bilinear with a black border, the float64 mask with flags=3 (bilinear)."""
    rng = np.random.default_rng(100 + seed)
    h, w = int(rng.integers(40, 120)), int(rng.integers(40, 120))
    points = _landmarks(seed) * np.float32(0.1) + np.float32(rng.uniform(0, 30))
    matrix = _cv2_similarity(points)  # the same matrix on both sides: the warps alone are compared
    inverse = cv2.invertAffineTransform(matrix) * factor
    ours_inverse = alignment.invert_affine(matrix) * factor
    np.testing.assert_allclose(ours_inverse, inverse, rtol=1e-12, atol=1e-12)
    if factor > 1:
        inverse[:, 2] += 0.5 * factor
        ours_inverse[:, 2] += 0.5 * factor
    size = (int(w * factor), int(h * factor))
    face = rng.integers(0, 256, (512, 512, 3), np.uint8)
    mask = alignment.gaussian_blur(rng.random((512, 512)), 101, 11)
    window = alignment.destination_window(ours_inverse, (512, 512), size)
    y0, y1, x0, x1 = window
    expected_face = cv2.warpAffine(face, inverse, size)
    expected_mask = cv2.warpAffine(mask, inverse, size, flags=3)
    ours_face = alignment.warp_affine(face, ours_inverse, size, 0, window=window)
    ours_mask = alignment.warp_affine(mask, ours_inverse, size, 0, window=window)
    diff = np.abs(ours_face.astype(int) - expected_face[y0:y1, x0:x1])
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-2  # a few float32 roundings in a small window
    np.testing.assert_allclose(ours_mask, expected_mask[y0:y1, x0:x1], rtol=0, atol=1e-12)
    outside = np.ones(expected_face.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert not expected_face[outside].any() and not expected_mask[outside].any()  # the window holds it all


def test_gaussian_blur_equals_opencv():
    rng = np.random.default_rng(3)
    mask = np.where(rng.random((512, 512)) > 0.5, 255.0, 0.0)
    np.testing.assert_allclose(alignment.gaussian_blur(mask, 101, 11), cv2.GaussianBlur(mask, (101, 101), 11),
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(alignment.gaussian_kernel(101, 11), cv2.getGaussianKernel(101, 11)[:, 0],
                               rtol=1e-12)
