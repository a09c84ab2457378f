"""`real-esrgan-tf evaluate` end to end with a tiny exact model (nearest-neighbour x2): scores equal the
library's on the known outputs, bad files are one error line each, and the three input modes work."""

import json

import numpy as np
import pytest

from real_esrgan_tf.cli.main import main
from real_esrgan_tf.evaluation import bicubic_upscale, calculate_niqe, calculate_psnr, calculate_ssim
from real_esrgan_tf.images import read_image, write_image
from real_esrgan_tf.weights import save_generator
from tests.test_cli_upscale import nearest_x2, up2
from tests.test_evaluation_evaluate import _paired_shard, downscale


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "nearest_x2.weights.h5"
    save_generator(nearest_x2(), path)
    return str(path)


@pytest.fixture
def pairs(tmp_path, photos):
    gt_dir, lq_dir = tmp_path / "gt", tmp_path / "lq"
    gt_dir.mkdir()
    lq_dir.mkdir()
    gts = {"small": photos["astronaut"][200:248, 220:260], "big": photos["coffee"][100:300, 200:392]}
    lqs = {}
    for name, gt in gts.items():
        lqs[name] = downscale(gt, 2)
        write_image(str(gt_dir / f"{name}.png"), gt)
        write_image(str(lq_dir / f"{name}.png"), lqs[name])
    write_image(str(gt_dir / "broken.png"), gts["small"])
    (lq_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return gt_dir, lq_dir, gts, lqs


def error_lines(capsys):
    captured = capsys.readouterr()
    return captured.out, [line for line in captured.err.splitlines() if "error:" in line]


def test_gt_and_lq_folders(pairs, model_file, tmp_path, capsys):
    gt_dir, lq_dir, gts, lqs = pairs
    out_json, save_dir = tmp_path / "scores.json", tmp_path / "sr"
    code = main(["real-esrgan-tf", "evaluate", "--model", model_file, "--gt", str(gt_dir),
                 "--lq", str(lq_dir), "--json", str(out_json), "--save_dir", str(save_dir)])
    out, errors = error_lines(capsys)
    assert code == 1  # the broken file; the others are still evaluated
    assert len(errors) == 1
    assert errors[0].startswith(f"real-esrgan-tf evaluate: error: {lq_dir}/broken.png: cannot decode")
    doc = json.loads(out_json.read_text())
    rows = {r["name"]: r for r in doc["images"]}
    assert sorted(rows) == ["big", "small"] and doc["settings"]["crop_border"] == 2
    for name, gt in gts.items():
        sr = up2(lqs[name])
        assert rows[name]["psnr"] == pytest.approx(calculate_psnr(sr, gt, 2), abs=1e-12)
        assert rows[name]["ssim"] == pytest.approx(calculate_ssim(sr, gt, 2), abs=1e-12)
        bicubic = bicubic_upscale(lqs[name], 2)
        assert rows[name]["bicubic_psnr"] == pytest.approx(calculate_psnr(bicubic, gt, 2), abs=1e-12)
        np.testing.assert_array_equal(read_image(str(save_dir / f"{name}.png")).pixels, sr)
    assert rows["big"]["niqe"] == pytest.approx(calculate_niqe(up2(lqs["big"]), 2), abs=1e-12)
    assert rows["small"]["niqe"] is None  # 96x80 output: under two NIQE blocks
    assert doc["mean"]["psnr"] == pytest.approx((rows["big"]["psnr"] + rows["small"]["psnr"]) / 2)
    assert doc["failures"] == [errors[0].split("error: ", 1)[1]]
    table = out.splitlines()
    assert any(line.startswith("big ") for line in table)
    assert any(line.startswith("mean (2)") for line in table)
    assert f"wrote {out_json}" in out


def test_lq_only_gives_niqe(pairs, model_file, tmp_path, capsys):
    _, _, _, lqs = pairs
    lq_dir = tmp_path / "lq_only"
    lq_dir.mkdir()
    write_image(str(lq_dir / "big.png"), lqs["big"])
    out_json = tmp_path / "niqe.json"
    assert main(["real-esrgan-tf", "evaluate", "--model", model_file, "--lq", str(lq_dir),
                 "--json", str(out_json)]) == 0
    doc = json.loads(out_json.read_text())
    (row,) = doc["images"]
    assert row["psnr"] is None and row["niqe"] == pytest.approx(calculate_niqe(up2(lqs["big"]), 2))


def test_paired_shards(pairs, model_file, tmp_path, capsys):
    _, _, gts, lqs = pairs
    shard = _paired_shard(tmp_path / "val-00000.tfrecord", [(gts[n], lqs[n]) for n in ("small", "big")])
    out_json = tmp_path / "shards.json"
    assert main(["real-esrgan-tf", "evaluate", "--model", model_file, "--data", shard, "--noniqe",
                 "--crop_border", "0", "--json", str(out_json)]) == 0
    doc = json.loads(out_json.read_text())
    assert [r["name"] for r in doc["images"]] == ["val-00000_0", "val-00000_1"]
    assert doc["images"][0]["psnr"] == pytest.approx(calculate_psnr(up2(lqs["small"]), gts["small"], 0))
    assert doc["mean"]["niqe"] is None


@pytest.mark.parametrize("flags, message", [
    (["--gt", "G"], "--gt needs --lq"),
    (["--data", "D", "--lq", "L"], "not both"),
    ([], "give --data SHARDS"),
    (["--lq", "L", "--save_dir", "L"], "is an input folder"),
])
def test_bad_flag_combinations(flags, message, model_file, capsys):
    assert main(["real-esrgan-tf", "evaluate", "--model", model_file, *flags]) == 1
    _, errors = error_lines(capsys)
    assert len(errors) == 1 and message in errors[0]
