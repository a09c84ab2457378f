"""Training: recipes/config, EMA formula, checkpoint resume, mixed precision, XLA + GPU kernels, smoke."""

import dataclasses
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from real_esrgan_tf.degradations import DegradationConfig, TrainingPairPool, USMSharp, sample_kernels
from real_esrgan_tf.models import RRDBNet, UNetDiscriminatorSN
from real_esrgan_tf.training import monitoring
from real_esrgan_tf.training.build import build_generator, build_run
from real_esrgan_tf.training.checkpoints import TrainingCheckpoint
from real_esrgan_tf.training.config import (
    PIPELINE_DIR,
    ConfigError,
    DataKind,
    Stage,
    load_pipeline,
    pipeline_from_dict,
)
from real_esrgan_tf.training.strategy import make_train_function
from real_esrgan_tf.training.trainer import RealESRGANTrainer
from tests.graph_checks import ops_without_gpu_kernel

RECIPES = (
    "realesrnet_x4plus",
    "realesrgan_x4plus",
    "realesrgan_x2plus",
    "realesrgan_x1",
    "realesr_general_x4v3_compact",
    "bench_compact_x4_stage1",
    "finetune_paired",
    "smoke_cpu",
)


# ------------------------------------------------------------------ recipes and config


def test_every_recipe_loads_with_official_values():
    configs = {name: load_pipeline(name) for name in RECIPES}
    net, gan = configs["realesrnet_x4plus"], configs["realesrgan_x4plus"]
    assert net.train.stage is Stage.REALESRNET and not net.uses_discriminator and not net.uses_perceptual
    assert (net.optimizer.g_lr, net.train.total_steps, net.train.batch_size_per_replica) == (
        2e-4,
        1_000_000,
        12,
    )
    assert gan.uses_discriminator and gan.uses_perceptual
    assert (gan.losses.l1_weight, gan.losses.perceptual_weight, gan.losses.gan_weight) == (1.0, 1.0, 0.1)
    assert gan.losses.perceptual_layer_weights == {
        "conv1_2": 0.1,
        "conv2_2": 0.1,
        "conv3_4": 1.0,
        "conv4_4": 1.0,
        "conv5_4": 1.0,
    }
    assert (gan.optimizer.g_lr, gan.optimizer.d_lr, gan.optimizer.beta_1, gan.optimizer.beta_2) == (
        1e-4,
        1e-4,
        0.9,
        0.99,
    )
    assert (gan.train.ema_decay, gan.train.gt_size, gan.degradation.queue_size) == (0.999, 256, 180)
    assert (gan.losses.l1_gt_usm, gan.losses.perceptual_gt_usm, gan.losses.gan_gt_usm) == (True, True, False)
    for name, scale in (("realesrgan_x2plus", 2), ("realesrgan_x1", 1)):
        c = configs[name]
        assert c.train.scale == c.degradation.scale == scale
        assert c.init.generator == "realesrgan-x4plus" and c.init.skip_layers == ("conv_first",)
    assert configs["realesr_general_x4v3_compact"].generator.num_conv == 32
    finetune = configs["finetune_paired"]
    assert finetune.train.data is DataKind.PAIRED
    assert (finetune.init.generator, finetune.init.discriminator) == (
        "realesrgan-x4plus",
        "RealESRGAN_x4plus_netD.pth",
    )


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[train]\nstage = "realesrgan"\ntotal_step = 10\n')
    with pytest.raises(ConfigError, match=r"bad.toml: unknown key 'train.total_step'"):
        load_pipeline(str(path))
    path.write_text("[degradation.stage1]\nnoise_rang = [1.0, 2.0]\n")
    with pytest.raises(ConfigError, match=r"unknown key 'degradation.stage1.noise_rang'"):
        load_pipeline(str(path))
    with pytest.raises(ConfigError, match=r"train.batch_size_per_replica: expected an integer"):
        pipeline_from_dict({"train": {"batch_size_per_replica": "12"}})
    with pytest.raises(ConfigError, match=r"train.precision: 'fp8' is not one of"):
        pipeline_from_dict({}, ["train.precision=fp8"])
    with pytest.raises(ConfigError, match=r"degradation.scale: set train.scale instead"):
        pipeline_from_dict({"degradation": {"scale": 2}})
    with pytest.raises(ConfigError, match=r"queue_size 180 is not divisible by the per-replica batch size 7"):
        pipeline_from_dict({"train": {"batch_size_per_replica": 7}})


