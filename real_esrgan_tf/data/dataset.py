"""tf.data input functions over `prepare` shards: training crops (+ per-example kernels) and pairs.

Every random choice of an example (crop position, flips, degradation kernels) is drawn from
`stateless_fold_in(seed, example index)`, where the index counts examples in the shuffled stream
of one input pipeline. With `deterministic=True` and a seed, the whole stream is a pure function of
the seed, so a run resumed with `start_step` sees exactly the batches it would have seen.

Bad data never surfaces as an anonymous TensorFlow error: shards are checked against manifest.json
(size, SHA-256) before reading, each shard's records are counted against its byte size (a
truncated or corrupt shard is named with the last good record), and each record is parsed and
decoded through `records.parse_record`, which reports a status instead of raising.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
from collections.abc import Sequence

import tensorflow as tf
from absl import logging

from real_esrgan_tf.data.records import (
    MANIFEST_NAME,
    SHARD_SUFFIX,
    RecordStatus,
    parse_record,
    sha256_file,
    status_message,
)

AUTOTUNE = tf.data.AUTOTUNE
_TFRECORD_OVERHEAD = 16  # bytes per record besides the payload: length, 2 CRCs


class DataError(Exception):
    """Unusable input data; the message names the file (and record) and the reason."""


@dataclasses.dataclass(frozen=True)
class ShardFile:
    path: str
    size: int


def list_shards(file_pattern: str | Sequence[str]) -> list[str]:
    """Sorted files matching the pattern(s); a folder (`prepare --output`) stands for its shards.
    No match is an error, not an empty dataset."""
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    patterns = [os.path.join(p, "*" + SHARD_SUFFIX) if p and tf.io.gfile.isdir(p) else p for p in patterns]
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    if not files:
        raise DataError(f"{', '.join(patterns) or '<no pattern>'}: matches no files")
    return files


def _manifest_entries(files: list[str]) -> dict[str, dict]:
    entries = {}
    for folder in sorted({os.path.dirname(f) for f in files}):
        path = os.path.join(folder, MANIFEST_NAME)
        if not tf.io.gfile.exists(path):
            continue
        try:
            with tf.io.gfile.GFile(path) as f:
                manifest = json.load(f)
            for shard in manifest["shards"]:
                entries[os.path.join(folder, shard["file"])] = dict(
                    shard, paired=bool(manifest.get("paired")), manifest=path
                )
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not a prepare manifest ({e})") from None
    return entries


def check_shards(
    files: list[str],
    verify_checksums: bool = True,
    skip_bad_records: bool = False,
    paired: bool = False,
    read: Sequence[str] | None = None,
) -> list[ShardFile]:
    """Sizes (always) and SHA-256 (verify_checksums) against manifest.json where one exists; with
    `paired`, shards that manifest.json says hold single images are an error. Only the shards in
    `read` (default all) are hashed: an input pipeline need not read the other pipelines' shards."""
    read = set(files if read is None else read)
    entries = _manifest_entries(files)
    checked = []
    for f in files:
        size = tf.io.gfile.stat(f).length
        entry = entries.get(f)
        if paired and entry is not None and not entry["paired"]:
            raise DataError(
                f"{f}: single-image shards ({entry['manifest']} is not paired); paired data needs "
                "shards from `prepare --gt DIR --lq DIR`"
            )
        problem = ""
        if entry is None:
            if entries:
                logging.warning("%s: not listed in %s; records are checked one by one", f, MANIFEST_NAME)
        elif size != entry["bytes"]:
            problem = f"size {size} differs from {entry['bytes']} in {MANIFEST_NAME} (truncated or replaced)"
        elif verify_checksums and f in read and sha256_file(f) != entry["sha256"]:
            problem = f"SHA-256 differs from the one in {MANIFEST_NAME} (corrupt or replaced)"
        if problem:
            if not skip_bad_records:
                raise DataError(f"{f}: {problem}")
            logging.warning("%s: %s; reading it anyway, bad records will be skipped", f, problem)
        checked.append(ShardFile(f, size))
    listed = [entries[f]["records"] for f in files if f in entries]
    if all(s.size == 0 for s in checked) or (len(listed) == len(files) and sum(listed) == 0):
        # a repeated dataset without elements would spin forever instead of failing
        raise DataError(f"{files[0]}{' ...' if len(files) > 1 else ''}: the shards hold no records")
    return checked


