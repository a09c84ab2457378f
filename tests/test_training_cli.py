"""`real-esrgan-tf train` end to end: a run killed with SIGKILL resumes at its last checkpoint.

Stage 1 (generator only) on paired shards keeps the subprocess short; the full stage-2 step with the
real degradation and the pool is covered in test_training.py (including bit-exact resume).
"""

import contextlib
import dataclasses
import hashlib
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from real_esrgan_tf.training.build import build_run
from real_esrgan_tf.training.config import load_pipeline
from real_esrgan_tf.training.loop import train
from real_esrgan_tf.weights import EMA_EXPORT_NAME, load_generator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = [
    'train.stage="realesrnet"',
    'train.data="paired"',
    "losses.perceptual_weight=0.0",
    "losses.gan_weight=0.0",
    "train.total_steps=100000",
    "checkpoint.every_steps=3",
    "checkpoint.keep_checkpoint_max=2",
    "monitoring.log_every_steps=1",
]


@pytest.fixture(scope="module")
def paired_shards(tmp_path_factory, photos):
    from real_esrgan_tf.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("paired")
    for sub in ("gt", "lq"):
        (root / sub).mkdir()
    for name, photo in photos.items():
        gt = photo[:128, :128]
        Image.fromarray(gt).save(root / "gt" / f"{name}.png")
        lq = gt.reshape(32, 4, 32, 4, 3).mean(axis=(1, 3)).round().astype(np.uint8)
        Image.fromarray(lq).save(root / "lq" / f"{name}.png")
    config = PrepareConfig(gt=str(root / "gt"), lq=str(root / "lq"), scale=4, crop=48, step=40, num_shards=2)
    prepare(config, str(root / "shards"), progress=False)
    return str(root / "shards" / "*.tfrecord")


def _train_command(data, model_dir, *extra):
    sets = [a for o in OVERRIDES for a in ("--set", o)]
    return [
        sys.executable,
        "-m",
        "real_esrgan_tf.cli",
        "train",
        "--pipeline",
        "smoke_cpu",
        "--data",
        data,
        "--model_dir",
        model_dir,
        *sets,
        *extra,
    ]


def _digest(array):
    return array.shape, hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


