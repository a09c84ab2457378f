"""`prepare`: official crop geometry, exact pixels in the shards, determinism, resume after SIGKILL,
SIGTERM handled like Ctrl-C."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from real_esrgan_tf import images
from real_esrgan_tf.cli import main as cli
from real_esrgan_tf.data import plan as data_plan
from real_esrgan_tf.data import prepare as prep
from real_esrgan_tf.data.dataset import make_record_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_crop_starts_match_official_recipe_by_hand():
    # extract_subimages.py: arange(0, L - crop + 1, step), plus L - crop if the leftover > thresh
    assert data_plan.crop_starts(1000, 400, 200, 0) == [0, 200, 400, 600]
    assert data_plan.crop_starts(1100, 400, 200, 0) == [0, 200, 400, 600, 700]
    assert data_plan.crop_starts(1100, 400, 200, 100) == [0, 200, 400, 600]  # leftover 100 is not > 100
    assert data_plan.crop_starts(1101, 400, 200, 100) == [0, 200, 400, 600, 701]
    assert data_plan.crop_starts(400, 400, 200, 0) == [0]
    assert data_plan.crop_starts(250, 400, 200, 0) == [0]  # shorter than the crop: one short crop
    boxes = data_plan.crop_boxes(250, 500, 400, 200, 0)
    assert boxes == [(0, 0, 250, 400), (0, 100, 250, 500)]


def test_multiscale_sizes_as_official_script():
    # generate_multiscale_DF2K.py: int(w * s), int(h * s); shortest edge 400 keeps the aspect ratio
    sizes = {v.name: v.size(1000, 1500) for v in data_plan.MULTISCALE}
    assert sizes == {"x0.75": (750, 1125), "x0.5": (500, 750), "x0.333": (333, 500), "short400": (400, 600)}
    assert data_plan.MULTISCALE[-1].size(1500, 1000) == (600, 400)
    assert data_plan.MULTISCALE[2].size(300, 301) == (int(300 * (1 / 3)), int(301 * (1 / 3)))


def _write_inputs(folder, photos):
    os.makedirs(os.path.join(folder, "sub"), exist_ok=True)
    rng = np.random.default_rng(1)
    originals = {
        "astronaut.png": photos["astronaut"][100:170, 200:290],  # 70 x 90 RGB
        "sub/coffee.jpg": None,  # lossy source: compare against its decoded pixels
        "gray.png": photos["chelsea"][:40, :52, :1],
        "rgba.png": np.concatenate(
            [photos["coffee"][:36, :44], rng.integers(0, 256, (36, 44, 1), np.uint8)], -1
        ),
        "deep16.png": rng.integers(0, 65536, (34, 38, 3), dtype=np.uint16),
        "gray16.png": rng.integers(0, 65536, (20, 36, 1), dtype=np.uint16),
    }
    for rel, px in originals.items():
        if px is None:
            images.write_image(os.path.join(folder, rel), photos["coffee"][50:110, 60:140], quality=90)
        else:
            images.write_image(os.path.join(folder, rel), px)
    with open(os.path.join(folder, "broken.png"), "wb") as f:  # fails at the header scan
        f.write(b"\x89PNG\r\n\x1a\n not really")
    jpeg = images.encode_image(photos["chelsea"][:64, :64], "jpeg")
    with open(os.path.join(folder, "cut.jpg"), "wb") as f:  # header fine, fails when a worker decodes it
        f.write(jpeg[: len(jpeg) // 2])
    return sorted(originals) + ["broken.png", "cut.jpg"]


def _expected_rgb(path):
    px = images.read_image(path).pixels
    if px.shape[-1] in (2, 4):
        px = px[..., :-1]
    return np.repeat(px, 3, -1) if px.shape[-1] == 1 else px


def _records(pattern, paired=False):
    out = []
    for r in make_record_dataset(pattern, paired=paired):
        out.append({k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in r.items()})
    return out


def test_round_trip_exact_pixels_and_metadata(tmp_path, photos):
    src = tmp_path / "src"
    _write_inputs(str(src), photos)
    config = data_plan.PrepareConfig(inputs=(str(src),), crop=32, step=24, thresh=0, num_shards=3)
    manifest = prep.prepare(config, str(tmp_path / "out"), progress=False)
    assert [s["path"] for s in manifest["skipped"]] == ["broken.png", "cut.jpg"]
    assert "truncated" in manifest["skipped"][1]["reason"]
    counts = (manifest["gray_promoted_to_rgb"], manifest["alpha_dropped"], manifest["sixteen_bit_images"])
    assert counts == (2, 1, 2)
    records = _records(str(tmp_path / "out" / "*.tfrecord"))
    assert len(records) == manifest["total_records"] == sum(s["records"] for s in manifest["shards"])
    seen = {}
    for r in records:
        source = r["image/source"].decode()
        expected = _expected_rgb(str(src / source))
        top, left, bottom, right = r["image/crop_box"]
        want = expected[top:bottom, left:right]
        maximum = 65535.0 if expected.dtype == np.uint16 else 255.0
        assert r["image/bit_depth"] == (16 if expected.dtype == np.uint16 else 8)
        assert (r["image/height"], r["image/width"]) == want.shape[:2] == r["image"].shape[:2]
        np.testing.assert_array_equal(np.rint(r["image"] * maximum).astype(expected.dtype), want)
        seen.setdefault(source, []).append((top, left, bottom, right))
    # every crop of the official grid, once
    for source, boxes in seen.items():
        h, w = _expected_rgb(str(src / source)).shape[:2]
        assert sorted(boxes) == sorted(data_plan.crop_boxes(h, w, 32, 24, 0)), source
    assert set(seen) == {
        "astronaut.png",
        "sub/coffee.jpg",
        "gray.png",
        "rgba.png",
        "deep16.png",
        "gray16.png",
    }


def test_multiscale_copies_are_pil_lanczos(tmp_path, photos):
    src = tmp_path / "src"
    os.makedirs(src)
    original = photos["astronaut"][:60, :45]
    images.write_image(str(src / "a.png"), original)
    config = data_plan.PrepareConfig(inputs=(str(src),), crop=0, multiscale=True)
    prep.prepare(config, str(tmp_path / "out"), progress=False)
    records = {r["image/variant"].decode(): r for r in _records(str(tmp_path / "out" / "*.tfrecord"))}
    assert sorted(records) == ["short400", "x0.333", "x0.5", "x0.75", "x1"]
    pil = Image.fromarray(original)
    for name, size in [
        ("x0.75", (33, 45)),
        ("x0.5", (22, 30)),
        ("x0.333", (15, 20)),
        ("short400", (400, 533)),
    ]:
        want = np.asarray(pil.resize(size, Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(
            np.rint(records[name]["image"] * 255).astype(np.uint8), want, err_msg=name
        )


def _manifest_bytes(folder):
    with open(os.path.join(folder, "manifest.json"), "rb") as f:
        return f.read()


def test_output_identical_whatever_the_worker_count(tmp_path, photos):
    src = tmp_path / "src"
    os.makedirs(src)
    for i, name in enumerate(photos):
        images.write_image(str(src / f"{name}.png"), photos[name][i * 20 : i * 20 + 80, :96])
    config = data_plan.PrepareConfig(inputs=(str(src),), crop=40, step=20, num_shards=4)
    one = prep.prepare(config, str(tmp_path / "w1"), workers=1, progress=False)
    two = prep.prepare(config, str(tmp_path / "w2"), workers=2, progress=False)
    assert one == two
    assert _manifest_bytes(tmp_path / "w1") == _manifest_bytes(tmp_path / "w2")
    assert one["total_records"] == 3 * len(data_plan.crop_boxes(80, 96, 40, 20, 0))


def test_resume_after_sigkill_gives_the_same_manifest(tmp_path, photos):
    src = tmp_path / "src"
    os.makedirs(src)
    for i in range(6):
        images.write_image(
            str(src / f"img{i}.png"), photos["astronaut"][i * 50 : i * 50 + 64, i * 30 : i * 30 + 72]
        )
    out = tmp_path / "killed"
    args = ["--input", str(src), "--crop", "32", "--step", "16", "--num_shards", "6"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "real_esrgan_tf.cli",
            "prepare",
            *args,
            "--output",
            str(out),
            "--pause_after_shard",
            "30",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not list(out.glob("shard-*.tfrecord")) and time.time() < deadline:
            assert proc.poll() is None, "prepare ended before it could be killed"
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (out / "manifest.json").exists()
    assert 1 <= len(list(out.glob("shard-*.tfrecord"))) < 6
    # damage the finished shard as a crash of the disk would: the rerun must notice and rewrite it
    first = sorted(out.glob("shard-*.tfrecord"))[0]
    with open(first, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    assert cli.main(["real-esrgan-tf", "prepare", *args, "--output", str(out)]) == 0
    config = data_plan.PrepareConfig(inputs=(str(src),), crop=32, step=16, num_shards=6)
    prep.prepare(config, str(tmp_path / "clean"), progress=False)
    assert _manifest_bytes(out) == _manifest_bytes(tmp_path / "clean")
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]
    # a complete run is kept as is
    mtimes = [p.stat().st_mtime_ns for p in sorted(out.glob("shard-*.tfrecord"))]
    assert cli.main(["real-esrgan-tf", "prepare", *args, "--output", str(out)]) == 0
    assert mtimes == [p.stat().st_mtime_ns for p in sorted(out.glob("shard-*.tfrecord"))]


def _children(pid):
    """Process ids of the direct children of `pid` (Linux /proc)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_sigterm_stops_like_ctrl_c_keeping_finished_shards(tmp_path, photos):
    """SIGTERM (a cluster stopping the job) mid-run with 2 worker processes: one line, exit 143
    within seconds, finished shards kept, the unfinished one's temp file removed, the workers
    ended; the same command then completes with the manifest of an uninterrupted run."""
    src = tmp_path / "src"
    os.makedirs(src)
    for i in range(6):
        images.write_image(
            str(src / f"img{i}.png"), photos["astronaut"][i * 50 : i * 50 + 64, i * 30 : i * 30 + 72]
        )
    out = tmp_path / "stopped"
    args = ["--input", str(src), "--crop", "32", "--step", "16", "--num_shards", "6", "--workers", "2"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    command = [sys.executable, "-m", "real_esrgan_tf.cli", "prepare", *args, "--output", str(out)]
    proc = subprocess.Popen(
        [*command, "--pause_after_shard", "30"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not list(out.glob("shard-*.tfrecord")) and time.time() < deadline:
            assert proc.poll() is None, "prepare ended before it could be stopped"
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert len(workers) >= 2, workers  # the two workers (+ multiprocessing's resource tracker)
        proc.send_signal(signal.SIGTERM)
        signalled = time.time()
        _, err = proc.communicate(timeout=60)
        seconds = time.time() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert seconds < 15, seconds
    message = [line for line in err.splitlines() if "real-esrgan-tf prepare:" in line]
    assert message == [
        "real-esrgan-tf prepare: interrupted (SIGTERM); finished shards are kept: rerun the same command "
        "to resume"
    ], err
    assert "Traceback" not in err
    deadline = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)]
    assert not (out / "manifest.json").exists()
    assert 1 <= len(list(out.glob("shard-*.tfrecord"))) < 6
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]
    assert cli.main(["real-esrgan-tf", "prepare", *args, "--output", str(out)]) == 0
    config = data_plan.PrepareConfig(inputs=(str(src),), crop=32, step=16, num_shards=6)
    prep.prepare(config, str(tmp_path / "clean"), progress=False)
    assert _manifest_bytes(out) == _manifest_bytes(tmp_path / "clean")


