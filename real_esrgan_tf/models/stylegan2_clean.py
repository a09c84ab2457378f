"""The StyleGAN2 "clean" decoder of GFPGAN v1.3/v1.4, with its SFT (spatial feature transform) hook.

"Clean" is GFPGAN's StyleGAN2 without compiled CUDA ops: weight-demodulated convolutions, bilinear
`F.interpolate` (align_corners=False) for every 2x upsampling instead of the blur-kernel upfirdn, a
plain leaky ReLU (0.2) after `conv * sqrt(2)`. GFPGAN feeds it one latent per layer (different_w)
straight from its U-Net encoder (input_is_latent) and modulates half the channels of each level's
first conv output with the encoder's scale/shift maps (sft_half).

Tensors are NHWC. The modulated conv is computed as "scale the input, convolve with the shared kernel,
scale the output": conv(x * s, W) * d equals the official per-sample grouped conv with W * s * d, and
batches without one kernel per sample. The style and demodulation factors are computed in float32 in
every precision.

Reference: Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020); the
`gfpgan` package, `gfpgan/archs/stylegan2_clean_arch.py` and `StyleGAN2GeneratorCSFT` in
`gfpganv1_clean_arch.py`.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from real_esrgan_tf.models.layers import BilinearUpsample2x

LEAKY_SLOPE = 0.2


def stylegan2_channels(narrow: float = 1, channel_multiplier: int = 2) -> dict[int, int]:
    """Feature channels per resolution of the official StyleGAN2 (`channels` dict of the official code)."""
    base = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
    }
    return {res: int(c * narrow) for res, c in base.items()}


def noise_resolutions(out_size: int) -> list[int]:
    """Spatial size of the noise of each style conv: 4, then two per level 8, 8, 16, 16, ... out_size."""
    log_size = int(math.log2(out_size))
    return [2 ** ((i + 5) // 2) for i in range((log_size - 2) * 2 + 1)]


def _fan_in_normal(scale: float = 1.0):
    return keras.initializers.VarianceScaling(scale, "fan_in", "untruncated_normal")


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class ModulatedConv2d(keras.layers.Layer):
    """StyleGAN2 modulated convolution without bias: per-sample input-channel scales from the style,
    optional weight demodulation (unit output variance per sample and channel), optional bilinear 2x
    upsampling of the input before the conv (the clean arch's `sample_mode="upsample"`).

    Args:
      in_channels, out_channels, kernel_size: the conv. num_style_feat: width of the style vector.
      demodulate: divide each output channel by the norm of its modulated kernel (+ eps).
      upsample: bilinear 2x (half-pixel centres) before the conv.
    Call: `layer(x, style)`, x [B, H, W, in], style [B, num_style_feat] -> [B, H', W', out].
    Weights: `modulation` (Dense in_features -> in_channels, bias initialised to 1), `kernel`
      (k, k, in, out), N(0, 1/fan_in) as official.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        num_style_feat,
        demodulate=True,
        upsample=False,
        eps=1e-8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.num_style_feat = int(kernel_size), int(num_style_feat)
        self.demodulate, self.upsample, self.eps = bool(demodulate), bool(upsample), float(eps)
        self.modulation = keras.layers.Dense(
            self.in_channels,
            kernel_initializer=_fan_in_normal(),
            bias_initializer="ones",
            name="modulation",
            dtype=self.dtype_policy,
        )
        self.upsampler = BilinearUpsample2x(name="upsample", dtype=self.dtype_policy) if upsample else None

    def build(self, input_shape=None):
        self.modulation.build((None, self.num_style_feat))
        k = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, self.in_channels, self.out_channels), initializer=_fan_in_normal()
        )
        self.built = True

    def call(self, x, style):
        scales = self.modulation(style)  # [B, in]
        scales32 = tf.cast(scales, tf.float32)
        x = x * tf.cast(scales32, x.dtype)[:, None, None, :]
        if self.upsampler is not None:
            x = self.upsampler(x)
        kernel = tf.cast(self.kernel, x.dtype)
        out = tf.nn.conv2d(x, kernel, 1, "SAME")
        if self.demodulate:
            kernel_sq = tf.reduce_sum(tf.square(tf.cast(self.kernel, tf.float32)), axis=[0, 1])  # [in, out]
            demod = tf.math.rsqrt(tf.matmul(tf.square(scales32), kernel_sq) + self.eps)  # [B, out]
            out = out * tf.cast(demod, out.dtype)[:, None, None, :]
        return out

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "num_style_feat": self.num_style_feat,
            "demodulate": self.demodulate,
            "upsample": self.upsample,
            "eps": self.eps,
        }


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class StyleConv(keras.layers.Layer):
    """Modulated 3x3 conv (demodulated) * sqrt(2), + noise * a learned strength, + bias, leaky ReLU 0.2.

    Call: `layer(x, style, noise=None)`; noise [B or 1, H', W', 1] (the output size) or None for a fresh
    standard-normal draw per sample and call (the official `randomize_noise=True`).
    Weights: `modulated_conv`, `noise_strength` (official `weight`, shape (1,), starts at 0), `bias` (out,).
    """

    def __init__(self, in_channels, out_channels, num_style_feat, upsample=False, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.num_style_feat, self.upsample, self.kernel_size = (
            int(num_style_feat),
            bool(upsample),
            kernel_size,
        )
        self.modulated_conv = ModulatedConv2d(
            in_channels,
            out_channels,
            kernel_size,
            num_style_feat,
            demodulate=True,
            upsample=upsample,
            name="modulated_conv",
            dtype=self.dtype_policy,
        )

    def build(self, input_shape=None):
        self.modulated_conv.build()
        self.noise_strength = self.add_weight(name="noise_strength", shape=(1,), initializer="zeros")
        self.bias = self.add_weight(name="bias", shape=(self.out_channels,), initializer="zeros")
        self.built = True

    def call(self, x, style, noise=None):
        out = self.modulated_conv(x, style) * math.sqrt(2.0)
        if noise is None:
            shape = tf.concat([tf.shape(out)[:3], [1]], 0)
            noise = tf.random.normal(shape, dtype=tf.float32)
        out = out + tf.cast(self.noise_strength, out.dtype) * tf.cast(noise, out.dtype)
        out = out + tf.cast(self.bias, out.dtype)
        return tf.nn.leaky_relu(out, LEAKY_SLOPE)

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "num_style_feat": self.num_style_feat,
            "upsample": self.upsample,
            "kernel_size": self.kernel_size,
        }


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class ToRGB(keras.layers.Layer):
    """Features -> RGB: modulated 1x1 conv (not demodulated) + bias, plus the previous level's RGB
    bilinearly upsampled 2x (the skip architecture of StyleGAN2).

    Call: `layer(x, style, skip=None)` -> [B, H, W, 3].
    """

    def __init__(self, in_channels, num_style_feat, upsample=True, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.num_style_feat, self.upsample = int(in_channels), int(num_style_feat), upsample
        self.modulated_conv = ModulatedConv2d(
            in_channels,
            3,
            1,
            num_style_feat,
            demodulate=False,
            name="modulated_conv",
            dtype=self.dtype_policy,
        )
        self.upsampler = BilinearUpsample2x(name="upsample", dtype=self.dtype_policy) if upsample else None

    def build(self, input_shape=None):
        self.modulated_conv.build()
        self.bias = self.add_weight(name="bias", shape=(3,), initializer="zeros")
        self.built = True

    def call(self, x, style, skip=None):
        out = self.modulated_conv(x, style) + tf.cast(self.bias, x.dtype)
        if skip is not None:
            out = out + (self.upsampler(skip) if self.upsampler is not None else skip)
        return out

    def get_config(self):
        return {
            **super().get_config(),
            "in_channels": self.in_channels,
            "num_style_feat": self.num_style_feat,
            "upsample": self.upsample,
        }


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class ConstantInput(keras.layers.Layer):
    """The learned 4x4 start tensor of StyleGAN2, repeated over the batch. Call: `layer(batch_size)`."""

    def __init__(self, channels, size=4, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.size = int(channels), int(size)

    def build(self, input_shape=None):
        self.constant = self.add_weight(
            name="constant", shape=(1, self.size, self.size, self.channels), initializer="random_normal"
        )
        self.built = True

    def call(self, batch_size):
        return tf.tile(self.constant, tf.stack([batch_size, 1, 1, 1]))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "size": self.size}


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class StyleGAN2DecoderCSFT(keras.layers.Layer):
    """StyleGAN2 clean generator with SFT conditions (official `StyleGAN2GeneratorCSFT`).

    Args:
      out_size: output side (a power of 2). num_style_feat: latent width (512). num_mlp: layers of the
        style MLP (only run when `input_is_latent` is False). channel_multiplier, narrow: channel widths
        (`stylegan2_channels`). sft_half: the SFT touches the second half of the channels only.
      input_is_latent: the styles are W latents already (GFPGAN: True).
    Call: `layer(styles, conditions, noise=None, randomize_noise=True)`.
      styles: [B, num_style_feat] (one latent for all layers) or [B, num_latent, num_style_feat].
      conditions: [scale_8, shift_8, scale_16, shift_16, ...] NHWC maps, one pair per level from 8.
      noise: list of `num_layers` tensors [B or 1, r, r, 1]; None -> `randomize_noise` picks fresh
        normal draws (True) or the stored `noise{i}` buffers (False), as official.
    The official truncation and two-style mixing options are not used by GFPGAN and not provided.
    """

    def __init__(
        self,
        out_size=512,
        num_style_feat=512,
        num_mlp=8,
        channel_multiplier=2,
        narrow=1,
        sft_half=False,
        input_is_latent=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.out_size, self.num_style_feat, self.num_mlp = int(out_size), int(num_style_feat), int(num_mlp)
        self.channel_multiplier, self.narrow, self.sft_half = channel_multiplier, narrow, bool(sft_half)
        self.input_is_latent = bool(input_is_latent)
        self.log_size = int(math.log2(out_size))
        if 2**self.log_size != out_size or out_size < 8:
            raise ValueError(f"out_size must be a power of 2 >= 8, got {out_size}")
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.num_latent = self.log_size * 2 - 2
        channels = stylegan2_channels(narrow, channel_multiplier)
        policy = self.dtype_policy
        self.style_mlp = [
            keras.layers.Dense(
                num_style_feat,
                kernel_initializer=_fan_in_normal(2 / (1 + LEAKY_SLOPE**2)),
                name=f"style_mlp_{2 * i + 1}",
                dtype=policy,
            )
            for i in range(num_mlp)
        ]
        self.constant_input = ConstantInput(channels[4], name="constant_input", dtype=policy)
        self.style_conv1 = StyleConv(
            channels[4], channels[4], num_style_feat, name="style_conv1", dtype=policy
        )
        self.to_rgb1 = ToRGB(channels[4], num_style_feat, upsample=False, name="to_rgb1", dtype=policy)
        self.style_convs, self.to_rgbs = [], []
        in_channels = channels[4]
        for level in range(3, self.log_size + 1):
            out_channels = channels[2**level]
            n = len(self.style_convs)
            self.style_convs.append(
                StyleConv(
                    in_channels,
                    out_channels,
                    num_style_feat,
                    upsample=True,
                    name=f"style_convs_{n}",
                    dtype=policy,
                )
            )
            self.style_convs.append(
                StyleConv(
                    out_channels, out_channels, num_style_feat, name=f"style_convs_{n + 1}", dtype=policy
                )
            )
            self.to_rgbs.append(
                ToRGB(out_channels, num_style_feat, name=f"to_rgbs_{level - 3}", dtype=policy)
            )
            in_channels = out_channels

    def build(self, input_shape=None):
        for dense in self.style_mlp:
            dense.build((None, self.num_style_feat))
        for layer in (self.constant_input, self.style_conv1, self.to_rgb1, *self.style_convs, *self.to_rgbs):
            layer.build()
        self.noises = [
            self.add_weight(
                name=f"noise{i}", shape=(1, r, r, 1), initializer="random_normal", trainable=False
            )
            for i, r in enumerate(noise_resolutions(self.out_size))
        ]
        self.built = True

    def _latents(self, styles):
        if not self.input_is_latent:
            # NormStyleCode normalises over axis 1 (features of a [B, C] code; for a [B, L, C] code the
            # official reduction runs over the L axis, kept as is).
            styles = styles * tf.math.rsqrt(tf.reduce_mean(tf.square(styles), axis=1, keepdims=True) + 1e-8)
            for dense in self.style_mlp:
                styles = tf.nn.leaky_relu(dense(styles), LEAKY_SLOPE)
        if styles.shape.rank == 2:
            styles = tf.repeat(styles[:, None, :], self.num_latent, axis=1)
        return styles

    def call(self, styles, conditions, noise=None, randomize_noise=True):
        latent = self._latents(styles)
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else list(self.noises)
        if len(noise) != self.num_layers:
            raise ValueError(f"noise must be a list of {self.num_layers} tensors, got {len(noise)}")
        out = self.constant_input(tf.shape(latent)[0])
        out = self.style_conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for level, to_rgb in enumerate(self.to_rgbs):
            out = self.style_convs[2 * level](out, latent[:, i], noise=noise[2 * level + 1])
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if self.sft_half:
                    half = out.shape[-1] // 2
                    out = tf.concat([out[..., :half], out[..., half:] * scale + shift], axis=-1)
                else:
                    out = out * scale + shift
            out = self.style_convs[2 * level + 1](out, latent[:, i + 1], noise=noise[2 * level + 2])
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip

    def get_config(self):
        return {
            **super().get_config(),
            "out_size": self.out_size,
            "num_style_feat": self.num_style_feat,
            "num_mlp": self.num_mlp,
            "channel_multiplier": self.channel_multiplier,
            "narrow": self.narrow,
            "sft_half": self.sft_half,
            "input_is_latent": self.input_is_latent,
        }
