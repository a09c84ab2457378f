"""Adam as `torch.optim.Adam` computes it (the optimizer of the official BasicSR recipes).

Keras' Adam adds its epsilon to sqrt(v) before the bias correction ("epsilon hat" of the Adam
paper's section 2 footnote) and defaults to 1e-7; torch adds eps 1e-8 to sqrt(v) / sqrt(1 - beta_2^t),
i.e. after it. The two agree only when |g| >> eps: on step 1 with beta_2 0.99 Keras' update is
lr * g / (|g| + 1e-6), torch's lr * g / (|g| + 1e-8), so gradients of 1e-6 move 2x slower in Keras.
RRDBNet's residual scaling (0.2 per RDB, kaiming x 0.1 init) gives many gradients of that size.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class TorchAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` with torch's update (same slot variables, so checkpoints are compatible).

    m = beta_1 m + (1 - beta_1) g;  v = beta_2 v + (1 - beta_2) g^2;
    w -= lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + epsilon)   (torch/optim/adam.py)
    No weight decay, no amsgrad (BasicSR's Adam: betas (0.9, 0.99), weight_decay 0, eps 1e-8).
    """

    def __init__(
        self, learning_rate=1e-4, beta_1=0.9, beta_2=0.99, epsilon=1e-8, name="torch_adam", **kwargs
    ):
        if kwargs.get("amsgrad"):
            raise ValueError("TorchAdam: amsgrad is not supported (BasicSR does not use it)")
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        bias_correction1 = 1 - ops.power(beta_1, t)
        bias_correction2 = 1 - ops.power(beta_2, t)

        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign(v, ops.add(ops.multiply(v, beta_2), ops.multiply(ops.square(gradient), 1 - self.beta_2)))
        denom = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(bias_correction2)), self.epsilon)
        self.assign_sub(variable, ops.multiply(ops.divide(m, denom), lr / bias_correction1))
