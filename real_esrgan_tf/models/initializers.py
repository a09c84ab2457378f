"""Conv-kernel initialisers for training the compact generator from scratch.

SRVGGNetCompact is a plain stack of 34 convs with no skip inside the body. With PyTorch's default
init (what the official code keeps: kaiming_uniform(a=sqrt(5)), variance 1/(3 fan_in)) every conv
+ PReLU shrinks the signal ~2.4x, so at init the residual branch outputs ~1e-13 levels: SR is the
nearest upsampling and the body's gradients are as small. Measured in BUILD_NOTES ("Time to
quality"): from that init a CPU hour stays on the nearest-neighbour plateau. `DiracUniform` starts
each body conv as the identity, so signal and gradients pass all layers unchanged from step 0.
"""

from __future__ import annotations

import keras
import numpy as np

# PReLU initialised at 0.25: He gain^2 = 2 / (1 + a^2).
PRELU_GAIN2 = 2.0 / (1.0 + 0.25**2)


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class DiracUniform(keras.initializers.Initializer):
    """Identity conv kernel plus small uniform noise (delta-orthogonal / ISONet-style).

    kernel[kh // 2, kw // 2, j, j] = 1 for j < min(in, out), plus uniform(+-noise * sqrt(3 gain2 / fan_in)):
    the identity keeps the signal, the noise breaks the symmetry between channels.
    Shape [kh, kw, in, out] (Keras Conv2D, NHWC).
    """

    def __init__(self, noise: float = 0.1, gain2: float = PRELU_GAIN2, seed=None):
        self.noise = float(noise)
        self.gain2 = float(gain2)
        self.seed = seed  # None: Keras' global seed generator (keras.utils.set_random_seed)

    def __call__(self, shape, dtype=None):
        if len(shape) != 4:
            raise ValueError(f"DiracUniform: a conv kernel shape [kh, kw, in, out] is needed, got {shape}")
        kh, kw, cin, cout = shape
        bound = self.noise * np.sqrt(3.0 * self.gain2 / (kh * kw * cin))
        noise = keras.random.uniform(shape, -bound, bound, dtype=dtype, seed=self.seed)
        eye = np.zeros(shape, dtype="float32")
        eye[kh // 2, kw // 2] = np.eye(cin, cout, dtype="float32")
        return noise + keras.ops.convert_to_tensor(eye, dtype=noise.dtype)

    def get_config(self):
        return {"noise": self.noise, "gain2": self.gain2, "seed": self.seed}