def test_time_to_quality_recipe_is_the_issue_12_stage1_and_switches_to_stage2():
    """benchmarks/bench_time_to_quality.py's recipe: compact 64 x 32 PReLU, stage-1 L1 with the
    official degradation, batch 12, GT 128 from 400 crops; its stage 2 is the same file + --set."""
    c = load_pipeline("bench_compact_x4_stage1")
    g, t = c.generator, c.train
    assert (g.arch.value, g.num_feat, g.num_conv, g.act) == ("srvgg_compact", 64, 32, "prelu")
    assert g.init == "dirac"  # the one change from the official recipe (BUILD_NOTES "Time to quality")
    assert (t.stage, t.data, t.scale) == (Stage.REALESRNET, DataKind.SYNTHETIC, 4)
    assert (t.batch_size_per_replica, t.gt_size, t.crop_size, t.ema_decay) == (12, 128, 400, 0.999)
    assert not c.uses_perceptual and not c.uses_discriminator and c.losses.l1_gt_usm
    assert c.degradation == dataclasses.replace(DegradationConfig(), scale=4, gt_size=128)
    gan = load_pipeline(
        "bench_compact_x4_stage1",
        ['train.stage="realesrgan"', "losses.gan_weight=0.1", "losses.perceptual_weight=0.0"],
    )
    assert gan.uses_discriminator and not gan.uses_perceptual and gan.train.gt_size % 32 == 0


def test_generator_init_reaches_the_built_generator_and_is_validated():
    config = load_pipeline("bench_compact_x4_stage1", ["generator.num_conv=2", "generator.num_feat=8"])
    body = build_generator(config).get_layer("body_2").kernel.numpy()
    np.testing.assert_allclose(body[1, 1], np.eye(8), atol=0.1 * np.sqrt(3 * 2 / 1.0625 / 72))
    assert load_pipeline("realesr_general_x4v3_compact").generator.init == "dirac"  # from scratch too
    default = build_generator(load_pipeline("bench_compact_x4_stage1", ['generator.init="default"']))
    assert default.init == "default"
    with pytest.raises(ConfigError, match="generator.init"):
        load_pipeline("realesrgan_x4plus", ['generator.init="dirac"'])
    with pytest.raises(ConfigError, match="generator.init"):
        load_pipeline("bench_compact_x4_stage1", ['generator.init="zeros"'])


def test_set_overrides_are_typed_and_reach_the_degradation():
    c = load_pipeline(
        "realesrgan_x4plus",
        [
            "train.total_steps=100",
            "train.scale=2",
            "init.generator=a/b.pth",
            "degradation.stage2.noise_range=[1.0, 10.0]",
        ],
    )
    assert (c.train.total_steps, c.train.scale, c.degradation.scale) == (100, 2, 2)
    assert c.init.generator == "a/b.pth" and c.degradation.stage2.noise_range == (1.0, 10.0)
    assert PIPELINE_DIR.endswith("pipelines")


def test_stage1_is_l1_only_whatever_the_loss_weights():
    """Switching a stage-2 recipe to stage 1 must not keep the perceptual loss (nor download VGG19)."""
    c = load_pipeline("realesrgan_x4plus", ['train.stage="realesrnet"'])
    assert (c.losses.perceptual_weight, c.losses.gan_weight) == (1.0, 0.1)
    assert not c.uses_perceptual and not c.uses_discriminator
    assert load_pipeline("realesrgan_x4plus").uses_perceptual


def test_gt_size_must_fit_rrdbnet_pixel_unshuffle():
    stage1 = 'train.stage="realesrnet"'
    for scale, gt_size in ((2, 258), (1, 254)):
        with pytest.raises(
            ConfigError, match=rf"train.gt_size: {gt_size} must be a multiple of 4 for RRDBNet"
        ):
            load_pipeline("realesrnet_x4plus", [stage1, f"train.scale={scale}", f"train.gt_size={gt_size}"])
    c = load_pipeline("realesrnet_x4plus", ["train.scale=2", "train.gt_size=260"])
    assert c.degradation.gt_size == 260


def _basicsr_learning_rates(base_lr, milestones, gamma, iterations):
    torch_oracles = pytest.importorskip("tests.torch_oracles")
    return torch_oracles.basicsr_learning_rates(base_lr, milestones, gamma, iterations)


