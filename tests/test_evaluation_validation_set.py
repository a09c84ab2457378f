"""The deterministic degraded validation set: same seed -> same bytes, other seed -> other LQ,
LQ = GT / scale, GT = a crop of the input, and the written folders evaluate end to end."""

import numpy as np
import pytest

from real_esrgan_tf.degradations import DegradationConfig
from real_esrgan_tf.evaluation import (
    EvaluationError,
    bicubic_upscale,
    degraded_validation_pairs,
    evaluate,
    iter_folder_pairs,
    write_validation_set,
)


@pytest.fixture(scope="module")
def gt_images():
    from skimage import data

    return [data.astronaut()[100:196, 150:270], data.chelsea()[40:120, 200:280]]  # 96x120, 80x80


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_same_seed_same_bytes_other_seed_other_lq(tmp_path, gt_images):
    names = write_validation_set(degraded_validation_pairs(gt_images, seed=11), str(tmp_path / "a"))
    write_validation_set(degraded_validation_pairs(gt_images, seed=11), str(tmp_path / "b"))
    write_validation_set(degraded_validation_pairs(gt_images, seed=12), str(tmp_path / "c"))
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert names == ["0000", "0001"]
    assert sorted(a) == ["gt/0000.png", "gt/0001.png", "lq/0000.png", "lq/0001.png"]
    assert a == b
    assert all(a[f"lq/{n}.png"] != c[f"lq/{n}.png"] for n in names)


def test_sizes_crops_and_per_image_seeds(gt_images):
    pairs = list(degraded_validation_pairs(gt_images, seed=3))
    (lq0, gt0), (lq1, gt1) = pairs
    assert gt0.shape == (96, 96, 3) and lq0.shape == (24, 24, 3) and lq0.dtype == np.uint8
    assert gt1.shape == (80, 80, 3) and lq1.shape == (20, 20, 3)
    # the GT is the input itself, cropped at a multiple of the scale (the official paired crop)
    offsets = [x for x in range(0, 120 - 96 + 1, 4) if np.array_equal(gt_images[0][:, x : x + 96], gt0)]
    assert len(offsets) == 1
    # image 1's pair does not depend on image 0 being there
    (lq1_alone, _), = degraded_validation_pairs([gt_images[1]], seed=3)
    assert not np.array_equal(lq1_alone, lq1)  # index 0 now: another seed
    (_, _), (lq1_again, _) = degraded_validation_pairs([gt_images[1], gt_images[1]], seed=3)
    np.testing.assert_array_equal(lq1_again, lq1)
    (lq2, gt2), = degraded_validation_pairs([gt_images[1]], DegradationConfig(), seed=3, scale=2)
    assert gt2.shape == (80, 80, 3) and lq2.shape == (40, 40, 3)


def test_bad_requests_raise(gt_images):
    with pytest.raises(EvaluationError, match="multiple of the scale"):
        list(degraded_validation_pairs(gt_images, crop_size=50))
    with pytest.raises(EvaluationError, match="does not fit"):
        list(degraded_validation_pairs(gt_images, crop_size=200))
    with pytest.raises(EvaluationError, match="not .H, W, 3."):
        list(degraded_validation_pairs([gt_images[0][..., 0]]))


def test_written_set_evaluates(tmp_path, gt_images):
    write_validation_set(degraded_validation_pairs(gt_images, seed=0), str(tmp_path))

    class Bicubic:
        def upscale(self, pixels):
            return bicubic_upscale(pixels, 4)

    result = evaluate(Bicubic(), iter_folder_pairs(str(tmp_path / "gt"), str(tmp_path / "lq")), scale=4)
    assert not result.failures and [r.name for r in result.rows] == ["0000", "0001"]
    assert all(10 < r.psnr < 40 and r.psnr == r.bicubic_psnr for r in result.rows)
