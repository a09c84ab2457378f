"""UNetDiscriminatorSN against the reference table and PyTorch's spectral_norm; the ablation Ds."""

import numpy as np
import pytest
import tensorflow as tf

from real_esrgan_tf.models import UNetDiscriminatorSN, VGGStyleDiscriminator
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


# ------------------------------------------------------------------ ablation discriminators


def test_unet_without_spectral_norm_has_no_sn_state_and_matches_torch_plain_convs():
    d = UNetDiscriminatorSN(num_feat=8, spectral_norm=False)
    sn = UNetDiscriminatorSN(num_feat=8)
    assert not any("sn_" in w.path for w in d.weights) and not d.non_trainable_weights
    assert [w.shape for w in d.trainable_weights] == [w.shape for w in sn.trainable_weights]
    assert sum(int(np.prod(w.shape)) for w in UNetDiscriminatorSN(spectral_norm=False).weights) == 4_376_897
    torch.manual_seed(0)
    tnet = torch_oracles.UNetDiscriminatorSN(8, spectral_norm=False)
    for name in ("conv0", *SPECTRAL_NORM_LAYERS, "conv9"):
        tc, layer = getattr(tnet, name), d.get_layer(name)
        weights = [tc.weight.detach().numpy().transpose(2, 3, 1, 0)]
        layer.set_weights(weights + ([tc.bias.detach().numpy()] if tc.bias is not None else []))
    x = np.random.default_rng(0).uniform(size=(2, 3, 32, 24)).astype("float32")
    before = [w.numpy().copy() for w in d.weights]
    yf = d(x.transpose(0, 2, 3, 1), training=True).numpy()
    np.testing.assert_allclose(yf, tnet(torch.from_numpy(x)).detach().numpy().transpose(0, 2, 3, 1),
                               atol=1e-5, rtol=1e-4)
    for a, w in zip(before, d.weights, strict=True):  # a training call changes no state
        np.testing.assert_array_equal(a, w.numpy())


class _TorchVGGStyleD(torch.nn.Module):
    """ESRGAN's VGG-style D for 128x128 input, written out from BasicSR 1.4.2's layer list (test oracle):
    conv0_0 3x3 + bias; conv{i}_0 3x3 + BN (i >= 1), conv{i}_1 4x4 s2 + BN; linear 8nf*16 -> 100 -> 1."""

    def __init__(self, nf):
        super().__init__()
        c, bn = torch.nn.Conv2d, torch.nn.BatchNorm2d
        self.conv0_0 = c(3, nf, 3, 1, 1)
        feats = [nf, 2 * nf, 4 * nf, 8 * nf, 8 * nf]
        layers, cin = [c(nf, nf, 4, 2, 1, bias=False), bn(nf)], nf
        for f in feats[1:]:
            layers += [c(cin, f, 3, 1, 1, bias=False), bn(f), c(f, f, 4, 2, 1, bias=False), bn(f)]
            cin = f
        self.body = torch.nn.ModuleList(layers)
        self.linear1 = torch.nn.Linear(8 * nf * 16, 100)
        self.linear2 = torch.nn.Linear(100, 1)

    def forward(self, x):
        a = lambda t: torch.nn.functional.leaky_relu(t, 0.2)
        x = a(self.conv0_0(x))
        for conv, norm in zip(self.body[::2], self.body[1::2], strict=True):
            x = a(norm(conv(x)))
        return self.linear2(a(self.linear1(x.flatten(1))))


def _copy_vgg_d(tnet, d):
    d.get_layer("conv0_0").set_weights(
        [tnet.conv0_0.weight.detach().numpy().transpose(2, 3, 1, 0), tnet.conv0_0.bias.detach().numpy()]
    )
    names = ["0_1"] + [f"{i}_{j}" for i in range(1, 5) for j in (0, 1)]
    for name, conv, norm in zip(names, tnet.body[::2], tnet.body[1::2], strict=True):
        d.get_layer(f"conv{name}").set_weights([conv.weight.detach().numpy().transpose(2, 3, 1, 0)])
        d.get_layer(f"bn{name}").set_weights(
            [t.detach().numpy() for t in (norm.weight, norm.bias, norm.running_mean, norm.running_var)]
        )
    for name in ("linear1", "linear2"):
        lin = getattr(tnet, name)
        d.get_layer(name).set_weights([lin.weight.detach().numpy().T, lin.bias.detach().numpy()])


def test_vgg_style_discriminator_matches_basicsr_layers_count_and_outputs():
    d = VGGStyleDiscriminator(num_feat=64, input_size=128)
    tnet = _TorchVGGStyleD(64)
    buffers = sum(b.numel() for n, b in tnet.named_buffers() if "num_batches" not in n)
    trainable = sum(int(np.prod(w.shape)) for w in d.trainable_weights)
    assert trainable == sum(p.numel() for p in tnet.parameters())
    assert sum(int(np.prod(w.shape)) for w in d.non_trainable_weights) == buffers
    # by hand, nf 64: conv0_0 3*64*9+64; 4x4 convs 64^2, 128^2, 256^2, 512^2, 512^2 (x16); 3x3 convs
    # 64*128, 128*256, 256*512, 512*512 (x9); BN 2C each; linear 8192*100+100, 100+1
    convs = 3 * 64 * 9 + 64 + 16 * (64**2 + 128**2 + 256**2 + 2 * 512**2)
    convs += 9 * (64 * 128 + 128 * 256 + 256 * 512 + 512**2)
    bns = 2 * (64 + 2 * (128 + 256 + 512 + 512))
    assert sum(p.numel() for p in tnet.parameters()) == convs + bns + 8192 * 100 + 100 + 101 == 14_499_401
    small, tsmall = VGGStyleDiscriminator(num_feat=8, input_size=128), _TorchVGGStyleD(8)
    torch.manual_seed(0)
    for m in tsmall.modules():  # non-trivial BN state, so the running statistics are checked too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    _copy_vgg_d(tsmall, small)
    x = np.random.default_rng(0).uniform(size=(3, 3, 128, 128)).astype("float32")
    y = small(x.transpose(0, 2, 3, 1), training=False).numpy()
    assert y.shape == (3, 1) and y.dtype == np.float32
    np.testing.assert_allclose(y, tsmall.eval()(torch.from_numpy(x)).detach().numpy(), atol=1e-5, rtol=1e-4)
    y = small(x.transpose(0, 2, 3, 1), training=True).numpy()  # batch statistics, running stats updated
    np.testing.assert_allclose(y, tsmall.train()(torch.from_numpy(x)).detach().numpy(), atol=1e-4, rtol=1e-3)
    # running mean as torch; the running variance differs by torch's unbiased n/(n-1) batch variance,
    # which never matters here: the trainer always calls D in training mode (batch statistics).
    np.testing.assert_allclose(small.get_layer("bn4_1").moving_mean.numpy(),
                               tsmall.body[-1].running_mean.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="power of two"):
        VGGStyleDiscriminator(input_size=96)
