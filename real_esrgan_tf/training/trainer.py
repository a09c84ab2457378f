"""The Real-ESRGAN trainer: a `keras.Model` whose `train_step` is one official iteration.

One step (per replica, on its share of the global batch):
  degrade on device -> training-pair pool -> USM of the pooled GT
  -> G step (L1 + perceptual on the sharpened GT, GAN 0.1 with D frozen)
  -> D step (plain GT as real, detached SR as fake) -> EMA of G's trainable weights.
Stage 1 (RealESRNet) is the same without D and perceptual loss. Losses and D logits are float32
under any dtype policy; per-replica losses are divided by the replica count because the optimizers
sum gradients over replicas (Keras 3 on TF), so the update equals one replica on the global batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

from real_esrgan_tf.training import losses

KERNEL_KEYS = ("kernel1", "kernel2", "sinc_kernel")


@dataclasses.dataclass(frozen=True)
class LossWeights:
    l1: float = 1.0
    perceptual: float = 1.0
    gan: float = 0.1
    l1_gt_usm: bool = True
    perceptual_gt_usm: bool = True
    gan_gt_usm: bool = False


def clone_generator(generator: keras.Model) -> keras.Model:
    """A fresh copy of `generator` (same class and config) holding the same weight values."""
    clone = generator.__class__.from_config(generator.get_config())
    clone.set_weights(generator.get_weights())
    return clone


class RealESRGANTrainer(keras.Model):
    """Holds G, D, EMA G and the on-device data path; `train_step(batch) -> metrics`.

    batch: {"gt" [B, crop, crop, 3], "kernel1", "kernel2", "sinc_kernel" [B, 21, 21]} for synthetic
    data (needs `degrader`), or {"gt" [B, S*h, S*w, 3], "lq" [B, h, w, 3]} for paired data.
    degrader(gt, kernels, seed) -> (lq, gt, gt_usm); pool(lq, gt, seed) -> (lq, gt);
    sharpener(gt) -> gt_usm. All three are injected so the trainer owns no degradation code.
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model | None = None,
        perceptual_loss: Callable | None = None,
        *,
        degrader: Callable | None = None,
        pool=None,
        sharpener: Callable | None = None,
        loss_weights: LossWeights = LossWeights(),
        ema_decay: float = 0.999,
        ema_generator: keras.Model | None = None,
        seed: int = 0,
        pool_sharpened_gt: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.ema_generator = ema_generator if ema_generator is not None else clone_generator(generator)
        self.ema_generator.trainable = False
        self._perceptual_loss = perceptual_loss  # plain object: VGG weights stay out of checkpoints
        self._degrader = degrader
        self.pool = pool
        self._sharpener = sharpener
        self.loss_weights = loss_weights
        self.ema_decay = float(ema_decay)
        # RealESRNet (official `gt_usm: true` in RealESRNetModel) replaces the GT by its sharpened
        # version before degrading, then crops and pools that: its L1 target is the sharpened full
        # crop, cropped. RealESRGANModel pools the plain GT and sharpens the pooled crop again.
        self.pool_sharpened_gt = bool(pool_sharpened_gt)
        # Iteration counter and RNG seed: the only RNG state (all randomness is stateless-seeded
        # from (seed, step, replica)), so a checkpoint of both resumes the same random stream.
        self.step = keras.Variable(
            0, dtype="int64", trainable=False, name="step", aggregation="only_first_replica"
        )
        self.rng_seed = keras.Variable(
            seed, dtype="int64", trainable=False, name="rng_seed", aggregation="only_first_replica"
        )
        self.g_optimizer = None
        self.d_optimizer = None
        self._gradients_fn = self.gradients

    def compile(
        self, g_optimizer, d_optimizer=None, jit_compile: bool = False, jit_model_step: bool = False, **kwargs
    ):
        """`g_optimizer`/`d_optimizer`: Keras optimizers (a `LossScaleOptimizer` under mixed_float16).

        jit_compile: Keras' flag (XLA for the whole `train_step` when run by `fit`).
        jit_model_step: XLA for the G and D forward and backward passes (`gradients`); the
        degradation, the pool and the optimizer/EMA updates stay in graph mode (the updates need
        cross-replica `merge_call`, which a compiled function nested in `strategy.run` cannot make).
        """
        if self.discriminator is not None and d_optimizer is None:
            raise ValueError("a trainer with a discriminator needs d_optimizer")
        super().compile(jit_compile=jit_compile, **kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self._gradients_fn = (
            tf.function(self.gradients, jit_compile=True) if jit_model_step else self.gradients
        )

    def call(self, lq, training=False):
        return self.ema_generator(lq, training=False)

    def build_state(self, lq_shape, gt_shape=None):
        """Create every variable (models, optimizer slots, pool) before tracing the step."""
        self.generator(tf.zeros(lq_shape))
        self.ema_generator(tf.zeros(lq_shape))
        self.g_optimizer.build(self.generator.trainable_variables)
        if self.discriminator is not None:
            self.discriminator(tf.zeros(gt_shape))
            self.d_optimizer.build(self.discriminator.trainable_variables)
        if self.pool is not None and getattr(self.pool, "queue_lq", True) is None:
            self.pool.build(lq_shape[1:], gt_shape[1:])  # per-sample shapes
        self.built = True

    # ------------------------------------------------------------------ the step

    def _replica_seeds(self, count: int):
        """`count` stateless seeds [2] unique to (rng_seed, step, replica)."""
        ctx = tf.distribute.get_replica_context()
        replica = 0 if ctx is None else ctx.replica_id_in_sync_group
        base = tf.stack([tf.convert_to_tensor(self.rng_seed), tf.convert_to_tensor(self.step)])
        seed = tf.random.experimental.stateless_fold_in(base, tf.cast(replica, tf.int64))
        return tf.unstack(tf.random.experimental.stateless_split(seed, count))

    def prepare_batch(self, batch):
        """-> (lq, gt, gt_usm), float32, no gradient."""
        gt = tf.cast(batch["gt"], tf.float32)
        if "lq" in batch:
            lq = tf.cast(batch["lq"], tf.float32)
            gt_usm = self._sharpener(gt) if self._sharpener is not None else gt
        else:
            if self._degrader is None:
                raise ValueError("synthetic batches (gt + kernels) need a degrader")
            degrade_seed, pool_seed = self._replica_seeds(2)
            lq, gt, gt_usm = self._degrader(gt, {k: batch[k] for k in KERNEL_KEYS}, degrade_seed)
            if self.pool_sharpened_gt:
                gt = gt_usm
                if self.pool is not None:
                    lq, gt = self.pool(lq, gt, pool_seed)
                gt_usm = gt
            else:
                if self.pool is not None:
                    lq, gt = self.pool(lq, gt, pool_seed)
                # Sharpen the (pooled) GT crop that is actually used, as RealESRGANModel does.
                gt_usm = self._sharpener(gt) if self._sharpener is not None else gt
        return tf.stop_gradient(lq), tf.stop_gradient(gt), tf.stop_gradient(gt_usm)

    def train_step(self, batch):
        lq, gt, gt_usm = self.prepare_batch(batch)
        return self.optimize(lq, gt, gt_usm)

    def gradients(self, lq, gt, gt_usm):
        """The computing half of a step: (G gradients, D gradients (empty without D), metrics).

        No weight changes here (only D's spectral-norm power iteration, in the official order: once
        in the G loss, then in the D loss), so this part can be XLA-compiled inside `strategy.run`;
        `optimize` applies the gradients outside it, where the optimizers' cross-replica `merge_call`
        is allowed. Gradients of losses divided by the replica count (the optimizers sum them).
        """
        w = self.loss_weights
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        metrics = {}

        # ---- G loss (D frozen: only G's variables get gradients)
        with tf.GradientTape() as tape:
            sr = self.generator(lq, training=True)
            sr32 = tf.cast(sr, tf.float32)
            l_l1 = losses.l1_loss(sr32, gt_usm if w.l1_gt_usm else gt)
            g_total = w.l1 * l_l1
            metrics["l_g_pix"] = l_l1
            if self._perceptual_loss is not None and w.perceptual:
                l_percep = self._perceptual_loss(sr32, gt_usm if w.perceptual_gt_usm else gt)
                g_total += w.perceptual * l_percep
                metrics["l_g_percep"] = l_percep
            if self.discriminator is not None and w.gan:
                l_gan = losses.gan_loss_generator(self.discriminator(sr, training=True))
                g_total += w.gan * l_gan
                metrics["l_g_gan"] = l_gan
            g_loss = self._scale(self.g_optimizer, g_total / replicas)
        g_grads = tape.gradient(g_loss, self.generator.trainable_variables)
        metrics["l_g_total"] = g_total

        # ---- D loss: real = plain (or sharpened) GT, fake = detached SR (from G before its update)
        d_grads = []
        if self.discriminator is not None:
            real = gt_usm if w.gan_gt_usm else gt
            with tf.GradientTape() as tape:
                real_logits = self.discriminator(real, training=True)
                fake_logits = self.discriminator(tf.stop_gradient(sr), training=True)
                l_d_real, l_d_fake = losses.gan_loss_discriminator(real_logits, fake_logits)
                d_loss = self._scale(self.d_optimizer, (l_d_real + l_d_fake) / replicas)
            d_grads = tape.gradient(d_loss, self.discriminator.trainable_variables)
            metrics.update(
                l_d_real=l_d_real,
                l_d_fake=l_d_fake,
                out_d_real=tf.reduce_mean(real_logits),
                out_d_fake=tf.reduce_mean(fake_logits),
            )
        return g_grads, d_grads, metrics

    def optimize(self, lq, gt, gt_usm):
        """G step, D step, EMA and step += 1 on a prepared batch -> metrics (float32 scalars).

        The metrics include `g_learning_rate` / `d_learning_rate`: the rates this step's updates used
        (as BasicSR logs them after `optimize_parameters`), not the next step's. D's update does not
        depend on G's (its fake input is the SR from before G's update), so applying both after
        computing both equals the official G-then-D order.
        """
        g_grads, d_grads, metrics = self._gradients_fn(lq, gt, gt_usm)
        # read before `apply`: the rates this step uses
        metrics["g_learning_rate"] = self._learning_rate(self.g_optimizer)
        self.g_optimizer.apply(g_grads, self.generator.trainable_variables)
        if self.discriminator is not None:
            metrics["d_learning_rate"] = self._learning_rate(self.d_optimizer)
            self.d_optimizer.apply(d_grads, self.discriminator.trainable_variables)
        self._update_ema()
        self.step.assign_add(1)
        return metrics

    def ema_pairs(self):
        """[(ema variable, G variable)] over G's trainable weights (the clone has the same layout)."""
        trainable = {id(v) for v in self.generator.trainable_variables}
        return [
            (e, v)
            for e, v in zip(self.ema_generator.weights, self.generator.weights, strict=True)
            if id(v) in trainable
        ]

    @staticmethod
    def _learning_rate(optimizer):
        """The optimizer's current learning rate (a schedule evaluated now), float32."""
        return tf.cast(optimizer.learning_rate, tf.float32)

    @staticmethod
    def _scale(optimizer, loss):
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer.scale_loss(loss)
        return loss

    def _update_ema(self):
        """ema = decay * ema + (1 - decay) * g over trainable weights, in cross-replica context."""
        decay = self.ema_decay
        pairs = self.ema_pairs()

        def update(strategy, pairs):
            for ema, var in pairs:
                strategy.extended.update(
                    ema, lambda e, v: e.assign(decay * e + (1.0 - decay) * tf.cast(v, e.dtype)), args=(var,)
                )

        raw = [(e.value, v.value) for e, v in pairs]
        tf.__internal__.distribute.interim.maybe_merge_call(update, tf.distribute.get_strategy(), raw)