def test_learning_rate_schedule_matches_basicsr_multistep():
    """Iteration k (1-based; the trainer's `step` is k - 1 while it runs) uses gamma ** #{milestones
    <= k - 1}: milestone m is the last iteration at the old rate, m + 1 the first at the decayed one.
    A repeated milestone decays twice (Counter). The optimizer's own `iterations` plays no part."""
    from real_esrgan_tf.training.build import make_optimizer

    config = load_pipeline("realesrnet_x4plus", ["optimizer.g_lr=1.0", "optimizer.milestones=[3, 5, 5]"])
    step = keras.Variable(0, dtype="int64", trainable=False)
    optimizer = make_optimizer(config, "g", step)
    optimizer.build([keras.Variable(0.0)])
    rates = []
    for k in range(1, 9):
        step.assign(k - 1)  # the trainer's step while it runs iteration k
        rates.append(float(optimizer.learning_rate))
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.125, 0.125, 0.125]
    assert rates == _basicsr_learning_rates(1.0, (3, 5, 5), 0.5, 8)
    optimizer.iterations.assign(0)  # e.g. updates skipped by the loss scaling: the rate does not care
    assert float(optimizer.learning_rate) == 0.125
    with pytest.raises(ConfigError, match=r"optimizer.milestones: \(0,\) must be iterations >= 1"):
        load_pipeline("realesrnet_x4plus", ["optimizer.milestones=[0]"])


@pytest.mark.slow
def test_learning_rate_follows_the_training_step_when_mixed_float16_skips_updates(tmp_path):
    """mixed_float16: a non-finite gradient (NaN in the LQ of iteration 2) makes both LossScaleOptimizers
    skip their update, so their `iterations` fall one behind. BasicSR steps its scheduler once per
    iteration whatever happens: with milestone 3, iterations 4 and 5 must run at lr * 0.5 for G and D,
    and each step reports the rate it used. (Graph mode; the XLA step is checked with a milestone in
    test_mixed_precision_steps_are_finite_with_float32_weights.)"""
    config = load_pipeline(
        "smoke_cpu",
        [
            "train.precision=mixed_float16",
            'train.data="paired"',
            "losses.perceptual_weight=0.0",
            "optimizer.milestones=[3]",
            "optimizer.gamma=0.5",
        ],
    )
    run = build_run(config, str(tmp_path))
    trainer = run.trainer
    batches = [_paired_batch(i) for i in range(5)]
    lq = batches[1]["lq"].numpy()
    lq[0, 3, 3, 0] = np.nan  # iteration 2: G's and D's gradients are NaN -> both updates skipped
    batches[1]["lq"] = tf.constant(lq)
    data = iter(
        tf.data.Dataset.from_tensor_slices({k: tf.stack([b[k] for b in batches]) for k in ("gt", "lq")})
    )
    step = make_train_function(trainer, run.strategy, jit_compile=False)
    g_lr, d_lr = config.optimizer.g_lr, config.optimizer.d_lr
    official_g = _basicsr_learning_rates(g_lr, (3,), 0.5, 6)
    official_d = _basicsr_learning_rates(d_lr, (3,), 0.5, 6)
    logged = []
    for k in range(1, 6):
        metrics = {name: float(v) for name, v in step(data).items()}
        assert math.isfinite(metrics["l_g_pix"]) == (k != 2), (k, metrics)
        # the rate the next iteration will use, whatever the optimizers' own counters say
        assert float(trainer.g_optimizer.learning_rate) == pytest.approx(official_g[k], rel=1e-6), k
        assert float(trainer.d_optimizer.learning_rate) == pytest.approx(official_d[k], rel=1e-6), k
        logged.append((metrics["g_learning_rate"], metrics["d_learning_rate"]))
    assert int(trainer.step.numpy()) == 5
    # the skip did happen: 4 applied updates each, loss scale halved once
    assert int(trainer.g_optimizer.iterations.numpy()) == int(trainer.d_optimizer.iterations.numpy()) == 4
    assert (
        float(trainer.g_optimizer.dynamic_scale.numpy())
        == float(trainer.d_optimizer.dynamic_scale.numpy())
        == 2.0**14
    )
    assert logged == [
        pytest.approx((g, d), rel=1e-6) for g, d in zip(official_g[:5], official_d[:5], strict=True)
    ]
    assert [g for g, _ in logged] == pytest.approx([g_lr] * 3 + [g_lr * 0.5] * 2, rel=1e-6)
    models = (trainer.generator, trainer.discriminator, trainer.ema_generator)
    assert all(np.isfinite(w.numpy()).all() for m in models for w in m.weights)


