"""Image folders -> PNG sub-image crops in TFRecord shards + manifest.json.

Same recipe as the official scripts: `generate_multiscale_DF2K.py` (PIL Lanczos x0.75, x0.5, x1/3 and
a shortest-edge-400 copy) then `extract_subimages.py` (crop 400, step 200, thresh 0). Output does not
depend on `--workers`: every crop gets a global index from the sorted file list before any work
starts, shard k holds a fixed contiguous index range, and the parent writes records in that order
(workers only decode, crop and encode; at most IN_FLIGHT_PER_WORKER segments per worker are handed
out and not yet written, so memory stays bounded whatever the speed of the writer). Resumable: a
shard is written to a temp name, renamed, then its SHA-256 and count go to `.prepare_state/`; a rerun
keeps shards whose checksum still matches.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from absl import logging

from real_esrgan_tf import images
from real_esrgan_tf.data.crops import SegmentResult, process_segment
from real_esrgan_tf.data.parallel import WorkerError, ordered_map
from real_esrgan_tf.data.plan import Plan, PrepareConfig, PrepareError, config_dict, make_plan
from real_esrgan_tf.data.records import MANIFEST_NAME, SHARD_SUFFIX, sha256_file, shard_name

STATE_DIR = ".prepare_state"
MANIFEST_FORMAT = "real-esrgan-tf shards v1"

# ----------------------------------------------------------------------------- parent side


def _write_json(path: str, obj) -> None:
    images.write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def _plan_difference(previous: dict, fingerprint: dict) -> str:
    """What changed since the run whose shards are in the output folder, for the error message."""
    if (
        previous.get("config") != fingerprint["config"]
        or previous.get("num_shards") != fingerprint["num_shards"]
    ):
        return "other inputs or flags"
    old = {f[0]: f for f in previous.get("files", [])}
    for f in fingerprint["files"]:
        if old.get(f[0]) != f:
            return f"{f[0]} is new or changed since"
    return "input files removed since"


def _complete_shards(output: str, plan: Plan, overwrite: bool) -> dict[int, dict]:
    """Shards finished by an earlier run of the same plan whose bytes still match their checksum."""
    state = os.path.join(output, STATE_DIR)
    plan_path = os.path.join(state, "plan.json")
    if os.path.exists(plan_path) and not overwrite:
        with open(plan_path) as f:
            previous = json.load(f)
        if previous != plan.fingerprint:
            why = _plan_difference(previous, plan.fingerprint)
            raise PrepareError(
                f"{output}: holds shards of a different prepare run ({why}); "
                "use another --output or --overwrite"
            )
    os.makedirs(state, exist_ok=True)
    if overwrite:
        for name in os.listdir(output):
            if name.endswith(SHARD_SUFFIX) or name == MANIFEST_NAME:
                os.unlink(os.path.join(output, name))
        for name in os.listdir(state):
            os.unlink(os.path.join(state, name))
    _write_json(plan_path, plan.fingerprint)
    n = len(plan.shard_sizes)
    done = {}
    for k in range(n):
        rec_path = os.path.join(state, f"{shard_name(k, n)}.json")
        shard_path = os.path.join(output, shard_name(k, n))
        if os.path.exists(rec_path) and os.path.exists(shard_path):
            with open(rec_path) as f:
                info = json.load(f)
            if sha256_file(shard_path) == info["sha256"]:
                done[k] = info
                continue
            logging.warning("%s: checksum differs from the one recorded; rewriting it", shard_path)
        for p in (rec_path, shard_path):
            if os.path.exists(p):
                os.unlink(p)
    for name in os.listdir(output):  # temp files of a killed run
        if name.startswith(".tmp-"):
            os.unlink(os.path.join(output, name))
    return done


class _ShardWriter:
    """Writes one shard to a temp name; finish() renames it and records checksum and counts."""

    def __init__(self, output: str, k: int, n: int):
        import tensorflow as tf

        self.final = os.path.join(output, shard_name(k, n))
        self.tmp = os.path.join(output, f".tmp-{shard_name(k, n)}")
        self.record_path = os.path.join(output, STATE_DIR, f"{shard_name(k, n)}.json")
        self.writer = tf.io.TFRecordWriter(self.tmp)
        self.info = {
            "file": shard_name(k, n),
            "records": 0,
            "skipped": {},
            "gray": [],
            "alpha": [],
            "sixteen_bit": [],
        }

    def add(self, result: SegmentResult) -> None:
        from real_esrgan_tf.data.records import build_example

        if result.error:
            self.info["skipped"][result.source] = result.error
            return
        for rec in result.records:
            self.writer.write(build_example(*rec) if isinstance(rec, tuple) else build_example(rec))
        self.info["records"] += len(result.records)
        for key, flag in (
            ("gray", result.gray),
            ("alpha", result.alpha),
            ("sixteen_bit", result.sixteen_bit),
        ):
            if flag and result.source not in self.info[key]:
                self.info[key].append(result.source)

    def finish(self) -> dict:
        self.writer.close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.final)
        self.info["sha256"] = sha256_file(self.final)
        self.info["bytes"] = os.path.getsize(self.final)
        _write_json(self.record_path, self.info)
        return self.info

    def abort(self) -> None:
        """An unfinished shard after an error or Ctrl-C: close and delete its temp file."""
        self.writer.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def _manifest(config: PrepareConfig, plan: Plan, infos: list[dict]) -> dict:
    skipped = {s["path"]: s["reason"] for s in plan.skipped}
    union = {"gray": set(), "alpha": set(), "sixteen_bit": set()}
    for info in infos:
        skipped.update(info["skipped"])
        for key in union:
            union[key].update(info[key])
    return {
        "format": MANIFEST_FORMAT,
        "config": config_dict(config),
        "paired": config.paired,
        "shards": [{k: info[k] for k in ("file", "records", "sha256", "bytes")} for info in infos],
        "total_records": sum(info["records"] for info in infos),
        "skipped": [{"path": p, "reason": r} for p, r in sorted(skipped.items())],
        "gray_promoted_to_rgb": len(union["gray"]),
        "alpha_dropped": len(union["alpha"]),
        "sixteen_bit_images": len(union["sixteen_bit"]),
    }


def prepare(
    config: PrepareConfig,
    output: str,
    workers: int = 1,
    overwrite: bool = False,
    pause_after_shard: float = 0.0,
    progress: bool = True,
) -> dict:
    """Writes the shards and manifest.json of `config` into `output` (official sub-image recipe).

    Args:
      config: inputs and crop settings (`PrepareConfig`); the output bytes depend only on it.
      output: the shard folder; a folder holding a finished part of the same run is resumed.
      workers: decode/crop/encode processes (the output does not depend on it).
      overwrite: delete the shards of a different earlier run instead of refusing.
      pause_after_shard: seconds to sleep after each shard (resumability tests).
      progress: a tqdm bar over crops.
    Returns:
      The manifest (also written as manifest.json). Raises PrepareError (one line) on bad inputs.
    """
    from tqdm import tqdm

    plan = make_plan(config)
    os.makedirs(output, exist_ok=True)
    n = len(plan.shard_sizes)
    done = _complete_shards(output, plan, overwrite)
    todo = [s for s in plan.segments if s.shard not in done]
    if done:
        logging.info("resuming: %d of %d shards already complete", len(done), n)
    remaining = {}
    for s in todo:
        remaining[s.shard] = remaining.get(s.shard, 0) + 1
    infos = dict(done)
    bar = tqdm(
        total=sum(plan.shard_sizes[k] for k in remaining),
        unit="crop",
        disable=not progress,
        file=sys.stderr,
        desc="prepare",
    )
    # segments in plan order; with workers, at most IN_FLIGHT_PER_WORKER each handed out and unwritten
    results = ordered_map(process_segment, todo, workers)
    writer = None
    try:
        for result in results:
            if writer is None:
                writer = _ShardWriter(output, result.shard, n)
            writer.add(result)
            bar.update(result.planned)
            remaining[result.shard] -= 1
            if remaining[result.shard] == 0:
                infos[result.shard] = writer.finish()
                writer = None
                if pause_after_shard:
                    time.sleep(pause_after_shard)
            del result
    except WorkerError as e:
        if e.details:
            logging.error("worker traceback:\n%s", e.details.rstrip())
        where = f"{todo[e.index].source}: " if e.index is not None else ""
        raise PrepareError(f"{where}{e.reason}; finished shards are kept: rerun to resume") from None
    finally:
        results.close()  # stops the workers (at once when something went wrong)
        bar.close()
        if writer is not None:
            writer.abort()
    manifest = _manifest(config, plan, [infos[k] for k in range(n)])
    _write_json(os.path.join(output, MANIFEST_NAME), manifest)
    return manifest


