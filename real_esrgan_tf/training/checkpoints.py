"""Training checkpoints: everything needed to continue a run bit-for-bit where it stopped.

One `tf.train.Checkpoint` holds G, D, the EMA G, both optimizers (slots, iterations, loss scale),
the step and the RNG seed (all randomness is derived from these two) and every replica's
training-pair pool. TensorFlow writes the data files first and then atomically replaces the
`checkpoint` index file, so a run killed mid-save resumes from the previous complete checkpoint.

Multi-worker: the run folder must be on a filesystem every worker sees (as for any
MultiWorkerMirroredStrategy checkpoint). Saving is collective (every worker calls `save`), only the
chief's copy is kept; every worker restores the chief's newest checkpoint, so all start at the same
step with the same weights whatever happened to a worker's local disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import tensorflow as tf

from real_esrgan_tf.weights import save_generator


class CheckpointError(RuntimeError):
    """The newest checkpoint in the run folder does not belong to this pipeline (one line)."""


class PoolReplicas(tf.Module):
    """Every replica's training-pair pool, gathered into host variables [replicas, ...] for the
    checkpoint (the pool's own variables are per replica: saving them directly keeps only replica 0's).

    `gather()` before a save (a collective all-gather under multi-worker), `scatter()` after a restore:
    replica r gets back its own queue, so no pair is lost or duplicated by a resume. The official code
    keeps one queue per GPU process and does not save it (a resumed run starts with empty queues).
    """

    def __init__(self, pool, strategy: tf.distribute.Strategy):
        super().__init__(name="pool_replicas")
        self._pool, self._strategy = pool, strategy
        replicas = strategy.num_replicas_in_sync
        with tf.device("CPU:0"):  # outside the strategy scope: one plain copy per worker
            self.queue_lq = tf.Variable(tf.zeros([replicas, *pool.queue_lq.shape]), trainable=False)
            self.queue_gt = tf.Variable(tf.zeros([replicas, *pool.queue_gt.shape]), trainable=False)
            self.pointer = tf.Variable(tf.zeros([replicas], tf.int32), trainable=False)
        self.replicas = replicas

    def _pairs(self):
        p = self._pool
        return ((self.queue_lq, p.queue_lq), (self.queue_gt, p.queue_gt), (self.pointer, p.pointer))

    @tf.function
    def gather(self):
        per_replica = self._strategy.run(lambda: [v.read_value()[None] for _, v in self._pairs()])
        for (snapshot, _), value in zip(self._pairs(), per_replica, strict=True):
            snapshot.assign(self._strategy.gather(value, axis=0))

    @tf.function
    def scatter(self):
        def local():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            for snapshot, variable in self._pairs():
                variable.assign(tf.gather(snapshot, replica))

        self._strategy.run(local)


class TrainingCheckpoint:
    def __init__(
        self,
        trainer,
        directory: str,
        keep_checkpoint_max: int = 5,
        chief: bool = True,
        worker: str = "worker_0",
        strategy: tf.distribute.Strategy | None = None,
    ):
        """chief: writes `directory/checkpoints`; other workers write to a temporary folder that is
        deleted after each save (the save is collective: each worker must take part)."""
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
        self.pools = None
        if trainer.pool is not None and trainer.pool.queue_size:
            self.pools = PoolReplicas(trainer.pool, strategy or tf.distribute.get_strategy())
            objects["pool"] = self.pools
        self.trainer = trainer
        self.chief, self.worker = chief, worker
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.folder = os.path.join(directory, "checkpoints")
        self.manager = (
            tf.train.CheckpointManager(self.checkpoint, self.folder, max_to_keep=keep_checkpoint_max)
            if chief
            else None
        )

    @property
    def latest(self) -> str | None:
        """The chief's newest checkpoint (every worker reads the chief's folder)."""
        return tf.train.latest_checkpoint(self.folder)

    def _check_replicas(self, path: str) -> None:
        if self.pools is None:
            return
        shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
        saved = [s for k, s in shapes.items() if k.startswith("pool/pointer/")]
        if saved and not saved[0]:  # a scalar: one pool, written before every replica's was kept
            raise CheckpointError(
                f"{path} holds one training-pair pool (written by an older version that kept replica 0's "
                "only); resume it with that version or start over with --noresume"
            )
        saved = [s[0] for s in saved]
        if saved and saved[0] != self.pools.replicas:
            raise CheckpointError(
                f"{path} holds the training-pair pools of {saved[0]} replicas, this run has "
                f"{self.pools.replicas}: resume with {saved[0]} replicas (or --noresume to start over)"
            )

    def restore_latest(self) -> int | None:
        """Restore the newest checkpoint if there is one; returns its step (None: fresh start)."""
        path = self.latest
        if path is None:
            return None
        self._check_replicas(path)
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            # A different stage, model size or precision: the first line of TF's message is enough.
            reason = " ".join(str(e).split())[:200]
            raise CheckpointError(
                f"{path} does not match this pipeline ({reason}...); use another --model_dir "
                "(or --noresume to start over there, replacing its checkpoints)"
            ) from None
        if self.pools is not None:
            self.pools.scatter()
        return int(self.trainer.step.numpy())

    def save(self) -> str | None:
        """Write a checkpoint of the current step; returns its path on the chief (None elsewhere)."""
        if self.pools is not None:
            self.pools.gather()
        step = int(self.trainer.step.numpy())
        if self.chief:
            return self.manager.save(checkpoint_number=step)
        scratch = tempfile.mkdtemp(prefix=f"real-esrgan-tf-{self.worker}-")
        try:
            self.checkpoint.write(os.path.join(scratch, f"ckpt-{step}"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None


def export_ema_generator(trainer, path: str) -> str:
    """Write the EMA generator as a `.weights.h5` that `upscale --model PATH` loads."""
    save_generator(trainer.ema_generator, path)
    return path
