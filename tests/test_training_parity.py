"""One train step against BasicSR's `optimize_parameters`, re-implemented in torch as the oracle.

From the same weights (G, D with its spectral-norm u/v, VGG19) and the same (lq, gt, gt_usm) batch,
one step of our `RealESRGANTrainer`, built by `build_run` from the official recipes with tiny models,
must give the G, D and EMA-G weights (and gradients) of one iteration of:
  stage 1, `SRModel.optimize_parameters` as RealESRNetModel runs it (its `gt` is the sharpened GT):
    G: L1(G(lq), gt_usm) -> Adam step -> `model_ema(0.999)`;
  stage 2, `RealESRGANModel.optimize_parameters` (Real-ESRGAN 0.3.0 on BasicSR 1.4.2):
    D frozen (requires_grad False, but in train mode: its spectral norm still refines u, v);
    G: L1(sr, gt_usm) + perceptual(sr, gt_usm) + 0.1 BCE(D(sr), 1) -> backward -> Adam step;
    D: BCE(D(gt), 1).backward(), then BCE(D(sr.detach()), 0).backward(), one Adam step;
    then `model_ema(0.999)` over G's parameters.
Adam is torch's: betas (0.9, 0.99), eps 1e-8 added after the bias correction, no weight decay.
The torch networks are the oracles of the other tests (RRDBNet, U-Net SN D, torchvision VGG19 layout).

How "relative" is measured, float32 on both sides:
- updated G, D and EMA-G weights, D's spectral-norm u and the losses, per tensor:
  max |ours - torch| / max |torch| < 1e-5 (measured <= 2.5e-6);
- gradients, read from Adam's first moment after the step (m = 0.1 g), per tensor:
  max |ours - torch| / max |torch| < 1e-4. Float32 sums agree to ~1e-7 of the sum of |terms|, and
  some gradients cancel: D's conv9 bias sums 4096 BCE terms of +-0.5/N (real vs fake) to 1/27 of
  their absolute sum, so it shows 8.8e-6 in graph mode and 4e-5 under XLA (other summation order);
  in graph mode every other gradient agrees within 1.1e-6, under XLA within 2.1e-5 (conv_hr's bias);
- the update itself (w1 - w0), elementwise: within 2 float32 ulps of the weight plus what a gradient
  error of 1e-4 x max|g| can change in Adam's first step lr * g / (|g| + eps), at most
  lr * 1e-4 max|g| / (|g| + eps). "Relative to the step" cannot be 1e-5: the step is ~1e-3 of a
  weight, so one ulp is already ~4e-5 of a 2e-4 step for weights near 0.1, and Adam divides by
  |g| + 1e-8, so gradients of ~1e-9 (RRDBNet scales its dense blocks by 0.2) amplify float32 noise
  by 1 / eps (measured: up to 1.1e-3 of the step, on such elements).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from real_esrgan_tf.training.build import build_run
from real_esrgan_tf.training.config import load_pipeline
from real_esrgan_tf.training.losses import DEFAULT_LAYER_WEIGHTS, TORCH_MEAN, TORCH_STD, VGG19_BLOCKS
from real_esrgan_tf.training.optimizers import TorchAdam

torch = pytest.importorskip("torch")

from tests import torch_oracles as oracles  # noqa: E402  (the torch oracles shared by the tests)

NUM_FEAT, NUM_BLOCK, GROW, D_FEAT = 8, 1, 8, 8
EMA_DECAY = 0.999
# Perceptual taps before VGG19's first max pool: conv1_2 with its official weight 0.1, and conv1_1 at
# 1.0 so the weighted sum has two different weights. A tap after a pool makes the gradient depend on
# which of two nearly equal maxima float32 noise picks: the SR of a tiny random G is smooth, and
# hundreds of 2x2 windows have their top two values within 1e-6 relative, so TF and torch route some
# gradients to a neighbouring pixel (3 windows of conv1's pool flip here: 8e-2 relative gradient error).
# That is float32 arithmetic, not the step; the routing rule itself (first maximum, as torch) is
# checked on exact ties below, and all five official taps' forward values in test_losses.py.
LAYER_WEIGHTS = {"conv1_1": 1.0, "conv1_2": DEFAULT_LAYER_WEIGHTS["conv1_2"]}
TOLERANCE = 1e-5  # weights, EMA, spectral-norm u, losses
GRAD_TOLERANCE = 1e-4  # gradients (sums with cancellation; see the module docstring)
F = torch.nn.functional


# ------------------------------------------------------------------ the BasicSR step in torch


def _perceptual(vgg, x, gt):
    """BasicSR PerceptualLoss (vgg19, use_input_norm, before ReLU, L1, perceptual_weight 1)."""
    mean = torch.tensor(TORCH_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(TORCH_STD).view(1, 3, 1, 1)
    fx = oracles.vgg19_pre_relu_features(vgg, (x - mean) / std)
    fgt = oracles.vgg19_pre_relu_features(vgg, (gt.detach() - mean) / std)
    loss = 0
    for name, weight in LAYER_WEIGHTS.items():
        loss = loss + F.l1_loss(fx[name], fgt[name]) * weight
    return loss


def _bce(logits, real):
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _basicsr_step(g_params, net_d, vgg, lq, gt, gt_usm, g_lr, d_lr):
    """One `optimize_parameters` iteration (current_iter 1); net_d None is stage 1.

    Returns (EMA params, Adam optimizers, losses). `g_params` are updated in place, as is net_d.
    """
    ema = {k: v.detach().clone() for k, v in g_params.items()}  # net_g_ema starts as a copy (model_ema(0))
    opt_g = torch.optim.Adam(list(g_params.values()), lr=g_lr, betas=(0.9, 0.99), weight_decay=0)
    losses = {}
    if net_d is None:  # SRModel.optimize_parameters; RealESRNetModel's self.gt is the sharpened GT
        opt_g.zero_grad()
        output = oracles.rrdbnet(g_params, lq, 4, NUM_BLOCK)
        l_pix = F.l1_loss(output, gt_usm)
        l_pix.backward()
        opt_g.step()
        losses["l_g_pix"] = l_pix.item()
        opt_d = None
    else:  # RealESRGANModel.optimize_parameters, l1_gt_usm / percep_gt_usm True, gan_gt_usm False
        opt_d = torch.optim.Adam(net_d.parameters(), lr=d_lr, betas=(0.9, 0.99), weight_decay=0)
        for p in net_d.parameters():
            p.requires_grad = False
        opt_g.zero_grad()
        output = oracles.rrdbnet(g_params, lq, 4, NUM_BLOCK)
        l_g_pix = F.l1_loss(output, gt_usm)
        l_g_percep = _perceptual(vgg, output, gt_usm)
        l_g_gan = 0.1 * _bce(net_d(output), True)  # GANLoss(vanilla, loss_weight 0.1), is_disc False
        l_g_total = l_g_pix + l_g_percep + l_g_gan
        l_g_total.backward()
        opt_g.step()
        for p in net_d.parameters():
            p.requires_grad = True
        opt_d.zero_grad()
        l_d_real = _bce(net_d(gt), True)
        l_d_real.backward()
        l_d_fake = _bce(net_d(output.detach().clone()), False)
        l_d_fake.backward()
        opt_d.step()
        losses.update(
            l_g_pix=l_g_pix.item(),
            l_g_percep=l_g_percep.item(),
            l_g_gan=l_g_gan.item() / 0.1,  # ours logs the GAN term before its weight
            l_d_real=l_d_real.item(),
            l_d_fake=l_d_fake.item(),
        )
    with torch.no_grad():  # BaseModel.model_ema
        for k in ema:
            ema[k].mul_(EMA_DECAY).add_(g_params[k], alpha=1 - EMA_DECAY)
    return ema, opt_g, opt_d, losses


# ------------------------------------------------------------------ fixed inputs and weights


def _he_vgg19(seed, last="conv1_2"):
    """torchvision-layout VGG19 `features` up to `last`, He-normal weights so every level has signal."""
    torch.manual_seed(seed)
    net = oracles.vgg19_features()
    convs = [i for i, layer in enumerate(net) if isinstance(layer, torch.nn.Conv2d)]
    block, conv = (int(n) for n in last[4:].split("_"))
    index = convs[sum(n for b, n, _ in VGG19_BLOCKS if b < block) + conv - 1]
    net = net[: index + 1].eval()
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, torch.nn.Conv2d):
                fan_in = layer.weight[0].numel()
                layer.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
                layer.bias.uniform_(-0.05, 0.05)
    for p in net.parameters():
        p.requires_grad = False
    return net


@pytest.fixture(scope="module")
def batch(photos):
    """(lq, gt) NHWC float32: two 32x32 photo crops and their x4 area downscale with a little noise."""
    gt = np.stack([photos["astronaut"][100:132, 200:232], photos["coffee"][150:182, 300:332]])
    gt = gt.astype(np.float32) / 255.0
    lq = gt.reshape(2, 8, 4, 8, 4, 3).mean(axis=(2, 4))
    lq = np.clip(lq + np.random.default_rng(0).normal(0, 0.02, lq.shape), 0, 1).astype(np.float32)
    return lq, gt


def _nchw(a):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))


def _build(recipe, tmp_path, xla, with_d):
    """build_run on the official recipe with tiny models and the torch weights written as .pth files."""
    g_state = oracles.rrdbnet_state(4, NUM_FEAT, NUM_BLOCK, GROW, seed=3)
    torch.save({"params": g_state}, tmp_path / "net_g.pth")
    overrides = [
        f"generator.num_feat={NUM_FEAT}",
        f"generator.num_block={NUM_BLOCK}",
        f"generator.num_grow_ch={GROW}",
        "train.gt_size=32",
        "train.batch_size_per_replica=2",
        'train.data="paired"',
        f'train.xla="{xla}"',
        f'init.generator="{tmp_path / "net_g.pth"}"',
    ]
    net_d = vgg = None
    if with_d:
        torch.manual_seed(4)
        net_d = oracles.UNetDiscriminatorSN(D_FEAT).train()
        torch.save({"params": net_d.state_dict()}, tmp_path / "net_d.pth")
        vgg = _he_vgg19(seed=5)
        torch.save({f"features.{k}": v for k, v in vgg.state_dict().items()}, tmp_path / "vgg19.pth")
        overrides += [
            f"discriminator.num_feat={D_FEAT}",
            f'init.discriminator="{tmp_path / "net_d.pth"}"',
            f'losses.vgg_weights="{tmp_path / "vgg19.pth"}"',
            "losses.perceptual_layer_weights={"
            + ", ".join(f"{k} = {v}" for k, v in LAYER_WEIGHTS.items())
            + "}",
        ]
    config = load_pipeline(recipe, overrides)
    run = build_run(config, str(tmp_path / "run"), resume=False)
    g_params = {k: v.clone().requires_grad_(True) for k, v in g_state.items()}
    return config, run.trainer, g_params, net_d, vgg


# ------------------------------------------------------------------ comparison


def _g_pairs(generator, g_params):
    """[(name, keras variable, torch tensor as NHWC numpy-convertible fn)] for every G weight."""
    pairs = []
    for layer in generator.layers:
        if not layer.weights:
            continue
        prefix = layer.name.replace("_", ".") if layer.name.startswith("body_") else layer.name
        kernel, bias = layer.weights
        pairs.append((f"{prefix}.weight", kernel, lambda t: t.permute(2, 3, 1, 0)))
        pairs.append((f"{prefix}.bias", bias, lambda t: t))
    assert len(pairs) == len(g_params) == len(generator.trainable_variables)
    return pairs


def _d_pairs(discriminator, net_d):
    pairs = []
    for layer in discriminator.layers:
        if not (layer.name.startswith("conv") and layer.weights):
            continue
        if hasattr(layer, "sn_u"):
            pairs.append((f"{layer.name}.weight_orig", layer.kernel, lambda t: t.permute(2, 3, 1, 0)))
        else:
            pairs.append((f"{layer.name}.weight", layer.weights[0], lambda t: t.permute(2, 3, 1, 0)))
            pairs.append((f"{layer.name}.bias", layer.weights[1], lambda t: t))
    assert len(pairs) == len(list(net_d.parameters())) == len(discriminator.trainable_variables)
    return pairs


def _rel_error(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _record(errors, key, value, name):
    """Keep the worst error of each kind, with the tensor it came from."""
    if value >= errors.get(key, (0.0, ""))[0]:
        errors[key] = (value, name)


def _check_update(ours, ref, before, grad, lr, name):
    """Adam's first step w0 -> w1 equal up to float32 (see the module docstring for the bound).

    Returns max |step_ours - step_torch| / max |step_torch| for the report.
    """
    error = np.abs(ours.astype(np.float64) - ref)
    step = np.abs(ref.astype(np.float64) - before)
    assert step.max() > 0, f"{name} did not move"
    g = np.abs(grad.astype(np.float64))
    bound = 2 * np.spacing(np.abs(ref)) + lr * GRAD_TOLERANCE * g.max() / (g + 1e-8)
    worst = np.unravel_index(np.argmax(error - bound), error.shape)
    assert (error <= bound).all(), (name, worst, error[worst], bound[worst], grad[worst])
    return float(error.max() / step.max())


def _compare_net(pairs, params, before, optimizer_tf, optimizer_torch, lr, errors, what):
    """Weights, their update and the Adam moments (the gradient) of one network."""
    for name, variable, to_nhwc in pairs:
        p = params[name]
        ref, ours = to_nhwc(p.detach()).numpy(), variable.numpy()
        state = optimizer_torch.state[p]
        grad = to_nhwc(state["exp_avg"]).numpy() / 0.1  # m = (1 - beta_1) g after one step
        _record(errors, f"{what} weights", _rel_error(ours, ref), name)
        step_error = _check_update(ours, ref, before[name], grad, lr, name)
        _record(errors, f"{what} step (reported)", step_error, name)
        m = optimizer_tf._momentums[optimizer_tf._get_variable_index(variable)].numpy()
        _record(errors, f"{what} grad", _rel_error(m / 0.1, grad), name)


# ------------------------------------------------------------------ the tests


def _run_one_step(recipe, tmp_path, batch, xla, with_d):
    config, trainer, g_params, net_d, vgg = _build(recipe, tmp_path, xla, with_d)
    lq, gt = batch
    gt_usm = trainer._sharpener(tf.constant(gt)).numpy()  # one fixed (lq, gt, gt_usm) for both sides

    pairs = _g_pairs(trainer.generator, g_params)
    ema_of = {id(v): e for e, v in trainer.ema_pairs()}
    for name, variable, to_nhwc in pairs:  # the same starting point, G and its EMA copy
        np.testing.assert_array_equal(variable.numpy(), to_nhwc(g_params[name].detach()).numpy())
        np.testing.assert_array_equal(ema_of[id(variable)].numpy(), variable.numpy())
    g_before = {name: to_nhwc(g_params[name].detach()).numpy().copy() for name, _, to_nhwc in pairs}
    if with_d:
        d_params = dict(net_d.named_parameters())
        d_pairs = _d_pairs(trainer.discriminator, net_d)
        d_before = {name: to_nhwc(d_params[name].detach()).numpy().copy() for name, _, to_nhwc in d_pairs}

    # Our step as `train_step` runs it: `optimize` (its gradients XLA-compiled under xla = "model_step")
    # inside a tf.function.
    step_fn = tf.function(trainer.optimize)
    metrics = step_fn(tf.constant(lq), tf.constant(gt), tf.constant(gt_usm))
    assert int(trainer.step.numpy()) == 1

    o = config.optimizer
    ema, opt_g, opt_d, losses = _basicsr_step(
        g_params, net_d, vgg, _nchw(lq), _nchw(gt), _nchw(gt_usm), o.g_lr, o.d_lr
    )

    errors = {}
    for name, value in losses.items():
        _record(errors, f"loss {name}", abs(float(metrics[name]) - value) / abs(value), name)
    _compare_net(pairs, g_params, g_before, trainer.g_optimizer, opt_g, o.g_lr, errors, "G")
    for name, g_var, to_nhwc in pairs:
        ours = ema_of[id(g_var)].numpy()
        _record(errors, "EMA weights", _rel_error(ours, to_nhwc(ema[name]).numpy()), name)
    if with_d:
        _compare_net(d_pairs, d_params, d_before, trainer.d_optimizer, opt_d, o.d_lr, errors, "D")
        for layer in trainer.discriminator.layers:  # spectral-norm state after three power iterations
            if hasattr(layer, "sn_u"):
                u_ref = getattr(net_d, layer.name).weight_u.numpy()
                _record(errors, "D sn_u", _rel_error(layer.sn_u.numpy(), u_ref), layer.name)
    print(recipe, xla, {k: f"{v:.1e} ({n})" for k, (v, n) in errors.items()})
    for key, (value, name) in errors.items():
        if "reported" not in key:
            assert value < (GRAD_TOLERANCE if "grad" in key else TOLERANCE), (key, name, value)


@pytest.mark.slow
@pytest.mark.parametrize("xla", ["off", "model_step"])
def test_stage1_step_matches_basicsr(tmp_path, batch, xla):
    _run_one_step("realesrnet_x4plus", tmp_path, batch, xla, with_d=False)


# XLA only: the recipes' default (`xla = "model_step"`); graph mode gives the same or smaller errors
# (BUILD_NOTES) but would add ~7 s of tracing to the suite.
@pytest.mark.slow
@pytest.mark.parametrize("xla", ["model_step"])
def test_stage2_step_matches_basicsr(tmp_path, batch, xla):
    _run_one_step("realesrgan_x4plus", tmp_path, batch, xla, with_d=True)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_max_pool_gradient_goes_to_the_first_maximum_like_torch(jit_compile):
    """Exact ties (values from {0, 1, 2}) route the gradient as torch's max_pool2d backward does."""
    pool = keras.layers.MaxPooling2D(2)  # what build_vgg19_features pools with
    x = np.random.default_rng(0).integers(0, 3, size=(2, 8, 8, 4)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(2, 4, 4, 4)).astype(np.float32)

    @tf.function(jit_compile=jit_compile)
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(pool(x) * w)
        return tape.gradient(loss, x)

    xt = _nchw(x).requires_grad_(True)
    (F.max_pool2d(xt, 2) * _nchw(w)).sum().backward()
    expected = xt.grad.numpy().transpose(0, 2, 3, 1)
    assert (np.count_nonzero(expected.reshape(2, 4, 2, 4, 2, 4), axis=(2, 4)) == 1).all()  # one per window
    np.testing.assert_array_equal(grad(tf.constant(x)).numpy(), expected)


