"""Real-ESRGAN's training losses: L1, VGG19 perceptual (features before ReLU), vanilla GAN.

All losses return float32 scalars (the mean over the local batch) whatever the dtype policy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from real_esrgan_tf.training.config import DEFAULT_LAYER_WEIGHTS, VGG19_BLOCKS

# Input normalisations. Keras' ImageNet VGG19 was converted from Caffe: BGR, 0..255, mean subtracted.
# torchvision's (what the official Real-ESRGAN uses): RGB in [0, 1], (x - mean) / std.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
INPUT_NORMS = ("caffe", "torch")


RANDOM_VGG_WARNING = (
    'losses.vgg_weights = "random": the perceptual loss compares features of an untrained VGG19 and is '
    "meaningless (for tests only); set it to \"imagenet\" or a local VGG19 weights file"
)


class VGGWeightsError(RuntimeError):
    """The VGG19 weights for the perceptual loss cannot be had."""


def l1_loss(prediction, target):
    """mean |prediction - target| in float32."""
    return tf.reduce_mean(tf.abs(tf.cast(prediction, tf.float32) - tf.cast(target, tf.float32)))


def gan_loss_generator(fake_logits):
    """Vanilla GAN for G: BCE-with-logits of D(fake) against 'real' (before the 0.1 weight)."""
    logits = tf.cast(fake_logits, tf.float32)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(logits), logits=logits))


def gan_loss_discriminator(real_logits, fake_logits):
    """Vanilla GAN for D: BCE(real, 1) + BCE(fake, 0), each a mean, unweighted (as official)."""
    real = tf.cast(real_logits, tf.float32)
    fake = tf.cast(fake_logits, tf.float32)
    loss_real = tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(real), logits=real)
    )
    loss_fake = tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(fake), logits=fake)
    )
    return loss_real, loss_fake


def build_vgg19_features(layers=tuple(DEFAULT_LAYER_WEIGHTS), dtype=None) -> keras.Model:
    """VGG19 convs up to the deepest requested layer, returning {name: pre-ReLU feature}.

    Keras' VGG19 fuses the ReLU into each Conv2D, which hides the pre-activation features, so the
    convs here are linear with separate ReLU layers. Conv layer names are Keras' (`block3_conv4`).
    """
    wanted = {_keras_name(n) for n in layers}
    deepest = max(wanted, key=lambda n: (int(n[5]), int(n.split("conv")[1])))
    x = inputs = keras.Input((None, None, 3), name="normalized_image")
    outputs = {}
    for block, convs, filters in VGG19_BLOCKS:
        for c in range(1, convs + 1):
            name = f"block{block}_conv{c}"
            x = keras.layers.Conv2D(filters, 3, padding="same", name=name, dtype=dtype)(x)
            if name in wanted:
                outputs[_torch_name(name)] = x
            if name == deepest:
                return keras.Model(inputs, outputs, name="vgg19_features", trainable=False)
            x = keras.layers.ReLU(name=f"{name}_relu", dtype=dtype)(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool", dtype=dtype)(x)
    raise AssertionError("unreachable")


def _keras_name(torch_name: str) -> str:
    if not (torch_name.startswith("conv") and "_" in torch_name):
        raise ValueError(f"VGG layer names look like 'conv3_4', got {torch_name!r}")
    block, conv = torch_name[4:].split("_")
    return f"block{block}_conv{conv}"


def _torch_name(keras_name: str) -> str:
    block, conv = keras_name[5:].split("_conv")
    return f"conv{block}_{conv}"


def _torchvision_conv_indices():
    """Keras conv name -> index in torchvision's `vgg19().features` (conv, ReLU, ..., pool per block)."""
    index, mapping = 0, {}
    for block, convs, _ in VGG19_BLOCKS:
        for c in range(1, convs + 1):
            mapping[f"block{block}_conv{c}"] = index
            index += 2
        index += 1
    return mapping


