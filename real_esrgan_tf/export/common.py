"""What the export formats and their command share (no TensorFlow import): errors, precisions, scale."""

import enum


class ExportError(Exception):
    """A model or output that cannot be exported; the message names it and the reason."""


def generator_scale(generator) -> int:
    """The upscaling factor of one of our generators (RRDBNet.scale, SRVGGNetCompact.scale)."""
    scale = getattr(generator, "scale", None)
    if scale is None:
        raise ExportError(f"{getattr(generator, 'name', generator)}: generator has no `scale` attribute")
    return int(scale)


class Quantization(enum.Enum):
    """TFLite weight/activation precision."""

    FP32 = "fp32"
    FP16 = "fp16"  # fp16 weights, dequantised to fp32 at load (or run in fp16 on GPU delegates)
    DYNAMIC_INT8 = "dynamic_int8"  # int8 weights, fp32 activations; no calibration data needed
    INT8 = "int8"  # int8 weights and activations, float32 model input/output; needs calibration data
