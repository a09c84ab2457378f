"""`real-esrgan-tf video` in-process: the real model end to end, folders with bad files, flag errors."""

import hashlib
import os

import av
import numpy as np
import pytest

from real_esrgan_tf.cli.main import main
from real_esrgan_tf.serve import video_io
from real_esrgan_tf.serve.upscaler import Upscaler
from real_esrgan_tf.weights import load_generator, save_generator
from tests.test_cli_upscale import nearest_x2
from tests.test_video import packets, psnr
from tests.video_clips import make_clip


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "nearest_x2.weights.h5"
    save_generator(nearest_x2(), path)
    return str(path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("clips") / "tiny.mkv")
    make_clip(path, frames=6, size=(32, 24), rotate=90, subtitle=True, chapters=True)
    return path


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def errors(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


def rgb_frames(path):
    with av.open(path) as c:
        return [(f.pts * f.time_base, video_io.frame_to_rgb(f, "rgb24")) for f in c.decode(video=0)]


def test_animevideov3_end_to_end_ffv1_exact_and_x264_close(clip, tmp_path):
    """Every output frame is the Upscaler's picture of the decoded input frame: exactly with ffv1 in RGB,
    within codec loss with x264 (4:4:4 here, so that chroma subsampling of the sharp model output is not
    what is measured); timing, sound, subtitles and rotation as the input's."""
    before = sha(clip)
    lossless, lossy = str(tmp_path / "x4.mkv"), str(tmp_path / "x4.mp4")
    assert main(["real-esrgan-tf", "video", "--input", clip, "--output", lossless, "--codec", "ffv1",
                 "--pix_fmt", "bgr0", "--batch", "4"]) == 0
    assert main(["real-esrgan-tf", "video", "--input", clip, "--output", lossy, "--crf", "12",
                 "--pix_fmt", "yuv444p", "--batch", "3", "--segment_frames", "4"]) == 0
    assert sha(clip) == before
    upscaler = Upscaler(load_generator("realesr-animevideov3"), precision="auto")  # the CLI default
    inp = rgb_frames(clip)
    for out, exact in [(lossless, True), (lossy, False)]:
        res = rgb_frames(out)
        assert [t for t, _ in res] == [t for t, _ in inp]
        for (_, f_in), (_, f_out) in zip(inp, res, strict=True):
            want = upscaler.upscale(f_in)
            assert f_out.shape == (96, 128, 3)
            if exact:
                np.testing.assert_array_equal(f_out, want)
            else:
                assert psnr(want, f_out) >= 40
        with av.open(out) as c:
            assert next(c.decode(video=0)).rotation == 90
        assert [b for _, b in packets(out, "audio")] == [b for _, b in packets(clip, "audio")]
    assert packets(lossless, "subtitle") == packets(clip, "subtitle")


def test_folder_with_bad_files_keeps_going(clip, model_file, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    os.link(clip, folder / "good.mkv")
    (folder / "broken.mp4").write_text("not a video\n")
    make_clip(str(folder / "other.mov"), frames=3, size=(16, 16), audio=False)
    (folder / "notes.txt").write_text("ignored: not a video extension\n")
    out = tmp_path / "out"
    code = main(["real-esrgan-tf", "video", "--input", str(folder), "--output", str(out),
                 "--model", model_file])
    assert code == 1
    lines = errors(capsys)
    assert len(lines) == 1 and "broken.mp4: not a readable video" in lines[0], lines
    assert sorted(os.listdir(out)) == ["good_out.mkv", "other_out.mov"]  # no temp files or work folders left
    res = rgb_frames(str(out / "good_out.mkv"))
    assert len(res) == 6 and res[0][1].shape == (48, 64, 3)


@pytest.mark.parametrize("args, message", [
    (["--output", "{tmp}/o.webm"], "cannot hold libx264 video"),
    (["--output", "{tmp}/o.mkv", "--pix_fmt", "yuv420p10le", "--codec", "ffv1", "--model", "nowhere.pth"],
     "nowhere.pth"),
    (["--output", "{tmp}/o.mkv", "--fps", "fast"], "--fps 'fast'"),
    (["--output", "{tmp}/o.mkv", "--codec", "libx264", "--pix_fmt", "rgb48le"], "cannot encode pixel format"),
    ([], "--output is required"),
])
def test_bad_flags_one_error_line(args, message, clip, model_file, tmp_path, capsys):
    args = [a.format(tmp=tmp_path) for a in args]
    if "--model" not in args:
        args += ["--model", model_file]
    assert main(["real-esrgan-tf", "video", "--input", clip] + args) == 1
    lines = errors(capsys)
    assert len(lines) == 1 and message in lines[0], lines
    assert not [n for n in os.listdir(tmp_path) if n.startswith("o.")]
