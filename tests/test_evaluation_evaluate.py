"""evaluate(): folder pairing by stem, size rules, failures that do not stop the run, LQ-only NIQE,
JSON, saved outputs, and whole pairs read back from paired shards."""

import json
import math

import numpy as np
import pytest

from real_esrgan_tf.evaluation import (
    EvaluationError,
    ImagePair,
    bicubic_upscale,
    calculate_niqe,
    calculate_psnr,
    calculate_ssim,
    evaluate,
    imresize,
    iter_folder_pairs,
    iter_lq_folder,
    iter_shard_pairs,
    match_gt,
    pair_folders,
)
from real_esrgan_tf.images import read_image, write_image


class BicubicUpscaler:
    """The MATLAB-bicubic baseline as an 'upscaler': its scores must equal the baseline's."""

    def __init__(self, scale):
        self.scale = scale

    def upscale(self, pixels):
        return bicubic_upscale(pixels, self.scale)


class LookupUpscaler:
    """Returns a stored output for each LQ (by its bytes)."""

    def __init__(self, outputs):
        self.outputs = {lq.tobytes(): sr for lq, sr in outputs}

    def upscale(self, pixels):
        return self.outputs[pixels.tobytes()]


def downscale(gt, scale):
    return np.clip(np.round(imresize(gt / 255.0, 1 / scale) * 255), 0, 255).astype(np.uint8)


