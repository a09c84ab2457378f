"""`prepare --workers N`: bounded results in flight, order independent of timing, clean stops.

Kept free of TensorFlow at import: worker processes import this module to run `_echo` and `_same`.
"""

import dataclasses
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from real_esrgan_tf import images
from real_esrgan_tf.data import crops, parallel, records
from real_esrgan_tf.data import plan as data_plan
from real_esrgan_tf.data import prepare as prep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _echo(item):
    """Worker function of the ordered_map tests: sleeps, then answers (index, its pid); -1 fails."""
    index, delay = item
    time.sleep(delay)
    if index < 0:
        raise ValueError(f"bad item {index}")
    return index, os.getpid()


def _same(item):
    return item


def _tiny_inputs(folder, photos, n):
    os.makedirs(folder)
    for i in range(n):
        images.write_image(os.path.join(folder, f"img{i:02d}.png"), photos["coffee"][i : i + 6, i : i + 8])


def _no_new_children(before):
    return [p for p in multiprocessing.active_children() if p not in before] == []


def _group_members(pgid, wait=10.0):
    """Processes still in process group `pgid` after up to `wait` s (multiprocessing's resource
    tracker ends on its own once it reads EOF from the parent it outlived)."""
    deadline = time.time() + wait
    while True:
        members = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append((int(pid), cmd))
        if not members or time.time() > deadline:
            return members
        time.sleep(0.1)


def test_ordered_map_keeps_the_input_order_whatever_finishes_first():
    # every third item is slow: later ones finish first on the other worker
    items = [(i, 0.08 if i % 3 == 0 else 0.0) for i in range(18)]
    before = multiprocessing.active_children()
    out = list(parallel.ordered_map(_echo, items, workers=2))
    assert [index for index, _ in out] == list(range(18))
    pids = {pid for _, pid in out}
    assert len(pids) == 2 and os.getpid() not in pids
    assert _no_new_children(before)


def test_ordered_map_with_large_items_and_results_does_not_deadlock():
    """The parent hands out a 2 MB item to a worker busy sending back a 2 MB result: neither pipe
    buffer holds it, so the worker must read items while it sends."""
    items = [bytes([i]) * 2_000_000 for i in range(8)]
    out = []
    thread = threading.Thread(
        target=lambda: out.extend(parallel.ordered_map(_same, items, workers=2)), daemon=True
    )
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "ordered_map deadlocked"
    assert out == items


def test_ordered_map_names_the_item_that_failed_in_a_worker_and_stops_the_rest():
    before = multiprocessing.active_children()
    items = [(i, 0.01) for i in range(6)] + [(-1, 0.0)] + [(i, 0.01) for i in range(7, 12)]
    with pytest.raises(parallel.WorkerError, match="ValueError: bad item -1") as e:
        list(parallel.ordered_map(_echo, items, workers=2))
    assert e.value.index == 6 and "Traceback" in e.value.details
    assert _no_new_children(before)


def test_ordered_map_names_the_item_of_a_worker_that_was_killed(tmp_path):
    before = multiprocessing.active_children()
    items = [(0, 0.0)] + [(i, 3.0) for i in range(1, 6)]  # worker 2 sleeps in item 1
    results = parallel.ordered_map(_echo, items, workers=2)
    try:
        _, first = next(results)
        (other,) = [p for p in multiprocessing.active_children() if p not in before and p.pid != first]
        os.kill(other.pid, signal.SIGKILL)
        with pytest.raises(parallel.WorkerError, match=r"ended unexpectedly \(killed by signal 9") as e:
            next(results)
        assert e.value.index == 1
    finally:
        results.close()
    assert _no_new_children(before)


