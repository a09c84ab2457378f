"""ONNX route and runtime settings, one JSON line: how the file is written, and how ORT / OpenVINO run it.

1. Route: our writer (`export.onnx`, from the Keras layer graph) vs Keras 3's own
   `model.export(format="onnx")` (tf2onnx inside; measured only when tf2onnx is importable, it is
   not a dependency): export seconds, node count, op types, ONNX Runtime median seconds, PSNR vs Keras.
2. Settings on our file: ONNX Runtime threads x graph optimisation level; OpenVINO performance hint x
   inference precision (f32 / bf16); with TensorFlow (Keras, fp32) in the same run as the reference.

Usage: python benchmarks/bench_onnx_settings.py [--model realesrgan-x4plus] [--lr 64] [--repeats 5]
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


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-call compilation / shape specialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
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
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    import tensorflow as tf

    from real_esrgan_tf.export.onnx import to_bytes
    from real_esrgan_tf.serve.loading import load_keras_generator
    from real_esrgan_tf.serve.onnx_backend import OnnxRuntimeGenerator
    from real_esrgan_tf.serve.openvino_backend import OpenVINOGenerator

    generator = load_keras_generator(args.model)
    lq = np.random.default_rng(0).random((1, args.lr, args.lr, 3), np.float32)
    forward = tf.function(lambda x: generator(x, training=False))
    reference = forward(lq).numpy()
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "model": args.model, "lr": args.lr,
              "repeats": args.repeats, "tensorflow_s": median_seconds(lambda: forward(lq), args.repeats)}

    # 1. route
    start = time.perf_counter()
    ours = to_bytes(generator, source=args.model)
    export_s = time.perf_counter() - start
    proto = onnx.load_from_string(ours)
    runner = OnnxRuntimeGenerator(ours)
    routes = {"direct_writer": {
        "export_s": round(export_s, 2), "nodes": len(proto.graph.node),
        "ops": sorted({n.op_type for n in proto.graph.node}),
        "ort_s": median_seconds(lambda: runner(lq), args.repeats),
        "psnr_vs_keras": psnr(runner(lq), reference)}}
    try:
        import tf2onnx  # noqa: F401

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "keras.onnx")
            start = time.perf_counter()
            generator.export(path, format="onnx", verbose=False)
            export_s = time.perf_counter() - start
            proto = onnx.load(path)
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name

            def run_keras_file():
                return session.run(None, {name: lq})[0]

            routes["keras_export_tf2onnx"] = {
                "tf2onnx": tf2onnx.__version__, "export_s": round(export_s, 2),
                "nodes": len(proto.graph.node), "ops": sorted({n.op_type for n in proto.graph.node}),
                "input": [d.dim_param or d.dim_value for d in dims(proto.graph.input[0])],
                "ort_s": median_seconds(run_keras_file, args.repeats),
                "psnr_vs_keras": psnr(run_keras_file(), reference)}
    except ImportError:
        routes["keras_export_tf2onnx"] = None
    result["routes"] = routes

    # 2. settings
    ort_settings = {}
    for threads in (1, 2):
        for level in ("disable", "basic", "all"):
            runner = OnnxRuntimeGenerator(ours, threads=threads, optimization=level)
            ort_settings[f"threads{threads}_{level}"] = median_seconds(lambda r=runner: r(lq), args.repeats)
    result["onnxruntime_s"] = ort_settings
    ov_settings = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        with open(path, "wb") as f:
            f.write(ours)
        for hint in ("LATENCY", "THROUGHPUT"):
            for precision in ("f32", "bf16"):
                runner = OpenVINOGenerator(path, hint=hint, precision=precision)
                ov_settings[f"{hint.lower()}_{precision}"] = {
                    "s": median_seconds(lambda r=runner: r(lq), args.repeats),
                    "psnr_vs_keras": psnr(runner(lq), reference)}
    result["openvino"] = ov_settings
    result["versions"] = {"onnxruntime": ort.__version__, "tensorflow": tf.__version__,
                          "python": sys.version.split()[0]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
