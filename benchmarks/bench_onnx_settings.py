"""ONNX route and runtime settings, one JSON line: how the file is written, and how ORT / OpenVINO run it.

1. Route: our writer (`export.onnx`, from the Keras layer graph) vs Keras 3's own
   `model.export(format="onnx")` (tf2onnx inside; measured only when tf2onnx is importable, it is
   not a dependency): export seconds, node count, op types, ONNX Runtime median seconds, PSNR vs Keras.
2. Settings on our file, every runtime on --threads threads: ONNX Runtime graph optimisation level and
   the fp16 file; OpenVINO performance hint x inference precision (f32 / bf16); TensorFlow (Keras, fp32)
   in the same run as the reference, timed round-robin with the others (wall and process CPU time).

Usage: python benchmarks/bench_onnx_settings.py [--model realesrgan-x4plus] [--lr 64] [--repeats 5]
       [--threads 1] [--route]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        lines = [line for line in out.splitlines() if line.startswith("Model name")]
        return lines[0].split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError, IndexError):
        return platform.processor()


def has_flag(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f" {flag}" in f.read()
    except OSError:
        return False


def median_cpu_seconds(fn, repeats: int) -> float:
    """Median process CPU time of fn() after one warm-up call (first-call compilation)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return round(statistics.median(times), 4)


def dims(value) -> list:
    return list(value.type.tensor_type.shape.dim)


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return round(10 * np.log10(1.0 / max(mse, 1e-30)), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesrgan-x4plus")
    parser.add_argument("--lr", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="threads of every runtime (TF intra-op too)")
    parser.add_argument("--route", action="store_true",
                        help="also time Keras' own ONNX export (needs tf2onnx; minutes for x4plus)")
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from real_esrgan_tf.export.onnx import to_bytes
    from real_esrgan_tf.serve.loading import load_keras_generator
    from real_esrgan_tf.serve.onnx_backend import OnnxRuntimeGenerator
    from real_esrgan_tf.serve.openvino_backend import OpenVINOGenerator

    generator = load_keras_generator(args.model)
    lq = np.random.default_rng(0).random((1, args.lr, args.lr, 3), np.float32)
    forward = tf.function(lambda x: generator(x, training=False))
    reference = forward(lq).numpy()
    result = {"cpu": cpu_name(), "avx512_bf16": has_flag("avx512_bf16"), "cores": os.cpu_count(),
              "load_average_before": os.getloadavg()[0], "model": args.model, "lr": args.lr,
              "repeats": args.repeats}

    # 1. route
    start = time.perf_counter()
    ours = to_bytes(generator, source=args.model)
    export_s = time.perf_counter() - start
    proto = onnx.load_from_string(ours)
    runner = OnnxRuntimeGenerator(ours, threads=args.threads)
    routes = {"direct_writer": {
        "export_s": round(export_s, 2), "nodes": len(proto.graph.node),
        "ops": sorted({n.op_type for n in proto.graph.node}),
        "ort_cpu_s": median_cpu_seconds(lambda: runner(lq), args.repeats),
        "psnr_vs_keras": psnr(runner(lq), reference)}}
    try:
        if not args.route:
            raise ImportError("skipped")
        import tf2onnx  # noqa: F401

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "keras.onnx")
            start = time.perf_counter()
            generator.export(path, format="onnx", verbose=False)
            export_s = time.perf_counter() - start
            proto = onnx.load(path)
            session_options = ort.SessionOptions()
            session_options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(path, session_options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name

            def run_keras_file():
                return session.run(None, {name: lq})[0]

            routes["keras_export_tf2onnx"] = {
                "tf2onnx": tf2onnx.__version__, "export_s": round(export_s, 2),
                "nodes": len(proto.graph.node), "ops": sorted({n.op_type for n in proto.graph.node}),
                "input": [d.dim_param or d.dim_value for d in dims(proto.graph.input[0])],
                "ort_cpu_s": median_cpu_seconds(run_keras_file, args.repeats),
                "psnr_vs_keras": psnr(run_keras_file(), reference)}
    except ImportError:
        routes["keras_export_tf2onnx"] = None
    result["routes"] = routes

    # 2. settings, every runtime on --threads threads: all runners built first, then timed
    # round-robin (one call each per round) so a change in the machine's load hits them alike.
    # Medians of wall time and of process CPU time (with 1 thread the CPU time is the work itself,
    # robust to other processes on a shared machine).
    threads = args.threads
    runners = {"tensorflow": lambda x: forward(x).numpy()}
    for level in ("basic", "extended", "all"):
        runners[f"onnxruntime_{level}"] = OnnxRuntimeGenerator(ours, threads=threads, optimization=level)
    runners["onnxruntime_fp16_file"] = OnnxRuntimeGenerator(to_bytes(generator, fp16=True), threads=threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        with open(path, "wb") as f:
            f.write(ours)
        for hint, precision in (("LATENCY", "f32"), ("THROUGHPUT", "f32"), ("LATENCY", "bf16")):
            runners[f"openvino_{hint.lower()}_{precision}"] = OpenVINOGenerator(
                path, threads=threads, hint=hint, precision=precision)
    wall = {name: [] for name in runners}
    cpu = {name: [] for name in runners}
    quality = {name: psnr(run(lq), reference) for name, run in runners.items()}  # also the warm-up
    for _ in range(args.repeats):
        for name, run in runners.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run(lq)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    result["threads"] = threads
    result["settings"] = {
        name: {"wall_s": round(statistics.median(wall[name]), 4),
               "cpu_s": round(statistics.median(cpu[name]), 4), "psnr_vs_keras": quality[name]}
        for name in runners}
    result["load_average_after"] = os.getloadavg()[0]
    result["versions"] = {"onnxruntime": ort.__version__, "tensorflow": tf.__version__,
                          "python": sys.version.split()[0]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
