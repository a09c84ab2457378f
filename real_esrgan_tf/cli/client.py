"""`real-esrgan-tf client`: upscale images through a TensorFlow Serving `upscale_image` signature."""

from __future__ import annotations

import os
import sys

from real_esrgan_tf.serve.client import ServingError, ServingTarget, upscale_bytes


def define_flags(fv) -> None:
    from absl import flags

    flags.DEFINE_string("server", None, "TensorFlow Serving HOST:PORT (gRPC 8500, REST 8501).",
                        flag_values=fv)
    flags.DEFINE_string("model", None, "Model name in the server's models.config.", flag_values=fv)
    flags.DEFINE_integer("version", None, "Model version (default: the latest served).", flag_values=fv)
    flags.DEFINE_string("input", None, "An image file or a folder of images.", flag_values=fv)
    flags.DEFINE_string("output", None, "Output file (input is a file) or folder.", flag_values=fv)
    flags.DEFINE_float("outscale", None, "Final scale (Lanczos after the net); default: the model's.",
                       flag_values=fv)
    flags.DEFINE_boolean("rest", False, "Use the REST API instead of gRPC.", flag_values=fv)
    flags.DEFINE_float("timeout", 60.0, "Seconds to wait for each reply.", flag_values=fv)
    flags.mark_flags_as_required(["server", "model", "input", "output"], flag_values=fv)


def _write_result(png: bytes, path: str) -> None:
    from real_esrgan_tf import images

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext in ("", "png"):
        images.write_bytes_atomic(path, png)
    else:  # another format asked for: re-encode the served PNG locally
        images.write_image(path, images.decode_image(png, path).pixels, ext)


def _jobs(input_path: str, output: str) -> list[tuple[str, str]]:
    if os.path.isdir(input_path):
        os.makedirs(output, exist_ok=True)
        names = sorted(n for n in os.listdir(input_path)
                       if not n.startswith(".") and os.path.isfile(os.path.join(input_path, n)))
        return [(os.path.join(input_path, n), os.path.join(output, os.path.splitext(n)[0] + "_out.png"))
                for n in names]
    if not os.path.isfile(input_path):
        raise ServingError(f"{input_path}: no such file or folder")
    if os.path.isdir(output) or not os.path.splitext(output)[1]:  # a folder, existing or to be
        os.makedirs(output, exist_ok=True)
        stem = os.path.splitext(os.path.basename(input_path))[0]
        return [(input_path, os.path.join(output, stem + "_out.png"))]
    return [(input_path, output)]


def run(fv) -> int:
    from real_esrgan_tf.images import ImageError

    if fv.outscale is not None and not fv.outscale > 0:
        print(f"real-esrgan-tf client: --outscale must be > 0, got {fv.outscale}", file=sys.stderr)
        return 2
    target = ServingTarget(fv.server, fv.model, fv.version, fv.timeout)
    failures = 0
    try:
        jobs = _jobs(fv.input, fv.output)
    except (ServingError, OSError) as e:
        print(f"real-esrgan-tf client: {e}", file=sys.stderr)
        return 1
    inputs = {os.path.realpath(src) for src, _ in jobs}
    written: dict[str, str] = {}
    for src, dst in jobs:
        try:
            real_dst = os.path.realpath(dst)
            if real_dst in inputs:
                raise ServingError(f"output {dst} would overwrite an input; change --output")
            if real_dst in written:  # photo.jpg and photo.png both give photo_out.png
                raise ServingError(f"output {dst} already written from {written[real_dst]}")
            with open(src, "rb") as f:
                data = f.read()
            png = upscale_bytes(target, data, outscale=fv.outscale, rest=fv.rest)
            _write_result(png, dst)
            written[real_dst] = src
            print(dst)
        except ServingError as e:
            print(f"real-esrgan-tf client: {src}: {e}", file=sys.stderr)
            if "unreachable" in str(e):
                return 1  # every other file would fail the same way
            failures += 1
        except (ImageError, OSError) as e:
            print(f"real-esrgan-tf client: {src}: {e}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0
