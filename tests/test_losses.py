"""Losses against PyTorch (BCE-with-logits, a torchvision-layout VGG19) and Keras' own VGG19."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from real_esrgan_tf.training import losses
from real_esrgan_tf.training.losses import (
    DEFAULT_LAYER_WEIGHTS,
    PerceptualLoss,
    PerceptualLossConfig,
    VGGWeightsError,
    build_vgg19_features,
    load_vgg19_weights,
    normalize_for_vgg,
)

torch = pytest.importorskip("torch")
torch_oracles = pytest.importorskip("tests.torch_oracles")


def test_l1_matches_numpy_over_seeds():
    for seed in range(3):
        rng = np.random.default_rng(seed)
        a, b = rng.uniform(size=(2, 5, 7, 3)), rng.uniform(size=(2, 5, 7, 3))
        np.testing.assert_allclose(losses.l1_loss(a, b).numpy(), np.abs(a - b).mean(), rtol=1e-6)


def test_gan_losses_match_torch_bce_with_logits():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(2, 8, 8, 1)) * 4, rng.normal(size=(2, 8, 8, 1)) * 4
    bce = torch.nn.BCEWithLogitsLoss()
    tr, tf_ = torch.from_numpy(real), torch.from_numpy(fake)
    np.testing.assert_allclose(
        losses.gan_loss_generator(fake).numpy(), bce(tf_, torch.ones_like(tf_)), rtol=1e-5
    )
    d_real, d_fake = losses.gan_loss_discriminator(real, fake)
    np.testing.assert_allclose(d_real.numpy(), bce(tr, torch.ones_like(tr)), rtol=1e-5)
    np.testing.assert_allclose(d_fake.numpy(), bce(tf_, torch.zeros_like(tf_)), rtol=1e-5)
    # mixed-precision logits still give float32 losses
    assert losses.gan_loss_generator(tf.cast(fake, tf.float16)).dtype == tf.float32


@pytest.fixture(scope="module")
def torch_vgg(tmp_path_factory):
    torch.manual_seed(0)
    net = torch_oracles.vgg19_features().eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in net.state_dict().items()}, path)
    return net, str(path)


def test_pth_weights_give_torch_pre_relu_features_and_official_loss(torch_vgg, photos):
    net, path = torch_vgg
    loss_fn = PerceptualLoss(PerceptualLossConfig(vgg_weights=path))
    assert loss_fn.input_norm == "torch"
    gt = photos["astronaut"][100:132, 200:232].astype("float32")[None] / 255.0  # (1, 32, 32, 3)
    sr = np.clip(gt + np.random.default_rng(0).normal(0, 0.05, gt.shape), 0, 1).astype("float32")

    def features(a):
        x = torch_oracles.imagenet_normalize(torch_oracles.to_nchw(a))
        return torch_oracles.vgg19_pre_relu_features(net, x)

    with torch.no_grad():
        ft_sr, ft_gt = features(sr), features(gt)
    mine = loss_fn.features(normalize_for_vgg(sr, "torch"))
    for name in DEFAULT_LAYER_WEIGHTS:
        ref = ft_sr[name].numpy().transpose(0, 2, 3, 1)
        assert (ref < 0).any()  # really before the ReLU
        np.testing.assert_allclose(mine[name].numpy(), ref, atol=2e-4 * np.abs(ref).max(), rtol=1e-3)
    expected = sum(
        w * torch.nn.functional.l1_loss(ft_sr[n], ft_gt[n]).item() for n, w in DEFAULT_LAYER_WEIGHTS.items()
    )
    np.testing.assert_allclose(loss_fn(sr, gt).numpy(), expected, rtol=1e-4)
    # gt and sr run as one batch of 2, and oneDNN's AVX2 kernels may round the two rows differently
    # (1e-9 seen on Zen 3), so "zero" is relative to a real difference.
    assert abs(loss_fn(gt, gt).numpy()) <= 1e-6 * expected


def test_keras_weights_file_uses_caffe_normalisation(tmp_path):
    reference = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    path = str(tmp_path / "vgg19_notop.weights.h5")
    reference.save_weights(path)
    features = build_vgg19_features(("conv2_2",))
    assert load_vgg19_weights(features, path) == "caffe"
    x = np.random.default_rng(0).uniform(size=(1, 16, 16, 3)).astype("float32")
    normalized = normalize_for_vgg(x, "caffe")
    np.testing.assert_allclose(
        normalized.numpy(), keras.applications.vgg19.preprocess_input(x * 255.0), rtol=1e-5, atol=1e-4
    )
    probe = keras.Model(reference.input, reference.get_layer("block2_conv2").output)
    np.testing.assert_allclose(
        tf.nn.relu(features(normalized)["conv2_2"]).numpy(), probe(normalized).numpy(), rtol=1e-4, atol=1e-3
    )


def test_missing_weights_give_one_clear_error(tmp_path):
    features = build_vgg19_features(("conv1_2",))
    with pytest.raises(VGGWeightsError, match="nope.h5: no such VGG19 weights file"):
        load_vgg19_weights(features, str(tmp_path / "nope.h5"))
    with pytest.raises(VGGWeightsError, match="nope.pth"):
        load_vgg19_weights(features, str(tmp_path / "nope.pth"))


def test_gradient_flows_to_prediction_only():
    loss_fn = PerceptualLoss(
        PerceptualLossConfig(layer_weights={"conv1_2": 0.1, "conv2_2": 0.1}, vgg_weights="random")
    )
    sr = tf.Variable(tf.random.uniform((1, 16, 16, 3)))
    gt = tf.Variable(tf.random.uniform((1, 16, 16, 3)))
    with tf.GradientTape() as tape:
        loss = loss_fn(sr, gt)
    g_sr, g_gt = tape.gradient(loss, [sr, gt])
    assert g_gt is None or not np.any(g_gt.numpy())
    assert float(tf.reduce_sum(tf.abs(g_sr))) > 0


def test_random_vgg_weights_log_one_warning_that_the_loss_is_meaningless(caplog, torch_vgg):
    import logging

    from real_esrgan_tf.training.losses import RANDOM_VGG_WARNING, PerceptualLoss, PerceptualLossConfig

    with caplog.at_level(logging.WARNING, logger="absl"):
        PerceptualLoss(PerceptualLossConfig({"conv1_2": 1.0}, "random"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "absl"]
    assert [r.getMessage() for r in warnings] == [RANDOM_VGG_WARNING]
    assert "meaningless" in RANDOM_VGG_WARNING and "\n" not in RANDOM_VGG_WARNING
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="absl"):
        load_vgg19_weights(build_vgg19_features(("conv1_2",)), torch_vgg[1])  # real weights: quiet
    assert not [r for r in caplog.records if r.name == "absl"]
