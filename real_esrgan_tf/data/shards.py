"""Reading `prepare` shards safely: checked against manifest.json, counted, parsed with a status.

Bad data never surfaces as an anonymous TensorFlow error: shards are checked against manifest.json
(size, SHA-256) before reading, each shard's records are counted against its byte size (a
truncated or corrupt shard is named with the last good record), and each record is parsed and
decoded through `records.parse_record`, which reports a status instead of raising.
"""

from __future__ import annotations

import dataclasses
import json
import os
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


def assert_or_log(ok, message, skip_bad_records: bool):
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
        dep = assert_or_log(
            tf.logical_or(tf.logical_not(is_end), tf.equal(total, size)), message, skip_bad_records
        )
        with tf.control_dependencies([dep]):
            return tf.identity(is_end), i, r

    ds = records.concatenate(end).scan(tf.constant(0, tf.int64), count_bytes).map(check_end)
    ds = ds.filter(lambda is_end, i, r: tf.logical_not(is_end))
    if num_parts > 1:
        ds = ds.filter(lambda is_end, i, r: tf.equal(i % num_parts, part))
    return ds.map(lambda is_end, i, r: {"shard": path, "index": i, "record": r})


def read_records(
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


def checked_record(item, paired: bool, skip_bad_records: bool):
    """Parses and decodes one record: (features, ok). Strict mode fails naming shard and record."""
    parsed, status = parse_record(item["record"], paired=paired)
    ok = tf.equal(status, int(RecordStatus.OK))
    dep = assert_or_log(ok, status_message(item["shard"], item["index"], status), skip_bad_records)
    with tf.control_dependencies([dep]):
        ok = tf.identity(ok)
    return parsed, ok


def drop_bad_records(ds: tf.data.Dataset, skip_bad_records: bool) -> tf.data.Dataset:
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


