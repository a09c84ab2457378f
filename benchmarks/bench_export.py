"""TFLite export per precision: file size, latency and PSNR against Keras fp32. Prints ONE JSON line.

For the compact model (realesr-animevideov3, the recommended mobile model) and RRDBNet x4plus:
fixed LR input 128x128, `ai_edge_litert` with 2 threads and its default XNNPACK delegate, median
of several runs after one warm-up; Keras fp32 (tf.function, same threads) runs in the same process
as the reference. PSNR is measured on degraded LR crops of real photographs (astronaut, coffee,
chelsea) that calibration (rocket, motorcycle) never saw. Target (issue 5): compact int8 < 60 ms
with PSNR >= 30 dB.

    python benchmarks/bench_export.py [--models animevideov3,x4plus] [--runs 5]
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
from skimage import data  # noqa: E402

from real_esrgan_tf.export import Quantization, degraded_lr_crops, export_tflite_models  # noqa: E402
from real_esrgan_tf.tflite_runner import TFLiteGenerator  # noqa: E402
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


def bench_model(key: str, size: int, threads: int, runs: int, calibration_crops: int) -> dict:
    generator = load_generator(MODELS[key])
    scale = int(generator.scale)
    test = degraded_lr_crops([data.astronaut(), data.coffee(), data.chelsea()], size=size, scale=scale,
                             count=3, seed=5)
    calibration = degraded_lr_crops([data.rocket(), data.stereo_motorcycle()[0]], size=size, scale=scale,
                                    count=calibration_crops, seed=1)
    keras_fp32 = tf.function(lambda x: generator(x, training=False))
    reference = [keras_fp32(tf.constant(x[None])).numpy()[0] for x in test]
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
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="animevideov3,x4plus")
    parser.add_argument("--size", type=int, default=128, help="LR input side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per format (x4plus: at most 3)")
    parser.add_argument("--calibration_crops", type=int, default=16, help="int8 (x4plus: at most 4)")
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
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "models": {},
    }
    for key in args.models.split(","):
        heavy = key == "x4plus"  # ~600 GFLOP per 128x128 run: seconds each on 2 cores
        out["models"][key] = bench_model(
            key, args.size, args.threads,
            min(args.runs, 3) if heavy else args.runs,
            min(args.calibration_crops, 4) if heavy else args.calibration_crops,
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
