"""serve/video: container logic with a numpy nearest-x2 upscaler (the model path: test_cli_video)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from real_esrgan_tf.serve import video, video_io
from real_esrgan_tf.serve.video_io import EncodeSettings, VideoError
from tests.video_clips import make_clip


class Nearest2:
    """Pixel replication x2: exact, cheap, and any misplaced frame or row shows."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls: list[tuple[int, ...]] = []
        self.lock = threading.Lock()

    def output_size(self, height, width):
        return 2 * height, 2 * width

    def upscale_batch(self, frames):
        with self.lock:
            self.calls.append(frames.shape)
        if self.delay:
            time.sleep(self.delay)
        return frames.repeat(2, axis=1).repeat(2, axis=2)


class Failing(Nearest2):
    def upscale_batch(self, frames):
        if len(self.calls) >= 2:
            raise RuntimeError("device lost")
        return super().upscale_batch(frames)


def decoded(path, rgb=None):
    """[(pts, frame)] of the video stream, with the frame as RGB (or the raw frame if rgb is None)."""
    with av.open(path) as c:
        vs = video_io.video_stream(c, path)
        out = [(f.pts, video_io.frame_to_rgb(f, rgb) if rgb else f) for f in c.decode(vs)]
        return out, vs.time_base


def packets(path, kind):
    with av.open(path) as c:
        streams = [s for s in c.streams if s.type == kind]
        return [(float(p.pts * p.time_base), bytes(p)) for p in c.demux(streams) if p.size]


def psnr(a, b, peak=255.0):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def check_picture(src, out, min_db=40.0, rgb="rgb24"):
    """Every output frame against nearest-x2 of the decoded input frame; same PTS after time-base scaling."""
    (inp, tb_in), (res, tb_out) = decoded(src, rgb), decoded(out, rgb)
    assert len(res) == len(inp)
    peak = 65535.0 if rgb == "rgb48le" else 255.0
    for (p_in, f_in), (p_out, f_out) in zip(inp, res, strict=True):
        assert p_out * tb_out == p_in * tb_in
        want = Nearest2().upscale_batch(f_in[None])[0]
        assert psnr(want, f_out, peak) >= min_db, (p_in, psnr(want, f_out, peak))
    return inp, res


def test_mkv_keeps_timing_audio_subtitles_rotation_colour_chapters_tags(tmp_path):
    src, out = str(tmp_path / "in.mkv"), str(tmp_path / "out.mkv")
    make_clip(src, frames=14, rotate=90, subtitle=True, chapters=True, colour=(1, 1, 1, 1))
    before = sha(src)
    fake = Nearest2()
    result = video.upscale_video(src, out, [fake], EncodeSettings(batch=4, segment_frames=6, crf=10))
    assert sha(src) == before  # input only read
    assert result.frames == result.upscaled == 14 and not result.warnings
    # Batches never cross a segment (6 frames) and hold up to 4 equal-size frames: 4+2, 4+2, 2.
    assert [c[0] for c in fake.calls] == [4, 2, 4, 2, 2]
    check_picture(src, out)
    assert packets(out, "audio") == packets(src, "audio")  # byte-identical, same times
    assert packets(out, "subtitle") == packets(src, "subtitle") == [(0.1, b"Hello")]
    with av.open(src) as a, av.open(out) as b:
        fa, fb = next(a.decode(video=0)), next(b.decode(video=0))
        assert fb.rotation == fa.rotation == 90
        assert video_io.Colour.of(fb) == video_io.Colour.of(fa) == video_io.Colour(1, 1, 1, 1)
        assert fb.format.name == "yuv420p" and (fb.width, fb.height) == (128, 96)
        assert b.metadata["title"] == "synthetic clip"
        assert [c["metadata"]["title"] for c in b.chapters()] == ["first", "second"]
        assert [(c["start"] * c["time_base"], c["end"] * c["time_base"]) for c in b.chapters()] == [
            (c["start"] * c["time_base"], c["end"] * c["time_base"]) for c in a.chapters()
        ]
        assert b.streams.subtitles[0].metadata.get("language") == "eng"
        assert b.streams.subtitles[0].disposition == av.stream.Disposition.forced
        assert [st.disposition for st in b.streams] == [st.disposition for st in a.streams]
        dur_a = a.streams.video[0].duration or a.duration
        assert abs(b.duration - a.duration) <= av.time_base / 12, (dur_a, b.duration)
    assert not os.path.exists(video.work_dir_for(out))  # work folder removed after success
    assert sorted(os.listdir(tmp_path)) == ["in.mkv", "out.mkv"]  # no temp file left