def test_monitoring_intervals_must_be_positive():
    for key in ("log_every_steps", "image_every_steps", "validation_every_steps", "validation_max_images"):
        with pytest.raises(ConfigError, match=rf"monitoring.{key}: must be positive, got 0"):
            load_pipeline("smoke_cpu", [f"monitoring.{key}=0"])


# ------------------------------------------------------------------ trainer mechanics on tiny models


def _tiny_trainer(discriminator=True, ema_decay=0.9, pool=None, degrader=None, seed=0):
    keras.utils.set_random_seed(seed)
    g = RRDBNet(num_feat=8, num_block=1, num_grow_ch=8)
    d = UNetDiscriminatorSN(num_feat=8) if discriminator else None
    trainer = RealESRGANTrainer(
        g, d, None, degrader=degrader, pool=pool, sharpener=USMSharp(), ema_decay=ema_decay
    )
    adam = lambda: keras.optimizers.Adam(1e-3, beta_1=0.9, beta_2=0.99)  # noqa: E731
    trainer.compile(adam(), adam() if discriminator else None)
    trainer.build_state((2, 8, 8, 3), (2, 32, 32, 3))
    return trainer


def _paired_batch(seed):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(size=(2, 32, 32, 3)).astype("float32")
    lq = gt.reshape(2, 8, 4, 8, 4, 3).mean(axis=(2, 4))
    return {"gt": tf.constant(gt), "lq": tf.constant(lq)}


