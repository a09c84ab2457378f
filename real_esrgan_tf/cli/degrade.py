"""`real-esrgan-tf degrade`: a grid of degraded versions of one image, with every drawn parameter."""

from __future__ import annotations

import json
import math
import os

from real_esrgan_tf.degradations.preview import degrade_samples, gt_crop, make_grid
from real_esrgan_tf.images import ImageError, read_image, write_bytes_atomic, write_image


def define_flags(fv) -> None:
    from absl import flags

    flags.DEFINE_string("input", None, "Image to degrade (PNG, JPEG, ...).", flag_values=fv)
    flags.DEFINE_string("output", None, "Grid image to write (e.g. grid.png).", flag_values=fv)
    flags.DEFINE_string("params_json", None, "Where to write the drawn parameters "
                        "(default: the output path with a .json extension).", flag_values=fv)
    flags.DEFINE_integer("num", 16, "Number of degraded samples.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed: the same seed gives the same grid.", flag_values=fv)
    flags.DEFINE_integer("gt_size", 256, "GT crop size (centre crop; reflect-padded if smaller).",
                         lower_bound=48, flag_values=fv)
    flags.DEFINE_enum("scale", "4", ["1", "2", "4"], "Super-resolution scale.", flag_values=fv)
    flags.mark_flags_as_required(["input", "output"], flag_values=fv)


def run(fv) -> int:
    from real_esrgan_tf.degradations import DegradationConfig, DegradationConfigError

    try:
        config = DegradationConfig(scale=int(fv.scale), gt_size=fv.gt_size)
    except DegradationConfigError as e:
        print(f"real-esrgan-tf degrade: {e}")
        return 2
    try:
        pixels = read_image(fv.input).pixels
    except ImageError as e:
        print(f"real-esrgan-tf degrade: {e}")
        return 1
    side = min(pixels.shape[:2]) // 16 * 16
    if side < config.gt_size and side >= 48:  # a small image: a smaller crop instead of mirror copies
        print(f"note: {fv.input} is {pixels.shape[1]}x{pixels.shape[0]}; using a {side}x{side} GT crop")
        config = DegradationConfig(scale=config.scale, gt_size=side)
    gt = gt_crop(pixels, config.gt_size)
    lqs, records = degrade_samples(gt, fv.num, fv.seed, config)
    json_path = fv.params_json or os.path.splitext(fv.output)[0] + ".json"
    try:
        write_image(fv.output, make_grid(lqs, config.gt_size))
        summary = {"input": fv.input, "grid": fv.output, "gt_size": config.gt_size, "scale": config.scale,
                   "layout": f"row-major, {math.ceil(math.sqrt(fv.num))} columns", "samples": records}
        write_bytes_atomic(json_path, (json.dumps(summary, indent=1) + "\n").encode())
    except (ImageError, OSError, ValueError) as e:
        print(f"real-esrgan-tf degrade: {e}")
        return 1
    print(f"wrote {fv.output} ({fv.num} samples) and {json_path}")
    return 0