def test_vfr_mp4_every_pts_kept_and_mov_text_copied(tmp_path):
    src, out = str(tmp_path / "vfr.mp4"), str(tmp_path / "out.mp4")
    pts = make_clip(
        src,
        frames=15,
        fps=12,
        time_base=Fraction(1, 16000),
        durations=[800, 2400, 1333],
        subtitle=True,
        rotate=270,
    )
    assert len(set(np.diff(pts))) == 3  # really variable
    video.upscale_video(src, out, [Nearest2()], EncodeSettings(batch=3, segment_frames=4, crf=10))
    inp, _ = check_picture(src, out)
    assert [p for p, _ in inp] == pts
    assert packets(out, "audio") == packets(src, "audio")
    # The mov muxer writes its own empty samples (b"\0\0") between cues; the cues themselves are copied.
    cues = [(t, b) for t, b in packets(src, "subtitle") if b != b"\0\0"]
    assert [(t, b) for t, b in packets(out, "subtitle") if b != b"\0\0"] == cues == [(0.1, b"\0\x05Hello")]
    with av.open(src) as a, av.open(out) as b:
        assert (
            next(b.decode(video=0)).rotation == next(a.decode(video=0)).rotation == -90
        )  # = 270 counter-clockwise


def test_ten_bit_stays_ten_bit(tmp_path):
    src, out = str(tmp_path / "deep.mkv"), str(tmp_path / "out.mkv")
    make_clip(src, frames=6, pix_fmt="yuv420p10le", audio=False, colour=(9, 1, 9, 16))  # BT.2020 PQ tags
    video.upscale_video(
        src, out, [Nearest2()], EncodeSettings(codec="libx265", crf=8, batch=2, segment_frames=4)
    )
    with av.open(out) as b:
        f = next(b.decode(video=0))
        assert f.format.name == "yuv420p10le"
        assert video_io.Colour.of(f) == video_io.Colour(9, 1, 9, 16)
    check_picture(src, out, rgb="rgb48le")


def test_ffv1_is_lossless(tmp_path):
    """ffv1: output planes equal exactly the encoder's input (nearest-x2 RGB converted with the input's
    matrix); in an RGB pixel format the decoded RGB equals nearest-x2 of the decoded input exactly."""
    src = str(tmp_path / "in.mkv")
    make_clip(src, frames=5, audio=False)
    out_yuv, out_rgb = str(tmp_path / "yuv.mkv"), str(tmp_path / "rgb.mkv")
    video.upscale_video(src, out_yuv, [Nearest2()], EncodeSettings(codec="ffv1", batch=2))
    video.upscale_video(src, out_rgb, [Nearest2()], EncodeSettings(codec="ffv1", pix_fmt="bgr0", batch=2))
    check_picture(src, out_rgb, min_db=float("inf"))
    (inp, _), (res, _) = decoded(src, "rgb24"), decoded(out_yuv)
    colour = video_io.Colour(1, 1, 1, 1)
    for (_, f_in), (_, f_out) in zip(inp, res, strict=True):
        want = video_io.rgb_to_frame(Nearest2().upscale_batch(f_in[None])[0], "yuv420p", colour)
        for plane_want, plane_out in zip(want.planes, f_out.planes, strict=True):
            assert bytes(plane_want) == bytes(plane_out)


def test_libsvtav1_webm_and_fps_resample(tmp_path):
    src, out = str(tmp_path / "in.mkv"), str(tmp_path / "out.webm")
    make_clip(src, frames=12, fps=12, audio=False, chapters=True)  # 1 s
    video.upscale_video(src, out, [Nearest2()], EncodeSettings(codec="libsvtav1", fps=Fraction(5), batch=2))
    res, tb = decoded(out)
    assert [p * tb for p, _ in res] == [Fraction(k, 5) for k in range(5)]
    with av.open(out) as b:
        assert [c["metadata"]["title"] for c in b.chapters()] == ["first", "second"]
        assert b.metadata["title"] == "synthetic clip"


