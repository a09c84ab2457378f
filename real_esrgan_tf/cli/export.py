"""`real-esrgan-tf export`: a SavedModel for TensorFlow Serving or a TFLite model for phones."""

from __future__ import annotations

import glob
import os
import sys

import numpy as np

from real_esrgan_tf.export.common import ExportError, Quantization, generator_scale

# -- command line -----------------------------------------------------------------------------
FORMATS = ("saved_model", "tflite")


def define_flags(fv) -> None:
    from absl import flags

    flags.DEFINE_string(
        "model", None,
        "Pretrained name (realesrgan-x4plus, realesrgan-x4plus-anime-6b, realesr-animevideov3), "
        "a .pth or .weights.h5 file, or a training --model_dir (its exported EMA generator).",
        flag_values=fv,
    )
    flags.DEFINE_enum("format", "saved_model", FORMATS, "What to write.", flag_values=fv)
    flags.DEFINE_string(
        "output", None,
        "saved_model: the model's base folder (savedmodels/<name>); the version goes below it. "
        "tflite: the .tflite file.",
        flag_values=fv,
    )
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
    flags.mark_flags_as_required(["model", "output"], flag_values=fv)



def _calibration_photos(folder: str | None) -> list[np.ndarray]:
    from real_esrgan_tf.images import read_image

    folder = folder or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples")
    paths = sorted(p for p in glob.glob(os.path.join(folder, "*")) if os.path.isfile(p))
    photos = [read_image(p).pixels for p in paths]
    if not photos:
        raise ExportError(f"{folder}: no calibration images")
    return photos


def run(fv) -> int:
    from real_esrgan_tf.export import ServingConfig, degraded_lq_crops, export_saved_model, export_tflite
    from real_esrgan_tf.images import ImageError
    from real_esrgan_tf.serve.loading import load_keras_generator
    from real_esrgan_tf.weights import WeightsError

    try:
        generator = load_keras_generator(fv.model)  # name, .pth, .weights.h5 or training folder
        if fv.format == "saved_model":
            path = export_saved_model(
                generator, fv.output, version=fv.version, config=ServingConfig(fv.tile, fv.tile_pad)
            )
        else:
            quantization = Quantization(fv.quantization)
            calibration = None
            if quantization is Quantization.INT8:
                calibration = degraded_lq_crops(
                    _calibration_photos(fv.calibration_images),
                    size=fv.input_size, scale=generator_scale(generator), count=fv.calibration_crops,
                )
            export_tflite(generator, fv.output, quantization=quantization, input_size=fv.input_size,
                          calibration=calibration)
            path = fv.output
    except (ExportError, ImageError, WeightsError, OSError, ValueError) as e:
        print(f"real-esrgan-tf export: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0