@pytest.mark.slow
def test_sigkilled_run_resumes_at_its_last_checkpoint_with_identical_weights(paired_shards, tmp_path):
    model_dir = str(tmp_path / "run")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        _train_command(paired_shards, model_dir),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    index = os.path.join(model_dir, "checkpoints", "checkpoint")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            state = tf.train.get_checkpoint_state(os.path.dirname(index)) if os.path.exists(index) else None
            if state is not None and len(state.all_model_checkpoint_paths) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    latest = tf.train.latest_checkpoint(os.path.dirname(index))
    saved_step = int(latest.rsplit("-", 1)[1])
    assert saved_step >= 6 and saved_step % 3 == 0
    reader = tf.train.load_checkpoint(latest)
    keys = [k for k in reader.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    saved = {_digest(np.asarray(reader.get_tensor(k))) for k in keys}

    fresh = build_run(load_pipeline("smoke_cpu", OVERRIDES), model_dir, resume=False)
    assert fresh.start_step == 0 and _digest(fresh.trainer.generator.weights[0].numpy()) not in saved
    run = build_run(load_pipeline("smoke_cpu", OVERRIDES), model_dir)  # resume is the default
    assert run.start_step == saved_step == int(run.trainer.step.numpy())
    assert run.trainer.discriminator is None
    for model in (run.trainer.generator, run.trainer.ema_generator):
        assert all(_digest(w.numpy()) in saved for w in model.weights)
    assert not np.array_equal(
        run.trainer.generator.weights[0].numpy(), run.trainer.ema_generator.weights[0].numpy()
    )

    # The resumed run goes on from there and exports an EMA generator that `upscale` loads.
    lines = []
    run.config.monitoring = dataclasses.replace(
        run.config.monitoring,
        validation_data=paired_shards,
        validation_every_steps=1,
        validation_max_images=2,
    )
    assert train(run, paired_shards, model_dir, max_steps=2, print_fn=lines.append) == saved_step + 2
    assert any(line.startswith(f"step {saved_step + 2}: val_psnr_y ") for line in lines), lines
    assert any(
        line.startswith(f"step {saved_step + 2}/{saved_step + 2} (100.0%) | l_g_pix") for line in lines
    )
    g = load_generator(os.path.join(model_dir, EMA_EXPORT_NAME))
    assert g(np.zeros((1, 8, 8, 3), "float32")).shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(g.weights[0].numpy(), run.trainer.ema_generator.weights[0].numpy())
    assert os.listdir(os.path.join(model_dir, "logs"))


def test_bad_pipeline_key_is_one_line_error(tmp_path, capsys):
    from real_esrgan_tf.cli import main as cli

    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nbatch_size = 4\n")
    argv = [
        "real-esrgan-tf",
        "train",
        "--pipeline",
        str(bad),
        "--data",
        "x",
        "--model_dir",
        str(tmp_path / "m"),
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.toml: unknown key 'train.batch_size'" in err[0]


def _summary_tags(model_dir):
    tags = {}
    for name in os.listdir(os.path.join(model_dir, "logs")):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(model_dir, "logs", name)):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    return tags


def _summary_values(model_dir, tag):
    """{step: value} of a scalar summary over every event file of the run (resumed runs add files)."""
    values = {}
    for name in os.listdir(os.path.join(model_dir, "logs")):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(model_dir, "logs", name)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


@pytest.mark.slow
def test_logged_learning_rate_is_the_one_the_step_used_across_a_resume(paired_shards, tmp_path):
    """BasicSR logs `lrs` after `optimize_parameters`, so iteration k logs the rate it ran at. Milestone 2:
    iterations 1 and 2 run (and log) lr, 3 and 4 lr * gamma, here with the run stopped after 2
    (checkpoint) and resumed from its folder, as an uninterrupted run would."""
    overrides = [*OVERRIDES, "optimizer.milestones=[2]", "optimizer.gamma=0.5"]
    model_dir = str(tmp_path / "run")
    lines = []
    for _ in range(2):  # 2 steps and a checkpoint at the end, build again from the folder: 2 more
        run = build_run(load_pipeline("smoke_cpu", overrides), model_dir)
        train(run, paired_shards, model_dir, max_steps=2, print_fn=lines.append)
    assert run.start_step == 2
    lr = run.config.optimizer.g_lr
    assert _summary_values(model_dir, "g_learning_rate") == pytest.approx(
        {1: lr, 2: lr, 3: lr * 0.5, 4: lr * 0.5}, rel=1e-6
    )
    for step, rate in ((2, lr), (3, lr * 0.5)):  # the progress line too
        line = next(line for line in lines if line.startswith(f"step {step}/"))
        assert f"g_learning_rate {rate:.4g} " in line, line
    assert float(run.trainer.g_optimizer.learning_rate) == pytest.approx(lr * 0.5, rel=1e-6)


@pytest.mark.slow
def test_image_summaries_follow_image_every_steps_without_validation(paired_shards, tmp_path):
    """LQ | SR | GT strips every `image_every_steps` even with no validation set (a fixed batch)."""
    model_dir = str(tmp_path / "run")
    overrides = [*OVERRIDES, "monitoring.image_every_steps=2", "monitoring.log_every_steps=100"]
    run = build_run(load_pipeline("smoke_cpu", overrides), model_dir)
    assert run.config.monitoring.validation_data == ""
    train(run, paired_shards, model_dir, max_steps=5, print_fn=lambda line: None)
    assert _summary_tags(model_dir)["lq_sr_gt"] == [2, 4, 5]


def test_synthetic_preview_batch_is_degraded_and_fixed(photos, tmp_path):
    from real_esrgan_tf.data.prepare import PrepareConfig, prepare
    from real_esrgan_tf.training.build import preview_batch

    (tmp_path / "hr").mkdir()
    for name, photo in photos.items():
        Image.fromarray(photo[:96, :96]).save(tmp_path / "hr" / f"{name}.png")
    prepare(
        PrepareConfig(inputs=(str(tmp_path / "hr"),), crop=48, step=48),
        str(tmp_path / "shards"),
        progress=False,
    )
    config = load_pipeline("smoke_cpu", ['train.stage="realesrnet"'])
    run = build_run(config, str(tmp_path / "run"))
    data = str(tmp_path / "shards" / "*.tfrecord")
    lq, gt = preview_batch(config, run.trainer, data)
    assert (lq.shape, gt.shape) == ((4, 8, 8, 3), (4, 32, 32, 3))
    again = preview_batch(config, run.trainer, data)
    np.testing.assert_array_equal(again[0], lq)
    np.testing.assert_array_equal(again[1], gt)


def test_resuming_a_run_folder_of_another_stage_is_one_line_error(tmp_path, capsys):
    """A stage-1 run folder reused for stage 2 (resume is the default): one line, exit code 1."""
    from real_esrgan_tf.cli import main as cli

    model_dir = str(tmp_path / "run")
    build_run(load_pipeline("smoke_cpu", OVERRIDES), model_dir).checkpoint.save()
    stage2 = ['train.data="paired"', "losses.perceptual_weight=0.0"]
    argv = ["real-esrgan-tf", "train", "--pipeline", "smoke_cpu", "--data", "x", "--model_dir", model_dir]
    assert cli.main([*argv, *(a for o in stage2 for a in ("--set", o))]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ckpt-0 does not match this pipeline" in err[0], err
    assert "use another --model_dir" in err[0]


@pytest.mark.slow
def test_only_the_chief_validates(paired_shards, tmp_path, monkeypatch):
    """Validation runs the EMA generator over the whole validation set: non-chief workers skip it."""
    from real_esrgan_tf.training import loop

    lines = {}
    for chief in (True, False):
        monkeypatch.setattr(loop, "is_chief", lambda strategy, chief=chief: chief)
        overrides = [*OVERRIDES, f'monitoring.validation_data="{paired_shards}"',
                     "monitoring.validation_every_steps=1", "monitoring.validation_max_images=1"]
        model_dir = str(tmp_path / f"chief_{chief}")
        run = build_run(load_pipeline("smoke_cpu", overrides), model_dir)
        lines[chief] = []
        train(run, paired_shards, model_dir, max_steps=1, print_fn=lines[chief].append)
    assert any("val_psnr_y" in line for line in lines[True]), lines[True]
    assert not any("val_psnr_y" in line for line in lines[False]), lines[False]
    # The chief records the resolved config of the run; loading it gives the same config back.
    recorded = os.path.join(tmp_path, "chief_True", "config.toml")
    assert load_pipeline(recorded) == run.config
    assert not os.path.exists(os.path.join(tmp_path, "chief_False", "config.toml"))


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_at_the_current_step_and_a_rerun_resumes_there(paired_shards, tmp_path):
    """A cluster preempting the job sends SIGTERM: the run stops after the step it is in, writes a
    checkpoint of that step (between the periodic ones, every 1000 here), exits 143 within seconds,
    and the same command goes on from that step."""
    from real_esrgan_tf.cli import main as cli

    model_dir = str(tmp_path / "run")
    extra = ["--set", "checkpoint.every_steps=1000"]
    proc = subprocess.Popen(
        _train_command(paired_shards, model_dir, *extra),
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:  # progress lines "step N/100000 (...)" once per step
            lines.append(line.rstrip())
            if line.startswith("step 3/") or time.monotonic() > deadline:
                break
        assert proc.poll() is None, "\n".join(lines[-30:])
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        out, _ = proc.communicate(timeout=120)
        stop_seconds = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines += out.splitlines()
    assert proc.returncode == 143, "\n".join(lines[-30:])
    assert stop_seconds < 60, stop_seconds
    stopped = [line for line in lines if "stopped on request" in line]
    assert len(stopped) == 1, lines[-30:]
    step = int(stopped[0].split(":")[0].split()[1])
    assert step >= 3
    assert any(line.startswith(f"step {step}/") for line in lines)  # the last step it ran
    assert "SIGTERM: stopping after the current step" in out
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
    assert [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths] == [step]
    assert not os.path.exists(os.path.join(model_dir, EMA_EXPORT_NAME))  # the run has not finished

    # the same command, here for one more step, starts from the step it reached
    argv = _train_command(paired_shards, model_dir, *extra, "--max_steps", "1")[3:]
    with contextlib.redirect_stdout(io.StringIO()) as captured:
        assert cli.main(["real-esrgan-tf", *argv]) == 0
    buffer = captured.getvalue().splitlines()
    assert f"smoke_cpu: 1 replica(s), start at step {step}" in buffer, buffer
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert int(latest.rsplit("-", 1)[1]) == step + 1


def test_should_stop_ends_after_the_current_step_with_a_checkpoint_and_no_export(paired_shards, tmp_path):
    """`train(should_stop=...)` is polled before each step: true at the third poll -> 2 steps run."""
    model_dir = str(tmp_path / "run")
    run = build_run(load_pipeline("smoke_cpu", [*OVERRIDES, "checkpoint.every_steps=1000"]), model_dir)
    polls = iter([False, False, True])
    lines = []
    assert train(run, paired_shards, model_dir, print_fn=lines.append, should_stop=lambda: next(polls)) == 2
    assert lines[-1] == "step 2: stopped on request; checkpoint of step 2 written, rerun to resume"
    assert run.checkpoint.latest.endswith("ckpt-2") and int(run.trainer.step.numpy()) == 2
    assert not os.path.exists(os.path.join(model_dir, EMA_EXPORT_NAME))


def test_should_stop_before_the_first_step_saves_nothing(paired_shards, tmp_path):
    model_dir = str(tmp_path / "run")
    run = build_run(load_pipeline("smoke_cpu", OVERRIDES), model_dir)
    lines = []
    assert train(run, paired_shards, model_dir, print_fn=lines.append, should_stop=lambda: True) == 0
    assert lines == ["step 0: stopped on request before the first step of this run"]
    assert run.checkpoint.latest is None
