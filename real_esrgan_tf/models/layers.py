"""Small layers shared by the generators.

Channel order of the (un)shuffles is TensorFlow's (`tf.nn.space_to_depth` / `depth_to_space`:
channel `(i * s + j) * C + c`), not PyTorch's (`c * s * s + i * s + j`). Weight converters permute
the adjacent convolution's channels once at load time, so the graph itself pays nothing.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def input_dtype(dtype):
    """dtype of a model's `keras.Input` for a layer dtype or policy name.

    Plain `float16`/`bfloat16` models take inputs of that type; mixed policies keep float32 inputs
    (their variable dtype) and each layer casts to the compute dtype.
    """
    if dtype is None:
        return None
    return keras.dtype_policies.get(dtype).variable_dtype


def serialize_dtype(dtype):
    """A model's `dtype` argument as `get_config` stores it: names as they are, policies serialised."""
    if isinstance(dtype, (str, type(None))):
        return dtype
    return keras.saving.serialize_keras_object(dtype)


def model_from_config(cls, config: dict):
    """`cls(**config)` with a serialised dtype policy turned back into a policy (see `serialize_dtype`)."""
    config = dict(config)
    if isinstance(config.get("dtype"), dict):
        config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
    return cls(**config)


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class PixelUnshuffle(keras.layers.Layer):
    """(B, H, W, C) -> (B, H/s, W/s, C*s*s), TensorFlow channel order."""

    def __init__(self, scale: int, **kwargs):
        super().__init__(**kwargs)
        self.scale = int(scale)

    def call(self, x):
        return tf.nn.space_to_depth(x, self.scale)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.scale
        return (b, None if h is None else h // s, None if w is None else w // s, c * s * s)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def input_multiple(model) -> int:
    """Input H and W must be multiples of this: the pixel-unshuffle factor (RRDBNet x2: 2, x1: 4), else 1."""
    for layer in model.layers:
        if isinstance(layer, PixelUnshuffle):
            return layer.scale
    return 1


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class PixelShuffle(keras.layers.Layer):
    """(B, H, W, C*s*s) -> (B, H*s, W*s, C), TensorFlow channel order."""

    def __init__(self, scale: int, **kwargs):
        super().__init__(**kwargs)
        self.scale = int(scale)

    def call(self, x):
        return tf.nn.depth_to_space(x, self.scale)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.scale
        return (b, None if h is None else h * s, None if w is None else w * s, c // (s * s))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class BilinearUpsample2x(keras.layers.Layer):
    """(B, H, W, C) -> (B, 2H, 2W, C), bilinear with half-pixel centres and edge clamping.

    Equal to `UpSampling2D(2, interpolation="bilinear")` and PyTorch's `F.interpolate(scale_factor=2,
    mode="bilinear", align_corners=False)`: each output pixel is 3/4 of its source pixel plus 1/4 of
    the neighbour on its side. Written with slices and adds in the layer's dtype because
    ResizeBilinear's XLA gradient mixes float32 into bfloat16/float16 graphs and fails to compile
    (tensorflow/tensorflow#81273).
    """

    def call(self, x):
        x = self._double(x, tf.concat([x[:, :1], x[:, :-1]], 1), tf.concat([x[:, 1:], x[:, -1:]], 1), 1)
        return self._double(
            x, tf.concat([x[:, :, :1], x[:, :, :-1]], 2), tf.concat([x[:, :, 1:], x[:, :, -1:]], 2), 2
        )

    @staticmethod
    def _double(x, before, after, axis):
        """Interleave 3/4 x + 1/4 before (even outputs) and 3/4 x + 1/4 after (odd) along `axis`."""
        pair = tf.stack([0.75 * x + 0.25 * before, 0.75 * x + 0.25 * after], axis=axis + 1)
        shape = tf.unstack(tf.shape(x))
        shape[axis] = 2 * shape[axis]
        return tf.reshape(pair, tf.stack(shape))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else 2 * h, None if w is None else 2 * w, c)


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class ScaledResidual(keras.layers.Layer):
    """`residual * beta + identity`: the residual scaling of ESRGAN's RDB and RRDB (beta 0.2)."""

    def __init__(self, beta: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.beta = float(beta)

    def call(self, residual, identity):
        return residual * self.beta + identity

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


def torch_to_tf_unshuffle_perm(channels: int, scale: int):
    """Index list p with `tf_channels[k] = torch_channels[p[k]]` for a pixel-unshuffle by `scale`.

    TF channel k = (i*s + j)*C + c holds the same pixel as torch channel c*s*s + i*s + j.
    The same permutation maps PixelShuffle's input channels (its inverse layout).
    """
    s = scale
    return [c * s * s + i * s + j for i in range(s) for j in range(s) for c in range(channels)]
