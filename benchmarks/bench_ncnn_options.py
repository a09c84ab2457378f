"""What each ncnn CPU option does to x4plus (the official .param/.bin): seconds per LR image, and PSNR
of its output against the backend's default settings.

Prints ONE JSON line: per LR side, the median seconds of the ncnn backend with its defaults
(Winograd, sgemm, packed layouts on; fp16 storage/arithmetic off), with one option changed at a
time, and the reference side by side in the same run: our TensorFlow/Keras generator (fp32) on the
same input, with the same number of threads. The CPU model and the load average are in the line
(the machine may be shared).

    python benchmarks/bench_ncnn_options.py [--model realesrgan-x4plus] [--sizes 64,128] [--runs 3]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

CONFIGS = {
    "default": {},
    "threads_ncnn_default": {"threads": None},  # ncnn's own choice: the physical big cores
    "no_winograd": {"winograd": False},
    "no_sgemm": {"sgemm": False},
    "no_packing": {"packing": False},
    "fp16": {"fp16": True},
}


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _median_seconds(fn, runs: int) -> float:
    fn()  # warm-up: allocations, first-touch
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _psnr(a, b) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesrgan-x4plus")
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of ncnn and TensorFlow (1: a shared machine; ncnn's OpenMP barriers "
                        "stall when a core is taken by another process)")
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from skimage import data

    from real_esrgan_tf.serve.ncnn_backend import NcnnSuperResolver
    from real_esrgan_tf.weights import load_generator, ncnn_files, pretrained_info

    param, _ = ncnn_files(pretrained_info(args.model))
    keras_model = load_generator(args.model)
    photo = data.astronaut().astype(np.float32) / 255.0
    result = {
        "benchmark": "ncnn_options",
        "model": args.model,
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg()[0],
        "runs": args.runs,
        "threads": args.threads,
        "sizes": {},
    }
    backends = {
        name: NcnnSuperResolver(param, **{"threads": args.threads, **options})
        for name, options in CONFIGS.items()
    }
    for side in (int(s) for s in args.sizes.split(",")):
        lq = np.ascontiguousarray(photo[100 : 100 + side, 150 : 150 + side][None])
        row: dict = {}
        default_out = backends["default"](lq)
        for name, backend in backends.items():
            row[f"ncnn_{name}_s"] = round(_median_seconds(lambda b=backend, x=lq: b(x), args.runs), 3)
            if name != "default":
                row[f"ncnn_{name}_psnr_vs_default"] = round(_psnr(backend(lq), default_out), 1)
        reference = np.asarray(keras_model(lq))
        row["tensorflow_fp32_s"] = round(_median_seconds(lambda x=lq: keras_model(x), args.runs), 3)
        row["ncnn_default_psnr_vs_tensorflow"] = round(_psnr(default_out, reference), 1)
        row["tensorflow_over_ncnn_default"] = round(row["tensorflow_fp32_s"] / row["ncnn_default_s"], 2)
        result["sizes"][str(side)] = row
    result["loadavg_end"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
