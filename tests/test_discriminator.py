"""UNetDiscriminatorSN against the reference table and against PyTorch's spectral_norm."""

import numpy as np
import pytest
import tensorflow as tf

from real_esrgan_tf.models import UNetDiscriminatorSN
from real_esrgan_tf.models.unet_discriminator import SPECTRAL_NORM_LAYERS, SpectralNormConv2D

torch = pytest.importorskip("torch")
torch_oracles = pytest.importorskip("tests.torch_oracles")


def _table_param_count(nf=64, cin=3):
    # (cin, cout, k, bias) per row of the reference table.
    rows = [
        (cin, nf, 3, True),
        (nf, 2 * nf, 4, False),
        (2 * nf, 4 * nf, 4, False),
        (4 * nf, 8 * nf, 4, False),
        (8 * nf, 4 * nf, 3, False),
        (4 * nf, 2 * nf, 3, False),
        (2 * nf, nf, 3, False),
        (nf, nf, 3, False),
        (nf, nf, 3, False),
        (nf, 1, 3, True),
    ]
    return sum(ci * co * k * k + (co if b else 0) for ci, co, k, b in rows)


def test_parameter_count_matches_table():
    d = UNetDiscriminatorSN(num_feat=64)
    trainable = sum(int(np.prod(w.shape)) for w in d.trainable_weights)
    assert trainable == _table_param_count() == 4_376_897  # "4.38 M"


def test_spectral_norm_on_exactly_conv1_to_conv8_and_bias_only_on_conv0_conv9():
    d = UNetDiscriminatorSN(num_feat=8)
    sn = {layer.name for layer in d.layers if isinstance(layer, SpectralNormConv2D)}
    assert sn == set(SPECTRAL_NORM_LAYERS) == {f"conv{i}" for i in range(1, 9)}
    with_bias = {layer.name for layer in d.layers if getattr(layer, "bias", None) is not None}
    assert with_bias == {"conv0", "conv9"}
    # u, v are state, not trained.
    assert not any("sn_" in w.path for w in d.trainable_weights)
    assert len([w for w in d.non_trainable_weights if "sn_" in w.path]) == 16


def test_top_singular_value_is_one_after_power_iterations():
    layer = SpectralNormConv2D(24, 3, padding=1, power_iterations=1)
    layer.build((None, None, None, 16))
    rng = np.random.default_rng(3)
    # A matrix with a known spectrum (top 8, next 4): the iteration converges like (4/8)^n.
    left, _ = np.linalg.qr(rng.normal(size=(144, 24)))
    right, _ = np.linalg.qr(rng.normal(size=(24, 24)))
    spectrum = np.concatenate([[8.0], np.linspace(4.0, 0.5, 23)])
    layer.kernel.assign((left * spectrum @ right.T).reshape(3, 3, 16, 24).astype("float32"))
    for _ in range(40):  # 40 training calls = 40 power iterations
        layer.normalized_kernel(training=True)
    w = layer.normalized_kernel(training=False).numpy().reshape(-1, 24)
    assert abs(np.linalg.svd(w, compute_uv=False)[0] - 1.0) < 1e-3


def test_inference_does_not_touch_u_and_v():
    layer = SpectralNormConv2D(4, 3)
    x = tf.random.normal((1, 8, 8, 2))
    layer(x)
    u0 = layer.sn_u.numpy().copy()
    layer(x, training=False)
    np.testing.assert_array_equal(layer.sn_u.numpy(), u0)
    layer(x, training=True)
    assert not np.allclose(layer.sn_u.numpy(), u0)


def _copy_sn_conv_to_tf(tconv, layer):
    """torch spectral-norm conv -> SpectralNormConv2D (kernel, u, v with v's columns permuted)."""
    w = tconv.weight_orig.detach().numpy()  # (Cout, Cin, k, k)
    cout, cin, k, _ = w.shape
    layer.kernel.assign(w.transpose(2, 3, 1, 0))
    layer.sn_u.assign(tconv.weight_u.numpy())
    layer.sn_v.assign(tconv.weight_v.numpy().reshape(cin, k, k).transpose(1, 2, 0).reshape(-1))
    if layer.bias is not None:
        layer.bias.assign(tconv.bias.detach().numpy())


@pytest.mark.parametrize("k,s", [(4, 2), (3, 1)])
def test_single_conv_matches_torch_spectral_norm(k, s):
    torch.manual_seed(0)
    tconv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(6, 10, k, s, 1, bias=False))
    layer = SpectralNormConv2D(10, k, strides=s, padding=1)
    layer.build((None, None, None, 6))
    _copy_sn_conv_to_tf(tconv, layer)
    x = np.random.default_rng(1).normal(size=(2, 6, 12, 12)).astype("float32")
    xt = torch.from_numpy(x).requires_grad_(False)
    xf = tf.constant(x.transpose(0, 2, 3, 1))
    for _ in range(3):  # three training calls: u, v evolve identically
        tconv.train()
        yt = tconv(xt)
        with tf.GradientTape() as tape:
            yf = layer(xf, training=True)
            loss_f = tf.reduce_sum(yf * yf)
        (yt * yt).sum().backward()
        yt_nhwc = yt.detach().numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(yf.numpy(), yt_nhwc, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(layer.sn_u.numpy(), tconv.weight_u.numpy(), atol=1e-6)
        grad_f = tape.gradient(loss_f, layer.kernel).numpy()
        grad_t = tconv.weight_orig.grad.numpy().transpose(2, 3, 1, 0)
        np.testing.assert_allclose(grad_f, grad_t, atol=1e-4, rtol=1e-4)
        tconv.weight_orig.grad = None
    tconv.eval()
    np.testing.assert_allclose(
        layer(xf, training=False).numpy(),
        tconv(xt).detach().numpy().transpose(0, 2, 3, 1),
        atol=1e-5,
        rtol=1e-4,
    )


def test_whole_discriminator_matches_torch_oracle():
    torch.manual_seed(0)
    tnet = torch_oracles.UNetDiscriminatorSN(8).train()
    d = UNetDiscriminatorSN(num_feat=8)
    for name in ("conv0", "conv9"):
        tc, layer = getattr(tnet, name), d.get_layer(name)
        layer.set_weights([tc.weight.detach().numpy().transpose(2, 3, 1, 0), tc.bias.detach().numpy()])
    for name in SPECTRAL_NORM_LAYERS:
        _copy_sn_conv_to_tf(getattr(tnet, name), d.get_layer(name))
    x = np.random.default_rng(0).uniform(size=(2, 3, 32, 24)).astype("float32")
    for _ in range(2):
        yt = tnet(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1)
        yf = d(x.transpose(0, 2, 3, 1), training=True).numpy()
        assert yf.shape == (2, 32, 24, 1) and yf.dtype == np.float32
        np.testing.assert_allclose(yf, yt, atol=1e-5, rtol=1e-4)


def test_logits_are_float32_under_mixed_policy():
    d = UNetDiscriminatorSN(num_feat=8, dtype="mixed_bfloat16")
    y = d(tf.random.uniform((1, 16, 16, 3)), training=True)
    assert y.dtype == tf.float32
    assert all(w.dtype == "float32" for w in d.weights)