def test_torch_adam_matches_torch_optim_adam_over_steps():
    """TorchAdam = torch.optim.Adam for several steps (bias corrections of t > 1) and gradients from
    1e-10 to 1e-1, where Keras' Adam (epsilon 1e-7 before the bias correction) differs."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(64,)).astype(np.float32)
    grads = (rng.normal(size=(6, 64)) * 10.0 ** rng.uniform(-10, -1, size=(6, 64))).astype(np.float32)
    lr = 2e-4
    wt = torch.from_numpy(w0.copy()).requires_grad_(True)
    reference = torch.optim.Adam([wt], lr=lr, betas=(0.9, 0.99))
    ours, keras_adam = keras.Variable(w0), keras.Variable(w0)
    optimizer = TorchAdam(lr, beta_1=0.9, beta_2=0.99)
    plain = keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.99)
    apply = tf.function(lambda g: optimizer.apply([g], [ours]))
    for g in grads:
        wt.grad = torch.from_numpy(g)
        reference.step()
        apply(tf.constant(g))
        plain.apply([tf.constant(g)], [keras_adam])
    expected = wt.detach().numpy()
    moved = np.abs(expected - w0)
    error = np.abs(ours.numpy() - expected)
    assert (error <= 2 * np.spacing(np.abs(expected)) + 1e-5 * moved).all(), error.max() / moved.max()
    assert np.abs(keras_adam.numpy() - expected).max() > 0.1 * moved.max()  # the difference it fixes