def load_vgg19_weights(features: keras.Model, source: str) -> str:
    """Fill `features` from `source` and return the input normalisation those weights expect.

    source: "imagenet" (Keras' download, or its cache in ~/.keras/models), a Keras weights file
    (`.h5` / `.weights.h5` of `keras.applications.VGG19(include_top=False)`), a torchvision
    `vgg19` state dict (`.pth`, read without torch), or "random" (keep the initialisation; tests only).
    """
    convs = [layer for layer in features.layers if isinstance(layer, keras.layers.Conv2D)]
    if source == "random":
        logging.warning(RANDOM_VGG_WARNING)
        return "torch"
    if source.endswith(".pth") or source.endswith(".pt"):
        if not os.path.exists(source):
            raise VGGWeightsError(f"{source}: no such VGG19 weights file")
        from real_esrgan_tf.weights import WeightsError, read_state_dict

        try:  # torchvision's file is a bare state dict; read without torch
            state = read_state_dict(source)
        except WeightsError as e:
            raise VGGWeightsError(str(e)) from None
        indices = _torchvision_conv_indices()
        for layer in convs:
            i = indices[layer.name]
            try:
                w = state[f"features.{i}.weight"]  # (out, in, kh, kw)
                b = state[f"features.{i}.bias"]
            except KeyError as e:
                raise VGGWeightsError(f"{source}: not a torchvision vgg19 state dict (missing {e})") from e
            layer.set_weights([np.transpose(w, (2, 3, 1, 0)), b])
        return "torch"
    if source != "imagenet" and not os.path.exists(source):
        raise VGGWeightsError(f"{source}: no such VGG19 weights file")
    try:
        reference = keras.applications.VGG19(include_top=False, weights=source, input_shape=(None, None, 3))
    except Exception as e:  # download failure, wrong file: one clear line
        raise VGGWeightsError(
            f"VGG19 weights {source!r} unavailable ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "set losses.vgg_weights to a local Keras vgg19 '..._notop.h5' or torchvision 'vgg19-dcbb9e9d.pth'"
        ) from e
    for layer in convs:
        layer.set_weights(reference.get_layer(layer.name).get_weights())
    return "caffe"


def normalize_for_vgg(images, input_norm: str):
    """RGB images in [0, 1] (B, H, W, 3) -> the input the loaded VGG19 weights were trained on."""
    x = tf.cast(images, tf.float32)
    if input_norm == "caffe":
        return x[..., ::-1] * 255.0 - tf.constant(CAFFE_BGR_MEAN, tf.float32)
    if input_norm == "torch":
        return (x - tf.constant(TORCH_MEAN, tf.float32)) / tf.constant(TORCH_STD, tf.float32)
    raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {input_norm!r}")


@dataclass
class PerceptualLossConfig:
    layer_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LAYER_WEIGHTS))
    vgg_weights: str = "imagenet"


class PerceptualLoss:
    """sum_k w_k * mean|VGG_k(sr) - VGG_k(gt)| over pre-ReLU VGG19 features; gt side not differentiated."""

    def __init__(self, config: PerceptualLossConfig | None = None, dtype=None):
        self.config = config or PerceptualLossConfig()
        self.features = build_vgg19_features(tuple(self.config.layer_weights), dtype=dtype)
        self.input_norm = load_vgg19_weights(self.features, self.config.vgg_weights)

    def __call__(self, prediction, target):
        n = tf.shape(prediction)[0]
        both = tf.concat([tf.cast(prediction, tf.float32), tf.cast(target, tf.float32)], 0)
        feats = self.features(normalize_for_vgg(both, self.input_norm), training=False)
        total = tf.constant(0.0, tf.float32)
        for name, weight in self.config.layer_weights.items():
            f = tf.cast(feats[name], tf.float32)
            total += weight * l1_loss(f[:n], tf.stop_gradient(f[n:]))
        return total
