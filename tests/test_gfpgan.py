"""GFPGANv1Clean + load_gfpgan against the real `gfpgan` 1.3.8 package (PyTorch CPU) on the same weights.

Random weights in the official layout are written with torch.save and read back by our torch-free
reader (torch blocked from import while loading). Random StyleGAN2 init leaves the noise strengths and
decoder biases at zero, so both are set to small random values before saving: the noise path and the
biases count in the comparison. Outputs are compared on [0, 1] ((x + 1) / 2) with the noise fixed on
both sides (the stored `noises.noise{i}` buffers: randomize_noise=False).
"""

import inspect
import sys

import numpy as np
import pytest

# triton (torch's GPU kernel compiler, a dependency of the Linux torch wheel) segfaults when imported after
# TensorFlow, and torchvision imports it through torch._dynamo; torch on the CPU never needs it and treats
# an ImportError as "no triton". Set before any torchvision import (belongs in tests/upstream.py).
sys.modules.setdefault("triton", None)

from real_esrgan_tf.models.gfpgan import GFPGANv1Clean  # noqa: E402
from real_esrgan_tf.weights.errors import WeightsError  # noqa: E402
from real_esrgan_tf.weights.gfpgan_pth import gfpgan_assignments, load_gfpgan  # noqa: E402

# A small GFPGAN: 32 px, latents of 16, U-Net widths 32 (8 at the 32-px level), 2 MLP layers.
SMALL = dict(out_size=32, num_style_feat=16, channel_multiplier=2, narrow=0.125, num_mlp=2)
GFPGANER = dict(out_size=512, num_style_feat=512, channel_multiplier=2, narrow=1, num_mlp=8)


def _psnr01(a, b):
    """PSNR of two [-1, 1] images mapped to [0, 1] (peak 1)."""
    diff = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) / 2
    return 10 * np.log10(1.0 / np.mean(diff**2))


def _torch_gfpgan(torch, config, seed, different_w=True, sft_half=True, input_is_latent=True, rgb_gain=1.0):
    """The real gfpgan GFPGANv1Clean, seeded, with non-zero noise strengths and decoder biases.

    The output is the sum of the ToRGB layers (linear in their weights and biases): `rgb_gain` scales
    them all, and so the output, into a sane range.
    """
    from tests.upstream import import_upstream

    arch = import_upstream("gfpgan.archs.gfpganv1_clean_arch")
    torch.manual_seed(seed)
    model = arch.GFPGANv1Clean(
        decoder_load_path=None,
        fix_decoder=False,
        input_is_latent=input_is_latent,
        different_w=different_w,
        sft_half=sft_half,
        **config,
    ).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("stylegan_decoder") and name.endswith(".weight") and param.ndim == 1:
                param.normal_(0.0, 0.2)  # noise strength of each StyleConv
            elif name.startswith("stylegan_decoder") and name.endswith(".bias") and param.ndim == 4:
                param.uniform_(-0.1, 0.1)  # StyleConv / ToRGB biases
            if ".to_rgb" in name and param.ndim >= 4:  # kernel (1, 3, C, 1, 1) and bias (1, 3, 1, 1)
                param.mul_(rgb_gain)
    return model


def _torch_forward(torch, model, x_nhwc, **kwargs):
    with torch.no_grad():
        out = model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy()), return_rgb=False, **kwargs)[0]
    return out.numpy().transpose(0, 2, 3, 1)


def _load_without_torch(monkeypatch, path, **kwargs):
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
        return load_gfpgan(path, **kwargs)


