"""The export formats: one table from `export --format` names to the modules that write them.

Each module named here defines `write(generator, options: ExportOptions) -> str` (the path written,
atomically: nothing half-written stays on disk) and raises `ExportError` with one line for what it
cannot export. A new format is one module in `export/` plus one row of `FORMATS`; the command's
`--format` choices and help come from this table. No TensorFlow import here.
"""

from __future__ import annotations

import dataclasses
import importlib

from real_esrgan_tf.export.common import ExportError, Quantization


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What the export command was asked for; each format reads the fields it uses.

    Args:
      output: the file or folder to write (per format: see its `ExportFormat.output`).
      fp16: half-precision weights (and compute, where the format has it).
      source: what `--model` named (a pretrained name, a file, a training folder): provenance
        written into the file's metadata where the format has metadata.
      version, tile, tile_pad: saved_model: the TF Serving version folder (None = next) and the
        in-graph tiling of `upscale_image`.
      quantization, input_size, calibration_images, calibration_crops: tflite: precision, fixed LR
        input side, and the photos (folder, None = bundled samples) degraded into int8 calibration crops.
      ncnn_blobs: ncnn: the (input, output) blob names (the official files use data, output).
    """

    output: str
    fp16: bool = False
    source: str = ""
    version: int | None = None
    tile: int = 256
    tile_pad: int = 10
    quantization: Quantization = Quantization.FP32
    input_size: int = 128
    calibration_images: str | None = None
    calibration_crops: int = 64
    ncnn_blobs: tuple[str, str] = ("data", "output")


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One `--format`: its module (with `write`), what `--output` names, and the pip extra it needs."""

    name: str
    module: str
    output: str
    description: str
    extra: str | None = None


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            "saved_model", "real_esrgan_tf.export.saved_model",
            "the model's base folder (savedmodels/<name>); the version goes below it",
            "TensorFlow Serving: serving_default (lq -> sr) and upscale_image (bytes -> PNG)",
        ),
        ExportFormat(
            "tflite", "real_esrgan_tf.export.tflite", "the .tflite file",
            "TFLite for phones: fixed input, builtin ops, fp32/fp16/int8", extra="tflite",
        ),
        ExportFormat(
            "onnx", "real_esrgan_tf.export.onnx", "the .onnx file",
            "ONNX (chaiNNer, vs-mlrt, ONNX Runtime, OpenVINO): NCHW input/output, dynamic N/H/W, --fp16",
            extra="onnx",
        ),
        ExportFormat(
            "ncnn", "real_esrgan_tf.export.ncnn",
            "the .param file, NAME.bin beside it (a folder: <model name>.param in it)",
            "ncnn .param/.bin as the official realesrgan-ncnn-vulkan models (Upscayl, apps): fp16 weights",
        ),
        ExportFormat(
            "tfjs", "real_esrgan_tf.export.tfjs",
            "the TF.js model folder (model.json + weight shards), new or an earlier TF.js export",
            "TF.js graph model for the browser: any input size, --fp16 halves the download",
        ),
        ExportFormat(
            "web", "real_esrgan_tf.export.web",
            "the page's folder (serve it with `python -m http.server`)",
            "a static page upscaling in the browser with TF.js (WebGPU, WebGL, WASM, CPU); "
            "--tile/--tile_pad are its defaults",
        ),
    )
}


def export_generator(generator, format_name: str, options: ExportOptions) -> str:
    """Writes `generator` in the format named `format_name`; returns the path written.

    Raises ExportError for an unknown format or one whose optional packages are missing (the
    message names the pip extra).
    """
    fmt = FORMATS.get(format_name)
    if fmt is None:
        raise ExportError(f"unknown export format {format_name!r} (known: {', '.join(FORMATS)})")
    try:
        module = importlib.import_module(fmt.module)
    except ImportError as e:
        hint = f" (pip install 'real-esrgan-tf[{fmt.extra}]')" if fmt.extra else ""
        raise ExportError(f"--format {format_name} needs {e.name or e}{hint}") from None
    return module.write(generator, options)
