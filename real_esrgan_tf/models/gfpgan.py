"""GFPGANv1Clean: the blind face restoration generator of GFPGAN v1.3 / v1.4 (what GFPGANer runs).

A U-Net on the 512x512 aligned face: its bottleneck gives one StyleGAN2 latent per decoder layer, its
decoder levels give spatial scale/shift maps (SFT conditions) that steer the StyleGAN2 "clean" decoder
(models/stylegan2_clean.py), whose face prior paints the restored face.

Tensors are NHWC; the input is RGB in [-1, 1] (GFPGANer: BGR->RGB, /255, normalize(0.5, 0.5)), the
output is about [-1, 1] (GFPGANer clamps to [-1, 1]). Noise is injected in every style conv, a fresh
normal draw per call as the official `randomize_noise=True` (GFPGANer's path); `randomize_noise=False`
uses the stored `noise{i}` buffers of the weights file, `noise=[...]` any fixed tensors. The official
forward's `weight` argument is swallowed by `**kwargs` and unused by this architecture.

Reference: Wang et al., "Towards Real-World Blind Face Restoration with Generative Facial Prior"
(CVPR 2021); the `gfpgan` package, `gfpgan/archs/gfpganv1_clean_arch.py`, and `gfpgan/utils.py`
(GFPGANer's configuration of the "clean" arch for v1.3 / v1.4).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from real_esrgan_tf.models.layers import BilinearUpsample2x, model_from_config, serialize_dtype
from real_esrgan_tf.models.stylegan2_clean import LEAKY_SLOPE, StyleGAN2DecoderCSFT, stylegan2_channels


def _torch_default_initializer():
    # PyTorch's Conv2d/Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


def _conv(filters, kernel_size, name, dtype, use_bias=True):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=_torch_default_initializer(),
        name=name,
        dtype=dtype,
    )


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class ResBlock(keras.layers.Layer):
    """GFPGAN's U-Net block: conv3x3 + lrelu, bilinear resample 2x, conv3x3 + lrelu, plus a resampled
    1x1-conv (no bias) skip.

    mode "down": bilinear scale 0.5 with align_corners=False, which on even sides is exactly a 2x2 mean;
    mode "up": bilinear 2x with half-pixel centres (`BilinearUpsample2x`).
    Call: `layer(x)` [B, H, W, in] -> [B, H/2 or 2H, W/2 or 2W, out].
    """

    def __init__(self, in_channels, out_channels, mode="down", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("down", "up"):
            raise ValueError(f"mode must be 'down' or 'up', got {mode!r}")
        self.in_channels, self.out_channels, self.mode = int(in_channels), int(out_channels), mode
        policy = self.dtype_policy
        self.conv1 = _conv(in_channels, 3, "conv1", policy)
        self.conv2 = _conv(out_channels, 3, "conv2", policy)
        self.skip = _conv(out_channels, 1, "skip", policy, use_bias=False)
        if mode == "up":
            self.resample = BilinearUpsample2x(name="upsample", dtype=policy)
        else:
            self.resample = keras.layers.AveragePooling2D(2, name="downsample", dtype=policy)

    def build(self, input_shape=None):
        self.conv1.build((None, None, None, self.in_channels))
        self.conv2.build((None, None, None, self.in_channels))
        self.skip.build((None, None, None, self.in_channels))
        self.built = True

    def call(self, x):
        out = tf.nn.leaky_relu(self.conv1(x), LEAKY_SLOPE)
        out = tf.nn.leaky_relu(self.conv2(self.resample(out)), LEAKY_SLOPE)
        return out + self.skip(self.resample(x))

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "mode": self.mode,
        }


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class SFTCondition(keras.layers.Layer):
    """conv3x3 + lrelu 0.2 + conv3x3: one SFT scale or shift map from a U-Net decoder level
    (official `condition_scale[i]` / `condition_shift[i]`, an nn.Sequential with convs at 0 and 2)."""

    def __init__(self, channels, out_channels, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.out_channels = int(channels), int(out_channels)
        self.conv_0 = _conv(channels, 3, "conv_0", self.dtype_policy)
        self.conv_2 = _conv(out_channels, 3, "conv_2", self.dtype_policy)

    def build(self, input_shape=None):
        self.conv_0.build((None, None, None, self.channels))
        self.conv_2.build((None, None, None, self.channels))
        self.built = True

    def call(self, x):
        return self.conv_2(tf.nn.leaky_relu(self.conv_0(x), LEAKY_SLOPE))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "out_channels": self.out_channels}


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class GFPGANv1Clean(keras.Model):
    """GFPGAN v1 "clean": U-Net encoder/decoder + StyleGAN2 clean decoder with SFT.

    Defaults are GFPGANer's configuration for GFPGANv1.3.pth and GFPGANv1.4.pth.

    Args:
      out_size: input and output side (512). num_style_feat: latent width (512).
      channel_multiplier: StyleGAN2 channel multiplier (2). decoder_load_path, fix_decoder: training
        options of the official class (a StyleGAN2 file for the decoder, frozen decoder); only the
        values GFPGANer uses (None, False) are accepted here, load full weights with
        `weights.gfpgan_pth.load_gfpgan`.
      num_mlp: style MLP layers (8; in the weights, unused when input_is_latent).
      input_is_latent: the encoder output is a W latent (True). different_w: one latent per decoder
        layer (True). narrow: channel ratio (1; the U-Net has half the StyleGAN2 widths).
      sft_half: SFT on the second half of the channels only (True). dtype: layer dtype or policy.
    Call: `model(x, noise=None, randomize_noise=True, return_rgb=False)`, x [B, S, S, 3] RGB in [-1, 1]
      -> [B, S, S, 3] (and the U-Net's intermediate RGB images, smallest first, with return_rgb).
      noise: list of `num_layers` (15 at 512) tensors [B or 1, r, r, 1] (r = 4, 8, 8, 16, 16, ...).
    Speed: run batches of faces through one traced graph, `model.predict_on_batch(faces)` (fresh noise per
      call, as official) or a `tf.function`, rather than eagerly; bfloat16 via
      `serve.keras_backend.rebuild_model(model, "bfloat16")` (BUILD_NOTES "GFPGAN v1.3/v1.4 generator").
    """

    def __init__(
        self,
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
        dtype=None,
        **kwargs,
    ):
        if decoder_load_path is not None:
            raise ValueError(
                "decoder_load_path is a training option not supported here; "
                "load a full GFPGAN file with weights.gfpgan_pth.load_gfpgan"
            )
        kwargs.setdefault("name", "gfpgan_v1_clean")
        super().__init__(dtype=dtype, **kwargs)
        self.out_size, self.num_style_feat = int(out_size), int(num_style_feat)
        self.channel_multiplier, self.narrow, self.num_mlp = channel_multiplier, narrow, int(num_mlp)
        self.decoder_load_path, self.fix_decoder = decoder_load_path, bool(fix_decoder)
        self.input_is_latent, self.different_w, self.sft_half = input_is_latent, different_w, sft_half
        self._layer_dtype = dtype
        self.log_size = int(math.log2(out_size))
        if 2**self.log_size != out_size or out_size < 8:
            raise ValueError(f"out_size must be a power of 2 >= 8, got {out_size}")
        unet = stylegan2_channels(narrow * 0.5, channel_multiplier)  # the U-Net: half the widths
        self.unet_channels = unet
        policy = self.dtype_policy

        self.conv_body_first = _conv(unet[out_size], 1, "conv_body_first", policy)
        self.conv_body_down, in_ch = [], unet[out_size]
        for level in range(self.log_size, 2, -1):
            out_ch = unet[2 ** (level - 1)]
            self.conv_body_down.append(
                ResBlock(
                    in_ch, out_ch, "down", name=f"conv_body_down_{len(self.conv_body_down)}", dtype=policy
                )
            )
            in_ch = out_ch
        self.final_conv = _conv(unet[4], 3, "final_conv", policy)
        self.conv_body_up, self.to_rgb, self.condition_scale, self.condition_shift = [], [], [], []
        in_ch = unet[4]
        for i, level in enumerate(range(3, self.log_size + 1)):
            out_ch = unet[2**level]
            self.conv_body_up.append(ResBlock(in_ch, out_ch, "up", name=f"conv_body_up_{i}", dtype=policy))
            self.to_rgb.append(_conv(3, 1, f"toRGB_{i}", policy))
            sft_out = out_ch if sft_half else 2 * out_ch
            self.condition_scale.append(
                SFTCondition(out_ch, sft_out, name=f"condition_scale_{i}", dtype=policy)
            )
            self.condition_shift.append(
                SFTCondition(out_ch, sft_out, name=f"condition_shift_{i}", dtype=policy)
            )
            in_ch = out_ch
        self.num_latent = self.log_size * 2 - 2
        linear_out = self.num_latent * num_style_feat if different_w else num_style_feat
        self.final_linear = keras.layers.Dense(
            linear_out, kernel_initializer=_torch_default_initializer(), name="final_linear", dtype=policy
        )
        self.stylegan_decoder = StyleGAN2DecoderCSFT(
            out_size,
            num_style_feat,
            num_mlp,
            channel_multiplier,
            narrow,
            sft_half,
            input_is_latent,
            name="stylegan_decoder",
            dtype=policy,
        )
        self.num_layers = self.stylegan_decoder.num_layers
        self.build((None, out_size, out_size, 3))

    def build(self, input_shape=None):
        unet = self.unet_channels
        self.conv_body_first.build((None, None, None, 3))
        for block in (*self.conv_body_down, *self.conv_body_up):
            block.build()
        self.final_conv.build((None, None, None, unet[4]))
        for i, level in enumerate(range(3, self.log_size + 1)):
            self.to_rgb[i].build((None, None, None, unet[2**level]))
            self.condition_scale[i].build()
            self.condition_shift[i].build()
        self.final_linear.build((None, unet[4] * 16))
        self.stylegan_decoder.build()
        self.built = True

    def call(self, x, noise=None, randomize_noise=True, return_rgb=False):
        x = tf.cast(x, self.compute_dtype)
        feat = tf.nn.leaky_relu(self.conv_body_first(x), LEAKY_SLOPE)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.insert(0, feat)
        feat = tf.nn.leaky_relu(self.final_conv(feat), LEAKY_SLOPE)
        # NHWC flatten; the loader permutes final_linear's rows from torch's (C, H, W) order.
        style_code = self.final_linear(tf.reshape(feat, [-1, 16 * feat.shape[-1]]))
        if self.different_w:
            style_code = tf.reshape(style_code, [-1, self.num_latent, self.num_style_feat])
        conditions, rgbs = [], []
        for i, block in enumerate(self.conv_body_up):
            feat = block(feat + skips[i])
            conditions.append(self.condition_scale[i](feat))
            conditions.append(self.condition_shift[i](feat))
            if return_rgb:
                rgbs.append(self.to_rgb[i](feat))
        image = self.stylegan_decoder(style_code, conditions, noise=noise, randomize_noise=randomize_noise)
        return (image, rgbs) if return_rgb else image

    def get_config(self):
        return {
            "name": self.name,
            "out_size": self.out_size,
            "num_style_feat": self.num_style_feat,
            "channel_multiplier": self.channel_multiplier,
            "decoder_load_path": self.decoder_load_path,
            "fix_decoder": self.fix_decoder,
            "num_mlp": self.num_mlp,
            "input_is_latent": self.input_is_latent,
            "different_w": self.different_w,
            "narrow": self.narrow,
            "sft_half": self.sft_half,
            "dtype": serialize_dtype(self._layer_dtype),
        }

    @classmethod
    def from_config(cls, config):
        return model_from_config(cls, config)
