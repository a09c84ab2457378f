"""TFLite export per precision: file size, latency and PSNR against Keras fp32. Prints ONE JSON line.

For the compact model (realesr-animevideov3, the recommended mobile model) and RRDBNet x4plus:
fixed LR input 128x128, `ai_edge_litert` with 2 threads and its default XNNPACK delegate, median
of several runs after one warm-up; Keras fp32 (tf.function, same threads) runs in the same process
as the reference. PSNR is measured on degraded LR crops of real photographs (astronaut, coffee,
chelsea) that calibration (rocket, motorcycle) never saw: `psnr_db_vs_keras_fp32` on the fixed
blur + bicubic + JPEG crops of `export.degraded_lq_crops`, `psnr_db_degradations` on crops made by
the training degradation (`real_esrgan_tf.degradations`, `training_degraded_lq_crops` below). int8
calibration crops come from `degraded_lq_crops` as in `real-esrgan-tf export`, or from the training
degradation with `--calibration degradations` (measured worse: see BUILD_NOTES.md).
Target (issue 5): compact int8 < 60 ms with PSNR >= 30 dB.

    python benchmarks/bench_export.py [--models animevideov3,x4plus] [--runs 5] [--calibration degradations]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from real_esrgan_tf.export import Quantization, degraded_lq_crops, export_tflite_models  # noqa: E402
from real_esrgan_tf.serve.tflite_backend import TFLiteGenerator  # noqa: E402
from real_esrgan_tf.weights import load_generator  # noqa: E402

MODELS = {"animevideov3": "realesr-animevideov3", "x4plus": "realesrgan-x4plus"}
TARGET = {"model": "animevideov3", "format": "int8", "max_ms": 60.0, "min_psnr_db": 30.0}


def psnr(a, b) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def timing(fn, runs: int) -> dict:
    """Median wall ms, and CPU ms per run (all threads): on a shared machine wall time follows the
    load, CPU time much less; cpu_ms / threads is the latency on an otherwise idle machine if the
    threads scale perfectly."""
    fn()  # warm-up (allocation, XNNPACK packing, tracing)
    times = []
    cpu_start = time.process_time()
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu_start) / runs
    return {"ms": round(1000 * float(np.median(times)), 1), "cpu_ms": round(1000 * cpu, 1)}


def _degradation_function(scale: int, gt_size: int):
    """[1, gt_size, gt_size, 3] GT, seed [2] -> one LR image of the official second-order degradation."""
    from real_esrgan_tf.degradations import DegradationConfig, RealESRGANDegrader, sample_kernels

    config = DegradationConfig(scale=scale, gt_size=gt_size)
    degrader = RealESRGANDegrader(config, fuse_elementwise=False)  # a few calls: no XLA compiles

    @tf.function(autograph=False)
    def degrade(gt, crop_seed):
        return degrader(gt, sample_kernels(config, crop_seed, batch_size=1), crop_seed)[0][0]

    return degrade


def training_degraded_lq_crops(images, *, size: int, scale: int, count: int, seed: int = 0) -> list:
    """LR crops [size, size, 3] float32 of photos through the training degradation (x4plus settings at
    this scale; x3 uses the x4 one): random GT crops of size * scale (at least 256: the 21x21 blurs and
    51x51 USM need room; photos smaller than that are enlarged bicubic), one seed per crop, a random
    `size` crop of the LR result."""
    sources = [np.asarray(im)[..., :3].astype(np.float32) / 255.0 for im in images]
    degradation_scale = scale if scale in (1, 2, 4) else 4
    gt_size = max(size * degradation_scale, 256)
    degrade = _degradation_function(degradation_scale, gt_size)
    rng = np.random.default_rng(seed)
    crops = []
    for k in range(count):
        src = sources[k % len(sources)]
        h, w = src.shape[:2]
        if min(h, w) < gt_size:
            factor = gt_size / min(h, w)
            w, h = max(gt_size, round(w * factor)), max(gt_size, round(h * factor))
            src = np.stack([np.asarray(Image.fromarray(src[..., c], "F").resize((w, h), Image.BICUBIC))
                            for c in range(3)], -1).clip(0.0, 1.0)
        y, x = int(rng.integers(0, h - gt_size + 1)), int(rng.integers(0, w - gt_size + 1))
        gt = tf.constant(src[None, y : y + gt_size, x : x + gt_size])
        lq = degrade(gt, tf.constant([seed, k], tf.int64)).numpy()
        y, x = int(rng.integers(0, lq.shape[0] - size + 1)), int(rng.integers(0, lq.shape[1] - size + 1))
        crops.append(np.ascontiguousarray(lq[y : y + size, x : x + size]))
    return crops


CALIBRATION = {"blur_jpeg": degraded_lq_crops, "degradations": training_degraded_lq_crops}


def bench_model(key: str, size: int, threads: int, runs: int, calibration_crops: int,
                calibration_method: str = "blur_jpeg") -> dict:
    generator = load_generator(MODELS[key])
    scale = int(generator.scale)
    test_photos = [data.astronaut(), data.coffee(), data.chelsea()]
    test = degraded_lq_crops(test_photos, size=size, scale=scale, count=3, seed=5)
    test_degraded = training_degraded_lq_crops(test_photos, size=size, scale=scale, count=3, seed=5)
    calibration = CALIBRATION[calibration_method](
        [data.rocket(), data.stereo_motorcycle()[0]], size=size, scale=scale, count=calibration_crops, seed=1
    )
    keras_fp32 = tf.function(lambda x: generator(x, training=False))
    reference = [keras_fp32(tf.constant(x[None])).numpy()[0] for x in test]
    reference_degraded = [keras_fp32(tf.constant(x[None])).numpy()[0] for x in test_degraded]
    result = {
        "params": int(generator.count_params()),
        "keras_fp32": timing(lambda: keras_fp32(tf.constant(test[0][None])).numpy(), runs),
        "formats": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        paths = {q: os.path.join(tmp, f"{key}-{q.value}.tflite") for q in Quantization}
        start = time.perf_counter()
        export_tflite_models(generator, paths, input_size=size, calibration=calibration)
        result["export_all_s"] = round(time.perf_counter() - start, 1)
        for q, path in paths.items():
            runner = TFLiteGenerator(path, num_threads=threads)
            result["formats"][q.value] = {
                "bytes": os.path.getsize(path),
                **timing(lambda runner=runner: runner.run_window(test[0]), runs),
                "psnr_db_vs_keras_fp32": round(min(psnr(runner.run_window(x), r)
                                                   for x, r in zip(test, reference, strict=True)), 2),
                "psnr_db_degradations": round(min(psnr(runner.run_window(x), r)
                                                  for x, r in zip(test_degraded, reference_degraded,
                                                                  strict=True)), 2),
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="animevideov3,x4plus")
    parser.add_argument("--size", type=int, default=128, help="LR input side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per format (x4plus: at most 3)")
    parser.add_argument("--calibration_crops", type=int, default=16, help="int8 (x4plus: at most 4)")
    parser.add_argument("--calibration", choices=sorted(CALIBRATION), default="blur_jpeg",
                        help="how int8 calibration crops are degraded")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    out = {
        "benchmark": "export_tflite",
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, no GPU",
        "lr_size": args.size,
        "threads": args.threads,
        "delegate": "XNNPACK (ai_edge_litert default)",
        "calibration": args.calibration,
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "models": {},
    }
    for key in args.models.split(","):
        heavy = key == "x4plus"  # ~600 GFLOP per 128x128 run: seconds each on 2 cores
        out["models"][key] = bench_model(
            key, args.size, args.threads,
            min(args.runs, 3) if heavy else args.runs,
            min(args.calibration_crops, 4) if heavy else args.calibration_crops,
            args.calibration,
        )
    compact = out["models"].get(TARGET["model"], {}).get("formats", {}).get(TARGET["format"])
    if compact:
        accurate = compact["psnr_db_vs_keras_fp32"] >= TARGET["min_psnr_db"]
        idle_ms = round(compact["cpu_ms"] / args.threads, 1)
        out["target"] = {
            **TARGET,
            "met": bool(compact["ms"] < TARGET["max_ms"] and accurate),
            "idle_estimate_ms": idle_ms,
            "met_if_idle": bool(idle_ms < TARGET["max_ms"] and accurate),
        }
    out["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
