"""TFLite models for phones: a fixed LR input, builtin ops only, fp32 / fp16 / dynamic-int8 / int8.

Models keep a float32 input and output in every precision, so one runner
(`real_esrgan_tf.serve.tflite_backend.TFLiteGenerator`) serves them all; it covers images of any
size with the same tile planner as the Upscaler.
"""

from __future__ import annotations

import glob
import io
import os
import tempfile
from collections.abc import Iterable, Iterator

import numpy as np
import tensorflow as tf

from real_esrgan_tf.export.common import ExportError, Quantization
from real_esrgan_tf.models.layers import input_multiple


# -- TFLite -----------------------------------------------------------------------------------
def degraded_lq_crops(
    images: Iterable[np.ndarray], *, size: int, scale: int, count: int, seed: int = 0
) -> list[np.ndarray]:
    """Calibration inputs for full-int8: LR crops [size, size, 3] float32 in [0, 1] of real photos.

    A simple stand-in for the training degradation (Gaussian blur sigma U(0.2, 3), bicubic
    downscale by `scale`, JPEG quality U(30, 95)): what matters for calibration is that the
    activation ranges match what the model sees on real degraded inputs.
    """
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    sources = [np.asarray(im)[..., :3] if np.asarray(im).ndim == 3 else np.asarray(im) for im in images]
    sources = [np.repeat(s[..., None], 3, -1) if s.ndim == 2 else s for s in sources]
    if not sources:
        raise ExportError("no calibration images")
    crops = []
    for k in range(count):
        src = sources[k % len(sources)]
        if src.dtype == np.uint16:
            src = (src // 257).astype(np.uint8)
        im = Image.fromarray(src.astype(np.uint8), "RGB")
        im = im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.2, 3.0))))
        w, h = im.size
        lr_w, lr_h = max(size, w // scale), max(size, h // scale)
        im = im.resize((lr_w, lr_h), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(30, 96)))
        lq = np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255.0
        y = int(rng.integers(0, lq.shape[0] - size + 1))
        x = int(rng.integers(0, lq.shape[1] - size + 1))
        crops.append(lq[y : y + size, x : x + size])
    return crops


def _prelu_as_leaky_relu(prelu):
    """A PReLU layer's function rebuilt from ops XNNPACK runs in int8 (for full-int8 export).

    XNNPACK has no int8 PReLU, nor a stand-alone int8 RELU or MAXIMUM, so every PReLU of an int8
    model falls back to TFLite's kernel and splits the graph into one delegate partition per
    layer (measured: 18 partitions for animevideov3, slower than dynamic-range int8). With
    per-channel slopes c and one shared slope s != 1 (the median of c, so both factors stay
    small), PReLU_c(x) = x * (c - s) / (1 - s) + LeakyReLU_s(x) * (1 - c) / (1 - s) exactly
    (check x > 0 and x < 0); LEAKY_RELU, MUL and ADD are all delegated in int8.
    """
    import keras

    slopes = np.asarray(prelu.get_weights()[0], np.float32).reshape(-1)  # shared_axes=[1, 2]: [C]
    shared = float(np.median(slopes))
    if abs(1.0 - shared) < 1e-3:
        shared = 0.0
    linear = (slopes - shared) / (1.0 - shared)
    leaky = (1.0 - slopes) / (1.0 - shared)

    class LeakyReluPReLU(keras.layers.Layer):
        def call(self, x):
            return x * linear + tf.nn.leaky_relu(x, alpha=shared) * leaky

    return LeakyReluPReLU(name=prelu.name)


def int8_friendly(generator):
    """The generator with its PReLUs rewritten for XNNPACK int8 (same function, shared weights)."""
    import keras

    prelus = [layer for layer in generator.layers if isinstance(layer, keras.layers.PReLU)]
    if not prelus or any(layer.get_weights()[0].shape[:2] != (1, 1) for layer in prelus):
        return generator  # nothing to do, or slopes that vary over space (not our generators)

    def replace(layer):
        return _prelu_as_leaky_relu(layer) if isinstance(layer, keras.layers.PReLU) else layer

    return keras.models.clone_model(generator, clone_function=replace)


def fixed_size_model(generator, input_size: int):
    """The generator behind a static [1, input_size, input_size, 3] input (TFLite wants static shapes)."""
    import keras

    if input_size % input_multiple(generator):
        raise ExportError(f"input_size {input_size} must be a multiple of {input_multiple(generator)}")
    lq = keras.Input(batch_shape=(1, input_size, input_size, 3), name="lq", dtype="float32")
    return keras.Model(lq, generator(lq), name=f"{generator.name}_{input_size}")