def test_time_range_shifts_every_stream(tmp_path):
    src, out = str(tmp_path / "in.mkv"), str(tmp_path / "cut.mkv")
    make_clip(src, frames=24, fps=12)  # 2 s; Matroska stores milliseconds: frame 6 is at 0.498 s
    video.upscale_video(src, out, [Nearest2()], EncodeSettings(start=0.45, end=1.45, crf=10, batch=4))
    (inp, tb_in), (res, tb_out) = decoded(src, "rgb24"), decoded(out, "rgb24")
    kept = [(p * tb_in, f) for p, f in inp if 0.45 <= p * tb_in < 1.45]
    first = kept[0][0]
    assert [p * tb_out for p, _ in res] == [p - first for p, _ in kept]  # starts at 0, spacing kept
    for (_, f_in), (_, f_out) in zip(kept, res, strict=True):
        assert psnr(Nearest2().upscale_batch(f_in[None])[0], f_out) >= 40
    want = [(t - float(first), b) for t, b in packets(src, "audio") if float(first) <= t < 1.45]
    got = packets(out, "audio")
    assert [b for _, b in got] == [b for _, b in want]
    assert np.allclose([t for t, _ in got], [t for t, _ in want], atol=1e-3)


def test_fps_moves_every_stream_with_a_late_video_start(tmp_path):
    """Video starting at 0.5 s, --fps 6: output frame k is at k/6 s and the audio moves by the same 0.5 s."""
    src, out = str(tmp_path / "late.mkv"), str(tmp_path / "out.mkv")
    make_clip(src, frames=12, fps=12, offset=500)
    video.upscale_video(src, out, [Nearest2()], EncodeSettings(fps=Fraction(6), crf=10))
    res, tb = decoded(out)
    assert len(res) == 6
    assert all(abs(p * tb - Fraction(k, 6)) <= Fraction(1, 1000) for k, (p, _) in enumerate(res))  # ms in MKV
    want = [(t - 0.5, b) for t, b in packets(src, "audio") if t >= 0.5]
    got = packets(out, "audio")
    assert [b for _, b in got] == [b for _, b in want]
    assert np.allclose([t for t, _ in got], [t for t, _ in want], atol=1e-3)


def test_batch_and_devices_do_not_change_the_picture(tmp_path):
    src = str(tmp_path / "in.mkv")
    make_clip(src, frames=11, audio=False)
    outs = []
    for i, (batch, devices) in enumerate([(1, 1), (4, 1), (3, 2)]):
        out = str(tmp_path / f"o{i}.mkv")
        fakes = [Nearest2(delay=0.002 * d) for d in range(devices)]
        video.upscale_video(src, out, fakes, EncodeSettings(codec="ffv1", batch=batch, segment_frames=6))
        assert all(max(c[0] for c in f.calls) <= batch for f in fakes if f.calls)
        outs.append(sha(out))
    assert outs[0] == outs[1] == outs[2]


def test_memory_stays_bounded_on_a_long_clip(tmp_path):
    src, out = str(tmp_path / "long.mkv"), str(tmp_path / "out.mkv")
    make_clip(src, frames=400, fps=25, size=(16, 16), audio=False, codec="ffv1", pix_fmt="yuv420p")
    result = video.upscale_video(
        src,
        out,
        [Nearest2(delay=0.001)],
        EncodeSettings(codec="ffv1", batch=4, segment_frames=100),
        queue_batches=2,
    )
    assert result.frames == 400
    # queues (2 x 2 batches) + one batch held by the decoder, the worker and the encoder each, +1 slack.
    assert result.peak_frames_in_flight <= (2 * 2 + 3 + 1) * 4


_KILLED_RUN = """
import sys, time
sys.path.insert(0, {root!r})
from tests.test_video import Nearest2
from real_esrgan_tf.serve import video
from real_esrgan_tf.serve.video_io import EncodeSettings
video.upscale_video({src!r}, {out!r}, [Nearest2(delay=0.05)], EncodeSettings(batch=2, segment_frames=4))
"""


