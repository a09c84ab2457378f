"""A training run built from a `PipelineConfig`: models, initial weights, optimizers, data, checkpoint.

Everything is created under the strategy's scope and the configured dtype policy; `build_run`
restores the newest checkpoint of `model_dir` when asked to resume.
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
import tensorflow as tf

from real_esrgan_tf import degradations
from real_esrgan_tf.models import RRDBNet, SRVGGNetCompact, UNetDiscriminatorSN, VGGStyleDiscriminator
from real_esrgan_tf.training import checkpoints, losses
from real_esrgan_tf.training.config import (
    DataKind,
    DiscriminatorArch,
    GeneratorArch,
    PipelineConfig,
    Precision,
    Stage,
    XlaScope,
)
from real_esrgan_tf.training.optimizers import TorchAdam
from real_esrgan_tf.training.schedules import MultiStepLR, TrainingStepLR
from real_esrgan_tf.training.strategy import is_chief, resolve_xla, worker_id
from real_esrgan_tf.training.trainer import KERNEL_KEYS, LossWeights, RealESRGANTrainer, clone_generator
from real_esrgan_tf.weights import (
    copy_weights_by_layer,
    load_discriminator_weights,
    load_generator,
)


@contextlib.contextmanager
def dtype_policy(precision: Precision):
    """Build models under `precision`, restoring the previous global policy afterwards.

    The generators take a `dtype` argument but also give it to their `keras.Input`, which rejects a
    mixed policy name; building them under the policy (dtype=None) gives mixed layers instead.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(str(precision))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_generator(config: PipelineConfig) -> keras.Model:
    g, scale = config.generator, config.train.scale
    if g.arch is GeneratorArch.RRDBNET:
        return RRDBNet(scale=scale, num_feat=g.num_feat, num_block=g.num_block, num_grow_ch=g.num_grow_ch)
    return SRVGGNetCompact(
        num_feat=g.num_feat, num_conv=g.num_conv, upscale=scale, act=g.act, init=g.init
    )


def build_discriminator(config: PipelineConfig) -> keras.Model:
    d = config.discriminator
    if d.arch is DiscriminatorArch.VGG:
        return VGGStyleDiscriminator(num_feat=d.num_feat, input_size=config.train.gt_size)
    return UNetDiscriminatorSN(
        num_feat=d.num_feat, skip_connection=d.skip_connection, spectral_norm=d.spectral_norm
    )


@dataclasses.dataclass
class TrainingRun:
    config: PipelineConfig
    strategy: tf.distribute.Strategy
    trainer: RealESRGANTrainer
    checkpoint: checkpoints.TrainingCheckpoint
    start_step: int
    xla: XlaScope = XlaScope.OFF  # `train.xla` resolved for the strategy and device (never AUTO)


def build_run(
    config: PipelineConfig,
    model_dir: str,
    strategy: tf.distribute.Strategy | None = None,
    resume: bool = True,
) -> TrainingRun:
    """Everything one training run needs, built under `strategy` and the configured dtype policy.

    Follows the official `train_realesrnet_x4plus.yml` / `train_realesrgan_x4plus.yml` set-up: G (and
    the U-Net SN D in stage 2), initial weights (`init.*`, by layer name), Adam for each with the
    MultiStep schedule, the on-device degrader + training-pair pool for synthetic data, EMA.

    Args:
      config: a validated `PipelineConfig` (`load_pipeline`).
      model_dir: the run folder (checkpoints, logs, export, config.toml).
      strategy: a tf.distribute strategy (default: the current one).
      resume: restore the newest checkpoint of `model_dir` if there is one.
    Returns:
      A `TrainingRun` (config, strategy, trainer, checkpoint, start_step, resolved xla scope).
    Raises:
      InitError / WeightsError for initial weights that do not fit, CheckpointError for a run folder
      of another pipeline or replica count.
    """
    strategy = strategy or tf.distribute.get_strategy()
    t, cfg_loss = config.train, config.losses
    xla = resolve_xla(t.xla, strategy)
    with strategy.scope(), dtype_policy(t.precision):
        generator = build_generator(config)
        ema = None
        if config.init.generator:
            what = f"init.generator {config.init.generator}"
            copy_weights_by_layer(
                load_generator(config.init.generator), generator, config.init.skip_layers, what
            )
        if config.init.ema_generator:
            ema = clone_generator(generator)
            what = f"init.ema_generator {config.init.ema_generator}"
            copy_weights_by_layer(
                load_generator(config.init.ema_generator), ema, config.init.skip_layers, what
            )
        discriminator = perceptual = None
        if config.uses_discriminator:
            discriminator = build_discriminator(config)
            if config.init.discriminator:
                source = config.init.discriminator
                load_discriminator_weights(discriminator, source, f"init.discriminator {source}")
        if config.uses_perceptual:
            perceptual = losses.PerceptualLoss(
                losses.PerceptualLossConfig(dict(cfg_loss.perceptual_layer_weights), cfg_loss.vgg_weights)
            )
        degrader = pool = None
        deg = config.degradation
        lq_size = t.gt_size // t.scale
        if t.data is DataKind.SYNTHETIC:
            degrader = degradations.RealESRGANDegrader(deg)
            if deg.queue_size:
                pool = degradations.TrainingPairPool(
                    deg.queue_size, (lq_size, lq_size, 3), (t.gt_size, t.gt_size, 3), t.batch_size_per_replica
                )
        # one sharpener: the degrader's (stage 1 sharpens before degrading), or one for paired data
        sharpener = degrader.usm if degrader is not None else degradations.USMSharp.from_config(deg)
        trainer = RealESRGANTrainer(
            generator,
            discriminator,
            perceptual,
            degrader=degrader,
            pool=pool,
            sharpener=sharpener,
            loss_weights=LossWeights(
                cfg_loss.l1_weight,
                cfg_loss.perceptual_weight,
                cfg_loss.gan_weight,
                cfg_loss.l1_gt_usm,
                cfg_loss.perceptual_gt_usm,
                cfg_loss.gan_gt_usm,
            ),
            ema_decay=t.ema_decay,
            ema_generator=ema,
            seed=t.seed,
            pool_sharpened_gt=t.stage is Stage.REALESRNET,
        )
        trainer.compile(
            make_optimizer(config, "g", trainer.step),
            make_optimizer(config, "d", trainer.step) if discriminator else None,
            jit_model_step=xla is XlaScope.MODEL_STEP,
        )
        trainer.build_state(
            (t.batch_size_per_replica, lq_size, lq_size, 3),
            (t.batch_size_per_replica, t.gt_size, t.gt_size, 3),
        )
    ckpt = checkpoints.TrainingCheckpoint(
        trainer,
        model_dir,
        config.checkpoint.keep_checkpoint_max,
        chief=is_chief(strategy),
        worker=worker_id(strategy),
        strategy=strategy,
    )
    start = (ckpt.restore_latest() if resume else None) or 0
    return TrainingRun(config, strategy, trainer, ckpt, start, xla)



