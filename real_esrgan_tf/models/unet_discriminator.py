"""UNetDiscriminatorSN: Real-ESRGAN's U-Net discriminator with spectral normalisation.

A U-Net gives per-pixel realness logits (B, H, W, 1), i.e. gradient feedback for local detail,
and spectral normalisation keeps the stronger discriminator stable. The spectral norm follows
PyTorch's `torch.nn.utils.spectral_norm` exactly: the raw kernel is the trained variable, every
forward divides it by sigma = u^T W v, and (u, v) are non-trainable state refined by one power
iteration per call in training only. (Keras 3's `SpectralNormalization` instead writes W / sigma
back into the kernel variable, so the optimizer then updates a different quantity.)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from real_esrgan_tf.models.layers import BilinearUpsample2x, model_from_config, serialize_dtype

SPECTRAL_NORM_LAYERS = tuple(f"conv{i}" for i in range(1, 9))


def _torch_default_initializer():
    # PyTorch's Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class UnitNormal(keras.initializers.Initializer):
    """A standard-normal draw scaled to unit L2 norm: PyTorch's initial power-iteration vectors."""

    def __init__(self, eps: float = 1e-12):
        self.eps = eps

    def __call__(self, shape, dtype=None):
        x = keras.random.normal(shape, dtype=dtype or "float32")
        return x / keras.ops.maximum(keras.ops.norm(x), self.eps)

    def get_config(self):
        return {"eps": self.eps}


