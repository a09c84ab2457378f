"""RetinaFace with a ResNet-50 body: the face detector of facexlib (`detection_Resnet50_Final.pth`).

The network only: image in, per-anchor box offsets, face scores and landmark offsets out. Prior
boxes, decoding, thresholds and NMS live in `real_esrgan_tf.faces.detection`.

Layer names are the official state-dict prefixes (`body.layer2.0.conv1`, `fpn.merge1.0`,
`ClassHead.2.conv1x1`, ...), so the loader maps keys to layers by name.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from real_esrgan_tf.models.layers import input_dtype, model_from_config, serialize_dtype

# facexlib `generate_config("resnet50")`: ResNet-50 stages layer2..4 (C3..C5), FPN/SSH width 256,
# two anchors per position at strides 8, 16, 32.
RESNET50_BLOCKS = (3, 4, 6, 3)
FPN_CHANNELS = 256
ANCHORS_PER_POSITION = 2
BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class NearestResizeLike(keras.layers.Layer):
    """`x` resized to the height and width of `reference`, nearest neighbour, PyTorch's rule.

    PyTorch's `F.interpolate(size=..., mode="nearest")` reads source pixel `floor(i * in / out)`
    (float32 scale), which is TensorFlow's ResizeNearestNeighbor without half-pixel centres; Keras'
    resizing uses half-pixel centres and picks other pixels when the sizes are not a 2x ratio (odd
    feature maps of odd image sizes).
    """

    def call(self, x, reference):
        size = tf.shape(reference)[1:3]
        return tf.raw_ops.ResizeNearestNeighbor(
            images=x, size=size, align_corners=False, half_pixel_centers=False
        )

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class AnchorValues(keras.layers.Layer):
    """[B, H, W, A * k] -> [B, H * W * A, k]: one row per anchor, rows in (y, x, anchor) order.

    The order of the official heads (`permute(0, 2, 3, 1).view(B, -1, k)`) and of the prior boxes.
    """

    def __init__(self, values_per_anchor: int, **kwargs):
        super().__init__(**kwargs)
        self.values_per_anchor = int(values_per_anchor)

    def call(self, x):
        return tf.reshape(x, [tf.shape(x)[0], -1, self.values_per_anchor])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, self.values_per_anchor)

    def get_config(self):
        return {**super().get_config(), "values_per_anchor": self.values_per_anchor}


def _conv_bn(x, filters, kernel, stride, conv_name, bn_name, relu, dtype):
    """Conv (no bias) + BatchNorm (+ ReLU), with PyTorch's symmetric padding `kernel // 2`."""
    pad = kernel // 2
    if pad and stride > 1:  # "same" would pad bottom/right only
        x = keras.layers.ZeroPadding2D(pad, name=f"{conv_name}.pad", dtype=dtype)(x)
        padding = "valid"
    else:
        padding = "same"
    x = keras.layers.Conv2D(filters, kernel, stride, padding, use_bias=False, name=conv_name, dtype=dtype)(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=bn_name, dtype=dtype)(x)
    if relu:
        x = keras.layers.ReLU(name=f"{bn_name}.relu", dtype=dtype)(x)
    return x


def _bottleneck(x, width, stride, name, dtype):
    """torchvision's ResNet-50 Bottleneck (v1.5: the stride sits on the 3x3 conv)."""
    out_channels = 4 * width
    y = _conv_bn(x, width, 1, 1, f"{name}.conv1", f"{name}.bn1", True, dtype)
    y = _conv_bn(y, width, 3, stride, f"{name}.conv2", f"{name}.bn2", True, dtype)
    y = _conv_bn(y, out_channels, 1, 1, f"{name}.conv3", f"{name}.bn3", False, dtype)
    if stride != 1 or x.shape[-1] != out_channels:
        x = _conv_bn(x, out_channels, 1, stride, f"{name}.downsample.0", f"{name}.downsample.1", False, dtype)
    y = keras.layers.Add(name=f"{name}.add", dtype=dtype)([y, x])
    return keras.layers.ReLU(name=f"{name}.relu", dtype=dtype)(y)


def _resnet50_c3_c5(x, dtype):
    """torchvision `resnet50` up to layer4, returning layer2..layer4 (strides 8, 16, 32)."""
    x = _conv_bn(x, 64, 7, 2, "body.conv1", "body.bn1", True, dtype)
    # Zero padding equals PyTorch's -inf padding here: the inputs are >= 0 after the ReLU.
    x = keras.layers.ZeroPadding2D(1, name="body.maxpool.pad", dtype=dtype)(x)
    x = keras.layers.MaxPooling2D(3, 2, name="body.maxpool", dtype=dtype)(x)
    features = []
    for stage, blocks in enumerate(RESNET50_BLOCKS, start=1):
        width = 64 * 2 ** (stage - 1)
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 1 else 1
            x = _bottleneck(x, width, stride, f"body.layer{stage}.{block}", dtype)
        if stage > 1:
            features.append(x)
    return features


