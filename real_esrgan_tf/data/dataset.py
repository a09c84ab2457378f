"""tf.data input functions over `prepare` shards: training crops (+ per-example kernels) and pairs.

Every random choice of an example (crop position, flips, degradation kernels) is drawn from
`stateless_fold_in(seed, example index)`, where the index counts examples in the shuffled stream
of one input pipeline. With `deterministic=True` and a seed, the whole stream is a pure function of
the seed, so a run resumed with `start_step` sees exactly the batches it would have seen. Shards are
read through `data.shards` (checked, counted, parsed with a status).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import tensorflow as tf
from absl import logging

from real_esrgan_tf.data.shards import (
    AUTOTUNE,
    DataError,
    assert_or_log,
    check_shards,
    checked_record,
    drop_bad_records,
    list_shards,
    read_records,
)


def _reflect_indices(start, length: int, size, symmetric: bool, reverse):
    """Indices start..start+length-1 into an axis of `size`, mirrored past the end (reflect-101 as
    cv2.BORDER_REFLECT_101, or symmetric, which keeps GT and LQ aligned), reversed for a flip."""
    i = start + tf.range(length)
    if symmetric:
        period = 2 * size
        j = i % period
        j = tf.where(j >= size, period - 1 - j, j)
    else:
        period = tf.maximum(2 * (size - 1), 1)
        j = i % period
        j = tf.where(j >= size, period - j, j)
    return tf.cond(reverse, lambda: tf.reverse(j, [0]), lambda: j)


def _flips(seed, use_hflip: bool, use_rot90: bool):
    """basicsr `augment`: hflip, and with rotation also vflip and a transpose, each with p 0.5."""
    u = tf.random.stateless_uniform([3], seed=seed)
    no = tf.constant(False)
    hflip = tf.less(u[0], 0.5) if use_hflip else no
    vflip = tf.less(u[1], 0.5) if use_rot90 else no
    transpose = tf.less(u[2], 0.5) if use_rot90 else no
    return hflip, vflip, transpose


def _random_crop(image, size: int, seed, flips, symmetric: bool = False, scale: int = 1, lq=None):
    """Random size x size crop (reflect-padded bottom/right when smaller), flipped; with `lq`, the
    aligned (size/scale)^2 LQ crop at the GT position / scale, flipped the same way."""
    hflip, vflip, transpose = flips
    ref = image if lq is None else lq
    crop = size // scale
    h, w = tf.shape(ref)[0], tf.shape(ref)[1]
    top = tf.random.stateless_uniform(
        [], seed=seed, minval=0, maxval=tf.maximum(h - crop, 0) + 1, dtype=tf.int32
    )
    left = tf.random.stateless_uniform(
        [],
        seed=tf.random.experimental.stateless_fold_in(seed, 1),
        minval=0,
        maxval=tf.maximum(w - crop, 0) + 1,
        dtype=tf.int32,
    )

    def take(x, s, length):
        rows = _reflect_indices(top * s, length, tf.shape(x)[0], symmetric, vflip)
        cols = _reflect_indices(left * s, length, tf.shape(x)[1], symmetric, hflip)
        out = tf.gather(tf.gather(x, rows, axis=0), cols, axis=1)
        out = tf.cond(transpose, lambda: tf.transpose(out, [1, 0, 2]), lambda: out)
        return tf.ensure_shape(out, [length, length, 3])

    if lq is None:
        return take(image, 1, size)
    return take(image, scale, size), take(lq, 1, crop)


def _base_seed(seed: int, pipeline: int):
    return tf.constant([seed, pipeline], tf.int64)


def _pipeline(input_context, num_shards: int):
    """(number of pipelines, this pipeline's id, split by file?) from a tf.distribute InputContext."""
    if input_context is None or input_context.num_input_pipelines == 1:
        return 1, 0, True
    n, pid = input_context.num_input_pipelines, input_context.input_pipeline_id
    if num_shards < n:
        logging.warning(
            "%d shards for %d input pipelines: splitting by record, each pipeline reads every shard",
            num_shards,
            n,
        )
        return n, pid, False
    return n, pid, True


def _records_per_step(input_context, batch: int) -> int:
    """Records one input pipeline gives per train step: its per-replica batch times the replicas it
    feeds (tf.distribute pulls one batch per local replica, e.g. 2 under a 2-GPU MirroredStrategy)."""
    if input_context is None:
        return batch
    return batch * max(1, input_context.num_replicas_in_sync // input_context.num_input_pipelines)


def _pipeline_shards(file_pattern, input_context, verify_checksums, skip_bad_records, paired):
    """(this input pipeline's checked shards, number of pipelines, pipeline id, split by file?)."""
    files = list_shards(file_pattern)
    num_pipelines, pipeline_id, by_file = _pipeline(input_context, len(files))
    mine = files[pipeline_id::num_pipelines] if by_file and num_pipelines > 1 else files
    shards = check_shards(files, verify_checksums, skip_bad_records, paired=paired, read=mine)
    keep = set(mine)
    shards = [s for s in shards if s.path in keep]
    if all(s.size == 0 for s in shards):  # a repeated dataset without elements would spin forever
        raise DataError(
            f"{shards[0].path}{' ...' if len(shards) > 1 else ''}: input pipeline {pipeline_id} of "
            f"{num_pipelines} gets only empty shards"
        )
    return shards, num_pipelines, pipeline_id, by_file


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    return options


def _seeded_records(
    file_pattern,
    global_batch_size: int,
    input_context,
    *,
    paired: bool,
    seed: int | None,
    deterministic: bool,
    shuffle: bool,
    shuffle_buffer: int,
    cycle_length: int,
    start_step: int,
    repeat: bool,
    skip_bad_records: bool,
    verify_checksums: bool,
):
    """(enumerated records of this input pipeline, per-replica batch, base stateless seed [2]).

    The one reading path of both training datasets: this pipeline's checked shards, interleaved and
    shuffled from `seed` (+ 7919 x pipeline id), numbered so that element i draws its crop and flips
    from fold_in(base seed, i), and skipped to `start_step` for an exact resume.
    """
    shards, num_pipelines, pipeline_id, by_file = _pipeline_shards(
        file_pattern, input_context, verify_checksums, skip_bad_records, paired
    )
    batch = (
        input_context.get_per_replica_batch_size(global_batch_size) if input_context else global_batch_size
    )
    if seed is None:
        if deterministic:
            raise ValueError("deterministic=True needs a seed")
        seed = secrets.randbelow(2**31)
        logging.info("%s dataset seed: %d", "paired" if paired else "train", seed)
    records = read_records(
        shards,
        shuffle=shuffle,
        repeat=repeat,
        seed=seed + 7919 * pipeline_id,
        deterministic=deterministic,
        cycle_length=cycle_length if shuffle else 1,
        skip_bad_records=skip_bad_records,
        num_parts=1 if by_file else num_pipelines,
        part=0 if by_file else pipeline_id,
    )
    if shuffle:
        records = records.shuffle(
            shuffle_buffer, seed=seed + 7919 * pipeline_id + 1, reshuffle_each_iteration=True
        )
    records = records.enumerate()
    if start_step:
        records = records.skip(start_step * _records_per_step(input_context, batch))
    return records, batch, _base_seed(seed, pipeline_id)


def _batched(records, example, batch: int, deterministic: bool, skip_bad_records: bool) -> tf.data.Dataset:
    """Map `example` (-> (element, ok)), drop (and log) bad records, batch, prefetch."""
    ds = records.map(example, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = drop_bad_records(ds, skip_bad_records)
    ds = ds.batch(batch, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(AUTOTUNE).with_options(_options(deterministic))


def make_train_dataset(
    file_pattern: str | Sequence[str],
    global_batch_size: int,
    gt_size: int,
    *,
    degradation=None,
    use_hflip: bool = True,
    use_rot90: bool = False,
    seed: int | None = None,
    deterministic: bool = False,
    shuffle_buffer: int = 512,
    cycle_length: int = 8,
    start_step: int = 0,
    repeat: bool = True,
    skip_bad_records: bool = False,
    verify_checksums: bool = True,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Batches {"gt": float32 [B, gt_size, gt_size, 3] in [0, 1]} (+ "kernel1", "kernel2",
    "sinc_kernel" [B, 21, 21] when `degradation` is a DegradationConfig), B the per-replica batch.

    Crops smaller than gt_size are reflect-padded (bottom/right, as the official crop_pad_size
    step). The official recipe crops 400 (its crop_pad_size) here and 256 after the degradation.
    """
    records, batch, base = _seeded_records(
        file_pattern, global_batch_size, input_context, paired=False, seed=seed, deterministic=deterministic,
        shuffle=True, shuffle_buffer=shuffle_buffer, cycle_length=cycle_length, start_step=start_step,
        repeat=repeat, skip_bad_records=skip_bad_records, verify_checksums=verify_checksums,
    )

    @tf.autograph.experimental.do_not_convert
    def example(index, item):
        parsed, ok = checked_record(item, paired=False, skip_bad_records=skip_bad_records)
        image = tf.cond(ok, lambda: parsed["image"], lambda: tf.zeros([gt_size, gt_size, 3]))
        s = tf.random.experimental.stateless_fold_in(base, index)
        fold = lambda k: tf.random.experimental.stateless_fold_in(s, k)
        out = {"gt": _random_crop(image, gt_size, fold(1), _flips(fold(2), use_hflip, use_rot90))}
        if degradation is not None:
            from real_esrgan_tf.degradations import sample_kernels

            out.update(sample_kernels(degradation, fold(3)))
        return out, ok

    return _batched(records, example, batch, deterministic, skip_bad_records)


def make_paired_dataset(
    file_pattern: str | Sequence[str],
    global_batch_size: int,
    gt_size: int | None,
    scale: int,
    *,
    use_hflip: bool = True,
    use_rot90: bool = False,
    seed: int | None = None,
    deterministic: bool = False,
    shuffle: bool = True,
    shuffle_buffer: int = 256,
    cycle_length: int = 8,
    start_step: int = 0,
    repeat: bool = True,
    skip_bad_records: bool = False,
    verify_checksums: bool = True,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Batches {"gt": [B, gt_size, gt_size, 3], "lq": [B, gt_size/scale, gt_size/scale, 3]} from
    paired shards, with the official paired random crop (LQ position x scale) and the same flips.

    gt_size None keeps whole pairs (validation: batch 1, shuffle False, repeat False). Pairs smaller
    than the crop are padded by symmetric reflection, which keeps GT and LQ aligned.
    """
    if gt_size is not None and gt_size % scale:
        raise ValueError(f"gt_size {gt_size} is not a multiple of scale {scale}")
    records, batch, base = _seeded_records(
        file_pattern, global_batch_size, input_context, paired=True, seed=seed, deterministic=deterministic,
        shuffle=shuffle, shuffle_buffer=shuffle_buffer, cycle_length=cycle_length, start_step=start_step,
        repeat=repeat, skip_bad_records=skip_bad_records, verify_checksums=verify_checksums,
    )

    @tf.autograph.experimental.do_not_convert
    def example(index, item):
        parsed, ok = checked_record(item, paired=True, skip_bad_records=skip_bad_records)
        gt, lq = parsed["image"], parsed["lq"]
        scale_ok = tf.reduce_all(tf.equal(tf.shape(gt)[:2], tf.shape(lq)[:2] * scale))
        dep = assert_or_log(
            tf.logical_or(tf.logical_not(ok), scale_ok),
            tf.strings.join(
                [
                    item["shard"],
                    ": record ",
                    tf.strings.as_string(item["index"]),
                    f" GT size is not {scale} x LQ size",
                ]
            ),
            skip_bad_records,
        )
        with tf.control_dependencies([dep]):
            ok = tf.logical_and(ok, scale_ok)
        if gt_size is None:
            return {"gt": gt, "lq": lq}, ok
        gt = tf.cond(ok, lambda: gt, lambda: tf.zeros([gt_size, gt_size, 3]))
        lq = tf.cond(ok, lambda: lq, lambda: tf.zeros([gt_size // scale, gt_size // scale, 3]))
        s = tf.random.experimental.stateless_fold_in(base, index)
        fold = lambda k: tf.random.experimental.stateless_fold_in(s, k)
        gt, lq = _random_crop(
            gt, gt_size, fold(1), _flips(fold(2), use_hflip, use_rot90), symmetric=True, scale=scale, lq=lq
        )
        return {"gt": gt, "lq": lq}, ok

    return _batched(records, example, batch, deterministic, skip_bad_records)


def make_record_dataset(
    file_pattern: str | Sequence[str],
    *,
    paired: bool = False,
    skip_bad_records: bool = False,
    verify_checksums: bool = True,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Every record once, in shard order, unbatched: decoded float32 "image" (and "lq") [H, W, 3]
    plus the stored metadata ("image/source", "image/crop_box", ...) and "shard", "index"."""
    shards, num_pipelines, pipeline_id, by_file = _pipeline_shards(
        file_pattern, input_context, verify_checksums, skip_bad_records, paired
    )
    records = read_records(
        shards,
        shuffle=False,
        repeat=False,
        seed=0,
        deterministic=True,
        cycle_length=1,
        skip_bad_records=skip_bad_records,
        num_parts=1 if by_file else num_pipelines,
        part=0 if by_file else pipeline_id,
    )

    @tf.autograph.experimental.do_not_convert
    def example(item):
        parsed, ok = checked_record(item, paired=paired, skip_bad_records=skip_bad_records)
        return dict(parsed, shard=item["shard"], index=item["index"]), ok

    ds = records.map(example, num_parallel_calls=AUTOTUNE, deterministic=True)
    return drop_bad_records(ds, skip_bad_records).prefetch(AUTOTUNE)

