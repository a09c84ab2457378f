"""`real-esrgan-tf export`: a generator in one of the formats of `export.formats.FORMATS`."""

from __future__ import annotations

import sys

from real_esrgan_tf.export.common import ExportError, Quantization
from real_esrgan_tf.export.formats import FORMATS, ExportOptions


def define_flags(fv) -> None:
    from absl import flags

    flags.DEFINE_string(
        "model", None,
        "Pretrained name (realesrgan-x4plus, realesrgan-x4plus-anime-6b, realesr-animevideov3), "
        "a .pth or .weights.h5 file, or a training --model_dir (its exported EMA generator).",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "format", "saved_model", list(FORMATS),
        "What to write: " + "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values()) + ".",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "output", None, "; ".join(f"{f.name}: {f.output}" for f in FORMATS.values()) + ".", flag_values=fv
    )
    flags.DEFINE_boolean("fp16", False, "Half-precision weights (and compute where the format has it).",
                         flag_values=fv)
    flags.DEFINE_integer("version", None, "SavedModel version folder, >= 0: TF Serving loads no other "
                         "(default: highest existing + 1).", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("tile", 256, "upscale_image: LR tile size inside the graph (0 = no tiling).",
                         lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("tile_pad", 10, "upscale_image: context pixels around each tile.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_enum("quantization", "fp32", [q.value for q in Quantization], "TFLite precision.",
                      flag_values=fv)
    flags.DEFINE_integer(
        "input_size", 128, "TFLite: fixed LR input side (the tiled runner covers any image).", flag_values=fv
    )
    flags.DEFINE_string(
        "calibration_images", None,
        "TFLite int8: folder of real photos to degrade into calibration crops (default: bundled samples).",
        flag_values=fv,
    )
    flags.DEFINE_integer("calibration_crops", 64, "TFLite int8: number of calibration crops.", flag_values=fv)
    flags.DEFINE_list("ncnn_blobs", ["data", "output"],
                      "ncnn: the input and output blob names (the official files' are data,output).",
                      flag_values=fv)
    flags.mark_flags_as_required(["model", "output"], flag_values=fv)


def options_from_flags(fv) -> ExportOptions:
    if len(fv.ncnn_blobs) != 2 or not all(fv.ncnn_blobs):
        raise ExportError(f"--ncnn_blobs takes two names, input,output (got {','.join(fv.ncnn_blobs)!r})")
    return ExportOptions(
        output=fv.output, fp16=fv.fp16, source=fv.model, version=fv.version, tile=fv.tile,
        tile_pad=fv.tile_pad, quantization=Quantization(fv.quantization), input_size=fv.input_size,
        calibration_images=fv.calibration_images, calibration_crops=fv.calibration_crops,
        ncnn_blobs=(fv.ncnn_blobs[0], fv.ncnn_blobs[1]),
    )


def run(fv) -> int:
    from real_esrgan_tf.export.formats import export_generator
    from real_esrgan_tf.images import ImageError
    from real_esrgan_tf.serve.loading import load_keras_generator
    from real_esrgan_tf.weights import WeightsError

    try:
        options = options_from_flags(fv)
        generator = load_keras_generator(fv.model)  # name, .pth, .weights.h5 or training folder
        path = export_generator(generator, fv.format, options)
    except (ExportError, ImageError, WeightsError, OSError, ValueError) as e:
        print(f"real-esrgan-tf export: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0
