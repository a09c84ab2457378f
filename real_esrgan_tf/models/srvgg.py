"""SRVGGNetCompact: the compact VGG-style generator of realesr-animevideov3 / realesr-general-x4v3.

A plain stack of 3x3 convs at LR resolution, a pixel-shuffle, and the nearest-upsampled input added:
the network only learns the residual. Cheap enough for video and phones.
"""

from __future__ import annotations

import keras

from real_esrgan_tf.models.initializers import PRELU_GAIN2, DiracUniform
from real_esrgan_tf.models.layers import PixelShuffle, input_dtype, model_from_config, serialize_dtype

ACTIVATIONS = ("prelu", "relu", "leakyrelu")
INITS = ("default", "dirac")


def _kernel_initializers(init: str, num_conv: int) -> list:
    """One kernel initialiser per conv (first, num_conv body convs, last).

    "default": PyTorch's nn.Conv2d default, kaiming_uniform(a=sqrt(5)) (what the official code uses;
        the biases start at zero here). Right for loading weights; from scratch the deep plain stack
        starts as the exact nearest upsampling (see models/initializers.py).
    "dirac": He-uniform for PReLU 0.25 on the first conv, identity + 0.1 noise on the body
        (`DiracUniform`), He-uniform x 0.01 on the last conv (the net starts close to the nearest
        upsampling but with signal and gradients through every layer). For training from scratch.
    """
    if init == "default":
        first = body = last = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
        return [first] + [body] * num_conv + [last]
    if init == "dirac":
        first = keras.initializers.VarianceScaling(PRELU_GAIN2, "fan_in", "uniform")
        last = keras.initializers.VarianceScaling(PRELU_GAIN2 * 0.01**2, "fan_in", "uniform")
        return [first] + [DiracUniform(0.1) for _ in range(num_conv)] + [last]
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def _activation(act: str, num_feat: int, name: str, dtype):
    if act == "prelu":
        # PyTorch nn.PReLU(num_parameters=num_feat): one slope per channel, initialised to 0.25.
        return keras.layers.PReLU(
            alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2], name=name, dtype=dtype
        )
    if act == "relu":
        return keras.layers.ReLU(name=name, dtype=dtype)
    if act == "leakyrelu":
        return keras.layers.LeakyReLU(negative_slope=0.1, name=name, dtype=dtype)
    raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class SRVGGNetCompact(keras.Model):
    """The compact VGG-style generator of Real-ESRGAN's realesr-animevideov3 / realesr-general-x4v3.

    Follows the official `realesrgan/archs/srvgg_arch.py`: conv + activation, `num_conv` x (conv +
    activation), a last conv to `num_out_ch * upscale**2` channels, pixel shuffle, plus the nearest
    upsampling of the input (the net learns the residual). Layer names `body_{i}` follow the official
    `body.{i}` indices (convs even, activations odd).

    Args:
      num_in_ch, num_out_ch: image channels (3). num_feat: features (64).
      num_conv: body convolutions (16 animevideov3, 32 general-x4v3). upscale: 2, 3 or 4.
      act: "prelu" (official default, per-channel slopes), "relu" or "leakyrelu" (slope 0.1).
      init: kernel initialisation, "default" (PyTorch's, as the official code) or "dirac" (identity
        body convs: trains from scratch far sooner; BUILD_NOTES "Time to quality").
      dtype: layer dtype or policy name.
    Call: `model(lq)` with lq [B, H, W, num_in_ch] in [0, 1] -> [B, H*upscale, W*upscale, num_out_ch].
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act: str = "prelu",
        init: str = "default",
        dtype=None,
        **kwargs,
    ):
        inits = iter(_kernel_initializers(init, num_conv))

        def conv(filters, name):
            return keras.layers.Conv2D(
                filters, 3, padding="same", kernel_initializer=next(inits), name=name, dtype=dtype
            )

        inputs = keras.Input((None, None, num_in_ch), name="lq", dtype=input_dtype(dtype))
        x = conv(num_feat, "body_0")(inputs)
        x = _activation(act, num_feat, "body_1", dtype)(x)
        for i in range(num_conv):
            x = conv(num_feat, f"body_{2 * i + 2}")(x)
            x = _activation(act, num_feat, f"body_{2 * i + 3}", dtype)(x)
        x = conv(num_out_ch * upscale * upscale, f"body_{2 * num_conv + 2}")(x)
        x = PixelShuffle(upscale, name="pixel_shuffle", dtype=dtype)(x)
        upsample = keras.layers.UpSampling2D(
            upscale, interpolation="nearest", name="upsample_input", dtype=dtype
        )
        base = upsample(inputs)
        outputs = keras.layers.Add(name="residual", dtype=dtype)([x, base])

        kwargs.setdefault("name", f"srvggnet_compact_x{upscale}")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.num_feat = num_feat
        self.num_conv = num_conv
        self.upscale = upscale
        self.scale = upscale
        self.act = act
        self.init = init
        self._layer_dtype = dtype

    def get_config(self):
        return {
            "name": self.name,
            "num_in_ch": self.num_in_ch,
            "num_out_ch": self.num_out_ch,
            "num_feat": self.num_feat,
            "num_conv": self.num_conv,
            "upscale": self.upscale,
            "act": self.act,
            "init": self.init,
            "dtype": serialize_dtype(self._layer_dtype),
        }

    @classmethod
    def from_config(cls, config):
        return model_from_config(cls, config)
