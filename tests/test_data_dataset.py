"""tf.data input functions: crop/pad/flip geometry, aligned paired crops, determinism and resume,
per-example kernels, and disjoint per-worker splits.

Images encode their own coordinates (16-bit PNG: R = row, G = column, B = image id), so every
output pixel says exactly where it came from.
"""

import numpy as np
import tensorflow as tf

from real_esrgan_tf.data.dataset import make_paired_dataset, make_train_dataset
from real_esrgan_tf.data.records import CropRecord, build_example
from real_esrgan_tf.degradations import DegradationConfig

MAX16 = 65535.0


def coordinate_image(h, w, image_id, row_div=1, col_div=1):
    rows, cols = np.meshgrid(np.arange(h) // row_div, np.arange(w) // col_div, indexing="ij")
    return np.stack([rows, cols, np.full((h, w), image_id)], -1).astype(np.uint16)


def crop_record(pixels, source="x.png"):
    return CropRecord(
        tf.io.encode_png(pixels).numpy(),
        pixels.shape[0],
        pixels.shape[1],
        16,
        source,
        "x1",
        (0, 0, pixels.shape[0], pixels.shape[1]),
    )


def write_shard(path, examples):
    """examples: serialized records (bytes) written as they are."""
    with tf.io.TFRecordWriter(str(path)) as w:
        for e in examples:
            w.write(e)
    return str(path)


def to_coords(batch):
    return np.rint(batch.numpy() * MAX16).astype(np.int64)


def reflect101(start, length, size):
    """Hand reference of cv2.BORDER_REFLECT_101 indices, written as a loop."""
    out = []
    for i in range(start, start + length):
        while i >= size:
            i = 2 * (size - 1) - i
        out.append(i)
    return out


def _untransform(crop):
    """-> (row indices, col indices, transposed) of a coordinate crop [S, S, 3]."""
    rows, cols = crop[..., 0], crop[..., 1]
    transposed = not np.all(rows == rows[:, :1])
    if transposed:
        rows, cols = rows.T, cols.T
    assert np.all(rows == rows[:, :1]) and np.all(cols == cols[:1, :])
    return rows[:, 0], cols[0, :], transposed


def test_random_crop_pads_reflect101_and_flips(tmp_path):
    big, small = coordinate_image(40, 50, 1), coordinate_image(10, 12, 2)
    pattern = write_shard(
        tmp_path / "a.tfrecord", [build_example(crop_record(big)), build_example(crop_record(small))]
    )
    ds = make_train_dataset(pattern, 4, 16, use_rot90=True, seed=5, deterministic=True, shuffle_buffer=2)
    flips = {"h": set(), "v": set(), "t": set()}
    for batch in ds.take(10):
        for crop in to_coords(batch["gt"]):
            rows, cols, transposed = _untransform(crop)
            image_id = crop[0, 0, 2]
            h, w = {1: (40, 50), 2: (10, 12)}[image_id]
            v_flip, h_flip = rows[0] > rows[-1], cols[0] > cols[-1]
            rows, cols = (rows[::-1] if v_flip else rows), (cols[::-1] if h_flip else cols)
            if image_id == 1:
                assert list(rows) == list(range(rows[0], rows[0] + 16)) and 0 <= rows[0] <= 24
                assert list(cols) == list(range(cols[0], cols[0] + 16)) and 0 <= cols[0] <= 34
            else:  # padded bottom/right as cv2.copyMakeBorder(0, pad, 0, pad, BORDER_REFLECT_101)
                assert list(rows) == reflect101(0, 16, h) == [*range(10), 8, 7, 6, 5, 4, 3]
                assert list(cols) == reflect101(0, 16, w)
            flips["h"].add(bool(h_flip))
            flips["v"].add(bool(v_flip))
            flips["t"].add(transposed)
    assert flips == {"h": {True, False}, "v": {True, False}, "t": {True, False}}


def test_paired_crops_are_aligned_under_flips_and_padding(tmp_path):
    scale = 4
    pairs = []
    for image_id, (lh, lw) in enumerate([(8, 12), (3, 5)], start=1):
        gt = coordinate_image(lh * scale, lw * scale, image_id, scale, scale)  # GT pixel -> its LQ pixel
        lq = coordinate_image(lh, lw, image_id)
        pairs.append(build_example(crop_record(gt), crop_record(lq)))
    pattern = write_shard(tmp_path / "p.tfrecord", pairs)
    ds = make_paired_dataset(
        pattern, 2, 16, scale, use_rot90=True, seed=1, deterministic=True, shuffle_buffer=2
    )
    n = 0
    for batch in ds.take(8):
        assert batch["gt"].shape == (2, 16, 16, 3) and batch["lq"].shape == (2, 4, 4, 3)
        for gt, lq in zip(to_coords(batch["gt"]), to_coords(batch["lq"]), strict=True):
            np.testing.assert_array_equal(gt, np.repeat(np.repeat(lq, scale, 0), scale, 1))
            rows, cols, _ = _untransform(lq)
            rows, cols = np.sort(rows), np.sort(cols)
            if lq[0, 0, 2] == 1:  # a window of the 8 x 12 LQ image
                assert list(rows) == list(range(rows[0], rows[0] + 4)) and rows[0] <= 4
            else:  # 3 x 5 LQ padded by symmetric reflection: rows 0 1 2 2
                assert list(rows) == [0, 1, 2, 2] and list(cols) == list(range(cols[0], cols[0] + 4))
            n += 1
    assert n == 16


def _batches(ds, n):
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def test_deterministic_mode_reproduces_and_resumes_with_kernels(tmp_path):
    records = [build_example(crop_record(coordinate_image(24 + i, 30, i))) for i in range(6)]
    pattern = [
        write_shard(tmp_path / "a.tfrecord", records[:3]),
        write_shard(tmp_path / "b.tfrecord", records[3:]),
    ]
    config = DegradationConfig()

    def make(start_step=0):
        return make_train_dataset(
            pattern,
            3,
            16,
            degradation=config,
            seed=7,
            deterministic=True,
            start_step=start_step,
            shuffle_buffer=4,
        )

    first = _batches(make(), 4)
    # a separately built pipeline resumed at step 2 continues the very same stream
    resumed = _batches(make(start_step=2), 2)
    for a, b in zip(first[2:], resumed, strict=True):
        assert sorted(b) == ["gt", "kernel1", "kernel2", "sinc_kernel"]
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    kernels = np.concatenate([b["kernel1"] for b in first])
    assert kernels.shape == (12, 21, 21)
    np.testing.assert_allclose(kernels.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    assert len({k.tobytes() for k in kernels}) == 12  # one draw per example


def _ids_seen(pattern, pipelines, **kwargs):
    seen = []
    for pid in range(pipelines):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=pipelines, input_pipeline_id=pid, num_replicas_in_sync=pipelines
        )
        ds = make_train_dataset(pattern, 2 * pipelines, 8, input_context=ctx, repeat=False, seed=3, **kwargs)
        ids = []
        for batch in ds:
            assert batch["gt"].shape[0] == 2  # the per-replica batch
            ids += list(to_coords(batch["gt"])[:, 0, 0, 2])
        seen.append(ids)
    return seen


def test_workers_see_disjoint_records_that_cover_the_set(tmp_path):
    images = [build_example(crop_record(coordinate_image(10, 10, i))) for i in range(16)]
    shards = [write_shard(tmp_path / f"s{k}.tfrecord", images[4 * k : 4 * k + 4]) for k in range(4)]
    for pattern in (str(tmp_path / "s*.tfrecord"), write_shard(tmp_path / "one.tfrecord", images)):
        a, b = _ids_seen(pattern, 2, shuffle_buffer=16)
        assert len(a) == len(set(a)) == 8 and len(b) == len(set(b)) == 8
        assert not set(a) & set(b) and set(a) | set(b) == set(range(16))
    assert len(shards) == 4


DISTRIBUTED = r"""
import sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from real_esrgan_tf.data.dataset import make_train_dataset

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
contexts = []

def dataset_fn(ctx):
    contexts.append((ctx.num_input_pipelines, ctx.num_replicas_in_sync))
    return make_train_dataset(sys.argv[1], 4, 8, input_context=ctx, seed=2, shuffle_buffer=4)

batch = next(iter(strategy.distribute_datasets_from_function(dataset_fn)))
local = [t.numpy() for t in strategy.experimental_local_results(batch["gt"])]
total = strategy.run(lambda b: tf.reduce_sum(b["gt"]), args=(batch,))
summed = float(strategy.reduce(tf.distribute.ReduceOp.SUM, total, axis=None))
print(contexts, [x.shape for x in local], abs(summed - sum(float(x.sum()) for x in local)) < 1e-3)
"""


def test_distribute_datasets_from_function_gives_per_replica_batches(tmp_path):
    import os
    import subprocess
    import sys

    images = [build_example(crop_record(coordinate_image(10, 10, i))) for i in range(8)]
    pattern = write_shard(tmp_path / "d.tfrecord", images)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=repo)
    out = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED, pattern], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[(1, 2)] [(2, 8, 8, 3), (2, 8, 8, 3)] True"


def test_start_step_resume_counts_every_replica_a_pipeline_feeds(tmp_path):
    # one input pipeline for 2 replicas (MirroredStrategy on 2 GPUs): each step takes 2 per-replica
    # batches from it, so resuming at step 1 must skip 2 batches, not 1
    ctx = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)
    singles = [build_example(crop_record(coordinate_image(10, 10, i))) for i in range(8)]
    pairs = [
        build_example(crop_record(coordinate_image(8, 8, i, 2, 2)), crop_record(coordinate_image(4, 4, i)))
        for i in range(8)
    ]
    single = write_shard(tmp_path / "s.tfrecord", singles)
    paired = write_shard(tmp_path / "p.tfrecord", pairs)
    common = dict(input_context=ctx, seed=4, deterministic=True, shuffle_buffer=8)
    for make in (
        lambda step: make_train_dataset(single, 4, 8, start_step=step, **common),
        lambda step: make_paired_dataset(paired, 4, 8, 2, start_step=step, **common),
    ):
        stream = _batches(make(0), 6)
        resumed = _batches(make(1), 4)
        assert resumed[0]["gt"].shape[0] == 2  # the per-replica batch
        for a, b in zip(stream[2:], resumed, strict=True):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
