"""Production defaults: `train.xla` per device and strategy, `model_step` against graph mode.

`model_step` (XLA for the G/D/EMA update) is checked against graph mode under the default strategy.
Under MirroredStrategy (two logical CPUs: `auto` on CPU, `model_step`, the degrader + training-pair
pool inside the 2-replica step) see test_training_two_replicas.py.
"""

import numpy as np
import pytest
import tensorflow as tf

from real_esrgan_tf.degradations import sample_kernels
from real_esrgan_tf.training.build import build_run
from real_esrgan_tf.training.config import XlaScope, load_pipeline
from real_esrgan_tf.training.strategy import make_train_function, resolve_xla


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