def test_ema_update_matches_formula():
    trainer = _tiny_trainer(discriminator=False, ema_decay=0.9)
    pairs = trainer.ema_pairs()
    assert len(pairs) == len(trainer.generator.trainable_variables) > 0
    ema_before = [e.numpy().copy() for e, _ in pairs]
    np.testing.assert_array_equal(ema_before[0], pairs[0][1].numpy())  # starts as a copy of G
    trainer.train_step(_paired_batch(0))
    for (e, g), before in zip(pairs, ema_before, strict=True):
        np.testing.assert_allclose(e.numpy(), 0.9 * before + 0.1 * g.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(pairs[0][0].numpy(), pairs[0][1].numpy())  # G moved, EMA lags
    assert int(trainer.step.numpy()) == 1


def _area_degrader(gt, kernels, seed):
    """A cheap, real degradation for mechanics tests: x4 area downscale + seeded noise, 8-bit levels."""
    b, h, w, c = gt.shape
    lq = tf.reduce_mean(tf.reshape(gt, (b, h // 4, 4, w // 4, 4, c)), axis=(2, 4))
    lq = lq + 0.02 * tf.random.stateless_normal(tf.shape(lq), seed=seed) + 0.0 * kernels["kernel1"][0, 0, 0]
    return tf.round(tf.clip_by_value(lq, 0.0, 1.0) * 255.0) / 255.0, gt, gt


def _synthetic_batch(seed):
    gt = tf.random.stateless_uniform((2, 32, 32, 3), seed=[seed, 1])
    return {
        "gt": gt,
        "kernel1": tf.zeros((2, 21, 21)),
        "kernel2": tf.zeros((2, 21, 21)),
        "sinc_kernel": tf.zeros((2, 21, 21)),
    }


def _state(trainer):
    values = [
        v.numpy()
        for v in trainer.generator.weights + trainer.discriminator.weights + trainer.ema_generator.weights
    ]
    values += [trainer.pool.queue_lq.numpy(), trainer.pool.queue_gt.numpy(), trainer.pool.pointer.numpy()]
    values += [v.numpy() for v in trainer.g_optimizer.variables + trainer.d_optimizer.variables]
    return values


def _marking_degrader(gt, kernels, seed):
    """lq = area x4; gt_usm marked as 0.5 * gt, standing for 'sharpened before the crop'."""
    lq, _, _ = _area_degrader(gt, kernels, seed)
    return lq, gt, 0.5 * gt


@pytest.mark.parametrize("pool_size", [0, 4])
def test_stage1_pools_the_gt_sharpened_before_the_crop_and_stage2_resharpens(pool_size):
    """RealESRNetModel: gt = usm(gt) first, that is cropped, pooled and the L1 target; RealESRGANModel
    pools the plain gt and sharpens the pooled crop."""
    batches = [_synthetic_batch(i) for i in range(3)]
    outs = {}
    for stage1 in (True, False):
        pool = TrainingPairPool(pool_size, (8, 8, 3), (32, 32, 3), 2) if pool_size else None
        trainer = _tiny_trainer(discriminator=False, pool=pool, degrader=_marking_degrader)
        trainer.pool_sharpened_gt = stage1
        outs[stage1] = [trainer.prepare_batch(b) for b in batches]
    inputs = {img.tobytes() for b in batches for img in b["gt"].numpy()}  # per-sample GTs fed in
    for _lq, gt, gt_usm in outs[True]:
        np.testing.assert_array_equal(gt.numpy(), gt_usm.numpy())
        # every returned GT is half of an input GT: the marked (sharpened) one went through the pool
        assert all((2 * g).tobytes() in inputs for g in gt.numpy())
    for _lq, gt, gt_usm in outs[False]:
        assert all(g.tobytes() in inputs for g in gt.numpy())
        np.testing.assert_allclose(gt_usm.numpy(), USMSharp()(gt).numpy(), atol=1e-6)
    # the runs pair the same LQs with their GTs in both modes
    for (lq1, gt1, _), (lq2, gt2, _) in zip(outs[True], outs[False], strict=True):
        np.testing.assert_array_equal(lq1.numpy(), lq2.numpy())
        np.testing.assert_allclose(2 * gt1.numpy(), gt2.numpy(), atol=1e-6)


def test_build_run_pools_sharpened_gt_in_stage1_only(tmp_path):
    for stage, expected in (("realesrnet", True), ("realesrgan", False)):
        overrides = [f'train.stage="{stage}"', "losses.perceptual_layer_weights={conv1_2 = 0.1}"]
        config = load_pipeline("smoke_cpu", overrides)
        assert build_run(config, str(tmp_path / stage)).trainer.pool_sharpened_gt is expected


@pytest.mark.slow
def test_checkpoint_resume_continues_bit_for_bit(tmp_path):
    """3 steps, save, 3 more -> final. Restore (state == saved, step 3), replay the 3 batches -> final."""
    batches = [_synthetic_batch(i) for i in range(6)]
    trainer = _tiny_trainer(pool=TrainingPairPool(4, (8, 8, 3), (32, 32, 3), 2), degrader=_area_degrader)
    step = tf.function(trainer.train_step)
    for b in batches[:3]:
        step(b)
    checkpoint = TrainingCheckpoint(trainer, str(tmp_path), keep_checkpoint_max=2)
    checkpoint.save()
    saved = _state(trainer)
    for b in batches[3:]:
        step(b)
    final = _state(trainer)
    assert int(trainer.pool.pointer.numpy()) == 4  # the pool filled up and then swapped
    assert not np.array_equal(final[0], saved[0])

    assert TrainingCheckpoint(trainer, str(tmp_path)).restore_latest() == 3
    for x, y in zip(_state(trainer), saved, strict=True):
        np.testing.assert_array_equal(x, y)
    for b in batches[3:]:
        step(b)
    for x, y in zip(_state(trainer), final, strict=True):
        np.testing.assert_array_equal(x, y)


def test_checkpoint_holds_every_replica_pool_and_refuses_a_single_pool_one(tmp_path):
    """The pool is saved as [replicas, ...] (here 1 replica); a checkpoint of the former layout
    (the pool's own per-replica variables, replica 0's only) is a one-line CheckpointError."""
    from real_esrgan_tf.training.checkpoints import CheckpointError

    trainer = _tiny_trainer(pool=TrainingPairPool(4, (8, 8, 3), (32, 32, 3), 2), degrader=_area_degrader)
    tf.function(trainer.train_step)(_synthetic_batch(0))
    path = TrainingCheckpoint(trainer, str(tmp_path / "new")).save()
    reader = tf.train.load_checkpoint(path)
    np.testing.assert_array_equal(reader.get_tensor("pool/pointer/.ATTRIBUTES/VARIABLE_VALUE"), [2])
    queue = reader.get_tensor("pool/queue_gt/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(queue[0], trainer.pool.queue_gt.numpy())

    old = tf.train.Checkpoint(generator=trainer.generator, step=trainer.step, pool=trainer.pool)
    tf.train.CheckpointManager(old, str(tmp_path / "old" / "checkpoints"), 1).save()
    with pytest.raises(CheckpointError, match="holds one training-pair pool"):
        TrainingCheckpoint(trainer, str(tmp_path / "old")).restore_latest()


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_steps_are_finite_with_float32_weights(precision, jit_compile, tmp_path):
    config = load_pipeline(
        "smoke_cpu",
        [
            f"train.precision={precision}",
            'train.data="paired"',
            "losses.perceptual_layer_weights={conv1_2 = 0.1}",
            "optimizer.milestones=[1]",  # iteration 1 at lr, 2 at lr / 2 (schedule read from the step)
        ],
    )
    run = build_run(config, str(tmp_path))
    trainer = run.trainer
    assert trainer.generator.layers[1].compute_dtype == precision.split("_")[1]
    assert isinstance(trainer.g_optimizer, keras.optimizers.LossScaleOptimizer) == (
        precision == "mixed_float16"
    )
    data = iter(tf.data.Dataset.from_tensors(_paired_batch(0)).repeat())
    step = make_train_function(trainer, run.strategy, jit_compile=jit_compile)
    for i in range(2):
        metrics = {k: float(v) for k, v in step(data).items()}
        assert all(math.isfinite(v) for v in metrics.values()), metrics
        rates = (metrics["g_learning_rate"], metrics["d_learning_rate"])
        assert rates == pytest.approx((config.optimizer.g_lr / 2**i, config.optimizer.d_lr / 2**i), rel=1e-6)
    models = (trainer.generator, trainer.discriminator, trainer.ema_generator)
    assert all(w.dtype == "float32" for m in models for w in m.weights)
    assert not np.allclose(trainer.ema_generator.weights[0].numpy(), trainer.generator.weights[0].numpy())


def test_discriminator_starts_from_an_official_netd_pth(tmp_path):
    """finetune recipes: D from RealESRGAN_x4plus_netD.pth ({"params": torch spectral-norm state})."""
    torch = pytest.importorskip("torch")
    from real_esrgan_tf.weights import InitError
    from tests.torch_oracles import UNetDiscriminatorSN

    torch.manual_seed(0)
    tnet = UNetDiscriminatorSN(8).train()
    x = np.random.default_rng(0).uniform(size=(2, 3, 32, 24)).astype("float32")
    tnet(torch.from_numpy(x))  # one power iteration: u, v are no longer their initial values
    path = str(tmp_path / "netD.pth")
    torch.save({"params": tnet.state_dict()}, path)
    overrides = ['train.data="paired"', "losses.perceptual_weight=0.0", f"init.discriminator={path}"]
    run = build_run(load_pipeline("smoke_cpu", overrides), str(tmp_path / "run"))
    with torch.no_grad():
        expected = tnet.eval()(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    got = run.trainer.discriminator(x.transpose(0, 2, 3, 1), training=False).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(InitError, match=r"netD.pth: conv0.weight has shape .*discriminator.num_feat"):
        build_run(load_pipeline("smoke_cpu", [*overrides, "discriminator.num_feat=16"]), str(tmp_path / "r2"))
    with pytest.raises(InitError, match=r"init.discriminator .*missing.pth: no such file"):
        build_run(
            load_pipeline("smoke_cpu", [*overrides[:2], "init.discriminator=missing.pth"]), str(tmp_path)
        )


# ------------------------------------------------------------------ the real degradation: XLA, GPU, smoke


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, photos):
    """The smoke recipe with the real degradation, its step traced once (graph mode).

    A milestone past the end puts the learning-rate schedule (read from the trainer's step) in the
    traced step, so the XLA and GPU-kernel checks cover it; the rate stays constant."""
    config = load_pipeline("smoke_cpu", ["optimizer.milestones=[1000]"])
    run = build_run(config, str(tmp_path_factory.mktemp("smoke")))
    crops = (
        np.stack(
            [p[i : i + 48, j : j + 48] for p in photos.values() for i in (40, 120, 200) for j in (60, 140)]
        ).astype("float32")
        / 255.0
    )  # (18, 48, 48, 3)

    def batch(i, seed):
        idx = np.random.default_rng(seed + i).choice(len(crops), 2, replace=False)
        return {
            "gt": tf.constant(crops[idx]),
            **sample_kernels(config.degradation, tf.constant([seed, i]), batch_size=2),
        }

    step = tf.function(run.trainer.train_step)
    concrete = step.get_concrete_function(batch(0, 0))
    return dataclasses.make_dataclass("Smoke", ["run", "batch", "step", "concrete", "crops"])(
        run, batch, step, concrete, crops
    )


@pytest.mark.slow
def test_full_train_step_compiles_with_xla_and_has_gpu_kernels(smoke):
    assert ops_without_gpu_kernel(smoke.concrete) == set()
    # Lowering to XLA HLO is what jit_compile=True does before code generation: it fails on any op
    # without an XLA kernel (bicubic/area resize, encode_jpeg, random_poisson, bessel_j1, ...).
    # The traced step is wrapped (a function call, no retrace) in a jit_compile=True function.
    compiled = tf.function(lambda batch: smoke.concrete(batch), jit_compile=True)
    hlo = compiled.experimental_get_compiler_ir(smoke.batch(0, 0))(stage="hlo")
    assert "ENTRY" in hlo


@pytest.mark.slow
def test_smoke_recipe_lowers_l1_on_a_fixed_degraded_validation_set(smoke):
    trainer = smoke.run.trainer
    gt = tf.constant(smoke.crops[::3])  # 6 fixed crops
    kernels = sample_kernels(smoke.run.config.degradation, tf.constant([7, 7]), batch_size=6)
    lq, gt, _ = trainer._degrader(gt, kernels, tf.constant([7, 8]))  # fixed seed: a fixed set

    def val_l1():
        return float(tf.reduce_mean(tf.abs(trainer.generator(lq) - gt)))

    before = val_l1()
    for i in range(smoke.run.config.train.total_steps):
        metrics = smoke.step(smoke.batch(i, 100))
    after = val_l1()
    assert all(math.isfinite(float(v)) for v in metrics.values())
    assert after < 0.7 * before, (before, after)


# ------------------------------------------------------------------ monitoring


def test_psnr_ssim_y_match_skimage(photos):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    gt = photos["coffee"][:64, :80].astype("float32") / 255.0
    sr = np.clip(gt + np.random.default_rng(0).normal(0, 0.03, gt.shape), 0, 1).astype("float32")
    y_gt, y_sr = monitoring.y_channel(gt)[4:-4, 4:-4], monitoring.y_channel(sr)[4:-4, 4:-4]
    assert monitoring.psnr_y(sr, gt, 4) == pytest.approx(
        peak_signal_noise_ratio(y_gt, y_sr, data_range=255), rel=1e-9
    )
    ref = structural_similarity(
        y_gt, y_sr, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert monitoring.ssim_y(sr, gt, 4) == pytest.approx(ref, abs=5e-3)
    assert monitoring.psnr_y(gt, gt, 4) == float("inf")


@pytest.mark.parametrize("scale, lq_size", [(2, (9, 11)), (1, (14, 17)), (4, (7, 9))])
def test_validation_pads_odd_sizes_for_the_unshuffle_nets(scale, lq_size):
    """x2 / x1 RRDBNet on an LQ whose sides are not multiples of 2 / 4 (it used to crash)."""
    keras.utils.set_random_seed(0)
    g = RRDBNet(scale=scale, num_feat=8, num_block=1, num_grow_ch=4)
    rng = np.random.default_rng(scale)
    lq = rng.uniform(size=(1, *lq_size, 3)).astype("float32")
    gt = rng.uniform(size=(1, lq_size[0] * scale, lq_size[1] * scale, 3)).astype("float32")
    data = tf.data.Dataset.from_tensors({"lq": lq, "gt": gt})
    scores = monitoring.validate(g, data, scale, max_images=1)
    factor = 4 // scale
    pads = [(0, 0), (0, -lq_size[0] % factor), (0, -lq_size[1] % factor), (0, 0)]
    padded = np.pad(lq, pads, mode="reflect")
    sr = np.clip(g(padded).numpy()[0, : gt.shape[1], : gt.shape[2]], 0, 1)
    assert scores["val_psnr_y"] == pytest.approx(monitoring.psnr_y(sr, gt[0], scale), rel=1e-6)


def test_progress_line_eta():
    times = iter([0.0, 10.0])
    progress = monitoring.ProgressLine(total_steps=100, start_step=0, clock=lambda: next(times))
    line = progress.update(10, {"l_g_pix": 0.5})
    assert line.startswith("step 10/100 (10.0%) | l_g_pix 0.5") and line.endswith("1 s/it | ETA 00:01:30")


def test_strategy_errors_are_one_line_and_default_is_chief(monkeypatch):
    from real_esrgan_tf.training.strategy import StrategyError, is_chief, make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match="multi_worker: TF_CONFIG is not set"):
        make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(StrategyError, match="multi_worker: TF_CONFIG is not valid JSON"):
        make_strategy("multi_worker")
    one_worker = {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(one_worker))
    with pytest.raises(StrategyError, match="multi_worker: heartbeat timeout must be > 0 s, got 0"):
        make_strategy("multi_worker", heartbeat_timeout_seconds=0)
    with pytest.raises(ValueError):
        make_strategy("horovod")
    assert is_chief(make_strategy("default"))


def test_multi_worker_coordination_service_gets_our_heartbeat_timeout():
    """The configuration MultiWorkerMirroredStrategy would make itself, plus the heartbeat timeout
    (TF's own 10 s declared a healthy but busy worker lost; a frozen worker was then noticed after
    10.4 s, with the 60 s default after 43 s: BUILD_NOTES)."""
    import tensorflow as tf

    from real_esrgan_tf.training.config import DEFAULT_HEARTBEAT_TIMEOUT_SECONDS
    from real_esrgan_tf.training.strategy import coordination_service_config

    assert DEFAULT_HEARTBEAT_TIMEOUT_SECONDS == 60.0
    spec = tf.train.ClusterSpec({"chief": ["10.0.0.1:2222"], "worker": ["10.0.0.2:2222", "10.0.0.3:2222"]})
    config = coordination_service_config(spec, 12.5)
    assert config["service_type"] == "standalone"
    assert config["service_leader"] == "/job:chief/replica:0/task:0"  # the chief hosts the service
    assert [(j.name, j.num_tasks) for j in config["coordinated_jobs"]] == [("chief", 1), ("worker", 2)]
    assert config["heartbeat_timeout_in_ms"] == 12500
    workers_only = coordination_service_config(tf.train.ClusterSpec({"worker": ["a:1", "b:1"]}), 60)
    assert workers_only["service_leader"] == "/job:worker/replica:0/task:0"
    assert [(j.name, j.num_tasks) for j in workers_only["coordinated_jobs"]] == [("worker", 2)]
    assert workers_only["heartbeat_timeout_in_ms"] == 60000


def test_x2_and_x1_start_from_x4_weights_except_conv_first():
    from real_esrgan_tf.weights import InitError, copy_weights_by_layer

    tiny = dict(num_feat=8, num_block=1, num_grow_ch=8)
    x4 = RRDBNet(scale=4, **tiny)
    for scale in (2, 1):
        target = RRDBNet(scale=scale, **tiny)
        first = target.get_layer("conv_first").get_weights()[0].copy()
        copy_weights_by_layer(x4, target, ("conv_first",), "x4")
        np.testing.assert_array_equal(target.get_layer("conv_first").get_weights()[0], first)
        for name in ("conv_body", "body_0_rdb2_conv3", "conv_last"):
            for a, b in zip(
                target.get_layer(name).get_weights(), x4.get_layer(name).get_weights(), strict=True
            ):
                np.testing.assert_array_equal(a, b)
        with pytest.raises(InitError, match=r"x4: layer 'conv_first' has shapes .* init.skip_layers"):
            copy_weights_by_layer(x4, target, (), "x4")


@pytest.mark.parametrize("recipe", sorted(p[:-5] for p in os.listdir(PIPELINE_DIR) if p.endswith(".toml")))
def test_every_recipe_round_trips_through_its_toml_record(recipe):
    """The config.toml written into a run's model_dir reads back to the same config."""
    import tomllib

    from real_esrgan_tf.training.config import load_pipeline, pipeline_from_dict, pipeline_to_toml

    config = load_pipeline(recipe)
    assert pipeline_from_dict(tomllib.loads(pipeline_to_toml(config))) == config
