"""Speed of one GFPGAN v1.3/v1.4 face forward (512x512): our Keras GFPGANv1Clean vs the `gfpgan` package.

Both sides run the same random weights (a GFPGANer-config torch model saved as an official-layout .pth,
read by `load_gfpgan`), on the same faces, in one process, alternating. Prints ONE JSON line: median
seconds per forward (after one untimed warm-up) for Keras eager, Keras in a tf.function (graph), the
same graph in bfloat16 (`serve.keras_backend.rebuild_model`), and torch fp32 (`torch.no_grad`), at each
batch size; seconds per face; multiply-adds per face and the achieved GFLOP/s; PSNR (on [0, 1]) of our
fp32 and bf16 outputs against torch with the noise fixed (stored buffers).

    python benchmarks/bench_gfpgan.py [--batches 1,2] [--repeats 2] [--skip_torch]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
sys.modules.setdefault("triton", None)  # segfaults when imported after TensorFlow; torch CPU needs none

import numpy as np  # noqa: E402

GFPGANER = dict(out_size=512, num_style_feat=512, channel_multiplier=2, narrow=1, num_mlp=8)


def timed(fn, repeats: int):
    out = fn()  # warm-up: tracing, oneDNN primitive creation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def cpu_name() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        name = next(
            line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")
        )
        flags = " avx512_bf16" if "avx512_bf16" in text else ""
    except (OSError, StopIteration):
        name = platform.processor()
    return f"{name} x{os.cpu_count()}{flags}"


def macs_per_face(model) -> int:
    """Multiply-adds of the convs and linears of one forward (the style MLP is skipped: input_is_latent)."""

    def conv(layer, pixels):
        k = layer.kernel.shape
        return int(np.prod(k)) * pixels

    size, total = model.out_size, conv(model.conv_body_first, model.out_size**2)
    for block in model.conv_body_down:
        total += (
            conv(block.conv1, size**2)
            + conv(block.conv2, (size // 2) ** 2)
            + conv(block.skip, (size // 2) ** 2)
        )
        size //= 2
    total += conv(model.final_conv, 16) + int(np.prod(model.final_linear.kernel.shape))
    for i, block in enumerate(model.conv_body_up):
        out = (size * 2) ** 2
        total += conv(block.conv1, size**2) + conv(block.conv2, out) + conv(block.skip, out)
        for cond in (model.condition_scale[i], model.condition_shift[i]):
            total += conv(cond.conv_0, out) + conv(cond.conv_2, out)
        size *= 2
    dec = model.stylegan_decoder
    total += conv(dec.style_conv1.modulated_conv, 16) + conv(dec.to_rgb1.modulated_conv, 16)
    for level, to_rgb in enumerate(dec.to_rgbs):
        pixels = (8 * 2**level) ** 2
        for sc in dec.style_convs[2 * level : 2 * level + 2]:
            total += conv(sc.modulated_conv, pixels)
        total += conv(to_rgb.modulated_conv, pixels)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip_torch", action="store_true")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    import tensorflow as tf
    import torch

    from real_esrgan_tf.serve.keras_backend import rebuild_model
    from real_esrgan_tf.weights.gfpgan_pth import load_gfpgan
    from tests.upstream import import_upstream

    arch = import_upstream("gfpgan.archs.gfpganv1_clean_arch")
    torch.manual_seed(0)
    oracle = arch.GFPGANv1Clean(
        decoder_load_path=None,
        fix_decoder=False,
        input_is_latent=True,
        different_w=True,
        sft_half=True,
        **GFPGANER,
    ).eval()
    with torch.no_grad():
        for name, param in oracle.named_parameters():
            if name.startswith("stylegan_decoder") and name.endswith(".weight") and param.ndim == 1:
                param.normal_(0.0, 0.2)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "GFPGANv1.3-random.pth")
        torch.save({"params_ema": oracle.state_dict()}, path)
        start = time.perf_counter()
        model = load_gfpgan(path)
        load_seconds = time.perf_counter() - start
    bf16 = rebuild_model(model, "bfloat16")
    graph = tf.function(lambda x: model(x, randomize_noise=False))
    graph_bf16 = tf.function(lambda x: bf16(x, randomize_noise=False))

    macs = macs_per_face(model)
    result = {
        "benchmark": "gfpgan_v1_clean_512_forward",
        "cpu": cpu_name(),
        "threads": {
            "tf_intra": tf.config.threading.get_intra_op_parallelism_threads(),
            "torch": torch.get_num_threads(),
        },
        "gmacs_per_face": round(macs / 1e9, 2),
        "load_gfpgan_seconds": round(load_seconds, 2),
        "batches": {},
    }
    for batch in batches:
        x = np.random.default_rng(batch).uniform(-1, 1, (batch, 512, 512, 3)).astype(np.float32)
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        row = {}
        eager_s, _ = timed(lambda x=x: model(x, randomize_noise=False).numpy(), args.repeats)
        graph_s, ours = timed(lambda x=x: graph(x).numpy(), args.repeats)
        bf16_s, ours_bf16 = timed(lambda x=x: graph_bf16(x).numpy().astype(np.float32), args.repeats)
        row.update(keras_eager_fp32_s=eager_s, keras_graph_fp32_s=graph_s, keras_graph_bf16_s=bf16_s)
        if not args.skip_torch:

            def torch_forward(xt=xt):
                with torch.no_grad():
                    return (
                        oracle(xt, return_rgb=False, randomize_noise=False)[0].numpy().transpose(0, 2, 3, 1)
                    )

            torch_s, reference = timed(torch_forward, args.repeats)
            row["torch_fp32_s"] = torch_s
            for name, out in (("fp32", ours), ("bf16", ours_bf16)):
                mse = np.mean(((out.astype(np.float64) - reference) / 2) ** 2)
                row[f"psnr_{name}_vs_torch_db"] = round(float(10 * np.log10(1 / mse)), 2)
        per_face = {k[:-2] + "_s_per_face": round(v / batch, 3) for k, v in row.items() if k.endswith("_s")}
        row = {k: (round(v, 3) if k.endswith("_s") else v) for k, v in row.items()}
        row.update(per_face)
        row["keras_graph_fp32_gflops"] = round(2 * macs * batch / graph_s / 1e9, 1)
        result["batches"][str(batch)] = row
    result["load_average_1_5_15"] = [round(v, 1) for v in os.getloadavg()]  # the cores are shared
    print(json.dumps(result))


if __name__ == "__main__":
    main()