def _assert_or_log(ok, message, skip_bad_records: bool):
    """In strict mode fails with `message`; with skip_bad_records prints it to stderr. Returns a
    control dependency to attach to what must not run before the check."""
    if skip_bad_records:
        return tf.cond(
            ok, tf.no_op, lambda: tf.print("real-esrgan-tf data: skipping", message, output_stream=sys.stderr)
        )
    return tf.debugging.Assert(ok, [message])


def _read_shard(path, size, skip_bad_records: bool, num_parts: int = 1, part: int = 0) -> tf.data.Dataset:
    """(shard, index, serialized) of one shard; errors if its records do not add up to its size.

    num_parts/part keep records with index % num_parts == part (record-level split between pipelines).
    """
    records = tf.data.TFRecordDataset(path, buffer_size=1 << 20).ignore_errors().enumerate()
    records = records.map(lambda i, r: (i, r, False))
    end = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), tf.constant(b""), True))

    @tf.autograph.experimental.do_not_convert
    def count_bytes(total, item):
        i, r, is_end = item
        total = (
            total
            + tf.cast(tf.strings.length(r), tf.int64)
            + tf.where(is_end, tf.constant(0, tf.int64), _TFRECORD_OVERHEAD)
        )
        return total, (i, r, is_end, total)

    @tf.autograph.experimental.do_not_convert
    def check_end(i, r, is_end, total):
        message = tf.strings.join(
            [
                path,
                ": corrupt or truncated shard: only ",
                tf.strings.as_string(total),
                " of ",
                tf.strings.as_string(size),
                " bytes read as valid records",
            ]
        )
        dep = _assert_or_log(
            tf.logical_or(tf.logical_not(is_end), tf.equal(total, size)), message, skip_bad_records
        )
        with tf.control_dependencies([dep]):
            return tf.identity(is_end), i, r

    ds = records.concatenate(end).scan(tf.constant(0, tf.int64), count_bytes).map(check_end)
    ds = ds.filter(lambda is_end, i, r: tf.logical_not(is_end))
    if num_parts > 1:
        ds = ds.filter(lambda is_end, i, r: tf.equal(i % num_parts, part))
    return ds.map(lambda is_end, i, r: {"shard": path, "index": i, "record": r})