def test_paired_mode_matches_names_checks_sizes_and_aligns_crops(tmp_path, photos):
    gt_dir, lq_dir = tmp_path / "gt", tmp_path / "lq"
    os.makedirs(gt_dir)
    os.makedirs(lq_dir)
    gt = photos["astronaut"][:96, :128]
    lq = np.asarray(Image.fromarray(gt).resize((32, 24), Image.Resampling.BICUBIC))
    images.write_image(str(gt_dir / "pair.png"), gt)
    images.write_image(str(lq_dir / "pair.png"), lq)
    images.write_image(str(gt_dir / "wrong.png"), gt)
    images.write_image(str(lq_dir / "wrong.png"), lq[:20])
    images.write_image(str(gt_dir / "alone.png"), gt)
    code = cli.main(
        [
            "real-esrgan-tf",
            "prepare",
            "--gt",
            str(gt_dir),
            "--lq",
            str(lq_dir),
            "--scale",
            "4",
            "--crop",
            "64",
            "--step",
            "32",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 1  # shards written from the usable pairs, but some files were skipped
    with open(tmp_path / "out" / "manifest.json") as f:
        manifest = json.load(f)
    reasons = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"alone.png", "wrong.png"}
    assert "no LQ file" in reasons["alone.png"] and "is not 4 x LQ 20x32" in reasons["wrong.png"]
    records = _records(str(tmp_path / "out" / "*.tfrecord"), paired=True)
    assert len(records) == len(data_plan.crop_boxes(24, 32, 16, 8, 0)) == manifest["total_records"]
    for r in records:
        t, left, b, rr = r["image/crop_box"]
        np.testing.assert_array_equal(r["lq/crop_box"] * 4, r["image/crop_box"])
        assert t % 4 == 0 and left % 4 == 0
        np.testing.assert_array_equal(np.rint(r["image"] * 255).astype(np.uint8), gt[t:b, left:rr])
        lt, ll, lb, lr = r["lq/crop_box"]
        np.testing.assert_array_equal(np.rint(r["lq"] * 255).astype(np.uint8), lq[lt:lb, ll:lr])


def test_command_line_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    os.makedirs(empty)
    assert (
        cli.main(["real-esrgan-tf", "prepare", "--input", str(empty), "--output", str(tmp_path / "o")]) == 1
    )
    assert "no usable images" in capsys.readouterr().err
    assert cli.main(["real-esrgan-tf", "prepare", "--input", str(tmp_path / "nope"), "--output", "x"]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert cli.main(["real-esrgan-tf", "prepare", "--gt", str(empty), "--output", "x"]) == 2
    with pytest.raises(data_plan.PrepareError, match="multiples of --scale"):
        data_plan.make_plan(data_plan.PrepareConfig(gt=str(empty), lq=str(empty), scale=4, crop=30))


def test_multiscale_of_a_tiny_image_drops_only_the_zero_pixel_copies(tmp_path, photos):
    src = tmp_path / "src"
    os.makedirs(src)
    images.write_image(str(src / "tiny.png"), photos["coffee"][:2, :5])  # x0.333 -> 0 x 1
    images.write_image(str(src / "ok.png"), photos["coffee"][:6, :6])
    config = data_plan.PrepareConfig(inputs=(str(src),), crop=0, multiscale=True)
    manifest = prep.prepare(config, str(tmp_path / "out"), progress=False)
    assert manifest["skipped"] == [
        {
            "path": "tiny.png",
            "reason": "2x5 is too small for the x0.333 copy (a side would be 0 px); "
            "its other copies are used",
        }
    ]
    variants = sorted(
        (r["image/source"].decode(), r["image/variant"].decode(), r["image"].shape[:2])
        for r in _records(str(tmp_path / "out" / "*.tfrecord"))
    )
    assert [v for v in variants if v[0] == "tiny.png"] == [
        ("tiny.png", "short400", (400, 1000)),
        ("tiny.png", "x0.5", (1, 2)),
        ("tiny.png", "x0.75", (1, 3)),
        ("tiny.png", "x1", (2, 5)),
    ]
    assert len(variants) == manifest["total_records"] == 9


def test_several_inputs_with_the_same_folder_name_keep_distinct_sources(tmp_path, photos):
    rgba = np.concatenate([photos["coffee"][:8, :8], np.full((8, 8, 1), 200, np.uint8)], -1)
    for d in ("div2k/images", "ost/images"):
        os.makedirs(tmp_path / d)
        images.write_image(str(tmp_path / d / "x.png"), rgba)
    inputs = (str(tmp_path / "div2k/images"), str(tmp_path / "ost/images"))
    config = data_plan.PrepareConfig(inputs=inputs, crop=0)
    manifest = prep.prepare(config, str(tmp_path / "out"), progress=False)
    sources = sorted(r["image/source"].decode() for r in _records(str(tmp_path / "out" / "*.tfrecord")))
    assert sources == ["div2k/images/x.png", "ost/images/x.png"]
    assert manifest["alpha_dropped"] == 2
    # distinct names keep the short prefix
    names = data_plan._input_prefixes((str(tmp_path / "div2k/images"), str(tmp_path / "ost")))
    assert names == ["images", "ost"]


def test_the_same_or_a_nested_input_folder_is_an_error(tmp_path, photos):
    os.makedirs(tmp_path / "a" / "sub")
    images.write_image(str(tmp_path / "a" / "sub" / "x.png"), photos["coffee"][:8, :8])
    a, sub = str(tmp_path / "a"), str(tmp_path / "a" / "sub")
    with pytest.raises(data_plan.PrepareError, match="the same folder"):
        data_plan.make_plan(data_plan.PrepareConfig(inputs=(a, a + "/"), crop=0))
    with pytest.raises(data_plan.PrepareError, match="is inside --input"):
        data_plan.make_plan(data_plan.PrepareConfig(inputs=(a, sub), crop=0))


def test_rerun_after_an_input_changed_in_place_is_refused_not_mixed(tmp_path, photos):
    src = tmp_path / "src"
    os.makedirs(src)
    bmp = str(src / "x.bmp")  # same dimensions -> same file size: only the pixels differ
    images.write_image(bmp, photos["coffee"][:16, :16])
    images.write_image(str(src / "y.png"), photos["chelsea"][:16, :16])
    config = data_plan.PrepareConfig(inputs=(str(src),), crop=8, step=8, num_shards=2)
    out = str(tmp_path / "out")
    prep.prepare(config, out, progress=False)
    size, mtime = os.path.getsize(bmp), os.stat(bmp).st_mtime_ns
    images.write_image(bmp, photos["astronaut"][:16, :16])
    os.utime(bmp, ns=(mtime + 10**9, mtime + 10**9))  # edited a second later
    assert os.path.getsize(bmp) == size
    with pytest.raises(data_plan.PrepareError, match="x.bmp is new or changed"):
        prep.prepare(config, out, progress=False)
    prep.prepare(config, out, overwrite=True, progress=False)
    got = {
        tuple(r["image/crop_box"]): r["image"]
        for r in _records(out + "/*.tfrecord")
        if r["image/source"] == b"x.bmp"
    }
    np.testing.assert_array_equal(np.rint(got[(0, 0, 8, 8)] * 255), photos["astronaut"][:8, :8])


def test_paired_names_shared_by_several_files_are_skipped_not_guessed(tmp_path, photos):
    gt_dir, lq_dir = tmp_path / "gt", tmp_path / "lq"
    os.makedirs(gt_dir)
    os.makedirs(lq_dir)
    gt = photos["astronaut"][:16, :16]
    lq = np.asarray(Image.fromarray(gt).resize((4, 4), Image.Resampling.BICUBIC))
    for name in ("a.png", "b.png"):
        images.write_image(str(gt_dir / name), gt)
        images.write_image(str(lq_dir / name), lq)
    images.write_image(str(lq_dir / "a.bmp"), lq[::-1])  # which LQ is a.png's partner?
    config = data_plan.PrepareConfig(gt=str(gt_dir), lq=str(lq_dir), scale=4, crop=0)
    manifest = prep.prepare(config, str(tmp_path / "out"), progress=False)
    reasons = {s["path"]: s["reason"] for s in manifest["skipped"]}
    assert sorted(reasons) == ["a.bmp", "a.png"]
    assert "LQ name shared with a.png" in reasons["a.bmp"]
    records = _records(str(tmp_path / "out" / "*.tfrecord"), paired=True)
    assert [r["image/source"] for r in records] == [b"b.png"] and manifest["total_records"] == 1


def test_an_image_over_pillows_pixel_limit_is_skipped_not_fatal(tmp_path, photos, monkeypatch):
    src = tmp_path / "src"
    os.makedirs(src)
    images.write_image(str(src / "huge.png"), photos["coffee"][:40, :40])  # "huge" for the limit below
    images.write_image(str(src / "ok.png"), photos["coffee"][:8, :8])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # error above 2 x 500 pixels, as 179 MP by default
    config = data_plan.PrepareConfig(inputs=(str(src),), crop=0)
    manifest = prep.prepare(config, str(tmp_path / "out"), progress=False)
    assert [s["path"] for s in manifest["skipped"]] == ["huge.png"]
    assert "too large for Pillow" in manifest["skipped"][0]["reason"]
    assert manifest["total_records"] == 1


def test_symlinked_sub_folders_are_read_once(tmp_path, photos):
    for d in ("div2k", "flickr2k", "df2k"):
        os.makedirs(tmp_path / d)
    images.write_image(str(tmp_path / "div2k" / "a.png"), photos["coffee"][:8, :8])
    images.write_image(str(tmp_path / "flickr2k" / "b.png"), photos["chelsea"][:8, :8])
    os.symlink(tmp_path / "div2k", tmp_path / "df2k" / "div2k")
    os.symlink(tmp_path / "flickr2k", tmp_path / "df2k" / "flickr2k")
    os.symlink(tmp_path / "df2k", tmp_path / "flickr2k" / "loop")  # a link back up must not loop
    assert data_plan._list_images(str(tmp_path / "df2k")) == ["div2k/a.png", "flickr2k/b.png"]