def _fpn(features, dtype):
    c = FPN_CHANNELS
    out1, out2, out3 = (
        _conv_bn(f, c, 1, 1, f"fpn.output{i}.0", f"fpn.output{i}.1", True, dtype)
        for i, f in enumerate(features, start=1)
    )
    out2 = keras.layers.Add(name="fpn.add2", dtype=dtype)(
        [out2, NearestResizeLike(name="fpn.up3", dtype=dtype)(out3, out2)]
    )
    out2 = _conv_bn(out2, c, 3, 1, "fpn.merge2.0", "fpn.merge2.1", True, dtype)
    out1 = keras.layers.Add(name="fpn.add1", dtype=dtype)(
        [out1, NearestResizeLike(name="fpn.up2", dtype=dtype)(out2, out1)]
    )
    out1 = _conv_bn(out1, c, 3, 1, "fpn.merge1.0", "fpn.merge1.1", True, dtype)
    return [out1, out2, out3]


def _ssh(x, name, dtype):
    """Single Stage Headless context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches."""
    c = FPN_CHANNELS

    def conv_bn(y, filters, part, relu):
        return _conv_bn(y, filters, 3, 1, f"{name}.{part}.0", f"{name}.{part}.1", relu, dtype)

    branch3 = conv_bn(x, c // 2, "conv3X3", False)
    shared = conv_bn(x, c // 4, "conv5X5_1", True)
    branch5 = conv_bn(shared, c // 4, "conv5X5_2", False)
    branch7 = conv_bn(conv_bn(shared, c // 4, "conv7X7_2", True), c // 4, "conv7x7_3", False)
    x = keras.layers.Concatenate(name=f"{name}.concat", dtype=dtype)([branch3, branch5, branch7])
    return keras.layers.ReLU(name=f"{name}.relu", dtype=dtype)(x)


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class RetinaFaceResNet50(keras.Model):
    """RetinaFace (ResNet-50 body, FPN, SSH, class/box/landmark heads) as facexlib builds it.

    Follows facexlib 0.3.0 `detection/retinaface.py` (`RetinaFace(network_name="resnet50")`, eval
    phase): torchvision ResNet-50 stages layer2..layer4, an FPN to 256 channels with nearest
    top-down merges, one SSH per level, and per level 1x1 heads for 2 anchors each.

    Reference: Deng et al., "RetinaFace: Single-stage Dense Face Localisation in the Wild", CVPR 2020.

    Args:
      dtype: layer dtype or policy name.
    Call: `model(x)` with x [B, H, W, 3] = BGR pixels in [0, 255] minus the mean (104, 117, 123) ->
      `(loc [B, P, 4], scores [B, P, 2] (softmax; column 1 is "face"), landmarks [B, P, 10])` with P
      anchors in facexlib's prior-box order (level, y, x, anchor).
    """

    def __init__(self, dtype=None, **kwargs):
        inputs = keras.Input((None, None, 3), name="bgr_minus_mean", dtype=input_dtype(dtype))
        levels = [
            _ssh(f, f"ssh{i}", dtype)
            for i, f in enumerate(_fpn(_resnet50_c3_c5(inputs, dtype), dtype), start=1)
        ]
        outputs = []
        for head, k in (("BboxHead", 4), ("ClassHead", 2), ("LandmarkHead", 10)):
            per_level = [
                AnchorValues(k, name=f"{head}.{i}.anchors", dtype=dtype)(
                    keras.layers.Conv2D(ANCHORS_PER_POSITION * k, 1, name=f"{head}.{i}.conv1x1", dtype=dtype)(
                        f
                    )
                )
                for i, f in enumerate(levels)
            ]
            outputs.append(keras.layers.Concatenate(axis=1, name=f"{head}.concat", dtype=dtype)(per_level))
        loc, logits, landmarks = outputs
        scores = keras.layers.Softmax(name="scores", dtype=dtype)(logits)
        kwargs.setdefault("name", "retinaface_resnet50")
        super().__init__(inputs=inputs, outputs=(loc, scores, landmarks), **kwargs)
        self._layer_dtype = dtype

    def get_config(self):
        return {"name": self.name, "dtype": serialize_dtype(self._layer_dtype)}

    @classmethod
    def from_config(cls, config):
        return model_from_config(cls, config)