def _records(
    shards: list[ShardFile],
    *,
    shuffle: bool,
    repeat: bool,
    seed: int,
    deterministic: bool,
    cycle_length: int,
    skip_bad_records: bool,
    num_parts: int = 1,
    part: int = 0,
) -> tf.data.Dataset:
    files = tf.data.Dataset.from_tensor_slices(
        ([s.path for s in shards], tf.constant([s.size for s in shards], tf.int64))
    )
    if shuffle:
        files = files.shuffle(len(shards), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        files = files.repeat()
    return files.interleave(
        lambda p, s: _read_shard(p, s, skip_bad_records, num_parts, part),
        cycle_length=max(1, min(cycle_length, len(shards))),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )


def _checked(item, paired: bool, skip_bad_records: bool):
    """Parses and decodes one record: (features, ok). Strict mode fails naming shard and record."""
    parsed, status = parse_record(item["record"], paired=paired)
    ok = tf.equal(status, int(RecordStatus.OK))
    dep = _assert_or_log(ok, status_message(item["shard"], item["index"], status), skip_bad_records)
    with tf.control_dependencies([dep]):
        ok = tf.identity(ok)
    return parsed, ok


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


def _log_and_drop_bad(ds: tf.data.Dataset, skip_bad_records: bool) -> tf.data.Dataset:
    """Drops records that failed their checks (already logged), numbering them in the logs."""
    if not skip_bad_records:
        return ds.map(lambda features, ok: features)

    @tf.autograph.experimental.do_not_convert
    def count(n, item):
        features, ok = item
        n = n + tf.where(ok, tf.constant(0, tf.int64), 1)
        dep = tf.cond(
            ok,
            tf.no_op,
            lambda: tf.print(
                "real-esrgan-tf data:", n, "bad records skipped so far", output_stream=sys.stderr
            ),
        )
        with tf.control_dependencies([dep]):
            return n, (features, tf.identity(ok))

    return ds.scan(tf.constant(0, tf.int64), count).filter(lambda f, ok: ok).map(lambda f, ok: f)


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
    shards, num_pipelines, pipeline_id, by_file = _pipeline_shards(
        file_pattern, input_context, verify_checksums, skip_bad_records, False
    )
    batch = (
        input_context.get_per_replica_batch_size(global_batch_size) if input_context else global_batch_size
    )
    if seed is None:
        if deterministic:
            raise ValueError("deterministic=True needs a seed")
        seed = secrets.randbelow(2**31)
        logging.info("train dataset seed: %d", seed)
    records = _records(
        shards,
        shuffle=True,
        repeat=repeat,
        seed=seed + 7919 * pipeline_id,
        deterministic=deterministic,
        cycle_length=cycle_length,
        skip_bad_records=skip_bad_records,
        num_parts=1 if by_file else num_pipelines,
        part=0 if by_file else pipeline_id,
    )
    records = records.shuffle(
        shuffle_buffer, seed=seed + 7919 * pipeline_id + 1, reshuffle_each_iteration=True
    )
    records = records.enumerate()
    if start_step:
        records = records.skip(start_step * _records_per_step(input_context, batch))
    base = _base_seed(seed, pipeline_id)

    @tf.autograph.experimental.do_not_convert
    def example(index, item):
        parsed, ok = _checked(item, paired=False, skip_bad_records=skip_bad_records)
        image = tf.cond(ok, lambda: parsed["image"], lambda: tf.zeros([gt_size, gt_size, 3]))
        s = tf.random.experimental.stateless_fold_in(base, index)
        fold = lambda k: tf.random.experimental.stateless_fold_in(s, k)
        out = {"gt": _random_crop(image, gt_size, fold(1), _flips(fold(2), use_hflip, use_rot90))}
        if degradation is not None:
            from real_esrgan_tf.degradations import sample_kernels

            out.update(sample_kernels(degradation, fold(3)))
        return out, ok

    ds = records.map(example, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = _log_and_drop_bad(ds, skip_bad_records)
    ds = ds.batch(batch, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(AUTOTUNE).with_options(_options(deterministic))


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
    shards, num_pipelines, pipeline_id, by_file = _pipeline_shards(
        file_pattern, input_context, verify_checksums, skip_bad_records, True
    )
    batch = (
        input_context.get_per_replica_batch_size(global_batch_size) if input_context else global_batch_size
    )
    if seed is None:
        if deterministic:
            raise ValueError("deterministic=True needs a seed")
        seed = secrets.randbelow(2**31)
    records = _records(
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
    base = _base_seed(seed, pipeline_id)

    @tf.autograph.experimental.do_not_convert
    def example(index, item):
        parsed, ok = _checked(item, paired=True, skip_bad_records=skip_bad_records)
        gt, lq = parsed["image"], parsed["lq"]
        scale_ok = tf.reduce_all(tf.equal(tf.shape(gt)[:2], tf.shape(lq)[:2] * scale))
        dep = _assert_or_log(
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

    ds = records.map(example, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = _log_and_drop_bad(ds, skip_bad_records)
    ds = ds.batch(batch, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(AUTOTUNE).with_options(_options(deterministic))


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
    records = _records(
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
        parsed, ok = _checked(item, paired=paired, skip_bad_records=skip_bad_records)
        return dict(parsed, shard=item["shard"], index=item["index"]), ok

    ds = records.map(example, num_parallel_calls=AUTOTUNE, deterministic=True)
    return _log_and_drop_bad(ds, skip_bad_records).prefetch(AUTOTUNE)