def test_sigkill_then_resume_gives_the_same_file(tmp_path):
    src = str(tmp_path / "in.mkv")
    make_clip(src, frames=24, subtitle=True, chapters=True)
    settings = EncodeSettings(batch=2, segment_frames=4)
    straight = str(tmp_path / "straight.mkv")
    video.upscale_video(src, straight, [Nearest2()], settings)

    out = str(tmp_path / "resumed.mkv")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN.format(root=root, src=src, out=out)], cwd=root)
    work = video.work_dir_for(out)
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.isdir(work) and sum(n.endswith(".seg") for n in os.listdir(work)) >= 2:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(out)
    finished = sum(n.endswith(".seg") for n in os.listdir(work))
    assert 2 <= finished < 6
    fake = Nearest2()
    result = video.upscale_video(src, out, [fake], settings)
    assert result.resumed_segments == finished
    assert result.upscaled == 24 - 4 * finished == sum(c[0] for c in fake.calls)
    assert sha(out) == sha(straight)


def test_changed_settings_discard_old_segments(tmp_path):
    src, out = str(tmp_path / "in.mkv"), str(tmp_path / "out.mkv")
    make_clip(src, frames=8, audio=False)
    video.upscale_video(src, out, [Nearest2()], EncodeSettings(segment_frames=4), keep_work=True)
    again = video.upscale_video(src, out, [Nearest2()], EncodeSettings(segment_frames=4), keep_work=True)
    assert again.resumed_segments == 2 and again.upscaled == 0
    other = video.upscale_video(
        src, out, [Nearest2()], EncodeSettings(segment_frames=4, crf=30), fingerprint="other model"
    )
    assert other.resumed_segments == 0 and other.upscaled == 8


def test_failure_mid_way_leaves_no_output(tmp_path):
    src, out = str(tmp_path / "in.mkv"), str(tmp_path / "out.mkv")
    make_clip(src, frames=12)
    before = sha(src)
    with pytest.raises(RuntimeError, match="device lost"):
        video.upscale_video(src, out, [Failing()], EncodeSettings(batch=2, segment_frames=4))
    assert sha(src) == before
    assert not os.path.exists(out)
    assert not [n for n in os.listdir(video.work_dir_for(out)) if n.endswith(".tmp")]