@pytest.mark.slow
def test_results_in_flight_are_bounded_with_a_slow_writer(tmp_path, photos, monkeypatch):
    """24 one-crop segments, 2 workers, a writer far slower than the workers: no more than
    2 x IN_FLIGHT_PER_WORKER segments may be handed out (or their results held) and not yet written."""
    _tiny_inputs(tmp_path / "src", photos, 24)
    config = data_plan.PrepareConfig(inputs=(str(tmp_path / "src"),), crop=0, num_shards=3)
    bound = 2 * parallel.IN_FLIGHT_PER_WORKER
    dispatched, received, written, in_flight, held = [], [], [], [], []

    def counting_reduce(seg):  # a segment is pickled when it is handed to a worker
        dispatched.append(seg.source)
        return data_plan.Segment, tuple(getattr(seg, f.name) for f in dataclasses.fields(seg))

    def counting_setstate(result, state):  # a result is unpickled when it reaches the parent
        received.append(state["source"])
        result.__dict__.update(state)

    add = prep._ShardWriter.add

    def slow_add(writer, result):
        time.sleep(0.05)
        in_flight.append(len(dispatched) - len(written))  # this one included
        held.append(len(received) - len(written))
        add(writer, result)
        written.append(result.source)

    monkeypatch.setattr(data_plan.Segment, "__reduce__", counting_reduce)
    monkeypatch.setattr(crops.SegmentResult, "__setstate__", counting_setstate, raising=False)
    monkeypatch.setattr(prep._ShardWriter, "add", slow_add)
    manifest = prep.prepare(config, str(tmp_path / "w2"), workers=2, progress=False)
    monkeypatch.undo()
    assert len(written) == len(dispatched) == len(received) == 24
    assert max(in_flight) <= bound and max(held) <= bound, (in_flight, held)
    assert max(in_flight) == bound  # the workers were kept busy up to the bound
    assert written == sorted(written)  # plan order
    assert manifest == prep.prepare(config, str(tmp_path / "w1"), workers=1, progress=False)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_in_the_writer_stops_the_workers_and_keeps_only_finished_shards(
    tmp_path, photos, monkeypatch, error
):
    _tiny_inputs(tmp_path / "src", photos, 12)
    config = data_plan.PrepareConfig(inputs=(str(tmp_path / "src"),), crop=0, num_shards=3)
    add = prep._ShardWriter.add
    calls = []

    def failing_add(writer, result):
        calls.append(result.source)
        if len(calls) == 6:  # second shard (records 4-7), half written
            raise error("stop")
        add(writer, result)

    monkeypatch.setattr(prep._ShardWriter, "add", failing_add)
    before = multiprocessing.active_children()
    out = tmp_path / "out"
    with pytest.raises(error, match="stop"):
        prep.prepare(config, str(out), workers=2, progress=False)
    assert _no_new_children(before)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".prepare")) == [
        records.shard_name(0, 3)
    ]
    monkeypatch.undo()
    resumed = prep.prepare(config, str(out), workers=2, progress=False)
    assert resumed == prep.prepare(config, str(tmp_path / "clean"), progress=False)


def test_a_killed_worker_ends_prepare_with_an_error_not_a_hang(tmp_path, photos, monkeypatch):
    _tiny_inputs(tmp_path / "src", photos, 16)
    config = data_plan.PrepareConfig(inputs=(str(tmp_path / "src"),), crop=0, num_shards=2)
    add = prep._ShardWriter.add
    before = multiprocessing.active_children()

    def killing_add(writer, result):
        workers = [p for p in multiprocessing.active_children() if p not in before]
        if result.source == "img01.png":  # as the out-of-memory killer would
            os.kill(workers[0].pid, signal.SIGKILL)
        time.sleep(0.05)
        add(writer, result)

    monkeypatch.setattr(prep._ShardWriter, "add", killing_add)
    killed = r"a worker process ended unexpectedly \(killed by signal 9"
    with pytest.raises(data_plan.PrepareError, match=killed):
        prep.prepare(config, str(tmp_path / "out"), workers=2, progress=False)
    assert _no_new_children(before)
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith(".tmp-")]


@pytest.mark.slow
def test_ctrl_c_stops_parent_and_workers_and_the_rerun_resumes(tmp_path, photos):
    _tiny_inputs(tmp_path / "src", photos, 12)
    out = tmp_path / "out"
    args = ["--input", str(tmp_path / "src"), "--crop", "0", "--num_shards", "4", "--workers", "2"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "real_esrgan_tf.cli", "prepare", *args, "--output", str(out)]
        + ["--pause_after_shard", "30"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal job
    )
    try:
        deadline = time.time() + 120
        while not list(out.glob("shard-*.tfrecord")) and time.time() < deadline:
            assert proc.poll() is None, "prepare ended before it could be interrupted"
            time.sleep(0.05)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: SIGINT to the parent and its workers
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err.decode()
    assert b"interrupted (Ctrl-C); finished shards are kept" in err and b"Traceback" not in err
    assert _group_members(proc.pid) == []  # no worker left behind in the process group
    assert len(list(out.glob("shard-*.tfrecord"))) == 1
    config = data_plan.PrepareConfig(inputs=(str(tmp_path / "src"),), crop=0, num_shards=4)
    # the kept shard came from another process: its bytes (checksum) must match this one's too
    assert prep.prepare(config, str(out), workers=2, progress=False) == prep.prepare(
        config, str(tmp_path / "clean"), progress=False
    )
