"""ParseNet: facexlib's face parser (`parsing_parsenet.pth`), whose labels make GFPGAN's paste-back mask.

Layer names are the official state-dict prefixes (`encoder.1.conv1.conv2d`,
`body.3.conv2.norm.norm`, `out_mask_conv.conv2d`, ...), so the loader maps keys to layers by name.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from real_esrgan_tf.models.layers import input_dtype, model_from_config, serialize_dtype

BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d
LEAKY_SLOPE = 0.2  # facexlib ReluLayer("leakyrelu")


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class ReflectionPad2D(keras.layers.Layer):
    """Reflect-pad height and width by `padding` on every side (PyTorch `nn.ReflectionPad2d`)."""

    def __init__(self, padding: int, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)

    def call(self, x):
        p = self.padding
        return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        p = 2 * self.padding
        return (b, None if h is None else h + p, None if w is None else w + p, c)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


def _conv_layer(x, filters, name, scale="none", norm=False, relu=False, kernel=3, dtype=None):
    """facexlib `ConvLayer`: [nearest 2x up], reflect pad, conv (stride 2 when down), [BN], [LeakyReLU 0.2].

    A batch-normed conv has no bias (facexlib drops it for norm_type "bn").
    """
    if scale == "up":
        x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}.up", dtype=dtype)(x)
    x = ReflectionPad2D(math.ceil((kernel - 1) / 2), name=f"{name}.pad", dtype=dtype)(x)
    stride = 2 if scale == "down" else 1
    x = keras.layers.Conv2D(filters, kernel, stride, use_bias=not norm, name=f"{name}.conv2d", dtype=dtype)(x)
    if norm:
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}.norm.norm", dtype=dtype)(x)
    if relu:
        x = keras.layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}.relu", dtype=dtype)(x)
    return x


def _residual_block(x, c_out, name, scale="none", dtype=None):
    """facexlib `ResidualBlock`: conv-BN-LeakyReLU, conv-BN, plus the input (a plain conv when the
    scale or width changes); the resampling sits on the second conv (down) or the first (up)."""
    c_in = x.shape[-1]
    if scale == "none" and c_in == c_out:
        identity = x
    else:
        identity = _conv_layer(x, c_out, f"{name}.shortcut_func", scale, dtype=dtype)
    first, second = {"down": ("none", "down"), "up": ("up", "none"), "none": ("none", "none")}[scale]
    y = _conv_layer(x, c_out, f"{name}.conv1", first, norm=True, relu=True, dtype=dtype)
    y = _conv_layer(y, c_out, f"{name}.conv2", second, norm=True, dtype=dtype)
    return keras.layers.Add(name=f"{name}.add", dtype=dtype)([identity, y])


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class ParseNet(keras.Model):
    """facexlib's ParseNet (from PSFRGAN): a residual encoder-body-decoder predicting face-part logits.

    Follows facexlib 0.3.0 `parsing/parsenet.py` as `init_parsing_model("parsenet")` builds it
    (in/out 512, min_feat_size 32, base_ch 64, 10 body blocks, LeakyReLU 0.2, batch norm, channels
    clipped to [32, 256]): a 3x3 conv, log2(in_size / 32) downsampling blocks, `res_depth` blocks with
    a long skip, log2(out_size / 32) upsampling blocks, and 3x3 heads for the mask (and an image).

    Reference: Chen et al., "Progressive Semantic-Aware Style Transformation for Blind Face
    Restoration" (PSFR-GAN), CVPR 2021.

    Args:
      in_size, out_size: the face size the net was built for (they set the number of down/up steps;
        the graph takes any size divisible by 2**steps).
      parsing_ch: label classes (19). min_feat_size, base_ch, res_depth: as facexlib.
      with_image: also return the image head's output (GFPGAN's paste-back uses only the mask).
      dtype: layer dtype or policy name.
    Call: `model(x)` with x [B, H, W, 3] RGB in [-1, 1] ((pixels / 255 - 0.5) / 0.5) -> mask logits
      [B, H, W, parsing_ch] (with_image: `(logits, image [B, H, W, 3])`).
    """

    def __init__(
        self,
        in_size: int = 512,
        out_size: int = 512,
        parsing_ch: int = 19,
        min_feat_size: int = 32,
        base_ch: int = 64,
        res_depth: int = 10,
        with_image: bool = False,
        dtype=None,
        **kwargs,
    ):
        def clip(channels):
            return max(32, min(channels, 256))

        min_feat = min(in_size, min_feat_size)
        down_steps = int(math.log2(in_size // min_feat))
        up_steps = int(math.log2(out_size // min_feat))

        inputs = keras.Input((None, None, 3), name="face", dtype=input_dtype(dtype))
        x = _conv_layer(inputs, base_ch, "encoder.0", dtype=dtype)
        head = base_ch
        for i in range(down_steps):
            x = _residual_block(x, clip(head * 2), f"encoder.{i + 1}", "down", dtype)
            head *= 2
        feat = x
        for i in range(res_depth):
            x = _residual_block(x, clip(head), f"body.{i}", dtype=dtype)
        x = keras.layers.Add(name="body.skip", dtype=dtype)([feat, x])
        for i in range(up_steps):
            x = _residual_block(x, clip(head // 2), f"decoder.{i}", "up", dtype)
            head //= 2
        outputs = _conv_layer(x, parsing_ch, "out_mask_conv", dtype=dtype)
        if with_image:
            outputs = (outputs, _conv_layer(x, 3, "out_img_conv", dtype=dtype))
        kwargs.setdefault("name", "parsenet")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.in_size, self.out_size, self.parsing_ch = in_size, out_size, parsing_ch
        self.min_feat_size, self.base_ch, self.res_depth = min_feat_size, base_ch, res_depth
        self.with_image = with_image
        self._layer_dtype = dtype

    def get_config(self):
        return {
            "name": self.name,
            "in_size": self.in_size,
            "out_size": self.out_size,
            "parsing_ch": self.parsing_ch,
            "min_feat_size": self.min_feat_size,
            "base_ch": self.base_ch,
            "res_depth": self.res_depth,
            "with_image": self.with_image,
            "dtype": serialize_dtype(self._layer_dtype),
        }

    @classmethod
    def from_config(cls, config):
        return model_from_config(cls, config)
