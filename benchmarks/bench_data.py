"""Input pipeline speed: GT crops/s (batch 12, 256x256 from 400x400 PNG shards) and `prepare` s/MP.

Prints ONE JSON line. Medians of several runs; the reference, run side by side in the same process,
is a bare tf.data pipeline (TFRecordDataset -> parse -> decode_png -> random_crop -> batch) without
our per-record checks, seeds and kernels, so the difference is what those cost.
Target: >= 3x the crops/s one accelerator consumes at the official batch (12 crops per ~0.5 s
iteration on a V100 = 24 crops/s, so 72 crops/s).

    python benchmarks/bench_data.py [--batches 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

OFFICIAL_CROPS_PER_S = 12 / 0.5


def _source_images(folder: str, count: int) -> float:
    """DIV2K-sized (1356 x 2040) mosaics of real photographs; returns megapixels written."""
    from skimage import data

    from real_esrgan_tf import images

    photos = [
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        np.repeat(data.camera()[..., None], 3, -1),
    ]
    rng = np.random.default_rng(0)
    mp = 0.0
    for i in range(count):
        canvas = np.zeros((1356, 2040, 3), np.uint8)
        for y in range(0, 1356, 250):
            for x in range(0, 2040, 300):
                p = photos[rng.integers(len(photos))]
                t, left = rng.integers(0, p.shape[0] - 250 + 1), rng.integers(0, p.shape[1] - 300 + 1)
                tile = p[t : t + 250, left : left + 300]
                tile = tile[:, ::-1] if rng.random() < 0.5 else tile
                canvas[y : y + 250, x : x + 300] = tile[: 1356 - y, : 2040 - x]
        images.write_image(os.path.join(folder, f"img{i:02d}.png"), canvas)
        mp += canvas.shape[0] * canvas.shape[1] / 1e6
    return mp


def _time_prepare(src: str, out_root: str, workers: int, runs: int) -> list[float]:
    from real_esrgan_tf.data.prepare import PrepareConfig, prepare

    times = []
    for r in range(runs):
        t = time.perf_counter()
        prepare(
            PrepareConfig(inputs=(src,), num_shards=4),
            os.path.join(out_root, f"w{workers}_{r}"),
            workers=workers,
            progress=False,
        )
        times.append(time.perf_counter() - t)
    return times


def _reference_dataset(pattern: str, batch: int, size: int):
    import tensorflow as tf

    schema = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}

    def decode(r):
        img = tf.io.decode_png(tf.io.parse_single_example(r, schema)["image/encoded"], channels=3)
        img = tf.image.random_crop(tf.cast(img, tf.float32) / 255.0, [size, size, 3])
        return {"gt": tf.image.random_flip_left_right(img)}

    files = tf.data.Dataset.list_files(pattern, shuffle=True).repeat()
    ds = files.interleave(tf.data.TFRecordDataset, cycle_length=4, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.shuffle(512).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _crops_per_s(datasets: dict, batches: int, runs: int, batch: int) -> dict[str, list[float]]:
    """Runs the pipelines in turn, run after run, so a busy machine slows them alike."""
    iterators = {name: iter(ds) for name, ds in datasets.items()}
    for it in iterators.values():
        for _ in range(5):  # warm-up: fills the shuffle buffer, tunes AUTOTUNE
            next(it)
    rates = {name: [] for name in datasets}
    for _ in range(runs):
        for name, it in iterators.items():
            t = time.perf_counter()
            for _ in range(batches):
                next(it)["gt"].numpy()
            rates[name].append(batches * batch / (time.perf_counter() - t))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=3)
    args = parser.parse_args()
    from real_esrgan_tf.data.dataset import make_train_dataset
    from real_esrgan_tf.degradations import DegradationConfig

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        os.makedirs(src)
        mp = _source_images(src, args.images)
        prep1 = _time_prepare(src, tmp, 1, args.runs)
        prep2 = _time_prepare(src, tmp, 2, args.runs)
        pattern = os.path.join(tmp, "w1_0", "*.tfrecord")
        with open(os.path.join(tmp, "w1_0", "manifest.json")) as f:
            crops = json.load(f)["total_records"]
        datasets = {
            "ours": make_train_dataset(pattern, 12, 256, degradation=DegradationConfig(), seed=0),
            "deterministic": make_train_dataset(
                pattern, 12, 256, degradation=DegradationConfig(), seed=0, deterministic=True
            ),
            "reference": _reference_dataset(pattern, 12, 256),
        }
        rates = _crops_per_s(datasets, args.batches, args.runs, 12)
    crops_per_s = statistics.median(rates["ours"])
    print(
        json.dumps(
            {
                "benchmark": "data",
                "machine": f"{os.cpu_count()} cores, no GPU",
                "crops_per_s": round(crops_per_s, 1),
                "crops_per_s_deterministic": round(statistics.median(rates["deterministic"]), 1),
                "reference_bare_tf_data_crops_per_s": round(statistics.median(rates["reference"]), 1),
                "batch": 12,
                "gt_size": 256,
                "with_kernels": True,
                "shard_crops": crops,
                "prepare_s_per_megapixel_1_worker": round(statistics.median(prep1) / mp, 3),
                "prepare_s_per_megapixel_2_workers": round(statistics.median(prep2) / mp, 3),
                "prepare_megapixels": round(mp, 2),
                "train_step_crops_per_s_official_gpu": OFFICIAL_CROPS_PER_S,
                "ratio_to_train_step": round(crops_per_s / OFFICIAL_CROPS_PER_S, 2),
                "target_ratio": 3.0,
            }
        )
    )


if __name__ == "__main__":
    main()
