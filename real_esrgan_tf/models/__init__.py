"""Generators and the discriminator, one model per module."""

from real_esrgan_tf.models.layers import BilinearUpsample2x, PixelShuffle, PixelUnshuffle, ScaledResidual
from real_esrgan_tf.models.rrdbnet import RRDBNet
from real_esrgan_tf.models.srvgg import SRVGGNetCompact
from real_esrgan_tf.models.unet_discriminator import UNetDiscriminatorSN as UNetDiscriminatorSN
from real_esrgan_tf.models.vgg_discriminator import VGGStyleDiscriminator as VGGStyleDiscriminator

__all__ = [
    "BilinearUpsample2x",
    "PixelShuffle",
    "PixelUnshuffle",
    "RRDBNet",
    "SRVGGNetCompact",
    "ScaledResidual",
]
