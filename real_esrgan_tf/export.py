"""Export a generator for deployment: a SavedModel for TensorFlow Serving, a TFLite model for phones.

The SavedModel carries two signatures:
- `serving_default`: float32 `lr` [B, H, W, 3] in [0, 1] -> `sr` [B, H*s, W*s, 3], dynamic H and W;
- `upscale_image`: encoded image bytes (`image`, PNG/JPEG/WEBP/BMP/GIF) and an optional `outscale`
  -> `png_bytes`. Decoding, tiling, the optional Lanczos resize and PNG encoding all run inside the
  graph, so TensorFlow Serving needs no Python. Tiles are processed one at a time by a
  `tf.while_loop` (parallel_iterations=1): peak memory follows the tile, not the image.
  The output alias ends in `_bytes` because TensorFlow Serving's REST API base64-encodes exactly
  those string outputs (`{"b64": ...}`); other binary strings would be emitted as broken JSON text.

TFLite models have a fixed input size (chosen at export) and only builtin ops; `tflite_runner`
tiles any image over that window.
"""

from __future__ import annotations

import dataclasses
import enum
import glob
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator

import numpy as np
import tensorflow as tf

from real_esrgan_tf.models.layers import input_multiple
from real_esrgan_tf.tiling import round_up

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# ITU-R BT.601 luma, as cv2.COLOR_RGB2GRAY: how the official code turns an RGB result back to gray.
_LUMA = (0.299, 0.587, 0.114)


class Quantization(enum.Enum):
    """TFLite weight/activation precision."""

    FP32 = "fp32"
    FP16 = "fp16"  # fp16 weights, dequantised to fp32 at load (or run in fp16 on GPU delegates)
    DYNAMIC_INT8 = "dynamic_int8"  # int8 weights, fp32 activations; no calibration data needed
    INT8 = "int8"  # int8 weights and activations, float32 model input/output; needs calibration data


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """In-graph tiling of `upscale_image` (LR pixels; tile 0 runs the whole image at once)."""

    tile: int = 256
    tile_pad: int = 10


class ExportError(Exception):
    """A model or output that cannot be exported; the message names it and the reason."""


def generator_scale(generator) -> int:
    """The upscaling factor of one of our generators (RRDBNet.scale, SRVGGNetCompact.scale)."""
    scale = getattr(generator, "scale", None)
    if scale is None:
        raise ExportError(f"{getattr(generator, 'name', generator)}: generator has no `scale` attribute")
    return int(scale)