def _garbage_video(path):
    """A valid Matroska file whose video packets are random bytes claiming to be MJPEG."""
    rng = np.random.default_rng(0)
    with av.open(path, "w") as out:
        s = out.add_mux_stream("mjpeg", width=64, height=48)
        s.time_base = Fraction(1, 1000)
        for i in range(4):
            p = av.Packet(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
            p.stream, p.time_base, p.pts, p.dts, p.is_keyframe = s, s.time_base, i * 100, i * 100, True
            out.mux(p)


def _corrupt_after(good, path, keep):
    """A copy of the ffv1 clip `good` whose video packets after the first `keep` are random bytes."""
    rng = np.random.default_rng(1)
    with av.open(good) as src, av.open(path, "w") as out:
        vin = src.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for i, p in enumerate(q for q in src.demux(vin) if q.size):
            if i >= keep:
                bad = av.Packet(rng.integers(0, 256, p.size, dtype=np.uint8).tobytes())
                bad.pts, bad.dts, bad.time_base, bad.is_keyframe = p.pts, p.dts, p.time_base, p.is_keyframe
                p = bad
            p.stream = vout
            out.mux(p)


def _audio_only(path):
    with av.open(path, "w") as out:
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
        for k in range(4):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, k * 1024
            out.mux(a.encode(f))
        out.mux(a.encode())


@pytest.mark.parametrize(
    "case, reason",
    [
        ("text", "not a readable video"),
        ("audio_only", "no video stream"),
        ("garbage", "no picture size or pixel format"),
    ("corrupt_frames", "undecodable video frame after frame 3"),
        ("unwritable", "cannot write"),
        ("x264_in_webm", "cannot hold libx264"),
        ("bad_extension", "unknown output extension"),
        ("same_file", "output is the input"),
    ],
)
def test_bad_input_names_file_and_reason(tmp_path, case, reason):
    good = str(tmp_path / "good.mkv")
    make_clip(good, frames=4, audio=False)
    src, out, settings = good, str(tmp_path / "out.mkv"), EncodeSettings()
    if case == "text":
        src = str(tmp_path / "notes.mp4")
        open(src, "w").write("not a video\n")
    elif case == "audio_only":
        src = str(tmp_path / "sound.mkv")
        _audio_only(src)
    elif case == "garbage":
        src = str(tmp_path / "garbage.mkv")
        _garbage_video(src)
    elif case == "corrupt_frames":
        lossless = str(tmp_path / "lossless.mkv")
        make_clip(lossless, frames=6, audio=False, codec="ffv1")
        src = str(tmp_path / "corrupt.mkv")
        _corrupt_after(lossless, src, keep=3)
    elif case == "unwritable":
        open(tmp_path / "afile", "w").close()
        out = str(tmp_path / "afile" / "out.mkv")
    elif case == "x264_in_webm":
        out = str(tmp_path / "out.webm")
    elif case == "bad_extension":
        out = str(tmp_path / "out.xyz")
    elif case == "same_file":
        out = good
    before = sha(src)
    with pytest.raises(VideoError, match=reason) as err:
        video.upscale_video(src, out, [Nearest2()], settings)
    assert err.value.path in (src, out) and str(err.value).startswith(err.value.path)
    assert "\n" not in str(err.value)
    assert sha(src) == before
    assert not os.path.exists(out) or out == src


def test_list_videos_by_extension(tmp_path):
    for name in ["b.mkv", "a.MP4", "notes.txt", ".hidden.mp4"]:
        open(tmp_path / name, "w").close()
    os.mkdir(tmp_path / "sub.mkv")
    assert [os.path.basename(p) for p in video.list_videos(str(tmp_path))] == ["a.MP4", "b.mkv"]


@pytest.mark.parametrize(
    "pix_fmt, codec, want",
    [
        ("yuv420p", "libx264", "yuv420p"),
        ("yuv420p10le", "libx264", "yuv420p10le"),
        ("yuv422p10le", "libsvtav1", "yuv420p10le"),
        ("yuv420p12le", "libx264", "yuv420p10le"),
        ("gbrp", "libx264", "yuv444p"),
        ("nv12", "ffv1", "yuv420p"),
        ("yuv444p", "libx265", "yuv444p"),
    ],
)
def test_pixel_format_family(pix_fmt, codec, want):
    assert video_io.choose_pix_fmt(pix_fmt, codec) == want


_RSS_RUN = """
import resource, sys
sys.path.insert(0, {root!r})
from tests.test_video import Nearest2
from real_esrgan_tf.serve import video
from real_esrgan_tf.serve.video_io import EncodeSettings
video.upscale_video({src!r}, {out!r}, [Nearest2(delay=0.01)], EncodeSettings(codec="ffv1", batch=4,
                    segment_frames=100), queue_batches={queue})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


QUEUE = 2  # queue_batches of the runs below


@pytest.mark.slow  # two subprocesses and a 1000-frame clip: ~4 s idle
def test_peak_rss_does_not_grow_with_length(tmp_path):
    """10x the frames, same peak memory, with a slow upscaler so that the decoder runs ahead."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    peaks = {}
    for frames in (100, 1000):
        src, out = str(tmp_path / f"{frames}.mkv"), str(tmp_path / f"{frames}_out.mkv")
        make_clip(src, frames=frames, fps=25, size=(96, 64), audio=False, codec="ffv1")
        script = _RSS_RUN.format(root=root, src=src, out=out, queue=QUEUE)
        run = subprocess.run([sys.executable, "-c", script], cwd=root,
                             capture_output=True, text=True, check=True)
        peaks[frames] = int(run.stdout.split()[-1]) / 1024  # MB
    # Measured: +0.9 MB with queues of 2 batches; +18 MB with the queues made unbounded (queue.Queue(0)).
    assert peaks[1000] - peaks[100] < 6, peaks