def _l2_normalize(x, eps):
    # torch.nn.functional.normalize: x / max(||x||, eps)
    return x / tf.maximum(tf.norm(x), eps)


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class PaddedConv2D(keras.layers.Layer):
    """Conv2D with symmetric zero padding like PyTorch's `Conv2d(padding=p)` and its default init.

    The plain (no spectral norm) convs of the U-Net discriminator ablation; `SpectralNormConv2D`
    divides the same kernel by its largest singular value.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int,
        strides: int = 1,
        padding: int = 1,
        use_bias: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = int(padding)
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        k = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, k, int(input_shape[-1]), self.filters),
            initializer=_torch_default_initializer(),
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def effective_kernel(self, training=False):
        """The kernel the convolution uses (here the variable itself)."""
        return self.kernel.value

    def call(self, x, training=False):
        kernel = tf.cast(self.effective_kernel(training=training), self.compute_dtype)
        x = tf.cast(x, self.compute_dtype)
        p = self.padding
        if p:
            x = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        y = tf.nn.conv2d(x, kernel, strides=self.strides, padding="VALID")
        if self.bias is not None:
            y = y + tf.cast(self.bias.value, self.compute_dtype)
        return y

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape

        def out(n):
            return None if n is None else (n + 2 * self.padding - self.kernel_size) // self.strides + 1

        return (b, out(h), out(w), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "use_bias": self.use_bias,
        }


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class SpectralNormConv2D(PaddedConv2D):
    """`PaddedConv2D` with PyTorch-style spectral norm.

    Kernel (k, k, Cin, Cout) viewed as the matrix M = reshape(kernel, (k*k*Cin, Cout)) = W^T, where
    W is PyTorch's (Cout, Cin*k*k) weight matrix up to a permutation of its columns (which does not
    change sigma). u: (Cout,), v: (k*k*Cin,). The power iteration and sigma run in float32 whatever
    the dtype policy (autocast off); only the normalised kernel is cast to the compute dtype.
    """

    def __init__(
        self, filters: int, kernel_size: int, power_iterations: int = 1, eps: float = 1e-12, **kwargs
    ):
        kwargs["autocast"] = False
        super().__init__(filters, kernel_size, **kwargs)
        self.power_iterations = int(power_iterations)
        self.eps = float(eps)

    def build(self, input_shape):
        super().build(input_shape)
        cin = int(input_shape[-1])
        k = self.kernel_size
        # Power-iteration state, one copy per replica (sync on read), as each official DDP process
        # keeps its own: every replica computes the same (u, v) from the same mirrored kernel, so the
        # copies stay equal without a cross-replica sync at each forward pass. (A mirrored variable
        # would need `merge_call` to be assigned in replica context, which an XLA-compiled function
        # inside `strategy.run` cannot make.)
        self.sn_u = keras.Variable(
            UnitNormal(self.eps),
            shape=(self.filters,),
            dtype=self.variable_dtype,
            trainable=False,
            synchronization="on_read",
            aggregation="only_first_replica",
            name="sn_u",
        )
        self.sn_v = keras.Variable(
            UnitNormal(self.eps),
            shape=(k * k * cin,),
            dtype=self.variable_dtype,
            trainable=False,
            synchronization="on_read",
            aggregation="only_first_replica",
            name="sn_v",
        )

    def effective_kernel(self, training=False):
        return self.normalized_kernel(training=training)

    def normalized_kernel(self, training=False):
        """kernel / sigma; in training first refines (u, v) and stores them."""
        kernel = tf.convert_to_tensor(self.kernel.value)
        matrix = tf.reshape(kernel, (-1, self.filters))  # (k*k*Cin, Cout) = W^T
        u = tf.convert_to_tensor(self.sn_u.value)
        v = tf.convert_to_tensor(self.sn_v.value)
        if training:
            for _ in range(self.power_iterations):
                v = _l2_normalize(tf.linalg.matvec(matrix, u), self.eps)  # W^T u
                u = _l2_normalize(tf.linalg.matvec(matrix, v, transpose_a=True), self.eps)  # W v
            u = tf.stop_gradient(u)
            v = tf.stop_gradient(v)
            self.sn_u.assign(u)
            self.sn_v.assign(v)
        sigma = tf.tensordot(u, tf.linalg.matvec(matrix, v, transpose_a=True), 1)  # u^T W v
        return kernel / sigma

    def get_config(self):
        config = super().get_config()
        config.pop("autocast", None)
        return {**config, "power_iterations": self.power_iterations, "eps": self.eps}


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class UNetDiscriminatorSN(keras.Model):
    """(B, H, W, 3) images in [0, 1] -> (B, H, W, 1) float32 logits; H, W divisible by 8.

    Layer names follow the official state-dict keys (conv0..conv9). Encoder: conv1..3 stride 2
    (H -> H/8); decoder: bilinear x2 (half-pixel) before conv4..6 with skips x4+x2, x5+x1, x6+x0.
    spectral_norm=False (the paper's ablation) uses plain convs for conv1..8: no (u, v) state.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_feat: int = 64,
        skip_connection: bool = True,
        spectral_norm: bool = True,
        dtype=None,
        **kwargs,
    ):
        nf = num_feat
        conv_class = SpectralNormConv2D if spectral_norm else PaddedConv2D

        def lrelu(name):
            return keras.layers.LeakyReLU(negative_slope=0.2, name=name, dtype=dtype)

        def plain_conv(filters, name):
            init = _torch_default_initializer()
            return keras.layers.Conv2D(
                filters, 3, padding="same", kernel_initializer=init, name=name, dtype=dtype
            )

        def sn_conv(filters, k, s, name):
            return conv_class(filters, k, strides=s, padding=1, name=name, dtype=dtype)

        def up(name):
            return BilinearUpsample2x(name=name, dtype=dtype)

        inputs = keras.Input((None, None, num_in_ch), name="image")
        x0 = lrelu("act0")(plain_conv(nf, "conv0")(inputs))  # (B, H, W, nf)
        x1 = lrelu("act1")(sn_conv(nf * 2, 4, 2, "conv1")(x0))  # (B, H/2, W/2, 2nf)
        x2 = lrelu("act2")(sn_conv(nf * 4, 4, 2, "conv2")(x1))  # (B, H/4, W/4, 4nf)
        x3 = lrelu("act3")(sn_conv(nf * 8, 4, 2, "conv3")(x2))  # (B, H/8, W/8, 8nf)

        x3 = up("up3")(x3)
        x4 = lrelu("act4")(sn_conv(nf * 4, 3, 1, "conv4")(x3))  # (B, H/4, W/4, 4nf)
        if skip_connection:
            x4 = keras.layers.Add(name="skip4", dtype=dtype)([x4, x2])
        x4 = up("up4")(x4)
        x5 = lrelu("act5")(sn_conv(nf * 2, 3, 1, "conv5")(x4))  # (B, H/2, W/2, 2nf)
        if skip_connection:
            x5 = keras.layers.Add(name="skip5", dtype=dtype)([x5, x1])
        x5 = up("up5")(x5)
        x6 = lrelu("act6")(sn_conv(nf, 3, 1, "conv6")(x5))  # (B, H, W, nf)
        if skip_connection:
            x6 = keras.layers.Add(name="skip6", dtype=dtype)([x6, x0])

        out = lrelu("act7")(sn_conv(nf, 3, 1, "conv7")(x6))
        out = lrelu("act8")(sn_conv(nf, 3, 1, "conv8")(out))
        out = plain_conv(1, "conv9")(out)
        # Logits in float32 under any mixed policy (the BCE must not saturate in half precision).
        outputs = keras.layers.Activation("linear", dtype="float32", name="logits")(out)

        kwargs.setdefault("name", "unet_discriminator_sn" if spectral_norm else "unet_discriminator")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.num_in_ch = num_in_ch
        self.num_feat = num_feat
        self.skip_connection = skip_connection
        self.spectral_norm = spectral_norm
        self._layer_dtype = dtype

    def get_config(self):
        return {
            "name": self.name,
            "num_in_ch": self.num_in_ch,
            "num_feat": self.num_feat,
            "skip_connection": self.skip_connection,
            "spectral_norm": self.spectral_norm,
            "dtype": serialize_dtype(self._layer_dtype),
        }

    @classmethod
    def from_config(cls, config):
        return model_from_config(cls, config)
