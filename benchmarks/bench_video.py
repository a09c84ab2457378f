"""Speed of `real-esrgan-tf video` with realesr-animevideov3 (x4) on a 320x240 clip, in one process.

Prints ONE JSON line (medians of --repeats rounds after a warm-up; each round runs every variant in turn):
  - frames/s of the same decoded frames through `Upscaler.upscale` one by one (no decode/encode),
  - frames/s of `Upscaler.upscale_batch` at batch 1 and --batch (no decode/encode),
  - frames/s of the whole video pipeline (decode -> upscale -> encode -> mux) at batch 1 and --batch,
  - the decode + encode + mux share: the pipeline's time with a free upscaler (nearest x4 in numpy,
    same output size) over its time with the model,
  - peak RSS of the batched video run, measured in a child process.

    python benchmarks/bench_video.py [--frames 24] [--batch 4] [--repeats 3] [--codec libx264]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np

MODEL = "realesr-animevideov3"


def make_clip(path: str, frames: int, size=(320, 240), fps: int = 24) -> None:
    """A camera pan over a real photograph (scikit-image's astronaut), H.264 yuv420p, with an AAC tone."""
    from fractions import Fraction

    import av
    from PIL import Image
    from skimage import data

    width, height = size
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((2 * width, 2 * height)))
    with av.open(path, "w") as out:
        v = out.add_stream("libx264", rate=fps, options={"crf": "18"})
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = out.add_stream("aac", rate=48000)
        a.layout = "stereo"
        for i in range(frames):
            x, y = (i * 7) % width, (i * 3) % height
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(photo[y : y + height, x : x + width]), "rgb24"
            )
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(v.encode(frame.reformat(format="yuv420p")))
        out.mux(v.encode())
        seconds = frames / fps
        for k in range(0, int(48000 * seconds), 1024):
            t = (k + np.arange(1024)) / 48000
            tone = np.repeat((0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], 2, axis=0)
            af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="stereo")
            af.sample_rate, af.pts = 48000, k
            out.mux(a.encode(af))
        out.mux(a.encode())


def decoded_frames(path: str) -> np.ndarray:
    import av

    from real_esrgan_tf.serve import video_io

    with av.open(path) as c:
        return np.stack([video_io.frame_to_rgb(f, "rgb24") for f in c.decode(video=0)])


def round_robin_medians(fns: dict, repeats: int) -> dict:
    """Median seconds of each function over `repeats` rounds; every round runs all of them in turn, so a
    busy shared machine slows them alike instead of whichever ran during the noise. One warm-up each
    (tracing, oneDNN primitives, encoder start-up) is not timed."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


class NearestX4:
    """A free upscaler of the model's output size: what is left is decode + encode + mux."""

    def output_size(self, height, width):
        return 4 * height, 4 * width

    def upscale_batch(self, frames):
        return frames.repeat(4, axis=1).repeat(4, axis=2)


def upscaler():
    from real_esrgan_tf import weights
    from real_esrgan_tf.serve.upscaler import Upscaler

    return Upscaler(weights.load_generator(MODEL))


def run_video(clip: str, up, batch: int, codec: str) -> float:
    from real_esrgan_tf.serve import video
    from real_esrgan_tf.serve.video_io import EncodeSettings

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        video.upscale_video(
            clip, os.path.join(folder, "out.mp4"), [up], EncodeSettings(codec=codec, batch=batch)
        )
        return time.perf_counter() - start


def child_rss(clip: str, batch: int, codec: str) -> None:
    up = upscaler()
    run_video(clip, up, batch, codec)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--codec", default="libx264")
    parser.add_argument("--child_rss", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_rss:
        child_rss(args.child_rss, args.batch, args.codec)
        return
    with tempfile.TemporaryDirectory() as folder:
        clip = os.path.join(folder, "clip.mp4")
        make_clip(clip, args.frames)
        frames = decoded_frames(clip)
        n = len(frames)
        up = upscaler()
        batches = sorted({1, args.batch})
        fns = {"one_by_one": lambda: [up.upscale(f) for f in frames]}
        for b in batches:
            fns[f"upscale_batch{b}"] = lambda b=b: [
                up.upscale_batch(frames[i : i + b]) for i in range(0, n, b)
            ]
            fns[f"video_batch{b}"] = lambda b=b: run_video(clip, up, b, args.codec)
        fns["io_only"] = lambda: run_video(clip, NearestX4(), args.batch, args.codec)
        load_before = os.getloadavg()[0]
        seconds = round_robin_medians(fns, args.repeats)
        load_after = os.getloadavg()[0]
        rss = int(
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child_rss",
                    clip,
                    "--batch",
                    str(args.batch),
                    "--codec",
                    args.codec,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
        )
    result = {
        "model": MODEL,
        "size": "320x240",
        "scale": 4,
        "frames": n,
        "codec": args.codec,
        "cpus": os.cpu_count(),
        "loadavg_1min": [round(load_before, 1), round(load_after, 1)],
        "repeats": args.repeats,
        "batch": args.batch,
        **{f"{name}_fps": round(n / t, 3) for name, t in seconds.items() if name != "io_only"},
        "video_vs_one_by_one": round(seconds["one_by_one"] / seconds[f"video_batch{args.batch}"], 3),
        "decode_encode_mux_seconds": round(seconds["io_only"], 3),
        "decode_encode_mux_share": round(seconds["io_only"] / seconds[f"video_batch{args.batch}"], 4),
        "peak_rss_mb_video_batch": round(rss / 2**20, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
