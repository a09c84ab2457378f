"""`real-esrgan-tf degrade`: grid and parameter JSON, reproducible, clear errors."""

import json

import numpy as np
import pytest
from PIL import Image

from real_esrgan_tf.cli import main as cli


@pytest.mark.slow
def test_degrade_writes_a_grid_and_the_drawn_parameters(tmp_path, photos, capsys):
    src = tmp_path / "coffee.png"
    Image.fromarray(photos["coffee"][:100, :120]).save(src)
    out = tmp_path / "grid.png"
    args = ["real-esrgan-tf", "degrade", "--input", str(src), "--output", str(out), "--num", "3",
            "--seed", "5", "--gt_size", "96"]
    assert cli.main(args) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (96 * 2 + 4, 96 * 2 + 4, 3)  # 2x2 layout, tiles at GT size
    tiles = [grid[:96, :96], grid[:96, 100:], grid[100:, :96]]
    assert not np.array_equal(tiles[0], tiles[1])
    np.testing.assert_array_equal(grid[100:, 100:], 255)  # the unused cell stays blank
    info = json.loads((tmp_path / "grid.json").read_text())
    assert info["gt_size"] == 96 and len(info["samples"]) == 3
    sample = info["samples"][0]
    assert sample["kernel1_type"] in {"iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso",
                                      "plateau_aniso"}
    assert sample["resize1_mode"] in {"area", "bilinear", "bicubic"}
    assert 30 <= sample["jpeg1_quality"] <= 95 and 7 <= sample["kernel2_size"] <= 21
    # each LQ tile is nearest-upscaled: 4x4 blocks of equal pixels
    assert np.all(tiles[0][::4, ::4] == tiles[0][3::4, 3::4])


def test_degrade_reports_a_bad_input_in_one_line(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    code = cli.main(["real-esrgan-tf", "degrade", "--input", str(bad), "--output", str(tmp_path / "g.png")])
    assert code == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "broken.png" in out[0] and "not an image" in out[0]


def test_paired_validation_set_is_the_same_bytes_for_the_same_seed(tmp_path, photos, capsys):
    gt_dir = tmp_path / "gt_photos"
    gt_dir.mkdir()
    Image.fromarray(photos["coffee"][:100, :130]).save(gt_dir / "coffee.png")
    Image.fromarray(photos["chelsea"][:90, :90]).save(gt_dir / "chelsea.png")
    (gt_dir / "notes.png").write_text("not an image")

    def make(out, seed):
        args = ["real-esrgan-tf", "degrade", "--paired", "--input", str(gt_dir), "--output", str(out),
                "--seed", str(seed), "--scale", "4"]
        return cli.main(args)

    assert make(tmp_path / "a", 7) == 1  # the bad file fails, the others are written
    err = capsys.readouterr().out
    assert f"error: {gt_dir / 'notes.png'}" in err
    assert make(tmp_path / "b", 7) == 1 and make(tmp_path / "c", 8) == 1
    for name, side in (("coffee", 100), ("chelsea", 88)):  # the largest multiple of 4 that fits
        a_gt, a_lq = (tmp_path / "a" / d / f"{name}.png" for d in ("gt", "lq"))
        assert Image.open(a_gt).size == (side, side) and Image.open(a_lq).size == (side // 4, side // 4)
        for d in ("gt", "lq"):
            same_seed = (tmp_path / "b" / d / f"{name}.png").read_bytes()
            assert (tmp_path / "a" / d / f"{name}.png").read_bytes() == same_seed
        assert a_lq.read_bytes() != (tmp_path / "c" / "lq" / f"{name}.png").read_bytes()
    assert not (tmp_path / "a" / "gt" / "notes.png").exists()
