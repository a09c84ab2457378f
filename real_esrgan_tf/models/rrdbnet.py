"""RRDBNet: the ESRGAN generator used by RealESRGAN_x4plus, x2plus and anime_6B.

conv_first -> num_block x RRDB -> conv_body, plus a long skip, then two nearest x2 upsamplings.
Scales 2 and 1 fold the input into channels with a pixel-unshuffle first, so the trunk always
runs at 1/4 of the output resolution (the paper's trick to keep x2/x1 as cheap as x4).
"""

from __future__ import annotations

import keras

from real_esrgan_tf.models.layers import (
    PixelUnshuffle,
    ScaledResidual,
    input_dtype,
    model_from_config,
    serialize_dtype,
)


def _rdb_initializer():
    # Official: kaiming-normal (fan_in, gain sqrt(2)) scaled by 0.1 -> variance 0.02 / fan_in.
    return keras.initializers.VarianceScaling(scale=0.02, mode="fan_in", distribution="untruncated_normal")


def _default_initializer():
    # PyTorch's Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class RRDBNet(keras.Model):
    """Residual-in-residual dense block network (ESRGAN, Wang et al. 2018), NHWC, any input size.

    Follows BasicSR's `basicsr/archs/rrdbnet_arch.py` as Real-ESRGAN uses it: for scale 2 / 1 the
    input is pixel-unshuffled by 2 / 4 first, so the trunk always upsamples x4. Layer names follow
    the official state-dict keys (`body_3_rdb2_conv4` is `body.3.rdb2.conv4`), which keeps weight
    conversion a plain name mapping.

    Args:
      scale: 4 (x4plus, anime_6B), 2 (x2plus) or 1.
      num_in_ch, num_out_ch: image channels (3).
      num_feat: trunk features (64). num_block: RRDB blocks (23; anime_6B: 6).
      num_grow_ch: growth channels of the dense blocks (32).
      dtype: layer dtype or policy name (float32 default; "float16"/"bfloat16" for inference).
    Call: `model(lq)` with lq [B, H, W, num_in_ch] in [0, 1] (H, W multiples of 4 / scale) ->
      [B, H*scale, W*scale, num_out_ch], not clipped.
    """

    def __init__(
        self,
        scale: int = 4,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        dtype=None,
        **kwargs,
    ):
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet supports scale 1, 2 or 4, got {scale}")

        def conv(filters, name, act=False, init=None):
            return keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                activation="leaky_relu" if act else None,  # keras' default slope is 0.2
                kernel_initializer=init or _default_initializer(),
                bias_initializer="zeros",
                name=name,
                dtype=dtype,
            )

        inputs = keras.Input((None, None, num_in_ch), name="lq", dtype=input_dtype(dtype))
        x = inputs
        if scale < 4:
            x = PixelUnshuffle(4 // scale, name="pixel_unshuffle", dtype=dtype)(x)
        feat = conv(num_feat, "conv_first")(x)

        body = feat
        for b in range(num_block):
            rrdb_in = body
            for r in range(1, 4):
                rdb_in = body
                dense = [rdb_in]
                for k in range(1, 6):
                    cat = dense[0] if len(dense) == 1 else keras.layers.Concatenate(
                        name=f"body_{b}_rdb{r}_cat{k}", dtype=dtype)(dense)
                    filters = num_grow_ch if k < 5 else num_feat
                    out = conv(filters, f"body_{b}_rdb{r}_conv{k}", act=k < 5, init=_rdb_initializer())(cat)
                    dense.append(out)
                body = ScaledResidual(0.2, name=f"body_{b}_rdb{r}_out", dtype=dtype)(dense[-1], rdb_in)
            body = ScaledResidual(0.2, name=f"body_{b}_out", dtype=dtype)(body, rrdb_in)
        body = conv(num_feat, "conv_body")(body)
        feat = keras.layers.Add(name="trunk_skip", dtype=dtype)([feat, body])

        for i in (1, 2):
            feat = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"up{i}", dtype=dtype)(feat)
            feat = conv(num_feat, f"conv_up{i}", act=True)(feat)
        feat = conv(num_feat, "conv_hr", act=True)(feat)
        outputs = conv(num_out_ch, "conv_last")(feat)

        kwargs.setdefault("name", f"rrdbnet_x{scale}")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.scale = scale
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.num_feat = num_feat
        self.num_block = num_block
        self.num_grow_ch = num_grow_ch
        self._layer_dtype = dtype

    def get_config(self):
        return {
            "name": self.name,
            "scale": self.scale,
            "num_in_ch": self.num_in_ch,
            "num_out_ch": self.num_out_ch,
            "num_feat": self.num_feat,
            "num_block": self.num_block,
            "num_grow_ch": self.num_grow_ch,
            "dtype": serialize_dtype(self._layer_dtype),
        }

    @classmethod
    def from_config(cls, config):
        return model_from_config(cls, config)
