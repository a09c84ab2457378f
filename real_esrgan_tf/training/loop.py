"""Running a built training run: the step loop, logging, validation, checkpoints and the EMA export."""

from __future__ import annotations

import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from real_esrgan_tf.images import write_bytes_atomic
from real_esrgan_tf.training import checkpoints, monitoring
from real_esrgan_tf.training.build import TrainingRun, make_dataset, preview_batch
from real_esrgan_tf.training.config import XlaScope, pipeline_to_toml
from real_esrgan_tf.training.strategy import is_chief, make_train_function
from real_esrgan_tf.weights import EMA_EXPORT_NAME

# The resolved pipeline of the run, written into its model_dir.
RUN_CONFIG_NAME = "config.toml"


def _loss_scale_scalars(optimizer, prefix):
    """The loss scale after the step (the learning rates come with the step's metrics: the ones it used)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return {f"{prefix}_loss_scale": float(keras.ops.convert_to_numpy(optimizer.dynamic_scale))}
    return {}


def last_step(run: TrainingRun, max_steps: int | None = None) -> int:
    """The step `train(run, max_steps=...)` ends at unless it is stopped early."""
    total = run.config.train.total_steps
    return total if max_steps is None else min(total, run.start_step + max_steps)


def _make_stop_agreement(strategy):
    """local stop request (bool) -> whether any worker asked to stop (bool), the same on every worker.

    Multi-worker: a cluster may preempt one host only; every worker must still stop at the same step,
    as the train step and the checkpoint save are collectives that would wait for the missing worker
    forever. One scalar all-reduce per step (a few bytes) agrees on it. One process: no collective.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    workers = sum(len(spec.get(job, ())) for job in ("chief", "worker"))
    if workers <= 1:
        return bool

    @tf.function
    def any_worker(flag):
        votes = strategy.run(lambda f: tf.identity(f), args=(flag,))
        return strategy.reduce("SUM", votes, axis=None) > 0

    return lambda requested: bool(any_worker(tf.constant(1.0 if requested else 0.0)))


def train(
    run: TrainingRun,
    data: str,
    model_dir: str,
    max_steps: int | None = None,
    deterministic: bool = False,
    print_fn=print,
    should_stop=None,
) -> int:
    """Train from `run.start_step` to `train.total_steps` (or `max_steps` more); returns the last step.

    should_stop: `() -> bool`, polled between steps (e.g. a signal handler's flag). When it turns true
    (on any worker), every worker stops after the current step, a checkpoint of that step is written
    and the step is returned without the EMA export: rerunning resumes there.
    """
    config, trainer, strategy = run.config, run.trainer, run.strategy
    t, mon = config.train, config.monitoring
    end = last_step(run, max_steps)
    chief = is_chief(strategy)
    if chief:  # the resolved config of this run: `train --pipeline MODEL_DIR/config.toml` reproduces it
        os.makedirs(model_dir, exist_ok=True)
        write_bytes_atomic(os.path.join(model_dir, RUN_CONFIG_NAME), pipeline_to_toml(config).encode())
    agree_to_stop = _make_stop_agreement(strategy)
    should_stop = should_stop or (lambda: False)
    # Only the chief writes summaries (other workers compute the same reduced metrics).
    summaries = monitoring.TrainingSummaries(model_dir) if chief else None
    validation = None
    if mon.validation_data and chief:  # only the chief writes summaries: others would validate in vain
        from real_esrgan_tf.data import make_paired_dataset

        validation = make_paired_dataset(
            mon.validation_data, 1, None, t.scale, shuffle=False, repeat=False, seed=0
        )
    iterator = iter(make_dataset(config, data, strategy, run.start_step, deterministic))
    train_function = make_train_function(trainer, strategy, run.xla is XlaScope.FULL_STEP)
    progress = monitoring.ProgressLine(end, run.start_step)
    preview = None  # (lq, gt) of the image summaries, made at the first image step
    step = saved = run.start_step
    last_time, last_logged = time.monotonic(), step
    while step < end:
        if agree_to_stop(should_stop()):
            if step == run.start_step:
                print_fn(f"step {step}: stopped on request before the first step of this run")
                return step
            if step != saved:
                run.checkpoint.save()
            print_fn(f"step {step}: stopped on request; checkpoint of step {step} written, rerun to resume")
            return step
        metrics = train_function(iterator)
        step += 1
        if step % mon.log_every_steps == 0 or step == end:
            values = {k: float(v) for k, v in metrics.items()}
            now = time.monotonic()
            scalars = dict(values, steps_per_second=(step - last_logged) / max(now - last_time, 1e-9))
            last_time, last_logged = now, step
            scalars.update(_loss_scale_scalars(trainer.g_optimizer, "g"))
            if trainer.d_optimizer is not None:
                scalars.update(_loss_scale_scalars(trainer.d_optimizer, "d"))
            if summaries is not None:
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
            saved = step
    if chief:
        path = checkpoints.export_ema_generator(trainer, os.path.join(model_dir, EMA_EXPORT_NAME))
        print_fn(f"step {step}: EMA generator written to {path}")
    return step

