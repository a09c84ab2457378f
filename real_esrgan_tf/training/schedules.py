"""Learning-rate schedules of the official recipes, driven by the training step."""

from __future__ import annotations

import keras
import tensorflow as tf


class MultiStepLR(keras.optimizers.schedules.LearningRateSchedule):
    """BasicSR's MultiStepRestartLR (no restarts) as a function of the training step.

    BasicSR calls `update_learning_rate(current_iter)` (MultiStepLR stepped when current_iter > 1)
    before `optimize_parameters`, current_iter = 1, 2, ...: iteration k runs at
    lr * gamma ** #{milestones <= k - 1}. A milestone m is the last iteration at the old rate, m + 1 the
    first at the decayed one; a repeated milestone decays twice (Counter). `step` is k - 1: the number
    of iterations done before, i.e. the trainer's `step` while it runs iteration k.
    """

    def __init__(self, initial_learning_rate: float, milestones, gamma: float):
        self.initial_learning_rate = float(initial_learning_rate)
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)

    def __call__(self, step):
        values = [self.initial_learning_rate * self.gamma**i for i in range(len(self.milestones) + 1)]
        if not self.milestones:
            return tf.constant(values[0], tf.float32)
        step = tf.cast(tf.convert_to_tensor(step), tf.int64)
        passed = tf.reduce_sum(tf.cast(step >= tf.constant(self.milestones, tf.int64), tf.int32))
        return tf.gather(tf.constant(values, tf.float32), passed)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
        }


class TrainingStepLR:
    """A learning rate Keras evaluates when the optimizer applies an update: `schedule(step)`.

    A zero-argument callable (Keras' `learning_rate=callable`), bound to the trainer's iteration counter
    instead of the optimizer's `iterations`: under mixed_float16 `LossScaleOptimizer` skips updates with
    non-finite gradients and the inner optimizer's `iterations` stays put, so a schedule driven by it
    would fall behind the training iteration. BasicSR steps its scheduler once per iteration, whatever
    happens. The step is checkpointed, so a resumed run continues with the same rate. Not trackable:
    the optimizer adds no checkpoint dependency for it.
    """

    def __init__(self, schedule, step):
        self.schedule = schedule
        self.step = step

    def __call__(self):
        return self.schedule(self.step)