def export_tflite(
    generator,
    path: str | None = None,
    *,
    quantization: Quantization = Quantization.FP32,
    input_size: int = 128,
    calibration: Iterable[np.ndarray] | None = None,
) -> bytes:
    """Converts to a builtin-ops-only TFLite flatbuffer with a fixed LR input; writes it if `path`.

    `calibration`: LR crops [input_size, input_size, 3] float32 in [0, 1] (needed for INT8).
    Input and output stay float32 in every mode, so one runner serves all of them.
    """
    return export_tflite_models(
        generator, {quantization: path}, input_size=input_size, calibration=calibration
    )[quantization]


def export_tflite_models(
    generator,
    paths: dict[Quantization, str | None],
    *,
    input_size: int = 128,
    calibration: Iterable[np.ndarray] | None = None,
) -> dict[Quantization, bytes]:
    """Several precisions of one generator: traced and saved once, then converted once per precision.

    Goes through `model.export(format="tf_saved_model")` + `TFLiteConverter.from_saved_model`
    (TF_FACTS: correct on Keras 3, unlike `from_concrete_functions`); the trace is the slow part.
    """
    import keras

    from real_esrgan_tf.images import write_bytes_atomic
    from real_esrgan_tf.serve.tflite_backend import check_builtin_ops

    crops = None
    if Quantization.INT8 in paths:
        if calibration is None:
            raise ExportError("int8 quantization needs calibration LR crops")
        crops = [np.asarray(c, np.float32) for c in calibration]
        bad = [c.shape for c in crops if c.shape != (input_size, input_size, 3)]
        if not crops or bad:
            raise ExportError(
                f"calibration crops must be [{input_size}, {input_size}, 3], got {bad or 'none'}"
            )

    def representative_dataset() -> Iterator[list[np.ndarray]]:
        for crop in crops:
            yield [crop[None]]

    fixed_size_model(generator, input_size)  # validates input_size before the slow part
    # A static batch of 1 too: with a None batch the converter keeps dynamic-shape ops.
    spec = tf.TensorSpec([1, input_size, input_size, 3], tf.float32, name="lq")
    sources = {}  # traced graph per precision: int8 gets the XNNPACK-friendly PReLU
    results = {}
    with tempfile.TemporaryDirectory(prefix="real-esrgan-tflite-") as tmp:
        for quantization, path in paths.items():
            graph = int8_friendly(generator) if quantization is Quantization.INT8 else generator
            if id(graph) not in sources:
                sources[id(graph)] = os.path.join(tmp, str(len(sources)))
                lq = keras.Input(batch_shape=spec.shape, name="lq", dtype="float32")
                keras.Model(lq, graph(lq)).export(
                    sources[id(graph)], format="tf_saved_model", verbose=False, input_signature=[spec]
                )
            converter = tf.lite.TFLiteConverter.from_saved_model(sources[id(graph)])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex: runs on phones
            if quantization is not Quantization.FP32:
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantization is Quantization.FP16:
                converter.target_spec.supported_types = [tf.float16]
            elif quantization is Quantization.INT8:
                converter.representative_dataset = representative_dataset
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            content = converter.convert()
            check_builtin_ops(content, path or f"<{quantization.value} model>")
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                write_bytes_atomic(path, content)
            results[quantization] = content
    return results


def calibration_photos(folder: str | None = None) -> list[np.ndarray]:
    """The photos in `folder` (default: the bundled samples) that int8 calibration crops come from."""
    from real_esrgan_tf.images import read_image

    folder = folder or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples")
    paths = sorted(p for p in glob.glob(os.path.join(folder, "*")) if os.path.isfile(p))
    photos = [read_image(p).pixels for p in paths]
    if not photos:
        raise ExportError(f"{folder}: no calibration images")
    return photos


def write(generator, options) -> str:
    """`export --format tflite` (the `export.formats` entry point): the .tflite file written."""
    from real_esrgan_tf.export.common import generator_scale

    calibration = None
    if options.quantization is Quantization.INT8:
        calibration = degraded_lq_crops(
            calibration_photos(options.calibration_images), size=options.input_size,
            scale=generator_scale(generator), count=options.calibration_crops,
        )
    export_tflite(generator, options.output, quantization=options.quantization,
                  input_size=options.input_size, calibration=calibration)
    return options.output
