"""MultiWorkerMirroredStrategy for real: two `train` processes on localhost, synthetic data.

One scenario (module fixture), three checks. A 2-worker cluster (TF_CONFIG, loopback ports) runs
`real-esrgan-tf train --strategy multi_worker --deterministic` on GT shards with the degradation and
the training-pair pool inside the step (stage 1 of smoke_cpu: the stage-2 graph triples the
tracing time of every process and adds nothing distributed that the 2-replica test does not check).
Worker 1 is SIGKILLed once the chief has written its step-2 checkpoint; the cluster is restarted;
worker 1 then gets SIGTERM (preemption) and the cluster stops at one step; restarted again, it
finishes at step TOTAL_STEPS (10). Meanwhile one process runs MirroredStrategy over 2 logical CPUs
on the same global batch (replica r gets the batch that worker r reads) for 10 uninterrupted steps.

Queue 8, 2 pairs per replica and step: each replica's pool is full after step 4 and swaps from
step 5 on, so the steps after the resume draw pairs saved before it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Steps of the run. A step here takes ~0.3 s: after the step-2 checkpoint the kill must land before
# the cluster is done even when this (polling) process is scheduled late on a loaded machine; with 6
# steps a 3-second lag let the run finish first and the kill hit the chief in its exit.
TOTAL_STEPS = 10
OVERRIDES = [
    'train.stage="realesrnet"',
    f"train.total_steps={TOTAL_STEPS}",
    "degradation.queue_size=8",
    "checkpoint.every_steps=2",
    "checkpoint.keep_checkpoint_max=10",
    "monitoring.log_every_steps=1",
]
KILL_AFTER_CHECKPOINT = 2
# Cross-replica sums of 2 values are exact in any order (a + b == b + a in IEEE arithmetic); what
# remains is float32 rounding of the same math scheduled differently (grappler, collective vs local
# all-reduce, oneDNN blocking), which stays near float32 epsilon (1.2e-7) relative per step.
RELATIVE_TOLERANCE = 1e-5
# A hang is what this bounds, not speed: the chief notices the dead peer at its next collective
# (seconds) or, if it was only waiting for the peer, after `train`'s heartbeat timeout (60 s).
CHIEF_NOTICE_SECONDS = 120

REFERENCE = r"""
import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from real_esrgan_tf.data import make_train_dataset
from real_esrgan_tf.training.build import build_run
from real_esrgan_tf.training.config import load_pipeline
from real_esrgan_tf.training.strategy import make_train_function

data, model_dir, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = load_pipeline("smoke_cpu", overrides)
t = config.train
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
run = build_run(config, model_dir, strategy, resume=False)


def pipeline(worker):
    # exactly what worker `worker` of the 2-worker cluster reads (make_dataset's input context)
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
    return make_train_dataset(data, 2 * t.batch_size_per_replica, t.crop_size,
                              degradation=config.degradation, seed=t.seed, deterministic=True,
                              shuffle_buffer=t.shuffle_buffer, input_context=ctx)


def dataset_fn(_):
    # one input pipeline feeding 2 replicas hands out consecutive batches: worker 0's, worker 1's
    pairs = tf.data.Dataset.zip(pipeline(0), pipeline(1))
    one = tf.data.Dataset.from_tensors
    return pairs.flat_map(lambda a, b: one(a).concatenate(one(b)))


iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
step = make_train_function(run.trainer, strategy, jit_compile=False)
for _ in range(t.total_steps):
    step(iterator)
    run.checkpoint.save()
