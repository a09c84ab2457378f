"""TF.js export: model size, one tile through TF.js in Node (WASM, CPU backends) vs Keras. ONE JSON line.

For each model: the TF.js graph model (fp32 and fp16 shards, `real_esrgan_tf.export.tfjs`) is run
by tests/js/run.js (npm @tensorflow/tfjs + tfjs-backend-wasm, pinned in tests/js/package-lock.json;
`npm ci` there first) on one LR tile of a real photo, median of `--runs` after a warm-up, in the
same run as Keras fp32 (tf.function, all threads) on the same tile. PSNR of the clipped outputs
against Keras. WebGL and WebGPU need a browser: the web page's Chromium test times them. The CPU
backend is plain JavaScript (the slowest); WASM is XNNPACK compiled to WebAssembly.

    python benchmarks/bench_tfjs.py [--models animevideov3,x4plus] [--tile 64] [--runs 3] [--backends wasm]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from skimage import data  # noqa: E402

from real_esrgan_tf.export.tfjs import write_tfjs  # noqa: E402
from real_esrgan_tf.weights import load_generator  # noqa: E402

MODELS = {"animevideov3": "realesr-animevideov3", "x4plus": "realesrgan-x4plus"}
RUN_JS = os.path.join(ROOT, "tests", "js", "run.js")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
        flags = " ".join(line for line in out.splitlines() if line.startswith("Flags"))
        extra = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
        return f"{names[0] if names else platform.processor()}, {os.cpu_count()} cores, {' '.join(extra)}"
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()


def psnr(a, b) -> float | str:
    mse = float(np.mean((np.clip(a, 0, 1).astype(np.float64) - np.clip(b, 0, 1)) ** 2))
    return "identical" if mse == 0 else round(10 * np.log10(1.0 / mse), 1)


def keras_ms(generator, lq, runs: int) -> tuple[float, np.ndarray]:
    forward = tf.function(lambda x: generator(x, training=False))
    out = forward(lq).numpy()  # warm-up / trace
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        forward(lq).numpy()
        times.append(time.perf_counter() - start)
    return round(1000 * float(np.median(times)), 1), out


def tfjs_run(folder: str, lq: np.ndarray, runs: int, work: str, backend: str) -> tuple[float, np.ndarray]:
    source, target = os.path.join(work, "in.bin"), os.path.join(work, "out.bin")
    lq.astype("<f4").tofile(source)
    run = {"input": source, "shape": list(lq.shape), "output": target}
    job = {"model": folder, "backend": backend, "repeat": runs, "runs": [run]}
    with open(os.path.join(work, "job.json"), "w") as f:
        json.dump(job, f)
    result = subprocess.run(["node", RUN_JS, "predict", os.path.join(work, "job.json")], capture_output=True,
                            text=True, check=True)
    info = json.loads(result.stdout)
    return round(info["ms"][0], 1), np.fromfile(target, "<f4").reshape(info["shapes"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="animevideov3,x4plus")
    parser.add_argument("--tile", type=int, default=64, help="LR tile side")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="wasm,cpu", help="TF.js backends in Node (wasm, cpu)")
    args = parser.parse_args()
    photo = data.astronaut()
    lq = photo[160 : 160 + args.tile, 160 : 160 + args.tile].astype(np.float32)[None] / 255.0
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for key in args.models.split(","):
            generator = load_generator(MODELS[key])
            k_ms, reference = keras_ms(generator, lq, args.runs)
            row = {"keras_fp32_ms": k_ms}
            for fp16 in (False, True):
                tag = "fp16" if fp16 else "fp32"
                folder = os.path.join(work, f"{key}-{tag}")
                write_tfjs(generator, folder, fp16=fp16, source=MODELS[key])
                size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
                row[f"tfjs_{tag}"] = {"bytes": size}
                for backend in args.backends.split(","):
                    ms, out = tfjs_run(folder, lq, args.runs, work, backend)
                    row[f"tfjs_{tag}"][backend] = {"node_ms": ms, "psnr_db_vs_keras": psnr(out, reference)}
            results[key] = row
    print(json.dumps({
        "benchmark": "tfjs", "date": datetime.date.today().isoformat(), "cpu": cpu_name(),
        "threads_keras": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
        "tile": args.tile, "runs": args.runs, "tfjs": "@tensorflow/tfjs 4.22.0 in Node",
        "results": results,
    }))


if __name__ == "__main__":
    main()
