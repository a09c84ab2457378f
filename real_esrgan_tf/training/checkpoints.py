"""Training checkpoints: everything needed to continue a run bit-for-bit where it stopped.

One `tf.train.Checkpoint` holds G, D, the EMA G, both optimizers (slots, iterations, loss scale),
the step and the RNG seed (all randomness is derived from these two) and the training-pair pool.
TensorFlow writes the data files first and then atomically replaces the `checkpoint` index file,
so a run killed mid-save resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import os

import tensorflow as tf

from real_esrgan_tf.weights import save_generator


class CheckpointError(RuntimeError):
    """The newest checkpoint in the run folder does not belong to this pipeline (one line)."""


class TrainingCheckpoint:
    def __init__(
        self,
        trainer,
        directory: str,
        keep_checkpoint_max: int = 5,
        chief: bool = True,
        worker: str = "worker_0",
    ):
        """Multi-worker: every worker must save (the save is collective); non-chief workers write to
        a scratch folder `checkpoints/.worker_N` that nobody restores from."""
        objects = {
            "generator": trainer.generator,
            "ema_generator": trainer.ema_generator,
            "g_optimizer": trainer.g_optimizer,
            "step": trainer.step,
            "rng_seed": trainer.rng_seed,
        }
        if trainer.discriminator is not None:
            objects["discriminator"] = trainer.discriminator
            objects["d_optimizer"] = trainer.d_optimizer
        if trainer.pool is not None:
            objects["pool"] = trainer.pool
        self.trainer = trainer
        self.checkpoint = tf.train.Checkpoint(**objects)
        folder = os.path.join(directory, "checkpoints")
        if not chief:
            folder = os.path.join(folder, f".{worker}")
        self.manager = tf.train.CheckpointManager(self.checkpoint, folder, max_to_keep=keep_checkpoint_max)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore_latest(self) -> int | None:
        """Restore the newest checkpoint if there is one; returns its step (None: fresh start)."""
        path = self.manager.latest_checkpoint
        if path is None:
            return None
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            # A different stage, model size or precision: the first line of TF's message is enough.
            reason = " ".join(str(e).split())[:200]
            raise CheckpointError(
                f"{path} does not match this pipeline ({reason}...); use another --model_dir "
                "(or --noresume to start over there, replacing its checkpoints)"
            ) from None
        return int(self.trainer.step.numpy())

    def save(self) -> str:
        step = int(self.trainer.step.numpy())
        return self.manager.save(checkpoint_number=step)


def export_ema_generator(trainer, path: str) -> str:
    """Write the EMA generator as a `.weights.h5` that `upscale --model PATH` loads."""
    save_generator(trainer.ema_generator, path)
    return path
