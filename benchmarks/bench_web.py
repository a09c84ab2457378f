"""The exported web page in headless Chromium: ms per 256x256 tile per TF.js backend vs `upscale`.

Exports `--model` with fp16 weights (`export --format web`), serves it on 127.0.0.1 and uploads a
256x256 crop of a real photo `--runs` times per backend with tile 0 (one 256x256 window); the first
run (shader compiles, weight upload) is reported apart, the median of the others is the tile time.
Chromium runs headless with WebGL and WebGPU on SwiftShader (the CPU; no GPU on this machine).
The reference, in the same run: `Upscaler` (what `upscale` runs: Keras fp32, TensorFlow CPU) on the
same image, median of `--runs` after one warm-up, and the PSNR of each page result against it.
With `--largest N`, also uploads an N x N photo (tiled 256 on `--largest_backend`) and reports
whether it finished and how long it took. Prints ONE JSON line.

    python benchmarks/bench_web.py [--model realesr-animevideov3] [--backends cpu,wasm,webgl,webgpu]
        [--runs 3] [--largest 4096 --largest_model tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from real_esrgan_tf.export.web import write_web  # noqa: E402
from real_esrgan_tf.serve.upscaler import Upscaler  # noqa: E402
from tests import web_page  # noqa: E402


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        flags = next((line for line in out.splitlines() if line.startswith("Flags:")), "")
        lines = out.splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
        return name + (" (avx512_bf16)" if "avx512_bf16" in flags else "")
    except Exception:
        return platform.processor()


def tiny_model():
    import keras

    from real_esrgan_tf.models.srvgg import SRVGGNetCompact

    keras.utils.set_random_seed(0)
    generator = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4)
    generator(np.zeros((1, 8, 8, 3), np.float32))
    return generator


def load(name: str):
    if name == "tiny":
        return tiny_model()
    from real_esrgan_tf.serve.loading import load_keras_generator

    return load_keras_generator(name)


def page_runs(driver, url, path, backend, runs, timeout) -> tuple[list, list, dict, bytes]:
    """Uploads `path` `runs` times; returns per-run tile times, wall seconds, last state, last PNG."""
    tile_times, walls, state, png = [], [], None, b""
    for _ in range(runs):
        web_page.open_page(driver, url, backend=backend, tile=0, pad=0)
        start = time.perf_counter()
        web_page.upload(driver, path)
        state = web_page.wait_for_state(driver, ("done", "error"), timeout, f"a 256x256 upscale on {backend}")
        walls.append(time.perf_counter() - start)
        if state["state"] != "done":
            break
        tile_times.append(state["tileTimesMs"])
        png = web_page.result_png(driver)
    return tile_times, walls, state, png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="realesr-animevideov3")
    parser.add_argument("--backends", default="cpu,wasm,webgl,webgpu")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--largest", type=int, default=0)
    parser.add_argument("--largest_model", default="tiny")
    parser.add_argument("--largest_backend", default="wasm")
    args = parser.parse_args()

    import io

    generator = load(args.model)
    photo = np.ascontiguousarray(data.astronaut()[64:320, 128:384])
    work = tempfile.mkdtemp(prefix="bench-web-")
    path = os.path.join(work, "astronaut_256.png")
    Image.fromarray(photo).save(path)
    folder = write_web(generator, os.path.join(work, "page"), fp16=True, source=args.model)

    upscaler = Upscaler(generator, tile=0, tile_pad=0)
    expected = upscaler.upscale(photo)  # warm-up (tracing)
    ref_times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        upscaler.upscale(photo)
        ref_times.append(time.perf_counter() - start)

    chromium = subprocess.run([web_page.CHROMIUM, "--version"], capture_output=True, text=True).stdout
    result = {
        "benchmark": "web_page_256_tile", "model": args.model, "cpu": cpu_name(),
        "chromium": chromium.strip(),
        "webgl_webgpu_device": "SwiftShader (CPU)", "weights": "fp16",
        "upscale_keras_fp32_ms_median": round(1000 * float(np.median(ref_times)), 1),
        "backends": {},
    }
    profile = os.path.join(work, "profile")
    with web_page.serve_folder(folder) as url, web_page.chromium(profile, 3 * args.timeout) as driver:
        for backend in args.backends.split(","):
            runs = min(args.runs, 2) if backend == "cpu" else args.runs  # minutes a run, no warm-up
            try:
                tile_times, walls, state, png = page_runs(driver, url, path, backend, runs, args.timeout)
            except Exception as e:  # e.g. chromedriver gives up on a renderer busy for > 300 s
                result["backends"][backend] = {"state": "failed", "message": str(e).splitlines()[0]}
                print(json.dumps({backend: result["backends"][backend]}), file=sys.stderr, flush=True)
                continue
            entry = {"state": state["state"], "backend_used": state["backend"]}
            if state["state"] != "done":
                entry["message"] = state["message"]
            else:
                later = [t[0] for t in tile_times[1:]] or [tile_times[0][0]]
                entry.update({
                    "first_run_tile_ms": round(tile_times[0][0], 1),
                    "tile_ms_median": round(float(np.median(later)), 1),
                    "page_wall_s_median": round(float(np.median(walls[1:] or walls)), 2),
                    "psnr_db_vs_upscale": round(web_page.psnr(
                        np.asarray(Image.open(io.BytesIO(png)))[..., :3], expected), 2),
                })
            result["backends"][backend] = entry
            print(json.dumps({backend: entry}), file=sys.stderr, flush=True)  # partial results as they come
        if args.largest:
            big_folder = folder
            if args.largest_model != args.model:
                big_folder = write_web(load(args.largest_model), os.path.join(work, "big"), fp16=True)
            side = args.largest
            tiled = np.tile(data.astronaut(), (side // 512 + 1, side // 512 + 1, 1))[:side, :side]
            big_path = os.path.join(work, f"photo_{side}.png")
            Image.fromarray(np.ascontiguousarray(tiled)).save(big_path)
            with web_page.serve_folder(big_folder) as big_url:
                web_page.open_page(driver, big_url, backend=args.largest_backend, tile=256, pad=10)
                start = time.perf_counter()
                web_page.upload(driver, big_path)
                state = web_page.wait_for_state(driver, ("done", "error"), 3 * args.timeout, f"{side}x{side}")
                result["largest"] = {
                    "input": f"{side}x{side}", "model": args.largest_model, "backend": state["backend"],
                    "state": state["state"], "message": state["message"],
                    "wall_s": round(time.perf_counter() - start, 1),
                    "output_png_bytes": driver.execute_async_script(  # the size only: no copy out
                        "const done = arguments[arguments.length - 1];"
                        "fetch(window.realEsrgan.resultUrl).then((r) => r.blob()).then((b) => done(b.size));"
                    ) if state["state"] == "done" else 0,
                }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
