"""Production defaults: `train.xla` per device and strategy, and the synthetic-data step distributed.

`model_step` (XLA for the G/D/EMA update) is checked against graph mode under the default strategy.
Under MirroredStrategy (two logical CPUs, a fresh subprocess: logical devices must be configured
before TensorFlow initialises) the default `auto` resolves to graph mode on CPU and the degrader +
training-pair pool run inside the 2-replica step, each replica on its own random stream;
`model_step` under two replicas is checked in test_training_distributed.py.
"""

import numpy as np
import pytest
import tensorflow as tf

from real_esrgan_tf.degradations import sample_kernels
from real_esrgan_tf.training.build import build_run
from real_esrgan_tf.training.config import XlaScope, load_pipeline
from real_esrgan_tf.training.strategy import make_train_function, resolve_xla
from tests.script_result import run_script


def _crops(photos):
    crops = [p[i : i + 48, j : j + 48] for p in photos.values() for i in (40, 200) for j in (60, 140)]
    return np.stack(crops).astype("float32") / 255.0  # (12, 48, 48, 3)


def test_auto_xla_is_graph_mode_on_cpu_and_explicit_scopes_pass_on_one_device():
    default = tf.distribute.get_strategy()
    assert load_pipeline("realesrgan_x4plus").train.xla is XlaScope.AUTO  # every shipped GAN recipe
    expected = XlaScope.MODEL_STEP if tf.config.list_logical_devices("GPU") else XlaScope.OFF
    assert resolve_xla("auto", default) is expected
    for scope in ("off", "model_step", "full_step"):
        assert resolve_xla(scope, default) is XlaScope(scope)


@pytest.mark.slow
def test_model_step_xla_gives_the_graph_mode_update_under_the_default_strategy(photos, tmp_path):
    """Two steps of the smoke recipe (real degradation, pool, G, D, VGG, EMA) from the same weights:
    the XLA-compiled update equals graph mode up to float rounding (measured: <= 5e-7 on metrics,
    <= 4e-7 on weights after two Adam steps)."""
    runs = {}
    for scope in ("off", "model_step"):
        config = load_pipeline("smoke_cpu", [f'train.xla="{scope}"'])
        runs[scope] = build_run(config, str(tmp_path / scope))
        assert runs[scope].xla is XlaScope(scope)
    graph, xla = runs["off"].trainer, runs["model_step"].trainer
    assert xla._gradients_fn._jit_compile is True and graph._gradients_fn == graph.gradients

    def models(t):
        return [t.generator, t.discriminator, t.ema_generator, t._perceptual_loss.features]

    for a, b in zip(models(graph), models(xla), strict=True):
        b.set_weights(a.get_weights())
    kernels = sample_kernels(config.degradation, tf.constant([0, 0]), batch_size=4)
    dataset = tf.data.Dataset.from_tensor_slices({"gt": _crops(photos)[:4], **kernels})
    dataset = dataset.batch(2, drop_remainder=True)
    metrics = {}
    for scope, run in runs.items():
        iterator = iter(run.strategy.experimental_distribute_dataset(dataset))
        step = make_train_function(run.trainer, run.strategy, jit_compile=False)
        metrics[scope] = [{k: float(v) for k, v in step(iterator).items()} for _ in range(2)]
    assert int(xla.step.numpy()) == 2 and xla.pool.pointer.numpy() == 4
    for m_graph, m_xla in zip(metrics["off"], metrics["model_step"], strict=True):
        for k in m_graph:
            assert abs(m_graph[k] - m_xla[k]) < 1e-5 * max(1.0, abs(m_graph[k])), (k, m_graph[k], m_xla[k])
    moved = 0.0
    for a, b in zip(models(graph)[:3], models(xla)[:3], strict=True):
        for w_graph, w_xla in zip(a.weights, b.weights, strict=True):
            np.testing.assert_allclose(w_xla.numpy(), w_graph.numpy(), atol=1e-5, err_msg=w_graph.path)
    moved = np.max(np.abs(graph.generator.weights[0].numpy() - xla.ema_generator.weights[0].numpy()))
    assert moved > 1e-4  # the steps changed the weights