class SuperResolutionModule(tf.Module):
    """What TensorFlow Serving loads: the generator's variables plus the two serving functions."""

    def __init__(self, generator, config: ServingConfig = ServingConfig()):
        super().__init__(name="real_esrgan")
        self.generator = generator
        self.scale = generator_scale(generator)
        self.multiple = input_multiple(generator)
        # Tiles and their context are whole multiples, so every tile stays a valid network input.
        self.tile = round_up(config.tile, self.multiple) if config.tile > 0 else 0
        self.tile_pad = round_up(config.tile_pad, self.multiple)
        self.serving_default = tf.function(
            self._serving_default,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="lr")],
        )
        native_scale = tf.constant(float(self.scale))

        def upscale_image(image, outscale=native_scale):
            return self._upscale_image(image, outscale)

        self.upscale_image = tf.function(
            upscale_image,
            input_signature=[tf.TensorSpec([], tf.string, name="image"), tf.TensorSpec([], tf.float32)],
        )

    def signatures(self) -> dict:
        return {"serving_default": self.serving_default, "upscale_image": self.upscale_image}

    # -- float tensors ------------------------------------------------------------------------
    def _run(self, lr):
        """[B, H, W, 3] with H, W multiples of self.multiple -> [B, H*s, W*s, 3]."""
        return tf.cast(self.generator(lr, training=False), tf.float32)

    def _pad_to_multiple(self, image):
        """Reflect-pads H and W ([B, H, W, C]) up to self.multiple, as the official mod_pad.

        As a gather of reflected indices, repeated like numpy's "reflect" (what `Upscaler` uses):
        MirrorPad refuses a pad longer than side - 1, e.g. a 1-pixel row for the x2 model.
        """
        if self.multiple == 1:
            return image

        def reflected(size):  # indices [0, size rounded up to the multiple)
            period = tf.maximum(2 * (size - 1), 1)
            steps = tf.range(size + (-size) % self.multiple) % period
            return tf.where(steps < size, steps, period - steps)

        shape = tf.shape(image)
        return tf.gather(tf.gather(image, reflected(shape[1]), axis=1), reflected(shape[2]), axis=2)

    def _serving_default(self, lr):
        shape = tf.shape(lr)
        sr = self._run(self._pad_to_multiple(lr))
        return {"sr": sr[:, : shape[1] * self.scale, : shape[2] * self.scale, :]}

    def tiled_upscale(self, image):
        """[H, W, 3] float in [0, 1] -> [H*s, W*s, 3], one tile in memory at a time.

        Tiles as `real_esrgan_tf.tiling` (so `upscale_image` gives the pixels of `upscale`): LR
        cores of `tile` pixels, each run inside a window of `tile + 2 * tile_pad` pixels that is
        slid back inside the image at the border instead of shrinking (official RealESRGANer
        clips it); only the core's part of each output is kept.
        """
        shape = tf.shape(image)
        height, width = shape[0], shape[1]
        padded = self._pad_to_multiple(image[None])[0]
        p_height, p_width = tf.shape(padded)[0], tf.shape(padded)[1]
        s = self.scale
        if self.tile == 0:
            out = self._run(padded[None])[0]
            return out[: height * s, : width * s, :]
        core, pad = self.tile, self.tile_pad
        win_h = tf.minimum(core + 2 * pad, p_height)
        win_w = tf.minimum(core + 2 * pad, p_width)
        rows = (p_height + core - 1) // core
        cols = (p_width + core - 1) // core

        def span(index, size, window):  # (core start, core end, window start) along one axis
            c0 = index * core
            return c0, tf.minimum(c0 + core, size), tf.maximum(0, tf.minimum(c0 - pad, size - window))

        def run_tile(row, col):
            y0, y1, wy = span(row, p_height, win_h)
            x0, x1, wx = span(col, p_width, win_w)
            out = self._run(padded[None, wy : wy + win_h, wx : wx + win_w, :])[0]  # [win_h*s, win_w*s, 3]
            oy, ox = (y0 - wy) * s, (x0 - wx) * s
            return out[oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s, :]

        def row_body(row, row_parts):
            def col_body(col, col_parts):
                # Columns are stacked along axis 0 of a TensorArray, so store them transposed.
                return col + 1, col_parts.write(col, tf.transpose(run_tile(row, col), [1, 0, 2]))

            col_parts = tf.TensorArray(
                tf.float32, size=cols, infer_shape=False, element_shape=[None, None, 3]
            )
            _, col_parts = tf.while_loop(
                lambda col, _: col < cols, col_body, [tf.constant(0), col_parts], parallel_iterations=1
            )
            return row + 1, row_parts.write(row, tf.transpose(col_parts.concat(), [1, 0, 2]))

        row_parts = tf.TensorArray(tf.float32, size=rows, infer_shape=False, element_shape=[None, None, 3])
        _, row_parts = tf.while_loop(
            lambda row, _: row < rows, row_body, [tf.constant(0), row_parts], parallel_iterations=1
        )
        out = row_parts.concat()  # [p_height*s, p_width*s, 3]
        return out[: height * s, : width * s, :]

    # -- encoded images -----------------------------------------------------------------------
    @staticmethod
    def _decode(data):
        """Image bytes -> ([H, W, C] float32 in [0, 1], is_16bit). 16-bit PNGs keep their depth."""
        header = tf.strings.join([tf.strings.substr(data, 0, 32), b"\0" * 32])  # short input stays valid
        is_16bit = tf.logical_and(
            tf.equal(tf.strings.substr(header, 0, 8), _PNG_MAGIC),
            tf.equal(tf.strings.substr(header, 24, 1), b"\x10"),  # IHDR bit depth
        )
        is_jpeg = tf.equal(tf.strings.substr(header, 0, 3), b"\xff\xd8\xff")
        pixels = tf.case(
            [
                (is_16bit, lambda: tf.cast(tf.io.decode_png(data, dtype=tf.uint16), tf.float32) / 65535.0),
                # libjpeg's accurate integer IDCT, as Pillow/OpenCV: TF's default (fast) IDCT is off
                # by up to 4 levels, which would make served pixels differ from `upscale`'s.
                (is_jpeg, lambda: tf.cast(tf.io.decode_jpeg(data, dct_method="INTEGER_ACCURATE"), tf.float32)
                 / 255.0),
            ],
            default=lambda: tf.cast(tf.io.decode_image(data, channels=0, expand_animations=False), tf.float32)
            / 255.0,
            exclusive=False,
        )
        return pixels, is_16bit

    def _upscale_image(self, image, outscale):
        """Same conventions as `inference.Upscaler`: gray in -> gray out (BT.601 luma of the RGB
        result), alpha through the network unless constant, 16-bit PNG in -> 16-bit out, Lanczos-3
        (antialiased when shrinking, as Pillow) on the quantised result for `outscale`."""
        tf.debugging.assert_positive(outscale, message="outscale must be > 0")
        pixels, is_16bit = self._decode(image)
        max_value = tf.where(is_16bit, 65535.0, 255.0)
        shape = tf.shape(pixels)
        height, width, channels = shape[0], shape[1], shape[2]
        luma = tf.constant(_LUMA, tf.float32)

        def as_rgb(plane):  # [H, W, 1] -> [H, W, 3], like cv2 GRAY2RGB
            return tf.tile(plane, [1, 1, 3])

        def quantize(values):
            return tf.round(tf.clip_by_value(values, 0.0, 1.0) * max_value)

        def to_gray(sr):
            return tf.reduce_sum(sr * luma, axis=-1, keepdims=True)

        is_color = channels >= 3
        rgb = tf.cond(is_color, lambda: pixels[:, :, :3], lambda: as_rgb(pixels[:, :, :1]))
        sr = self.tiled_upscale(rgb)
        color = quantize(tf.cond(is_color, lambda: sr, lambda: to_gray(sr)))
        has_alpha = tf.logical_or(tf.equal(channels, 2), tf.equal(channels, 4))

        def upscale_alpha():
            plane = pixels[:, :, -1:]
            constant = tf.equal(tf.reduce_min(plane), tf.reduce_max(plane))
            return tf.cond(
                constant,  # an opaque image saved with alpha: nothing for a network to add
                lambda: tf.fill(
                    tf.concat([tf.shape(color)[:2], [1]], 0), tf.round(plane[0, 0, 0] * max_value)
                ),
                # The official default alpha upsampler: the alpha plane goes through the network too.
                lambda: quantize(to_gray(self.tiled_upscale(as_rgb(plane)))),
            )

        alpha = tf.cond(has_alpha, upscale_alpha, lambda: tf.zeros_like(color[:, :, :0]))
        out = tf.concat([color, alpha], axis=-1)  # [H*s, W*s, C], integer values as float

        # Official size: int(h * outscale) in float64 with the outscale the user typed. The signature's
        # float32 turns 2.12 into 2.1199999, so back to 6 decimals first, then multiply in float64
        # (float32 products round 25 * 1.16 up to 29.0; Python gives 28).
        outscale64 = tf.round(tf.cast(outscale, tf.float64) * 1e6) / 1e6

        def scaled(size):
            return tf.maximum(1, tf.cast(tf.cast(size, tf.float64) * outscale64, tf.int32))  # int() truncates

        out_h, out_w = scaled(height), scaled(width)
        needs_resize = tf.logical_and(
            tf.not_equal(outscale, float(self.scale)),
            tf.logical_or(tf.not_equal(out_h, height * self.scale), tf.not_equal(out_w, width * self.scale)),
        )
        out = tf.cond(
            needs_resize,
            lambda: tf.clip_by_value(
                tf.round(tf.image.resize(out, tf.stack([out_h, out_w]), method="lanczos3", antialias=True)),
                0.0,
                max_value,
            ),
            lambda: out,
        )
        png = tf.cond(
            is_16bit,
            lambda: tf.io.encode_png(tf.cast(out, tf.uint16)),
            lambda: tf.io.encode_png(tf.cast(out, tf.uint8)),
        )
        return {"png_bytes": png}