@pytest.fixture
def folders(tmp_path, photos):
    gt_dir, lq_dir = tmp_path / "gt", tmp_path / "lq"
    gt_dir.mkdir()
    lq_dir.mkdir()
    a = photos["astronaut"][100:164, 200:280]
    b = photos["coffee"][50:116, 100:183]  # 66x83: 2 rows, 3 columns more than 4 x 16x20
    write_image(str(gt_dir / "a.png"), a)
    write_image(str(lq_dir / "a.png"), downscale(a, 4))
    write_image(str(gt_dir / "b.png"), b)
    write_image(str(lq_dir / "b.png"), downscale(b[:64, :80], 4))
    write_image(str(gt_dir / "c.png"), a)  # no LQ
    write_image(str(lq_dir / "d.png"), downscale(a, 4))  # no GT
    write_image(str(gt_dir / "e.png"), a[:, :64])  # 64x64 is not 4 x 16x20
    write_image(str(lq_dir / "e.png"), downscale(a, 4))
    write_image(str(gt_dir / "f.png"), a)  # two GT files named f
    write_image(str(gt_dir / "f.jpg"), a)
    write_image(str(lq_dir / "f.png"), downscale(a, 4))
    write_image(str(gt_dir / "g.png"), a)
    (lq_dir / "g.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return str(gt_dir), str(lq_dir), {"a": a, "b": b}


def test_folder_pairs_are_scored_and_bad_ones_reported(folders):
    gt_dir, lq_dir, gts = folders
    assert [p.name for p in pair_folders(gt_dir, lq_dir)] == list("abcdefg")
    seen = []
    result = evaluate(BicubicUpscaler(4), iter_folder_pairs(gt_dir, lq_dir), scale=4, on_item=seen.append)
    assert [r.name for r in result.rows] == ["a", "b"]
    assert len(seen) == 7
    messages = "\n".join(result.failures)
    assert len(result.failures) == 5
    for expected in ("c.png: no LQ file", "d.png: no GT file", "e: GT is 64x64, not 4 x the LQ's 16x20",
                     "f: several files", "g.png"):
        assert expected in messages
    a, b = result.rows
    assert result.crop_border == 4  # default: the scale
    assert not a.gt_cropped and b.gt_cropped and b.lq_size == (16, 20)
    for row in result.rows:  # the SR is the bicubic baseline itself
        assert row.psnr == row.bicubic_psnr and row.ssim == row.bicubic_ssim
        assert row.niqe is None  # 64x80 - borders is under two 96x96 blocks
    lq_b = read_image(f"{lq_dir}/b.png").pixels
    assert b.psnr == calculate_psnr(bicubic_upscale(lq_b, 4), gts["b"][:64, :80], 4)
    assert b.ssim == calculate_ssim(bicubic_upscale(lq_b, 4), gts["b"][:64, :80], 4)


def test_lq_suffix_pairs_div2k_style_names(tmp_path, photos):
    gt = photos["chelsea"][:32, :32]
    (tmp_path / "gt").mkdir()
    (tmp_path / "lq").mkdir()
    write_image(str(tmp_path / "gt" / "0001.png"), gt)
    write_image(str(tmp_path / "lq" / "0001x4.png"), downscale(gt, 4))
    pairs = pair_folders(str(tmp_path / "gt"), str(tmp_path / "lq"), lq_suffix="x4")
    assert [(p.name, p.lq_path.endswith("0001x4.png")) for p in pairs] == [("0001", True)]
    with pytest.raises(EvaluationError, match="not a folder"):
        pair_folders(str(tmp_path / "missing"), str(tmp_path / "lq"))


def test_json_means_and_infinite_psnr(photos):
    gt = photos["astronaut"][:48, :48]
    lq = downscale(gt, 2)
    near = np.clip(gt.astype(int) + 3, 0, 255).astype(np.uint8)
    items = [ImagePair("same", lq, gt), ImagePair("near", lq[::-1].copy(), gt)]
    result = evaluate(LookupUpscaler([(lq, gt), (lq[::-1].copy(), near)]), items, scale=2, niqe=False)
    doc = json.loads(result.to_json())
    assert doc["images"][0]["psnr"] == "inf" and doc["images"][0]["ssim"] == pytest.approx(1.0)
    assert doc["mean"]["psnr"] == "inf"
    assert doc["mean"]["ssim"] == pytest.approx(np.mean([r.ssim for r in result.rows]))
    assert doc["mean"]["bicubic_psnr"] == pytest.approx(np.mean([r.bicubic_psnr for r in result.rows]))
    assert doc["mean"]["niqe"] is None and doc["counts"]["psnr"] == 2
    assert doc["settings"] == {"scale": 2, "crop_border": 2, "test_y_channel": True,
                               "bicubic": "MATLAB imresize bicubic (antialiased)"}
    assert result.rows[1].psnr == calculate_psnr(near, gt, 2)


def test_lq_only_gives_niqe_of_the_output(tmp_path, photos):
    (tmp_path / "lq").mkdir()
    big = photos["coffee"][100:164, 200:264]  # 64x64 -> 256x256: 2x2 blocks after the border
    write_image(str(tmp_path / "lq" / "big.png"), big)
    write_image(str(tmp_path / "lq" / "tiny.png"), big[:16, :16])
    result = evaluate(BicubicUpscaler(4), iter_lq_folder(str(tmp_path / "lq")), scale=4,
                      save_dir=str(tmp_path / "out"))
    big_row, tiny_row = result.rows
    assert big_row.psnr is None and big_row.bicubic_psnr is None
    assert big_row.niqe == calculate_niqe(bicubic_upscale(big, 4), 4)
    assert math.isfinite(big_row.niqe) and tiny_row.niqe is None and not result.failures
    saved = read_image(str(tmp_path / "out" / "big.png")).pixels
    np.testing.assert_array_equal(saved, bicubic_upscale(big, 4))


def test_wrong_output_size_fails_that_image_only(photos):
    gt = photos["chelsea"][:40, :40]
    lq = downscale(gt, 4)

    class Twice:
        def upscale(self, pixels):
            return np.repeat(np.repeat(pixels, 2, 0), 2, 1)

    result = evaluate(Twice(), [ImagePair("x", lq, gt), EvaluationError("y.png: broken")], scale=4)
    assert result.rows == []
    assert result.failures[0] == "x: the model gave 20x20 for a 10x10 LQ, expected 40x40 (scale 4)"
    assert result.failures[1] == "y.png: broken"


def test_match_gt_crops_only_the_remainder():
    gt = np.zeros((67, 70, 3), np.uint8)
    out, cropped = match_gt("n", (16, 17), gt, 4)
    assert cropped and out.shape == (64, 68, 3)
    with pytest.raises(EvaluationError, match="not 4 x"):
        match_gt("n", (16, 16), gt, 4)  # 70 columns: 6 more than 64
    with pytest.raises(EvaluationError, match="not 4 x"):
        match_gt("n", (17, 17), gt, 4)  # smaller than 4 x LQ


def _paired_shard(path, pairs):
    import tensorflow as tf

    from real_esrgan_tf.data.records import CropRecord, build_example

    def record(pixels):
        depth = 16 if pixels.dtype == np.uint16 else 8
        h, w = pixels.shape[:2]
        return CropRecord(tf.io.encode_png(pixels).numpy(), h, w, depth, "src.png", "x1", (0, 0, h, w))

    with tf.io.TFRecordWriter(str(path)) as writer:
        for gt, lq in pairs:
            writer.write(build_example(record(gt), record(lq)))
    return str(path)


def test_shard_pairs_come_back_whole_at_their_bit_depth(tmp_path, photos):
    gt8 = photos["astronaut"][:48, :40]
    gt16 = photos["coffee"][:32, :24].astype(np.uint16) * 257 + 100
    pairs = [(gt8, downscale(gt8, 4)), (gt16, downscale(photos["coffee"][:32, :24], 4))]
    shard = _paired_shard(tmp_path / "pairs-00000.tfrecord", pairs)
    items = list(iter_shard_pairs(shard))
    assert [i.name for i in items] == ["pairs-00000_0", "pairs-00000_1"]
    for item, (gt, lq) in zip(items, pairs, strict=True):
        assert item.gt.dtype == gt.dtype and item.lq.dtype == np.uint8
        np.testing.assert_array_equal(item.gt, gt)
        np.testing.assert_array_equal(item.lq, lq)
    data = open(shard, "rb").read()
    broken = tmp_path / "broken.tfrecord"
    broken.write_bytes(data[: len(data) - 40])  # truncated inside the last record
    items = list(iter_shard_pairs(str(broken)))
    assert isinstance(items[-1], EvaluationError)
    assert str(items[-1]).startswith(f"{broken}: corrupt or truncated shard")
    items = list(iter_shard_pairs(str(tmp_path / "none-*.tfrecord")))
    assert len(items) == 1 and "matches no files" in str(items[0])
