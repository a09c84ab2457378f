"""A SavedModel for TensorFlow Serving: the generator plus in-graph decoding, tiling and PNG encoding.

The SavedModel carries two signatures:
- `serving_default`: float32 `lq` [B, H, W, 3] in [0, 1] -> `sr` [B, H*s, W*s, 3], dynamic H and W
  (interface version 2; version 1 called the input `lr`);
- `upscale_image`: encoded image bytes (`image`, PNG/JPEG/WEBP/BMP/GIF) and an optional `outscale`
  -> `png_bytes`. Decoding, tiling, the optional Lanczos resize and PNG encoding all run inside the
  graph, so TensorFlow Serving needs no Python. Tiles are processed one at a time by a
  `tf.while_loop` (parallel_iterations=1): peak memory follows the tile, not the image.
  The output alias ends in `_bytes` because TensorFlow Serving's REST API base64-encodes exactly
  those string outputs (`{"b64": ...}`); other binary strings would be emitted as broken JSON text.

TFLite models: `real_esrgan_tf.export.tflite`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid

import tensorflow as tf

from real_esrgan_tf import tiling
from real_esrgan_tf.export.common import ExportError, generator_scale
from real_esrgan_tf.images import BT601_LUMA
from real_esrgan_tf.models.layers import input_multiple
from real_esrgan_tf.tiling import round_up

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """In-graph tiling of `upscale_image` (LR pixels; tile 0 runs the whole image at once)."""

    tile: int = 256
    tile_pad: int = 10


# The documented interface of our SavedModels (savedmodels/README.md). 1: `serving_default` took `lr`;
# 2: it takes `lq` (the paper's name for the low-quality input). `upscale_image` is the same in both.
SAVED_MODEL_INTERFACE_VERSION = 2


class SuperResolutionModule(tf.Module):
    """What TensorFlow Serving loads: the generator's variables plus the two serving functions.

    `interface_version` (an int32 variable, `SAVED_MODEL_INTERFACE_VERSION`) tells a reader of the
    SavedModel which signature names to expect.
    """

    def __init__(self, generator, config: ServingConfig = ServingConfig()):
        super().__init__(name="real_esrgan")
        self.interface_version = tf.Variable(
            SAVED_MODEL_INTERFACE_VERSION, dtype=tf.int32, trainable=False, name="interface_version"
        )
        self.generator = generator
        self.scale = generator_scale(generator)
        self.multiple = input_multiple(generator)
        # Tiles and their context are whole multiples, so every tile stays a valid network input.
        self.tile = round_up(config.tile, self.multiple) if config.tile > 0 else 0
        self.tile_pad = round_up(config.tile_pad, self.multiple)
        self.serving_default = tf.function(
            self._serving_default,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="lq")],
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
    def _run(self, lq):
        """[B, H, W, 3] with H, W multiples of self.multiple -> [B, H*s, W*s, 3]."""
        return tf.cast(self.generator(lq, training=False), tf.float32)

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

    def _serving_default(self, lq):
        shape = tf.shape(lq)
        sr = self._run(self._pad_to_multiple(lq))
        return {"sr": sr[:, : shape[1] * self.scale, : shape[2] * self.scale, :]}

    def tile_plan(self, height, width):
        """((win_h, win_w), spans [rows, cols, 6]: y0, y1, win_y, x0, x1, win_x) for a padded
        (height, width) image: `tiling.plan_tiles`' rule (`tiling.core_span`) on int tensors."""
        core, pad = self.tile, self.tile_pad
        windows, axes = [], []
        for size in (height, width):
            window = tiling.window_size(size, core, pad, tf.minimum)
            index = tf.range(tiling.tile_count(size, core))
            span = tiling.core_span(index, size, core, pad, window, tf.minimum, tf.maximum)
            axes.append(tf.stack(span, -1))
            windows.append(window)
        ys, xs = axes  # [rows, 3], [cols, 3]
        rows, cols = tf.shape(ys)[0], tf.shape(xs)[0]
        spans = tf.concat(
            [tf.tile(ys[:, None, :], [1, cols, 1]), tf.tile(xs[None, :, :], [rows, 1, 1])], axis=-1
        )
        return tuple(windows), spans

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
        (win_h, win_w), spans = self.tile_plan(p_height, p_width)
        rows, cols = tf.shape(spans)[0], tf.shape(spans)[1]

        def run_tile(row, col):
            y0, y1, wy, x0, x1, wx = tf.unstack(spans[row, col])
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
        """Same conventions as `serve.upscaler.Upscaler`: gray in -> gray out (BT.601 luma of the RGB
        result), alpha through the network unless constant, 16-bit PNG in -> 16-bit out, Lanczos-3
        (antialiased when shrinking, as Pillow) on the quantised result for `outscale`."""
        tf.debugging.assert_positive(outscale, message="outscale must be > 0")
        pixels, is_16bit = self._decode(image)
        max_value = tf.where(is_16bit, 65535.0, 255.0)
        shape = tf.shape(pixels)
        height, width, channels = shape[0], shape[1], shape[2]
        luma = tf.constant(BT601_LUMA, tf.float32)

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

    Args:
      generator: a Keras generator with a `scale` (RRDBNet, SRVGGNetCompact).
      base_dir: the model's base folder (savedmodels/<name>).
      version: the version folder (default: highest existing + 1).
      config: in-graph tiling of `upscale_image` (tile, tile_pad in LR pixels).
    Returns:
      The version folder. Raises ExportError for a taken or negative version.
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


def write(generator, options) -> str:
    """`export --format saved_model` (the `export.formats` entry point): the version folder written."""
    config = ServingConfig(options.tile, options.tile_pad)
    return export_saved_model(generator, options.output, version=options.version, config=config)