def next_version(base_dir: str) -> int:
    """TensorFlow Serving serves the highest numeric sub-folder: the next one is max + 1."""
    versions = [int(d) for d in os.listdir(base_dir) if d.isdigit()] if os.path.isdir(base_dir) else []
    return max(versions, default=0) + 1


def export_saved_model(
    generator, base_dir: str, *, version: int | None = None, config: ServingConfig = ServingConfig()
) -> str:
    """Writes `base_dir/<version>/` (TensorFlow Serving's layout) and returns that path.

    Saved into a temporary sibling folder and renamed at the end: TensorFlow Serving polls the
    base folder and must never pick up a half-written version.
    """
    version = next_version(base_dir) if version is None else int(version)
    if version < 0:  # TF Serving skips negative version folders: the model would never load
        raise ExportError(f"{base_dir}: version {version}, TF Serving loads only version folders >= 0")
    target = os.path.join(base_dir, str(version))
    if os.path.exists(target):
        raise ExportError(f"{target}: version already exists (pick another --version)")
    os.makedirs(base_dir, exist_ok=True)
    module = SuperResolutionModule(generator, config)
    # Not mkdtemp: its 0700 mode would become the version's, unreadable to a server running as
    # another user. os.mkdir applies the umask like any other folder.
    tmp = os.path.join(base_dir, f".tmp-export-{uuid.uuid4().hex}")
    os.mkdir(tmp)
    try:
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# -- TFLite -----------------------------------------------------------------------------------
def degraded_lr_crops(
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
        lr = np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255.0
        y = int(rng.integers(0, lr.shape[0] - size + 1))
        x = int(rng.integers(0, lr.shape[1] - size + 1))
        crops.append(lr[y : y + size, x : x + size])
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
    lr = keras.Input(batch_shape=(1, input_size, input_size, 3), name="lr", dtype="float32")
    return keras.Model(lr, generator(lr), name=f"{generator.name}_{input_size}")


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
    from real_esrgan_tf.tflite_runner import check_builtin_ops

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
    spec = tf.TensorSpec([1, input_size, input_size, 3], tf.float32, name="lr")
    sources = {}  # traced graph per precision: int8 gets the XNNPACK-friendly PReLU
    results = {}
    with tempfile.TemporaryDirectory(prefix="real-esrgan-tflite-") as tmp:
        for quantization, path in paths.items():
            graph = int8_friendly(generator) if quantization is Quantization.INT8 else generator
            if id(graph) not in sources:
                sources[id(graph)] = os.path.join(tmp, str(len(sources)))
                lr = keras.Input(batch_shape=spec.shape, name="lr", dtype="float32")
                keras.Model(lr, graph(lr)).export(
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


# What `real-esrgan-tf train` writes into --model_dir (real_esrgan_tf.training.loop.EMA_EXPORT_NAME).
EMA_EXPORT_NAME = "ema_generator.weights.h5"


def exported_weights_in(model_dir: str) -> str:
    """The EMA generator a training run exported into its --model_dir."""
    path = os.path.join(model_dir, EMA_EXPORT_NAME)
    if os.path.isfile(path):
        return path
    has_checkpoints = bool(glob.glob(os.path.join(model_dir, "**", "checkpoint"), recursive=True))
    what = "has checkpoints but" if has_checkpoints else "is not a training folder:"
    raise ExportError(f"{model_dir}: {what} no exported EMA generator ({EMA_EXPORT_NAME})")


def load_generator_for_export(model: str):
    """Name, .pth, .weights.h5 or training folder -> keras generator."""
    try:
        from real_esrgan_tf.weights import load_generator
    except ImportError as e:
        raise ExportError(f"{model}: cannot load weights ({e})") from None
    source = exported_weights_in(model) if os.path.isdir(model) else model
    return load_generator(source)


def _calibration_photos(folder: str | None) -> list[np.ndarray]:
    from real_esrgan_tf.images import read_image

    folder = folder or os.path.join(os.path.dirname(__file__), "samples")
    paths = sorted(p for p in glob.glob(os.path.join(folder, "*")) if os.path.isfile(p))
    photos = [read_image(p).pixels for p in paths]
    if not photos:
        raise ExportError(f"{folder}: no calibration images")
    return photos


def run(fv) -> int:
    import sys

    from real_esrgan_tf.images import ImageError

    try:
        generator = load_generator_for_export(fv.model)
        if fv.format == "saved_model":
            path = export_saved_model(
                generator, fv.output, version=fv.version, config=ServingConfig(fv.tile, fv.tile_pad)
            )
        else:
            quantization = Quantization(fv.quantization)
            calibration = None
            if quantization is Quantization.INT8:
                calibration = degraded_lr_crops(
                    _calibration_photos(fv.calibration_images),
                    size=fv.input_size, scale=generator_scale(generator), count=fv.calibration_crops,
                )
            export_tflite(generator, fv.output, quantization=quantization, input_size=fv.input_size,
                          calibration=calibration)
            path = fv.output
    except (ExportError, ImageError, OSError, ValueError) as e:
        print(f"real-esrgan-tf export: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0
