"""`real-esrgan-tf train`: train a generator from a pipeline file.

    real-esrgan-tf train --pipeline pipelines/realesrgan_x4plus.toml --data 'shards/*.tfrecord' \
        --model_dir runs/x4plus [--strategy mirrored] [--set train.total_steps=1000 --set ...]

Resumes from the newest checkpoint in --model_dir unless --noresume. At the end the EMA generator
is written to MODEL_DIR/ema_generator.weights.h5 (`upscale --model` loads it).

Ctrl-C or SIGTERM (a cluster preempting the job): every worker stops after the current step, a
checkpoint of that step is written and the exit code is 130 / 143; the same command resumes there.
A worker stopped because another one was signalled exits 143 too. A worker that loses a peer
(killed, host gone) prints one line and exits 1, mostly within seconds (a collective fails), at the
latest after --heartbeat_timeout seconds without a heartbeat: restart the cluster to resume.
"""

from __future__ import annotations

import os
import signal
import sys

from absl import flags, logging

from real_esrgan_tf.cli.signals import StopRequest, exit_code
from real_esrgan_tf.training.config import DEFAULT_HEARTBEAT_TIMEOUT_SECONDS, StrategyKind


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("pipeline", None, "Pipeline file (pipelines/NAME.toml) or NAME.", flag_values=fv)
    flags.DEFINE_string("data", None, "TFRecord shards (file pattern) written by `prepare`.", flag_values=fv)
    flags.DEFINE_string(
        "model_dir", None, "Run folder: checkpoints, TensorBoard logs, export.", flag_values=fv
    )
    flags.DEFINE_enum_class(
        "strategy", StrategyKind.DEFAULT, StrategyKind, "Distribution strategy.", flag_values=fv
    )
    flags.DEFINE_string(
        "tpu", "", "TPU name or address for --strategy tpu (empty: auto-detect).", flag_values=fv
    )
    flags.DEFINE_float(
        "heartbeat_timeout",
        DEFAULT_HEARTBEAT_TIMEOUT_SECONDS,
        "multi_worker: seconds without a heartbeat before a worker counts as lost (TF's own: 10).",
        flag_values=fv,
    )
    flags.DEFINE_multi_string(
        "set", [], "Override a pipeline value: --set train.total_steps=1000.", flag_values=fv
    )
    flags.DEFINE_integer("max_steps", None, "Stop after this many steps in this invocation.", flag_values=fv)
    flags.DEFINE_boolean(
        "resume", True, "Continue from the newest checkpoint in --model_dir.", flag_values=fv
    )
    flags.DEFINE_boolean("deterministic", False, "Deterministic tf.data order (slower).", flag_values=fv)
    for name in ("pipeline", "data", "model_dir"):
        flags.mark_flag_as_required(name, flag_values=fv)


def _warn_slow_precision(policy: str) -> None:
    """One warning line when train.precision is a mixed policy this device does not compute natively."""
    from real_esrgan_tf.serve.precision import detect_device, training_precision_warning

    warning = training_precision_warning(policy, detect_device())
    if warning:
        print(f"real-esrgan-tf train: warning: train.precision {warning}", file=sys.stderr, flush=True)


def run(fv: flags.FlagValues) -> int:
    from real_esrgan_tf.training.config import ConfigError, load_pipeline

    try:
        config = load_pipeline(fv.pipeline, fv.set)
    except ConfigError as e:
        print(f"real-esrgan-tf train: {e}", file=sys.stderr)
        return 2

    import tensorflow as tf

    from real_esrgan_tf.data import DataError
    from real_esrgan_tf.training.build import build_run
    from real_esrgan_tf.training.checkpoints import CheckpointError
    from real_esrgan_tf.training.loop import last_step, train
    from real_esrgan_tf.training.losses import VGGWeightsError
    from real_esrgan_tf.training.strategy import StrategyError, make_strategy
    from real_esrgan_tf.weights import InitError, WeightsError

    # What a collective raises when a peer process died or the network dropped (MultiWorkerMirrored).
    lost_worker_errors = (
        tf.errors.UnavailableError,
        tf.errors.AbortedError,
        tf.errors.CancelledError,
        tf.errors.DeadlineExceededError,
    )
    stop = StopRequest("stopping after the current step, then writing a checkpoint")
    try:
        # Before the handlers: MultiWorkerMirroredStrategy starts TensorFlow's coordination service,
        # whose preemption notifier takes SIGTERM over at the C level (it would swallow it unseen).
        strategy = make_strategy(fv.strategy, fv.tpu, fv.heartbeat_timeout)
        _warn_slow_precision(str(config.train.precision))
        with stop:
            run_ = build_run(config, fv.model_dir, strategy, resume=fv.resume)
            print(
                f"{config.name}: {strategy.num_replicas_in_sync} replica(s), start at step {run_.start_step}",
                flush=True,
            )
            step = train(
                run_,
                fv.data,
                fv.model_dir,
                max_steps=fv.max_steps,
                deterministic=fv.deterministic,
                print_fn=lambda line: print(line, flush=True),
                should_stop=stop.requested,
            )
    except (StrategyError, VGGWeightsError, WeightsError, InitError, DataError, CheckpointError) as e:
        print(f"real-esrgan-tf train: {e}", file=sys.stderr)
        return 1
    except lost_worker_errors as e:
        if fv.strategy is not StrategyKind.MULTI_WORKER:
            raise
        logging.debug("collective error: %s", e)  # TF's message is a graph traceback, --verbose shows it
        print(
            f"real-esrgan-tf train: a worker of the cluster failed or cannot be reached "
            f"({type(e).__name__} in a collective); "
            "restart every worker: they resume from the chief's last checkpoint",
            file=sys.stderr,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        # Not `return`: at exit TensorFlow's coordination service waits for the lost worker (seen: no
        # exit after 20 s), and a cluster manager restarts a job only once all its processes ended.
        os._exit(1)
    if step < last_step(run_, fv.max_steps):
        # Stopped on request: here (stop.signum), or on another worker of the cluster (SIGTERM's code).
        return exit_code(stop.signum if stop.signum is not None else signal.SIGTERM)
    return 0
