"""`real-esrgan-tf evaluate`: PSNR/SSIM (Y, BasicSR's) of a model and of bicubic against GT images,
and NIQE of the model's outputs, on GT/LQ folders, paired `prepare` shards, or LQ images alone."""

from __future__ import annotations

import math
import os

from absl import flags

from real_esrgan_tf.cli import report, upscale
from real_esrgan_tf.cli.report import UserError


def define_flags(fv: flags.FlagValues) -> None:
    upscale.define_model_flags(fv)  # --model, --outscale, --tile, --precision, ... as `upscale`
    flags.DEFINE_string("data", None, "Paired `prepare --gt --lq` shards: a folder or a file pattern.",
                        flag_values=fv)
    flags.DEFINE_string("gt", None, "Folder of GT images (pairs with --lq by file name without extension).",
                        flag_values=fv)
    flags.DEFINE_string("lq", None, "Folder of LQ images; alone: NIQE of the outputs only.", flag_values=fv)
    flags.DEFINE_string("lq_suffix", "", "Removed from LQ names before pairing (e.g. x4 for 0001x4.png).",
                        flag_values=fv)
    flags.DEFINE_integer("crop_border", None, "Pixels dropped on each side before measuring; default: the "
                         "scale.", lower_bound=0, flag_values=fv)
    flags.DEFINE_boolean("test_y_channel", True, "Measure PSNR/SSIM on Y (BT.601); false: on RGB.",
                         flag_values=fv)
    flags.DEFINE_boolean("niqe", True, "Compute NIQE of each output (needs two 96x96 blocks).",
                         flag_values=fv)
    flags.DEFINE_boolean("bicubic", True, "Also score MATLAB-bicubic upscaling of the LQ.", flag_values=fv)
    flags.DEFINE_string("json", None, "Write per-image scores and means to this JSON file.", flag_values=fv)
    flags.DEFINE_string("save_dir", None, "Write each output there as <name>.png.", flag_values=fv)


def _error(message: str) -> None:
    report.error("evaluate", message)


def _check_inputs(fv) -> None:
    if fv.data and (fv.gt or fv.lq):
        raise UserError("use either --data (shards) or --gt/--lq (folders), not both")
    if fv.gt and not fv.lq:
        raise UserError("--gt needs --lq (the LQ folder the model reads)")
    if not fv.data and not fv.lq:
        raise UserError("give --data SHARDS, --gt DIR --lq DIR, or --lq DIR alone")
    if fv.save_dir:
        save = os.path.realpath(fv.save_dir)
        for folder in (fv.gt, fv.lq):
            if folder and os.path.realpath(folder) == save:
                raise UserError(f"--save_dir {fv.save_dir} is an input folder (would replace inputs)")


def _build_upscaler(fv):
    """(Upscaler, scale) with the model loader `upscale` uses."""
    from real_esrgan_tf.serve.upscaler import Upscaler

    model, default_outscale = upscale.load_model(fv)  # the loader `upscale` uses
    outscale = default_outscale if fv.outscale is None else fv.outscale
    precision = upscale.resolve_precision_flag(fv, model, "evaluate")
    upscaler = Upscaler(model, tile=fv.tile, tile_pad=fv.tile_pad, pre_pad=fv.pre_pad, precision=precision,
                        tta=fv.tta, outscale=outscale, jit_compile=fv.xla)
    scale = outscale or upscaler.scale
    if scale != int(scale):
        raise UserError(f"{fv.model}: output scale {scale} is not an integer")
    return upscaler, int(scale)


def _items(fv):
    """(iterable of items, count or None)."""
    from real_esrgan_tf.evaluation import (
        EvaluationError,
        iter_lq_folder,
        iter_pair_paths,
        iter_shard_pairs,
        pair_folders,
    )

    try:
        if fv.data:
            return iter_shard_pairs(fv.data), None
        if fv.gt:
            paths = pair_folders(fv.gt, fv.lq, fv.lq_suffix)
            return iter_pair_paths(paths), len(paths)
        return iter_lq_folder(fv.lq), None
    except EvaluationError as e:
        raise UserError(str(e)) from None


def _cell(value, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def format_table(result) -> str:
    """Per-image rows and the mean, aligned columns; '-' where a metric does not apply."""
    columns = [("PSNR", "psnr", 4), ("SSIM", "ssim", 4), ("bic PSNR", "bicubic_psnr", 4),
               ("bic SSIM", "bicubic_ssim", 4), ("NIQE", "niqe", 4)]
    rows = [[r.name] + [_cell(getattr(r, key), d) for _, key, d in columns] for r in result.rows]
    means = result.means()
    rows.append([f"mean ({len(result.rows)})"] + [_cell(means[key], d) for _, key, d in columns])
    header = ["image"] + [title for title, _, _ in columns]
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                            strict=True)))
             for row in [header] + rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def run(fv) -> int:
    from tqdm import tqdm

    from real_esrgan_tf.evaluation import EvaluationError, evaluate
    from real_esrgan_tf.images import write_bytes_atomic

    try:
        _check_inputs(fv)
        items, total = _items(fv)
        upscaler, scale = _build_upscaler(fv)
    except (UserError, ValueError, TypeError) as e:
        _error(str(e))
        return 1
    bar = tqdm(total=total, desc="evaluate", unit="img")

    def on_item(item) -> None:
        if isinstance(item, EvaluationError):
            _error(str(item))
        bar.update(1)

    try:
        result = evaluate(upscaler, items, scale, fv.crop_border, test_y_channel=fv.test_y_channel,
                          niqe=fv.niqe, bicubic=fv.bicubic, save_dir=fv.save_dir, on_item=on_item)
    except (EvaluationError, OSError) as e:  # e.g. an unreadable folder or an unwritable --save_dir
        bar.close()
        _error(str(e))
        return 1
    bar.close()
    print(f"model {fv.model}, scale {scale}, crop_border {result.crop_border}, "
          f"{'Y' if result.test_y_channel else 'RGB'} PSNR/SSIM, bicubic = MATLAB imresize")
    print(format_table(result))
    if fv.json:
        try:
            write_bytes_atomic(fv.json, (result.to_json() + "\n").encode())
        except OSError as e:
            _error(f"{fv.json}: cannot write ({e.strerror or e})")
            return 1
        print(f"wrote {fv.json}")
    if not result.rows:
        _error("no image was evaluated")
        return 1
    return 1 if result.failures else 0
