"""Speed of `Upscaler` with RealESRGAN_x4plus against the ncnn CPU runtime, in one process.

Prints ONE JSON line: seconds per image (median of --repeats runs after a warm-up) at each LR size
for fp32, fp32 + XLA and bf16, the ncnn runtime's time on the same images, achieved GFLOP/s
(17,926,848 multiply-adds per LR pixel) against a float32 matmul peak measured in the same run,
PSNR of bf16 and ncnn against our fp32, and the peak RSS of a 2000x2000 tiled upscale (tile 256)
measured in a child process.

    python benchmarks/bench_upscale.py [--sizes 64,128,256] [--repeats 3] [--skip_rss]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np

MACS_PER_LR_PIXEL = 17_926_848  # RRDBNet x4plus (23 blocks, 64 features, growth 32)


def timed(fn, repeats: int, warm_up: bool = True):
    """(median seconds over `repeats` calls, the output). The warm-up call (tracing, XLA compiles,
    oneDNN primitive creation) is not timed."""
    out = fn() if warm_up else None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """float32 GEMM throughput of this machine through TensorFlow (oneDNN/Eigen), GFLOP/s."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.linalg.matmul(a, b))
    seconds, _ = timed(lambda: matmul().numpy(), repeats)
    return 2 * n**3 / seconds / 1e9


def lr_image(size: int) -> np.ndarray:
    """A real photograph (scikit-image's astronaut) resized to size x size, uint8 RGB."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.BICUBIC))


class NcnnX4plus:
    """The official realesrgan-x4plus ncnn files on the ncnn CPU runtime (PyPI `ncnn`, no Vulkan)."""

    def __init__(self, threads: int):
        import ncnn

        from real_esrgan_tf import weights

        param, bin_ = weights.ncnn_files(weights.pretrained_info("realesrgan-x4plus"))
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        self.net.opt.num_threads = threads
        self.net.load_param(param)
        self.net.load_model(bin_)
        self._mat = ncnn.Mat

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        chw = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32) / 255.0
        extractor = self.net.create_extractor()
        extractor.input("data", self._mat(chw))
        _, out = extractor.extract("output")
        return np.rint(np.clip(np.array(out).transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else round(float(10 * np.log10(255.0**2 / mse)), 2)


def rss_child(mode: str, tile: int = 256) -> None:
    """Upscales a 2000x2000 photo at `tile` (256) and prints this process's peak RSS in MB.

    mode 'x4plus-head': RealESRGAN_x4plus on the first 2 tiles (all tiles have the same shape, so
    the per-tile peak is reached), then nearest upsampling on the other 62 so that every host
    buffer is written as in a full run; the full run would take ~25 min on 2 cores.
    mode 'animevideov3': the complete run with realesr-animevideov3 (same host buffers).
    """
    import tensorflow as tf
    from PIL import Image
    from skimage import data

    from real_esrgan_tf import weights
    from real_esrgan_tf.serve.keras_backend import KerasSuperResolver
    from real_esrgan_tf.serve.upscaler import Upscaler

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((2000, 2000), Image.Resampling.BICUBIC))
    if mode == "animevideov3":
        upscaler = Upscaler(weights.load_generator("realesr-animevideov3"), tile=tile)
    else:
        net = KerasSuperResolver(weights.load_generator("realesrgan-x4plus"))

        class HeadThenNearest:
            scale, input_size, calls = 4, None, 0

            def __call__(self, lr):
                self.calls += 1
                if self.calls <= 2:
                    return net(lr)
                return np.asarray(tf.image.resize(lr, (lr.shape[1] * 4, lr.shape[2] * 4), "nearest"))

        upscaler = Upscaler(HeadThenNearest(), tile=tile)
    out = upscaler.upscale(photo)
    assert out.shape == (8000, 8000, 3)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


def peak_rss_mb(mode: str, tile: int = 256) -> float:
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--rss_child", mode, "--rss_tile", str(tile)],
        capture_output=True, text=True, check=True,
    )
    return round(float(result.stdout.strip().splitlines()[-1]), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip_rss", action="store_true")
    parser.add_argument("--rss_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rss_tile", type=int, default=256, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_tile)
        return

    rss = {}
    if not args.skip_rss:  # first, in children, before this process holds models
        rss = {"x4plus_head": peak_rss_mb("x4plus-head"), "animevideov3_full": peak_rss_mb("animevideov3")}
        print(f"peak RSS MB: {json.dumps(rss)}", file=sys.stderr, flush=True)

    from real_esrgan_tf import weights
    from real_esrgan_tf.serve.upscaler import Upscaler

    model = weights.load_generator("realesrgan-x4plus")
    variants = {
        "fp32": Upscaler(model),
        "fp32_xla": Upscaler(model, jit_compile=True),
        "bf16": Upscaler(model, precision="bf16"),
    }
    ncnn_net = NcnnX4plus(args.threads)
    peak = matmul_peak_gflops()
    report = {
        "machine": f"{os.cpu_count()} cores",
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
        "matmul_fp32_peak_gflops": round(peak, 1),
        "sizes": {},
    }
    if rss:
        report["peak_rss_2000_tile256_mb"] = rss
    for size in (int(s) for s in args.sizes.split(",")):
        image = lr_image(size)
        # LR 256 costs ~2.4 TFLOP per image: one untimed-warm-up-free run each, and no XLA (which
        # compiles per shape and is slower at 64 and 128 anyway).
        big = size > 128
        repeats, warm_up = (1, False) if big else (args.repeats, True)
        flop = 2.0 * MACS_PER_LR_PIXEL * size * size
        row, outputs = {"runs": repeats}, {}
        for name, upscaler in variants.items():
            if big and name == "fp32_xla":
                continue
            seconds, outputs[name] = timed(lambda u=upscaler, x=image: u.upscale(x), repeats, warm_up)
            row[f"{name}_s"] = round(seconds, 3)
            row[f"{name}_gflops"] = round(flop / seconds / 1e9, 1)
        seconds, outputs["ncnn"] = timed(lambda x=image: ncnn_net(x), repeats, warm_up)
        row["ncnn_s"] = round(seconds, 3)
        row["ncnn_gflops"] = round(flop / seconds / 1e9, 1)
        row["fp32_pct_of_matmul_peak"] = round(100 * row["fp32_gflops"] / peak, 1)
        row["fp32_speedup_vs_ncnn"] = round(row["ncnn_s"] / row["fp32_s"], 2)
        row["bf16_speedup_vs_ncnn"] = round(row["ncnn_s"] / row["bf16_s"], 2)
        row["bf16_psnr_vs_fp32"] = psnr(outputs["bf16"], outputs["fp32"])
        if "fp32_xla" in outputs:
            row["xla_psnr_vs_fp32"] = psnr(outputs["fp32_xla"], outputs["fp32"])
        row["ncnn_psnr_vs_fp32"] = psnr(outputs["ncnn"], outputs["fp32"])
        report["sizes"][str(size)] = row
        print(f"LR {size}: {json.dumps(row)}", file=sys.stderr, flush=True)  # progress; stdout stays one line
    print(json.dumps(report))


if __name__ == "__main__":
    main()