def _faces(n, size, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(torch model, path of its {"params_ema": state_dict} file) for the SMALL config."""
    torch = pytest.importorskip("torch")
    model = _torch_gfpgan(torch, SMALL, seed=1)
    path = tmp_path_factory.mktemp("gfpgan") / "small.pth"
    torch.save({"params_ema": model.state_dict()}, path)
    return model, path


@pytest.mark.parametrize(
    "different_w, sft_half, input_is_latent",
    [(True, True, True), (False, False, True), (False, True, False)],
    ids=["gfpganer", "shared-w-full-sft", "style-mlp"],
)
def test_small_generator_equals_gfpgan_package(tmp_path, monkeypatch, different_w, sft_half, input_is_latent):
    """A batch of 3 through a small GFPGAN in every option combination: equal to the torch module."""
    torch = pytest.importorskip("torch")
    model = _torch_gfpgan(
        torch, SMALL, seed=2, different_w=different_w, sft_half=sft_half, input_is_latent=input_is_latent
    )
    path = tmp_path / "g.pth"
    torch.save({"params_ema": model.state_dict()}, path)
    x = _faces(3, 32)
    reference = _torch_forward(torch, model, x, randomize_noise=False)
    ours = _load_without_torch(monkeypatch, path, input_is_latent=input_is_latent)
    assert (ours.different_w, ours.sft_half, ours.num_mlp) == (different_w, sft_half, 2)
    out = ours(x, randomize_noise=False).numpy()
    assert out.shape == (3, 32, 32, 3) and reference.std() > 0.02
    assert _psnr01(out, reference) >= 50.0


def test_noise_inputs_weight_argument_and_batch(small, monkeypatch):
    """Fixed noise given as tensors = the stored buffers; fresh noise per call and per sample otherwise;
    the official `weight` argument changes nothing; a face's output does not depend on its batch."""
    torch = pytest.importorskip("torch")
    torch_model, path = small
    model = _load_without_torch(monkeypatch, path)
    x = _faces(2, 32, seed=3)
    x[1] = x[0]
    stored = model(x, randomize_noise=False).numpy()
    buffers = [
        getattr(torch_model.stylegan_decoder.noises, f"noise{i}").numpy().transpose(0, 2, 3, 1)
        for i in range(model.num_layers)
    ]
    given = model(x, noise=buffers).numpy()
    np.testing.assert_allclose(given, stored, atol=1e-5)
    assert np.array_equal(stored[0], stored[1])
    single = model(x[:1], randomize_noise=False).numpy()
    np.testing.assert_allclose(single[0], stored[0], atol=1e-5)
    random1, random2 = model(x).numpy(), model(x).numpy()
    assert np.abs(random1 - random2).max() > 1e-3  # a new draw per call
    assert np.abs(random1[0] - random1[1]).max() > 1e-3  # and per sample
    # the official forward swallows `weight` (GFPGANer passes 0.5): no effect
    a = _torch_forward(torch, torch_model, x, randomize_noise=False, weight=0.5)
    b = _torch_forward(torch, torch_model, x, randomize_noise=False, weight=1.0)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="noise must be a list of 7 tensors"):  # 4, 8, 8, 16, 16, 32, 32
        model(x, noise=buffers[:3])


def test_params_fallback_and_params_ema_preferred(small, tmp_path, monkeypatch):
    """GFPGANer reads `params_ema` when present, else `params`; so does load_gfpgan."""
    torch = pytest.importorskip("torch")
    torch_model, _ = small
    other = _torch_gfpgan(torch, SMALL, seed=5)
    x = _faces(1, 32, seed=4)
    ema_path, params_path = tmp_path / "both.pth", tmp_path / "params.pth"
    torch.save({"params": other.state_dict(), "params_ema": torch_model.state_dict()}, ema_path)
    torch.save({"params": other.state_dict()}, params_path)
    from_ema = _load_without_torch(monkeypatch, ema_path)(x, randomize_noise=False).numpy()
    from_params = _load_without_torch(monkeypatch, params_path)(x, randomize_noise=False).numpy()
    assert _psnr01(from_ema, _torch_forward(torch, torch_model, x, randomize_noise=False)) >= 50.0
    assert _psnr01(from_params, _torch_forward(torch, other, x, randomize_noise=False)) >= 50.0


def test_config_round_trip_and_bfloat16_rebuild(small, monkeypatch):
    """get_config/from_config rebuilds the same model; `rebuild_model` gives a bfloat16 copy that stays
    close to float32 (the precision path of serve/keras_backend)."""
    pytest.importorskip("torch")
    from real_esrgan_tf.serve.keras_backend import rebuild_model

    _, path = small
    model = _load_without_torch(monkeypatch, path)
    x = _faces(2, 32, seed=6)
    reference = model(x, randomize_noise=False).numpy()
    copy = GFPGANv1Clean.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    np.testing.assert_array_equal(copy(x, randomize_noise=False).numpy(), reference)
    bf16 = rebuild_model(model, "bfloat16")
    assert bf16.compute_dtype == "bfloat16"
    out = bf16(x, randomize_noise=False).numpy().astype(np.float32)
    assert out.shape == reference.shape and _psnr01(out, reference) > 30.0


def _save_state(torch, path, state):
    torch.save({"params_ema": state}, path)


