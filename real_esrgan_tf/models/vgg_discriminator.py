"""VGGStyleDiscriminator: the ESRGAN discriminator the Real-ESRGAN paper compares its U-Net D against.

Architecture of BasicSR's `VGGStyleDiscriminator` (basicsr/archs/discriminator_arch.py, v1.4.2):
conv0_0 3x3 (bias) -> LeakyReLU 0.2; then per stage i a 4x4 stride-2 conv + BN, and (from stage 1 on)
a 3x3 conv + BN before it, all without bias, each followed by LeakyReLU 0.2; features nf, 2nf, 4nf,
8nf, 8nf (, 8nf); then linear (8nf * 4 * 4 -> 100) -> LeakyReLU 0.2 -> linear (100 -> 1). One realness
logit per image, for a fixed input size (BasicSR: 128 -> 5 stages, 256 -> 6 stages; any power of two
>= 16 here, with log2(size) - 2 stages, so tests can use tiny crops).
BatchNorm as PyTorch's BatchNorm2d (eps 1e-5, momentum 0.1 = Keras momentum 0.9), batch statistics
in training (the trainer only calls D in training mode; Keras' running variance uses the biased batch
variance where torch uses n/(n-1), which only matters for inference-mode calls). The features are
flattened in channel-first order, so linear1's weights are BasicSR's transposed.
"""

from __future__ import annotations

import math

import keras

from real_esrgan_tf.models.layers import model_from_config, serialize_dtype


class VGGDiscriminatorError(ValueError):
    """An input size the VGG-style discriminator cannot be built for."""


def _torch_default_initializer():
    # PyTorch's Conv2d / Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def stage_features(num_feat: int, input_size: int) -> list[int]:
    """Output channels of each down-sampling stage: nf * min(2^i, 8) for i < log2(size) - 2."""
    if input_size < 16 or input_size & (input_size - 1):
        raise VGGDiscriminatorError(
            f"input_size: {input_size} is not a power of two >= 16 (BasicSR: 128, 256)"
        )
    stages = int(math.log2(input_size)) - 2  # each halves the side; the last leaves 4x4
    return [num_feat * min(2**i, 8) for i in range(stages)]


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class VGGStyleDiscriminator(keras.Model):
    """(B, S, S, 3) images in [0, 1] -> (B, 1) float32 logits; S = `input_size` (static)."""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128, dtype=None, **kwargs):
        features = stage_features(num_feat, input_size)
        init = _torch_default_initializer

        def conv(filters, k, s, name, bias=False):
            # PyTorch padding 1 with k 3 s 1 or k 4 s 2 on an even side equals Keras "same" (1 and 1).
            return keras.layers.Conv2D(
                filters, k, strides=s, padding="same", use_bias=bias, kernel_initializer=init(),
                name=name, dtype=dtype,
            )

        def bn(name):
            return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name, dtype=dtype)

        def lrelu(name):
            return keras.layers.LeakyReLU(negative_slope=0.2, name=name, dtype=dtype)

        inputs = keras.Input((input_size, input_size, num_in_ch), name="image")
        x = lrelu("act0_0")(conv(num_feat, 3, 1, "conv0_0", bias=True)(inputs))
        channels = num_feat
        for i, filters in enumerate(features):
            if i:
                x = lrelu(f"act{i}_0")(bn(f"bn{i}_0")(conv(filters, 3, 1, f"conv{i}_0")(x)))
            x = lrelu(f"act{i}_1")(bn(f"bn{i}_1")(conv(filters, 4, 2, f"conv{i}_1")(x)))
            channels = filters
        # (B, 4, 4, C) -> channel-first flatten (torch's view(B, -1) of NCHW)
        x = keras.layers.Permute((3, 1, 2), name="to_channels_first", dtype=dtype)(x)
        x = keras.layers.Flatten(name="flatten", dtype=dtype)(x)
        x = keras.layers.Dense(100, kernel_initializer=init(), bias_initializer=_linear_bias(channels * 16),
                               name="linear1", dtype=dtype)(x)
        x = lrelu("act_linear1")(x)
        x = keras.layers.Dense(1, kernel_initializer=init(), bias_initializer=_linear_bias(100),
                               name="linear2", dtype=dtype)(x)
        # Logits in float32 under any mixed policy (the BCE must not saturate in half precision).
        outputs = keras.layers.Activation("linear", dtype="float32", name="logits")(x)

        kwargs.setdefault("name", "vgg_style_discriminator")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.num_in_ch = num_in_ch
        self.num_feat = num_feat
        self.input_size = input_size
        self._layer_dtype = dtype

    def get_config(self):
        return {
            "name": self.name,
            "num_in_ch": self.num_in_ch,
            "num_feat": self.num_feat,
            "input_size": self.input_size,
            "dtype": serialize_dtype(self._layer_dtype),
        }

    @classmethod
    def from_config(cls, config):
        return model_from_config(cls, config)


def _linear_bias(fan_in: int):
    # PyTorch's Linear bias default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)
