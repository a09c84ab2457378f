"""`real-esrgan-tf train`: train a generator from a pipeline file.

    real-esrgan-tf train --pipeline pipelines/realesrgan_x4plus.toml --data 'shards/*.tfrecord' \
        --model_dir runs/x4plus [--strategy mirrored] [--set train.total_steps=1000 --set ...]

Resumes from the newest checkpoint in --model_dir unless --noresume. At the end the EMA generator
is written to MODEL_DIR/ema_generator.weights.h5 (`upscale --model` loads it).
"""

from __future__ import annotations

import sys

from absl import flags

from real_esrgan_tf.training.config import StrategyKind


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


def run(fv: flags.FlagValues) -> int:
    from real_esrgan_tf.training.config import ConfigError, load_pipeline

    try:
        config = load_pipeline(fv.pipeline, fv.set)
    except ConfigError as e:
        print(f"real-esrgan-tf train: {e}", file=sys.stderr)
        return 2

    from real_esrgan_tf.data import DataError
    from real_esrgan_tf.training.build import build_run
    from real_esrgan_tf.training.checkpoints import CheckpointError
    from real_esrgan_tf.training.loop import train
    from real_esrgan_tf.training.losses import VGGWeightsError
    from real_esrgan_tf.training.strategy import StrategyError, make_strategy
    from real_esrgan_tf.weights import InitError, WeightsError

    try:
        strategy = make_strategy(fv.strategy, fv.tpu)
        run_ = build_run(config, fv.model_dir, strategy, resume=fv.resume)
        print(
            f"{config.name}: {strategy.num_replicas_in_sync} replica(s), start at step {run_.start_step}",
            flush=True,
        )
        train(
            run_,
            fv.data,
            fv.model_dir,
            max_steps=fv.max_steps,
            deterministic=fv.deterministic,
            print_fn=lambda line: print(line, flush=True),
        )
    except (StrategyError, VGGWeightsError, WeightsError, InitError, DataError, CheckpointError) as e:
        print(f"real-esrgan-tf train: {e}", file=sys.stderr)
        return 1
    return 0