def test_bad_files_give_one_line(small, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    torch_model, _ = small
    state = dict(torch_model.state_dict())

    def error(path):
        with pytest.raises(WeightsError) as info:
            _load_without_torch(monkeypatch, path)
        message = str(info.value)
        assert "\n" not in message and str(path) in message
        return message

    assert "no such file" in error(tmp_path / "absent.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    error(garbage)
    rrdb = tmp_path / "rrdb.pth"
    _save_state(
        torch, rrdb, {"conv_first.weight": torch.zeros(4, 3, 3, 3), "conv_first.bias": torch.zeros(4)}
    )
    assert "missing key 'stylegan_decoder.noises.noise0'" in error(rrdb)
    without = dict(state)
    del without["condition_shift.1.2.bias"]
    _save_state(torch, tmp_path / "missing.pth", without)
    assert "missing key 'condition_shift.1.2.bias'" in error(tmp_path / "missing.pth")
    extra = {**state, "stylegan_decoder.extra.weight": torch.zeros(2)}
    _save_state(torch, tmp_path / "extra.pth", extra)
    assert "unexpected key 'stylegan_decoder.extra.weight'" in error(tmp_path / "extra.pth")
    wrong = {**state, "final_conv.weight": torch.zeros(5, 5, 3, 3)}
    _save_state(torch, tmp_path / "shape.pth", wrong)
    assert "final_conv.weight has shape (5, 5, 3, 3)" in error(tmp_path / "shape.pth")


@pytest.fixture(scope="module")
def gfpganer_file(tmp_path_factory):
    """GFPGANv1.3/v1.4 layout: a random GFPGANer-config model saved as {"params_ema": ...}, and the real
    `GFPGANer` (gfpgan/utils.py) built on that file (its own config and strict load_state_dict)."""
    torch = pytest.importorskip("torch")
    from tests.upstream import import_upstream

    utils = import_upstream("gfpgan.utils")
    path = tmp_path_factory.mktemp("gfpganer") / "GFPGANv1.4.pth"
    source = _torch_gfpgan(torch, GFPGANER, seed=0, rgb_gain=0.2)  # unscaled: std 0.97, max |x| 4.5
    state = source.state_dict()
    torch.save({"params_ema": state}, path)
    layout = {key: tuple(value.shape) for key, value in state.items()}
    del source, state
    helper = utils.FaceRestoreHelper
    utils.FaceRestoreHelper = lambda *args, **kwargs: None  # its detector weights are not offline
    try:
        restorer = utils.GFPGANer(
            model_path=str(path), upscale=2, arch="clean", channel_multiplier=2, device=torch.device("cpu")
        )
    finally:
        utils.FaceRestoreHelper = helper
    return restorer.gfpgan, path, layout


@pytest.mark.slow
def test_gfpganer_v1_3_v1_4_layout_loads_to_the_default_config(gfpganer_file, monkeypatch):
    """The one official layout (v1.3 and v1.4 alike): 285 keys, each mapped once, GFPGANer's config."""
    _, path, layout = gfpganer_file
    model = _load_without_torch(monkeypatch, path)
    defaults = {
        name: p.default for name, p in inspect.signature(GFPGANv1Clean).parameters.items() if name != "kwargs"
    }
    assert {k: v for k, v in model.get_config().items() if k != "name"} == defaults
    pairs = gfpgan_assignments(model)
    assert len(layout) == 285 and sum(int(np.prod(s)) for s in layout.values()) == 87_143_276
    assert sorted(key for key, _, _ in pairs) == sorted(layout)
    assert len(pairs) == len(model.weights)


@pytest.mark.slow
def test_gfpganer_generator_at_512_equals_gfpgan_package(gfpganer_file, monkeypatch):
    """GFPGANer's own module on the same file vs ours on one 512x512 face, noise fixed: >= 50 dB in fp32."""
    torch = pytest.importorskip("torch")
    oracle, path, _ = gfpganer_file
    x = _faces(1, 512, seed=7)
    reference = _torch_forward(torch, oracle, x, randomize_noise=False, weight=0.5)
    # a sane range: not flat, not blown up, almost all inside [-1, 1] where GFPGANer clamps
    assert 0.05 < reference.std() and np.abs(reference).max() < 2.0 and np.mean(np.abs(reference) < 1) > 0.99
    model = _load_without_torch(monkeypatch, path)
    out = model(x, randomize_noise=False).numpy()
    assert out.shape == (1, 512, 512, 3)
    assert _psnr01(out, reference) >= 50.0
