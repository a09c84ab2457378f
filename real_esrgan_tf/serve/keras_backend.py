"""A Keras generator as an upscaling backend: precision, weight blending, memory-bounded RRDBNet tails.

`KerasSuperResolver` is what `Upscaler` runs a Keras model through: one trace per window shape,
optional XLA, and RRDBNet's 4x-resolution tail on row strips so memory follows the strip.
"""

from __future__ import annotations

import enum

import numpy as np


class Precision(enum.Enum):
    """Compute precision of a Keras generator. AUTO: the device's native one, decided by
    `serve.precision.resolve_precision` (fp32 for backends that cannot change precision)."""

    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @property
    def keras_dtype(self) -> str:
        if self is Precision.AUTO:
            raise ValueError("precision auto has no dtype: resolve it first (serve.precision)")
        return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[self.value]


def rebuild_model(model, dtype: str | None = None):
    """A fresh copy of `model` (same architecture and weights), with its layers in `dtype`.

    Our generators rebuild from their config with a `dtype` argument; other functional models are
    cloned layer by layer. Weights are cast on assignment.
    """
    import keras

    config = model.get_config()
    if "dtype" in config and hasattr(type(model), "from_config") and type(model) is not keras.Model:
        copy = type(model).from_config({**config, "dtype": dtype or config["dtype"]})
    else:
        def clone_layer(layer):
            layer_config = layer.get_config()
            if dtype is not None:
                layer_config["dtype"] = dtype
            return layer.__class__.from_config(layer_config)

        input_dtype = dtype or model.inputs[0].dtype
        copy = keras.models.clone_model(
            model,
            input_tensors=keras.Input(model.inputs[0].shape[1:], dtype=input_dtype),
            clone_function=clone_layer,
        )
    copy.set_weights(model.get_weights())
    if hasattr(model, "scale"):
        copy.scale = model.scale
    return copy


def blend_generators(general, wdn, strength: float):
    """Official denoise-strength control: weights = strength * general + (1 - strength) * wdn.

    realesr-general-x4v3 (strength 1) keeps noise, its wdn variant (strength 0) removes it.
    """
    a, b = general.get_weights(), wdn.get_weights()
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        raise ValueError("the two models have different architectures, cannot blend their weights")
    blended = rebuild_model(general)
    blended.set_weights([strength * x + (1.0 - strength) * y for x, y in zip(a, b, strict=True)])
    return blended


def infer_scale(model) -> int:
    """The model's `scale` attribute, else measured on a 16x16 input (a multiple of every unshuffle)."""
    if getattr(model, "scale", None):
        return int(model.scale)
    out = model(np.zeros((1, 16, 16, 3), np.float32))
    return int(out.shape[1]) // 16


# RRDBNet's layers after the trunk, in order: all local (nearest x2, 3x3 convs), so they can run on
# row strips of the trunk features. An output row depends on trunk rows within 2 of it (two 3x3 convs
# at 4x, one at 2x, one at 4x after the nearest upsamplings): a halo of 2 rows makes strips exact.
RRDB_TAIL = ("up1", "conv_up1", "up2", "conv_up2", "conv_hr", "conv_last")
RRDB_TAIL_HALO = 2


def split_rrdbnet(model):
    """(trunk, tail) of an RRDBNet-like functional model, or None when `model` is not one.

    trunk: a Keras model lq -> trunk features (B, h', w', C) (h' = h for x4, h/2 for x2, h/4 for
    x1); tail: the callable features -> SR (4x the features' size) made of the same layers.
    """
    import keras

    names = {layer.name for layer in model.layers}
    if "trunk_skip" not in names or not set(RRDB_TAIL) <= names:
        return None
    trunk = keras.Model(model.inputs, model.get_layer("trunk_skip").output)
    layers = [model.get_layer(name) for name in RRDB_TAIL]

    def tail(features):
        for layer in layers:
            features = layer(features, training=False)
        return features

    return trunk, tail


class KerasSuperResolver:
    """A Keras generator as a backend, traced once per window shape (optionally XLA-compiled).

    RRDBNet runs its trunk on the whole window and its 4x-resolution tail on row strips of the trunk
    features (plus a 2-row halo, cropped away: same pixels) when one 64-channel HR activation of the
    whole window would exceed `tail_activation_bytes`. Those activations are what bounds memory:
    x4plus on a 276x276 window needs ~1.1 GB in one piece, ~0.35 GB in three strips. Strips of one
    size (the last one slid up) keep it to one trace per window shape. 0: never strips.
    """

    input_size = None

    def __init__(
        self,
        model,
        precision: Precision = Precision.FP32,
        jit_compile: bool = False,
        tail_activation_bytes: int = 128 * 2**20,
    ):
        import tensorflow as tf

        if precision is Precision.AUTO:
            from real_esrgan_tf.serve.precision import auto_precision, detect_device

            precision = auto_precision(detect_device())
        self.scale = infer_scale(model)
        self.precision = precision
        self.model = model if precision is Precision.FP32 else rebuild_model(model, precision.keras_dtype)
        compute_dtype = precision.keras_dtype
        net = self.model
        split = split_rrdbnet(net) if tail_activation_bytes else None
        self.tail_activation_bytes = tail_activation_bytes if split else 0

        def compiled(fn):
            return tf.function(fn, reduce_retracing=True, jit_compile=jit_compile)

        @compiled
        def forward(lq):  # (N, h, w, 3) float32 -> (N, h*s, w*s, 3) float32
            return tf.cast(net(tf.cast(lq, compute_dtype), training=False), tf.float32)

        self._forward = forward
        if split:
            trunk, tail = split
            self._trunk = compiled(lambda lq: trunk(tf.cast(lq, compute_dtype), training=False))
            self._tail = compiled(lambda features: tf.cast(tail(features), tf.float32))

    def strip_rows(self, rows: int, width: int, channels: int, itemsize: int) -> int:
        """Trunk rows per tail strip for (rows, width, channels) features: `rows` means one piece."""
        if not self.tail_activation_bytes:
            return rows
        limit = max(1, self.tail_activation_bytes // (16 * width * channels * itemsize) - 2 * RRDB_TAIL_HALO)
        count = -(-rows // limit)
        return rows if count == 1 else -(-rows // count)

    def __call__(self, lq: np.ndarray) -> np.ndarray:
        if not self.tail_activation_bytes:
            return self._forward(lq).numpy()
        features = self._trunk(lq)  # (N, h', w', C): the output is 4x its size
        batch, rows, width, channels = (int(d) for d in features.shape)
        strip = self.strip_rows(rows, width, channels, features.dtype.size * batch)  # N frames' rows
        if strip >= rows:
            return self._tail(features).numpy()
        halo = RRDB_TAIL_HALO
        span = min(rows, strip + 2 * halo)  # rows of every strip (the last one slid up inside)
        out = np.empty((batch, 4 * rows, 4 * width, int(self.model.outputs[0].shape[-1])), np.float32)
        for top in range(0, rows, strip):
            bottom = min(top + strip, rows)
            start = min(max(top - halo, 0), rows - span)
            sr = self._tail(features[:, start:start + span])
            out[:, 4 * top:4 * bottom] = sr[:, 4 * (top - start):4 * (bottom - start)]
        return out