def make_optimizer(config: PipelineConfig, which: str, step):
    """torch-style Adam (+ LossScaleOptimizer under mixed_float16) for G (`which` "g") or D ("d").

    step: the trainer's iteration counter (`RealESRGANTrainer.step`); with milestones the learning
    rate is `MultiStepLR(step)`, read when the optimizer applies its update.
    """
    o = config.optimizer
    lr = o.g_lr if which == "g" else o.d_lr
    learning_rate = TrainingStepLR(MultiStepLR(lr, o.milestones, o.gamma), step) if o.milestones else lr
    # torch's Adam (eps 1e-8 after the bias correction), not Keras' (1e-7 before it): see optimizers.py
    optimizer = TorchAdam(learning_rate, beta_1=o.beta_1, beta_2=o.beta_2, name=f"{which}_adam")
    if config.train.precision is Precision.MIXED_FLOAT16:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name=f"{which}_loss_scale")
    return optimizer


def make_dataset(config: PipelineConfig, data: str, strategy, start_step: int, deterministic: bool):
    from real_esrgan_tf.data import make_paired_dataset, make_train_dataset

    t = config.train
    global_batch = t.batch_size_per_replica * strategy.num_replicas_in_sync

    def dataset_fn(input_context):
        if t.data is DataKind.PAIRED:
            return make_paired_dataset(
                data,
                global_batch,
                t.gt_size,
                t.scale,
                seed=t.seed,
                start_step=start_step,
                deterministic=deterministic,
                shuffle_buffer=t.shuffle_buffer,
                input_context=input_context,
            )
        return make_train_dataset(
            data,
            global_batch,
            t.crop_size,
            degradation=config.degradation,
            seed=t.seed,
            start_step=start_step,
            deterministic=deterministic,
            shuffle_buffer=t.shuffle_buffer,
            input_context=input_context,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


def preview_batch(config: PipelineConfig, trainer: RealESRGANTrainer, data: str, validation=None, count=4):
    """(lq, gt) shown as LQ | SR | GT: the first validation pair, else a fixed training batch.

    Synthetic data is degraded with a fixed seed (not through the pool), so every image summary of a
    run shows the same inputs.
    """
    if validation is not None:
        first = next(iter(validation))
        return first["lq"], first["gt"]
    from real_esrgan_tf.data import make_paired_dataset, make_train_dataset

    t = config.train
    fixed = dict(seed=t.seed, deterministic=True, shuffle_buffer=1)
    if t.data is DataKind.PAIRED:
        batch = next(iter(make_paired_dataset(data, count, t.gt_size, t.scale, **fixed)))
        return batch["lq"], batch["gt"]
    batch = next(iter(make_train_dataset(data, count, t.crop_size, degradation=config.degradation, **fixed)))
    seed = tf.constant([t.seed, -1], tf.int64)
    lq, gt, _ = trainer._degrader(batch["gt"], {k: batch[k] for k in KERNEL_KEYS}, seed)
    return lq, gt