result = {"replicas": strategy.num_replicas_in_sync, "step": int(run.trainer.step.numpy())}
print("RESULT " + json.dumps(result))
"""


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_cluster(data, model_dir, logs, name, overrides):
    """Two `train` processes, worker 0 (the chief) and worker 1, on loopback ports."""
    addresses = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(tf_config))
        sets = [a for o in overrides for a in ("--set", o)]
        command = [sys.executable, "-m", "real_esrgan_tf.cli", "train", "--pipeline", "smoke_cpu",
                   "--data", data, "--model_dir", model_dir, "--strategy", "multi_worker",
                   "--deterministic", *sets]
        log = open(os.path.join(logs, f"{name}_worker{index}.log"), "w")
        procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    return procs


def _log(logs, name, index):
    with open(os.path.join(logs, f"{name}_worker{index}.log")) as f:
        return f.read()


def _checkpoint_steps(model_dir):
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
    return [] if state is None else [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths]


def _variables(path):
    reader = tf.train.load_checkpoint(path)
    names = [k for k in reader.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    return {k: np.asarray(reader.get_tensor(k)) for k in names}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, photos):
    from real_esrgan_tf.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("multi_worker")
    (root / "hr").mkdir()
    for name, photo in photos.items():
        Image.fromarray(photo[:96, :96]).save(root / "hr" / f"{name}.png")
    prepare(PrepareConfig(inputs=(str(root / "hr"),), crop=48, step=48, num_shards=2), str(root / "shards"),
            progress=False)
    data = str(root / "shards" / "*.tfrecord")
    # Both runs start from the same generator (fresh Keras weights differ between processes).
    from real_esrgan_tf.training.build import build_generator
    from real_esrgan_tf.training.config import load_pipeline
    from real_esrgan_tf.weights import save_generator

    keras.utils.set_random_seed(0)
    save_generator(build_generator(load_pipeline("smoke_cpu", OVERRIDES)), str(root / "init.weights.h5"))
    overrides = [*OVERRIDES, f"init.generator={root / 'init.weights.h5'}"]
    model_dir, reference_dir, logs = str(root / "run"), str(root / "reference"), str(root)
    started = time.monotonic()
    reference = subprocess.Popen(
        [sys.executable, "-c", REFERENCE, data, reference_dir, json.dumps(overrides)],
        cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    procs = _start_cluster(data, model_dir, logs, "first", overrides)
    result = {"data": data, "model_dir": model_dir, "reference_dir": reference_dir, "logs": logs}
    try:
        deadline = time.monotonic() + 400
        while KILL_AFTER_CHECKPOINT not in _checkpoint_steps(model_dir):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), (
                _log(logs, "first", 0)[-3000:]
            )
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait()
        # the chief cannot go on alone: once it has noticed (CHIEF_NOTICE_SECONDS), the cluster is restarted
        killed = time.monotonic()
        try:
            result["chief_after_peer_killed"] = procs[0].wait(timeout=CHIEF_NOTICE_SECONDS)
            result["chief_notice_seconds"] = time.monotonic() - killed
        except subprocess.TimeoutExpired:
            result["chief_after_peer_killed"] = "hung"
            result["chief_log"] = _log(logs, "first", 0)[-3000:]
            procs[0].kill()
            procs[0].wait()
        result["killed_at"] = max(_checkpoint_steps(model_dir))
        result["first_pids"] = [p.pid for p in procs]
        procs = _start_cluster(data, model_dir, logs, "second", overrides)
        result["second_pids"] = [p.pid for p in procs]
        # preemption of the non-chief host: SIGTERM to worker 1 once the chief has run a step
        deadline = time.monotonic() + 400
        while f"step {result['killed_at'] + 1}/{TOTAL_STEPS} " not in _log(logs, "second", 0):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), (
                _log(logs, "second", 0)[-3000:]
            )
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        result["second_codes"] = [p.wait(timeout=120) for p in procs]
        result["stop_seconds"] = time.monotonic() - signalled
        procs = _start_cluster(data, model_dir, logs, "third", overrides)
        result["third_pids"] = [p.pid for p in procs]
        result["third_codes"] = [p.wait(timeout=max(1, deadline + 300 - time.monotonic())) for p in procs]
        out, err = reference.communicate(timeout=max(1, deadline + 300 - time.monotonic()))
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert reference.returncode == 0 and lines, err[-3000:]
        result["reference"] = json.loads(lines[-1][len("RESULT "):])
    finally:
        for p in [*procs, reference]:
            if p.poll() is None:
                p.kill()
                p.wait()
    result["seconds"] = time.monotonic() - started
    print(f"multi-worker scenario: {result['seconds']:.0f} s, killed at checkpoint {result['killed_at']}, "
          f"chief after the peer was killed: {result['chief_after_peer_killed']} "
          f"after {result.get('chief_notice_seconds', float('nan')):.1f} s, SIGTERM to worker 1: "
          f"exit codes {result['second_codes']} after {result['stop_seconds']:.1f} s")
    return result


def _max_relative_difference(a, b):
    worst = ("", 0.0)
    for key in a:
        if key.startswith("save_counter"):  # how often each run saved, not training state
            continue
        scale = max(1.0, float(np.max(np.abs(b[key]))) if b[key].size else 1.0)
        diff = float(np.max(np.abs(a[key].astype(np.float64) - b[key]))) / scale if a[key].size else 0.0
        worst = max(worst, (key, diff), key=lambda kv: kv[1])
    return worst


@pytest.mark.slow
def test_two_workers_equal_two_mirrored_replicas_on_the_same_global_batch(scenario):
    assert scenario["reference"] == {"replicas": 2, "step": TOTAL_STEPS}
    name = f"ckpt-{KILL_AFTER_CHECKPOINT}"
    cluster = _variables(os.path.join(scenario["model_dir"], "checkpoints", name))
    mirrored = _variables(os.path.join(scenario["reference_dir"], "checkpoints", name))
    assert cluster.keys() == mirrored.keys()
    assert any(k.startswith("pool/queue_gt") for k in cluster) and any("ema_generator" in k for k in cluster)
    key, diff = _max_relative_difference(cluster, mirrored)
    print(f"2 workers vs 2 mirrored replicas at {name}: max relative diff {diff:.3g} ({key})")
    assert diff <= RELATIVE_TOLERANCE, (key, diff)
    # the pool holds one queue per replica, and they differ (a duplicated queue would be caught)
    gt = next(v for k, v in cluster.items() if k.startswith("pool/queue_gt"))
    pointer = next(v for k, v in cluster.items() if k.startswith("pool/pointer"))
    assert gt.shape[0] == 2 and pointer.tolist() == [4, 4] and not np.array_equal(gt[0, :4], gt[1, :4])


@pytest.mark.slow
def test_only_the_chief_writes_checkpoints_summaries_and_the_export(scenario):
    model_dir, logs = scenario["model_dir"], scenario["logs"]
    files = sorted(
        os.path.relpath(os.path.join(d, f), model_dir) for d, _, fs in os.walk(model_dir) for f in fs
    )
    assert not [f for f in files if ".worker" in f or os.path.basename(f).startswith(".")], files
    assert "ema_generator.weights.h5" in files
    assert {os.path.dirname(f) for f in files} == {"", "checkpoints", "logs"}, files
    # event files are named ...tfevents.TIME.HOST.PID.N.v2: one per incarnation, both by the chief
    writers = sorted(int(f.split(".")[-3]) for f in files if f.startswith("logs/"))
    chiefs = [scenario[f"{run}_pids"][0] for run in ("first", "second", "third")]
    assert writers == sorted(chiefs), writers
    assert "EMA generator written" in _log(logs, "third", 0)
    assert "EMA generator written" not in _log(logs, "third", 1)


@pytest.mark.slow
def test_sigkilled_worker_cluster_resumes_with_nothing_lost_or_duplicated(scenario):
    """Restarted, both workers start at the chief's last checkpoint; the run then ends with the
    weights, optimizer state and pools of the uninterrupted 2-replica run: the same steps, the same
    batches (data position) and the same queued pairs after the resume."""
    killed_at = scenario["killed_at"]
    # the chief notices the lost peer: one line and exit code 1 instead of a hang
    assert scenario["chief_after_peer_killed"] == 1, scenario.get("chief_log")
    assert "real-esrgan-tf train: a worker of the cluster failed" in _log(scenario["logs"], "first", 0)
    assert KILL_AFTER_CHECKPOINT <= killed_at < TOTAL_STEPS
    for index in (0, 1):
        log = _log(scenario["logs"], "second", index)
        assert f"smoke_cpu: 2 replica(s), start at step {killed_at}" in log, log[-2000:]
        assert f"step {killed_at + 1}/{TOTAL_STEPS} " in log and f"step {killed_at}/{TOTAL_STEPS} " not in log
    assert scenario["third_codes"] == [0, 0]
    cluster = _variables(os.path.join(scenario["model_dir"], "checkpoints", f"ckpt-{TOTAL_STEPS}"))
    mirrored = _variables(os.path.join(scenario["reference_dir"], "checkpoints", f"ckpt-{TOTAL_STEPS}"))
    assert int(next(v for k, v in cluster.items() if k.startswith("step/"))) == TOTAL_STEPS
    key, diff = _max_relative_difference(cluster, mirrored)
    print(f"resumed 2-worker run vs uninterrupted 2 replicas at step {TOTAL_STEPS}: "
          f"max relative diff {diff:.3g} ({key})")
    assert diff <= RELATIVE_TOLERANCE, (key, diff)


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_the_whole_cluster_at_one_step_with_a_checkpoint(scenario):
    """Preemption of the non-chief host: worker 1 gets SIGTERM, the chief learns it through the
    per-step all-reduce; both stop before the same step, the chief writes that step's checkpoint,
    both exit 143 within seconds, and the restarted cluster goes on from there (ends as checked above)."""
    logs = scenario["logs"]
    assert scenario["second_codes"] == [143, 143]
    assert scenario["stop_seconds"] < 60
    assert "SIGTERM: stopping after the current step" in _log(logs, "second", 1)
    assert "SIGTERM" not in _log(logs, "second", 0)
    stopped = []
    for index in (0, 1):
        line = [x for x in _log(logs, "second", index).splitlines() if "stopped on request" in x]
        assert len(line) == 1, _log(logs, "second", index)[-2000:]
        stopped.append(int(line[0].split(":")[0].split()[1]))
    assert stopped[0] == stopped[1] and scenario["killed_at"] < stopped[0] < TOTAL_STEPS
    assert stopped[0] in _checkpoint_steps(scenario["model_dir"])
    for index in (0, 1):
        assert f"start at step {stopped[0]}" in _log(logs, "third", index)


@pytest.mark.slow
def test_resuming_with_another_replica_count_is_one_line_error(scenario, tmp_path):
    """The pools are per replica: a 2-replica run folder does not resume on 1 replica."""
    from real_esrgan_tf.training.build import build_run
    from real_esrgan_tf.training.checkpoints import CheckpointError
    from real_esrgan_tf.training.config import load_pipeline

    with pytest.raises(CheckpointError, match="pools of 2 replicas, this run has 1: resume with 2"):
        build_run(load_pipeline("smoke_cpu", OVERRIDES), scenario["reference_dir"])
