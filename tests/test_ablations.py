"""The paper's ablation recipes: each changes exactly the key it names, builds and trains a step.

The switches themselves are tested where they act: `second_order` in test_degradations_degrader.py
(torch replay, statistics), `sinc` in test_degradations_kernels.py, the discriminators in
test_discriminator.py (torch oracles).
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from real_esrgan_tf.degradations import sample_kernels
from real_esrgan_tf.models import UNetDiscriminatorSN, VGGStyleDiscriminator
from real_esrgan_tf.training.build import build_run
from real_esrgan_tf.training.config import ConfigError, load_pipeline

ABLATIONS = {
    "ablation_first_order": {"degradation.second_order": False},
    "ablation_no_sinc": {"degradation.sinc": False},
    "ablation_d_no_sn": {"discriminator.spectral_norm": False},
    "ablation_d_vgg": {"discriminator.arch": "vgg", "discriminator.skip_connection": None},
}
# Shrinks a stage-2 recipe to seconds: tiny G and D, GT 32 from 48 crops, random VGG19, no init file.
TINY = [
    'init.generator=""',
    "generator.num_feat=8",
    "generator.num_block=1",
    "generator.num_grow_ch=8",
    "discriminator.num_feat=8",
    'losses.vgg_weights="random"',
    "losses.perceptual_layer_weights={ conv1_2 = 0.1, conv2_2 = 0.1 }",
    "train.gt_size=32",
    "train.crop_size=48",
    "train.batch_size_per_replica=2",
    "degradation.queue_size=4",
]


def _flat(obj, prefix=""):
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(_flat(value, key + "."))
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("recipe", sorted(ABLATIONS))
def test_ablation_recipe_is_x4plus_but_the_named_switch(recipe):
    base, ablation = _flat(load_pipeline("realesrgan_x4plus")), _flat(load_pipeline(recipe))
    changed = {k: ablation[k] for k in base if base[k] != ablation[k] and k != "name"}
    # the VGG D does not read skip_connection: the recipe leaves it out (default True, as x4plus)
    expected = {k: v for k, v in ABLATIONS[recipe].items() if v is not None}
    assert changed == expected


def test_vgg_discriminator_needs_a_power_of_two_gt_size():
    with pytest.raises(ConfigError, match=r"train.gt_size: 96 must be a power of two >= 16 for disc"):
        load_pipeline("ablation_d_vgg", ["train.gt_size=96"])
    with pytest.raises(ConfigError, match=r"init.discriminator: a .pth is read as the official U-Net netD"):
        load_pipeline("ablation_d_vgg", ["init.discriminator=RealESRGAN_x4plus_netD.pth"])
    with pytest.raises(ConfigError, match=r"discriminator.arch: 'patch' is not one of"):
        load_pipeline("realesrgan_x4plus", ['discriminator.arch="patch"'])


def _photo_crops(photos):
    crops = [p[i : i + 48, j : j + 48] for p in photos.values() for i in (40, 200) for j in (60, 140)]
    return np.stack(crops).astype("float32") / 255.0  # (12, 48, 48, 3)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(ABLATIONS))
def test_ablation_recipe_builds_and_trains_a_step(recipe, photos, tmp_path):
    config = load_pipeline(recipe, TINY)
    run = build_run(config, str(tmp_path / "run"))
    d = run.trainer.discriminator
    if recipe == "ablation_d_vgg":
        assert isinstance(d, VGGStyleDiscriminator) and d.input_size == 32
    else:
        assert isinstance(d, UNetDiscriminatorSN)
        assert any("sn_u" in w.path for w in d.weights) == (recipe != "ablation_d_no_sn")
    crops = _photo_crops(photos)
    kernels = sample_kernels(config.degradation, tf.constant([3, 4]), batch_size=2)
    batch = {"gt": tf.constant(crops[:2]), **kernels}
    g_before = [w.numpy().copy() for w in run.trainer.generator.trainable_weights]
    d_before = [w.numpy().copy() for w in d.trainable_weights]
    metrics = tf.function(run.trainer.train_step)(batch)
    assert int(run.trainer.step.numpy()) == 1
    assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert {"l_g_gan", "l_d_real", "l_d_fake", "l_g_percep"} <= set(metrics)
    for before, model in ((g_before, run.trainer.generator), (d_before, d)):
        after = [w.numpy() for w in model.trainable_weights]
        assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