SCRIPT = r"""
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np
from skimage import data

from real_esrgan_tf.degradations import sample_kernels
from real_esrgan_tf.training.build import build_run
from real_esrgan_tf.training.config import load_pipeline
from real_esrgan_tf.training.strategy import make_train_function, resolve_xla

mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {"replicas": mirrored.num_replicas_in_sync, "auto": str(resolve_xla("auto", mirrored))}

# stage 1 keeps the subprocess short: D, VGG and SN under 2 replicas are in test_training_distributed.py
config = load_pipeline("smoke_cpu", ['train.xla="auto"', 'train.stage="realesrnet"'])
run = build_run(config, "MODEL_DIR", strategy=mirrored)
trainer = run.trainer
out["resolved"] = str(run.xla)
photo = data.astronaut()
gt = np.stack([photo[100 + 40 * i : 148 + 40 * i, 200:248] for i in range(4)]).astype("float32") / 255.0
# the same two GT crops and kernels on both replicas: only the replica's random stream differs
gt = np.concatenate([gt[:2], gt[:2]])
kernels = {k: np.concatenate([v.numpy()[:2]] * 2) for k, v in
           sample_kernels(config.degradation, tf.constant([1, 2]), batch_size=2).items()}
dataset = tf.data.Dataset.from_tensor_slices({"gt": gt, **kernels}).batch(4, drop_remainder=True).repeat()
iterator = iter(mirrored.experimental_distribute_dataset(dataset))
step = make_train_function(trainer, mirrored, jit_compile=False)
metrics = [{k: float(v) for k, v in step(iterator).items()} for _ in range(2)]

# stage 1 pools the sharpened GT; the LQ queue holds each replica's degraded LQ as produced.
# replica r degraded its half with seed split(fold_in([rng_seed, step 0], r))[0]: replay it on one device
queues = [q.numpy() for q in mirrored.experimental_local_results(trainer.pool.queue_lq)]
pointers = [int(p.numpy()) for p in mirrored.experimental_local_results(trainer.pool.pointer)]
replay = []
for r in range(2):
    seed = tf.random.experimental.stateless_fold_in(tf.constant([config.train.seed, 0], tf.int64),
                                                    tf.constant(r, tf.int64))
    degrade_seed = tf.random.experimental.stateless_split(seed, 2)[0]
    own_kernels = {k: tf.constant(v[:2]) for k, v in kernels.items()}
    lq, _, _ = tf.function(trainer._degrader)(tf.constant(gt[:2]), own_kernels, degrade_seed)
    replay.append(float(np.mean(np.abs(lq.numpy() - queues[r][:2])) * 255))
spread = max(float(np.max(np.abs(a.numpy() - b.numpy())))
             for w in trainer.generator.weights for a, b in [mirrored.experimental_local_results(w.value)])
out.update(metrics=metrics, step=int(trainer.step.numpy()), pointers=pointers, replay_levels=replay,
           replicas_differ=float(np.mean(np.abs(queues[0][:2] - queues[1][:2])) * 255), spread=spread)
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_two_replicas_degrade_and_pool_inside_the_distributed_step(tmp_path):
    result = run_script(SCRIPT.replace("MODEL_DIR", str(tmp_path / "run")), timeout=900)
    assert result["replicas"] == 2 and result["auto"] == "off" and result["resolved"] == "off"
    assert result["step"] == 2 and result["pointers"] == [4, 4]  # each replica queued its 2 x 2 pairs
    assert all(np.isfinite(v) for m in result["metrics"] for v in m.values())
    # each replica's queued LQ is the single-device degradation of its seed (8-bit levels, graph mode)
    assert max(result["replay_levels"]) < 0.05, result["replay_levels"]
    assert result["replicas_differ"] > 1.0  # same GT and kernels, different random streams
    assert result["spread"] == 0.0  # the mirrored G stays identical on both replicas
