"""The training-pair pool: shuffles degradations across batches (resize and noise type are per batch).

Official semantics (RealESRGANModel._dequeue_and_enqueue): while the queue fills up, batches pass
through unchanged and are appended; once full, each batch swaps places with `b` queued pairs drawn
at random (the official shuffles the whole queue and swaps the first `b`, which is the same draw).
State lives in tf.Variables, so `tf.train.Checkpoint(pool=pool)` (or any trackable that holds it)
saves and restores it. Under tf.distribute the variables are per replica (SyncOnRead): each replica
keeps its own queue, as each official GPU process does; a checkpoint stores the first replica's.
"""

from __future__ import annotations

import tensorflow as tf

from real_esrgan_tf.degradations.config import DegradationConfigError


class TrainingPairPool(tf.Module):
    """`pool(lq, gt, seed) -> (lq, gt)`; lq [b, h, w, C], gt [b, H, W, C] with a static batch b.

    Give `lq_shape`/`gt_shape` (per-sample, e.g. (64, 64, 3)) to create the variables up front,
    which is needed inside `strategy.scope()`/`tf.function`; otherwise they are created on the first
    (eager) call.
    """

    def __init__(self, queue_size: int = 180, lq_shape=None, gt_shape=None, batch_size: int | None = None,
                 name: str = "training_pair_pool"):
        super().__init__(name=name)
        if queue_size < 0:
            raise DegradationConfigError(f"queue_size: {queue_size} is negative")
        self.queue_size = queue_size
        self.batch_size = batch_size
        if batch_size is not None:
            self._check_batch(batch_size)
        self.queue_lq = self.queue_gt = self.pointer = None
        if lq_shape is not None and gt_shape is not None:
            self.build(lq_shape, gt_shape)

    def _check_batch(self, batch: int) -> None:
        if batch <= 0 or (self.queue_size and self.queue_size % batch):
            raise DegradationConfigError(
                f"queue_size {self.queue_size} is not divisible by the per-replica batch size {batch}")

    def build(self, lq_shape, gt_shape) -> None:
        """Creates the zero-filled queues [queue_size, *shape] and the fill pointer."""
        local = {"synchronization": tf.VariableSynchronization.ON_READ,
                 "aggregation": tf.VariableAggregation.ONLY_FIRST_REPLICA, "trainable": False}
        with tf.name_scope(self.name):
            self.queue_lq = tf.Variable(tf.zeros([self.queue_size, *lq_shape]), name="queue_lq", **local)
            self.queue_gt = tf.Variable(tf.zeros([self.queue_size, *gt_shape]), name="queue_gt", **local)
            self.pointer = tf.Variable(0, dtype=tf.int32, name="pointer", **local)

    def __call__(self, lq, gt, seed):
        if self.queue_size == 0:
            return lq, gt
        batch = lq.shape[0]
        if batch is None:
            raise ValueError("TrainingPairPool needs a static batch size (batch with drop_remainder=True)")
        self._check_batch(batch)
        if self.queue_lq is None:
            self.build(lq.shape[1:], gt.shape[1:])

        def write(rows, new_lq, new_gt):
            # read-modify-assign instead of scatter_nd_update: SyncOnRead (per-replica) variables
            # only support assign* in replica context. A full-queue copy is cheap on accelerators.
            queue_lq, queue_gt = self.queue_lq.read_value(), self.queue_gt.read_value()
            return [self.queue_lq.assign(tf.tensor_scatter_nd_update(queue_lq, rows, new_lq)),
                    self.queue_gt.assign(tf.tensor_scatter_nd_update(queue_gt, rows, new_gt))]

        def fill():
            rows = (self.pointer.read_value() + tf.range(batch))[:, None]
            with tf.control_dependencies(write(rows, lq, gt)):
                with tf.control_dependencies([self.pointer.assign_add(batch)]):
                    return tf.identity(lq), tf.identity(gt)

        def swap():
            picks = tf.argsort(tf.random.stateless_uniform([self.queue_size], seed=seed))[:batch]
            out_lq = tf.gather(self.queue_lq.read_value(), picks)
            out_gt = tf.gather(self.queue_gt.read_value(), picks)
            with tf.control_dependencies([out_lq, out_gt]):
                updates = write(picks[:, None], lq, gt)
            with tf.control_dependencies(updates):
                return tf.identity(out_lq), tf.identity(out_gt)

        return tf.cond(self.pointer.read_value() >= self.queue_size, swap, fill)
