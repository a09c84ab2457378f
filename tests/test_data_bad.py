"""Bad data: every case fails with a message naming shard (and record), or is skipped and counted."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from real_esrgan_tf import images
from real_esrgan_tf.data import plan as data_plan
from real_esrgan_tf.data import prepare as prep
from real_esrgan_tf.data.dataset import (
    DataError,
    make_paired_dataset,
    make_record_dataset,
    make_train_dataset,
)
from real_esrgan_tf.data.records import build_example
from tests.test_data_dataset import coordinate_image, crop_record, write_shard


def _example(features: dict) -> bytes:
    def feature(v):
        if isinstance(v, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))

    return tf.train.Example(
        features=tf.train.Features(feature={k: feature(v) for k, v in features.items()})
    ).SerializeToString()


GOOD = crop_record(coordinate_image(12, 14, 7))
_BASE = {"image/encoded": GOOD.encoded, "image/height": [12], "image/width": [14], "image/bit_depth": [16]}
BAD = {  # name -> (record, reason in the error)
    "mistyped key": (
        _example(dict(_BASE, **{"image/encoded": [1, 2, 3]})),
        "does not match the record schema",
    ),
    "missing key": (
        _example({k: v for k, v in _BASE.items() if k != "image/height"}),
        "does not match the record schema",
    ),
    "truncated png": (
        _example(dict(_BASE, **{"image/encoded": GOOD.encoded[: len(GOOD.encoded) - 20]})),
        "its PNG fails to decode",
    ),
    "wrong size": (_example(dict(_BASE, **{"image/height": [13]})), "decoded size differs"),
}


@pytest.fixture
def mixed_shard(tmp_path):
    """Records 0 and 5 are fine, 1 to 4 are the BAD cases in order."""
    records = [build_example(GOOD)] + [r for r, _ in BAD.values()] + [build_example(GOOD)]
    return write_shard(tmp_path / "mixed.tfrecord", records)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_record_error_names_shard_and_record(tmp_path, case):
    record, reason = BAD[case]
    shard = write_shard(tmp_path / "bad.tfrecord", [build_example(GOOD), record])
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        list(make_record_dataset(shard))
    assert f"{shard}: record 1 {reason}" in str(e.value)


def test_skip_bad_records_keeps_the_good_ones_and_counts(mixed_shard, capfd):
    kept = list(make_record_dataset(mixed_shard, skip_bad_records=True))
    assert [int(r["index"]) for r in kept] == [0, 5]
    np.testing.assert_array_equal(np.rint(kept[1]["image"].numpy() * 65535), coordinate_image(12, 14, 7))
    err = capfd.readouterr().err
    assert f"{mixed_shard}: record 3 its PNG fails to decode" in err
    assert "4 bad records skipped so far" in err


def _prepared(tmp_path, photos):
    src = tmp_path / "src"
    os.makedirs(src)
    images.write_image(str(src / "a.png"), photos["astronaut"][:64, :80])
    out = tmp_path / "out"
    prep.prepare(
        data_plan.PrepareConfig(inputs=(str(src),), crop=32, step=16, num_shards=2), str(out), progress=False
    )
    return out, sorted(str(p) for p in out.glob("*.tfrecord"))


def test_manifest_checksum_and_size_mismatch(tmp_path, photos):
    out, shards = _prepared(tmp_path, photos)
    with open(shards[1], "r+b") as f:  # same size, other bytes: only the SHA-256 can tell
        f.seek(40)
        f.write(b"\xff\xfe")
    with pytest.raises(DataError, match=f"{shards[1]}: SHA-256 differs from the one in manifest.json"):
        make_train_dataset(str(out / "*.tfrecord"), 2, 16)
    with open(shards[0], "r+b") as f:
        f.truncate(1000)
    with pytest.raises(DataError, match=f"{shards[0]}: size 1000 differs from"):
        make_train_dataset(str(out / "*.tfrecord"), 2, 16, verify_checksums=False)


def test_truncated_or_corrupt_shard_without_manifest(tmp_path, photos, capfd):
    out, shards = _prepared(tmp_path, photos)
    with open(out / "manifest.json") as f:
        full = json.load(f)["shards"][0]["records"]
    os.unlink(out / "manifest.json")
    with open(shards[0], "r+b") as f:
        f.truncate(os.path.getsize(shards[0]) - 10)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{shards[0]}: corrupt or truncated shard"):
        for _ in make_record_dataset(shards[0]):
            pass
    kept = list(make_record_dataset(shards[0], skip_bad_records=True))
    assert len(kept) == full - 1
    assert f"{shards[0]}: corrupt or truncated shard" in capfd.readouterr().err
    with open(shards[1], "r+b") as f:  # flip a payload byte of the first record: its CRC fails
        f.seek(30)
        byte = f.read(1)
        f.seek(30)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{shards[1]}: corrupt or truncated shard"):
        for _ in make_record_dataset(shards[1]):
            pass


def test_empty_file_pattern_or_shards_are_an_error(tmp_path):
    with pytest.raises(DataError, match="matches no files"):
        make_train_dataset(str(tmp_path / "*.tfrecord"), 2, 16)
    write_shard(tmp_path / "empty.tfrecord", [])
    with pytest.raises(DataError, match="empty.tfrecord: the shards hold no records"):
        make_train_dataset(str(tmp_path / "*.tfrecord"), 2, 16)


def test_single_image_shards_given_to_the_paired_input_are_named(tmp_path, photos):
    out, shards = _prepared(tmp_path, photos)
    with pytest.raises(DataError, match=f"{shards[0]}: single-image shards .*prepare --gt DIR --lq DIR"):
        make_paired_dataset(str(out / "*.tfrecord"), 2, 16, 4)
    with pytest.raises(DataError, match="single-image shards"):
        make_record_dataset(str(out / "*.tfrecord"), paired=True)
    # without a manifest the records themselves say it
    os.unlink(out / "manifest.json")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"record 0 .*lq/\* keys"):
        for _ in make_record_dataset(shards[0], paired=True):
            pass


def test_each_input_pipeline_checks_only_the_shards_it_reads(tmp_path, photos):
    out, shards = _prepared(tmp_path, photos)
    with open(shards[1], "r+b") as f:  # same size, other bytes
        f.seek(40)
        f.write(b"\xff\xfe")

    def make(pid):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid, num_replicas_in_sync=2)
        return make_train_dataset(str(out / "*.tfrecord"), 4, 16, input_context=ctx, seed=1)

    assert next(iter(make(0)))["gt"].shape == (2, 16, 16, 3)  # shard 0 only: no need to hash shard 1
    with pytest.raises(DataError, match=f"{shards[1]}: SHA-256 differs"):
        make(1)
    # a pipeline whose shards hold nothing is an error, not an endless loop
    empty = write_shard(tmp_path / "z-empty.tfrecord", [])
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    with pytest.raises(DataError, match="input pipeline 1 of 2 gets only empty shards"):
        make_train_dataset([shards[0], empty], 4, 16, input_context=ctx, seed=1)


def test_a_prepare_output_folder_stands_for_its_shards(tmp_path, photos):
    out, shards = _prepared(tmp_path, photos)
    for folder in (str(out), str(out) + "/"):
        records = list(make_record_dataset(folder))  # not "corrupt or truncated shard" on a folder
        assert sorted({r["shard"].numpy().decode() for r in records}) == shards
    with pytest.raises(DataError, match="matches no files"):
        make_train_dataset(str(tmp_path / "src"), 2, 16)  # a folder without shards
