"""Building a training run from a `PipelineConfig` and running it (used by `real-esrgan-tf train`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from real_esrgan_tf import degradations, losses
from real_esrgan_tf.models import RRDBNet, SRVGGNetCompact, UNetDiscriminatorSN
from real_esrgan_tf.training import checkpoints, monitoring
from real_esrgan_tf.training.config import DataKind, GeneratorArch, PipelineConfig, Precision, Stage, XlaScope
from real_esrgan_tf.training.strategy import is_chief, make_train_function, worker_id
from real_esrgan_tf.training.trainer import KERNEL_KEYS, LossWeights, RealESRGANTrainer, clone_generator
from real_esrgan_tf.weights import load_generator

EMA_EXPORT_NAME = "ema_generator.weights.h5"


class InitError(ValueError):
    """Initial weights that do not fit the configured model (names the source and the layer)."""


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
    return SRVGGNetCompact(num_feat=g.num_feat, num_conv=g.num_conv, upscale=scale, act=g.act)


def copy_weights_by_layer(source: keras.Model, target: keras.Model, skip: tuple[str, ...], what: str) -> int:
    """Copy weights layer by layer (same names); `skip` layers keep their initialisation.

    This is how x2plus / x1 start from the x4plus weights: every layer but `conv_first` (whose input
    channels differ: 12 or 48 instead of 3) has the same shape.
    """
    copied = 0
    for layer in target.layers:
        if not layer.weights or layer.name in skip:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            raise InitError(f"{what}: has no layer {layer.name!r} (add it to init.skip_layers?)") from None
        values = src.get_weights()
        shapes = [tuple(v.shape) for v in values]
        wanted = [tuple(w.shape) for w in layer.weights]
        if shapes != wanted:
            raise InitError(
                f"{what}: layer {layer.name!r} has shapes {shapes}, the model needs {wanted} "
                "(add it to init.skip_layers?)"
            )
        layer.set_weights(values)
        copied += 1
    return copied


def load_discriminator_weights(discriminator: keras.Model, path: str) -> None:
    """Fill `UNetDiscriminatorSN` from a `.weights.h5` (ours) or an official BasicSR `.pth`.

    The official fine-tuning recipes start D from `RealESRGAN_x4plus_netD.pth` (`{"params": ...}`,
    torch spectral norm: `convN.weight_orig` is the raw kernel, `weight_u`/`weight_v` the power
    iteration state; conv0/conv9 are plain convs with biases).
    """
    what = f"init.discriminator {path}"
    if not os.path.isfile(path):
        raise InitError(f"{what}: no such file")
    if not (path.endswith(".pth") or path.endswith(".pt")):
        try:
            discriminator.load_weights(path)
        except Exception as e:  # wrong file or architecture: one line
            raise InitError(f"{what}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        return
    try:
        import torch
    except ImportError:
        raise InitError(f"{what}: reading a .pth file needs torch (pip install torch)") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("params"), dict):
        state = state["params"]
    if not isinstance(state, dict):
        raise InitError(f"{what}: not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}

    def get(key):
        if key not in state:
            raise InitError(f"{what}: not a UNetDiscriminatorSN state dict (no {key!r})")
        return state[key].detach().float().numpy()

    def check(name, value, variable):
        if tuple(value.shape) != tuple(variable.shape):
            raise InitError(
                f"{what}: {name} has shape {tuple(value.shape)}, the model needs {tuple(variable.shape)} "
                "(discriminator.num_feat?)"
            )
        variable.assign(value)

    for layer in discriminator.layers:
        name = layer.name
        if not (name.startswith("conv") and layer.weights):
            continue
        if hasattr(layer, "sn_u"):  # spectral norm: (Cout, Cin, k, k) -> (k, k, Cin, Cout)
            w = get(f"{name}.weight_orig")
            if w.ndim != 4:
                raise InitError(f"{what}: {name}.weight_orig has shape {w.shape}, expected 4 dimensions")
            _, cin, k, _ = w.shape
            check(f"{name}.weight_orig", w.transpose(2, 3, 1, 0), layer.kernel)
            check(f"{name}.weight_u", get(f"{name}.weight_u"), layer.sn_u)
            v = get(f"{name}.weight_v")  # torch flattens W as (Cout, Cin*k*k); ours is (k*k*Cin, Cout)
            if v.size != layer.sn_v.shape[0]:
                raise InitError(
                    f"{what}: {name}.weight_v has {v.size} values, the model needs {layer.sn_v.shape[0]}"
                )
            check(f"{name}.weight_v", v.reshape(cin, k, k).transpose(1, 2, 0).reshape(-1), layer.sn_v)
        else:
            kernel, bias = layer.weights
            check(f"{name}.weight", get(f"{name}.weight").transpose(2, 3, 1, 0), kernel)
            check(f"{name}.bias", get(f"{name}.bias"), bias)


@dataclasses.dataclass
class TrainingRun:
    config: PipelineConfig
    strategy: tf.distribute.Strategy
    trainer: RealESRGANTrainer
    checkpoint: checkpoints.TrainingCheckpoint
    start_step: int


def build_run(
    config: PipelineConfig,
    model_dir: str,
    strategy: tf.distribute.Strategy | None = None,
    resume: bool = True,
) -> TrainingRun:
    """Models, optimizers, data-path modules and checkpoint, restored from `model_dir` if it has one."""
    strategy = strategy or tf.distribute.get_strategy()
    t, cfg_loss = config.train, config.losses
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
            discriminator = UNetDiscriminatorSN(
                num_feat=config.discriminator.num_feat, skip_connection=config.discriminator.skip_connection
            )
            if config.init.discriminator:
                load_discriminator_weights(discriminator, config.init.discriminator)
        if config.uses_perceptual:
            perceptual = losses.PerceptualLoss(
                losses.PerceptualLossConfig(dict(cfg_loss.perceptual_layer_weights), cfg_loss.vgg_weights)
            )
        degrader = pool = None
        deg = config.degradation
        sharpener = degradations.USMSharp(
            deg.usm_kernel_size, deg.usm_sigma, deg.usm_weight, deg.usm_threshold
        )
        lq_size = t.gt_size // t.scale
        if t.data is DataKind.SYNTHETIC:
            degrader = degradations.RealESRGANDegrader(deg)
            if deg.queue_size:
                pool = degradations.TrainingPairPool(
                    deg.queue_size, (lq_size, lq_size, 3), (t.gt_size, t.gt_size, 3), t.batch_size_per_replica
                )
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
            jit_model_step=t.xla is XlaScope.MODEL_STEP,
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
    )
    start = (ckpt.restore_latest() if resume else None) or 0
    return TrainingRun(config, strategy, trainer, ckpt, start)


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


def make_optimizer(config: PipelineConfig, which: str, step):
    """Adam (+ LossScaleOptimizer under mixed_float16) for G (`which` "g") or D ("d").

    step: the trainer's iteration counter (`RealESRGANTrainer.step`); with milestones the learning
    rate is `MultiStepLR(step)`, read when the optimizer applies its update.
    """
    o = config.optimizer
    lr = o.g_lr if which == "g" else o.d_lr
    learning_rate = TrainingStepLR(MultiStepLR(lr, o.milestones, o.gamma), step) if o.milestones else lr
    optimizer = keras.optimizers.Adam(learning_rate, beta_1=o.beta_1, beta_2=o.beta_2, name=f"{which}_adam")
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


def _loss_scale_scalars(optimizer, prefix):
    """The loss scale after the step (the learning rates come with the step's metrics: the ones it used)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return {f"{prefix}_loss_scale": float(keras.ops.convert_to_numpy(optimizer.dynamic_scale))}
    return {}


def train(
    run: TrainingRun,
    data: str,
    model_dir: str,
    max_steps: int | None = None,
    deterministic: bool = False,
    print_fn=print,
) -> int:
    """Train from `run.start_step` to `train.total_steps` (or `max_steps` more); returns the last step."""
    config, trainer, strategy = run.config, run.trainer, run.strategy
    t, mon = config.train, config.monitoring
    end = t.total_steps if max_steps is None else min(t.total_steps, run.start_step + max_steps)
    chief = is_chief(strategy)
    summaries = monitoring.TrainingSummaries(
        model_dir if chief else os.path.join(model_dir, "logs", ".worker")
    )
    validation = None
    if mon.validation_data and chief:  # only the chief writes summaries: others would validate in vain
        from real_esrgan_tf.data import make_paired_dataset

        validation = make_paired_dataset(
            mon.validation_data, 1, None, t.scale, shuffle=False, repeat=False, seed=0
        )
    iterator = iter(make_dataset(config, data, strategy, run.start_step, deterministic))
    train_function = make_train_function(trainer, strategy, t.xla is XlaScope.FULL_STEP)
    progress = monitoring.ProgressLine(end, run.start_step)
    preview = None  # (lq, gt) of the image summaries, made at the first image step
    step = run.start_step
    last_time, last_step = time.monotonic(), step
    while step < end:
        metrics = train_function(iterator)
        step += 1
        if step % mon.log_every_steps == 0 or step == end:
            values = {k: float(v) for k, v in metrics.items()}
            now = time.monotonic()
            scalars = dict(values, steps_per_second=(step - last_step) / max(now - last_time, 1e-9))
            last_time, last_step = now, step
            scalars.update(_loss_scale_scalars(trainer.g_optimizer, "g"))
            if trainer.d_optimizer is not None:
                scalars.update(_loss_scale_scalars(trainer.d_optimizer, "d"))
            summaries.scalars(step, scalars)
            print_fn(progress.update(step, values))
            if not all(np.isfinite(v) for v in values.values()):
                logging.warning("non-finite loss at step %d: %s", step, values)
        if validation is not None and (step % mon.validation_every_steps == 0 or step == end):
            scores = monitoring.validate(
                trainer.ema_generator, validation, t.scale, mon.validation_max_images
            )
            summaries.scalars(step, scores)
            print_fn(f"step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        if chief and (step % mon.image_every_steps == 0 or step == end):
            if preview is None:
                preview = preview_batch(config, trainer, data, validation)
            sr = trainer.ema_generator(preview[0], training=False)
            summaries.images(step, preview[0], sr, preview[1])
        if step % config.checkpoint.every_steps == 0 or step == end:
            run.checkpoint.save()
    if chief:
        path = checkpoints.export_ema_generator(trainer, os.path.join(model_dir, EMA_EXPORT_NAME))
        print_fn(f"step {step}: EMA generator written to {path}")
    return step
