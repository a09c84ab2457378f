"""`real-esrgan-tf degrade`: a grid of degraded versions of one image, with every drawn parameter;
with `--paired`, a deterministic degraded validation set (gt/ and lq/ PNG folders) from GT images."""

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
    flags.DEFINE_boolean(
        "paired", False,
        "Validation-set mode: --input is a GT image or folder, --output a folder that gets gt/ and lq/ "
        "PNGs (same names), degraded with the official second-order pipeline from --seed: the same seed "
        "gives the same bytes. Pair them into shards with `prepare --gt OUT/gt --lq OUT/lq --crop 0`.",
        flag_values=fv)
    flags.DEFINE_integer("crop_size", None, "--paired: side of the square GT crop (a multiple of --scale; "
                         "default: the largest that fits each image).", lower_bound=1, flag_values=fv)
    flags.mark_flags_as_required(["input", "output"], flag_values=fv)


def _gt_paths(path: str) -> list[str]:
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if not n.startswith("."))
        return [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
    return [path]


def _run_paired(fv) -> int:
    """Degrades every GT image; a bad file is one line and the others are still written."""
    from tqdm import tqdm

    from real_esrgan_tf.degradations import DegradationConfig
    from real_esrgan_tf.evaluation import EvaluationError, degrade_one, image_seed, write_validation_set

    if not os.path.exists(fv.input):
        print(f"real-esrgan-tf degrade: error: {fv.input}: no such file or folder")
        return 1
    scale = int(fv.scale)
    if fv.crop_size is not None and fv.crop_size % scale:
        print(f"real-esrgan-tf degrade: error: --crop_size {fv.crop_size} is not a multiple of "
              f"--scale {scale}")
        return 2
    config = DegradationConfig(scale=scale, gt_size=fv.gt_size // scale * scale)
    failures = 0
    paths = _gt_paths(fv.input)
    seen: dict[str, str] = {}
    for index, path in enumerate(tqdm(paths, desc="degrade", unit="img", disable=len(paths) < 2)):
        # the seed of image i is (seed, i) over the sorted list: the set does not depend on the order of work
        try:
            pixels = read_image(path).pixels
            if pixels.shape[-1] in (2, 4):
                pixels = pixels[..., :-1]
            if pixels.shape[-1] == 1:
                pixels = pixels.repeat(3, axis=-1)
            pair = degrade_one(pixels, config, image_seed(fv.seed, index), fv.crop_size)
            stem = os.path.splitext(os.path.basename(path))[0]
            if stem in seen:  # a.png and a.jpg would write the same gt/a.png
                raise OSError(f"{path}: same name as {seen[stem]}; rename one of them")
            seen[stem] = path
            write_validation_set([pair], fv.output, [stem])
        except (ImageError, EvaluationError, OSError) as e:
            reason = str(e)
            print(f"real-esrgan-tf degrade: error: {reason if path in reason else f'{path}: {reason}'}")
            failures += 1
    print(f"wrote {len(paths) - failures} pairs into {os.path.join(fv.output, 'gt')} and "
          f"{os.path.join(fv.output, 'lq')} (seed {fv.seed}, x{scale})")
    return 1 if failures else 0


def run(fv) -> int:
    from real_esrgan_tf.degradations import DegradationConfig, DegradationConfigError

    if fv.paired:
        return _run_paired(fv)
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

