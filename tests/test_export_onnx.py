"""`export/onnx.py`: every generator architecture written to ONNX and read back by ONNX Runtime and
OpenVINO (the runtimes its users run it with), against Keras on the same inputs.

Tiny random-weight models keep it fast; the weights are perturbed so PReLU slopes differ per channel
and a channel-order mistake (DepthToSpace DCR vs CRD, SpaceToDepth, PReLU broadcasting) shows.
"""

import os

import keras
import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import pytest

from real_esrgan_tf.export.common import ExportError
from real_esrgan_tf.export.onnx import IR_VERSION, OPSET, to_model_proto, write
from real_esrgan_tf.models import RRDBNet, SRVGGNetCompact, UNetDiscriminatorSN
from real_esrgan_tf.serve.keras_backend import blend_generators
from real_esrgan_tf.tiling import reflect_pad_to_multiple


@pytest.fixture(scope="module")
def options_type():
    from real_esrgan_tf.export.formats import ExportOptions

    return ExportOptions


def psnr(a, b):
    """PSNR for signals of peak 1, unclipped (the raw net output: a clipped comparison could hide errors)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(1.0 / max(mse, 1e-30))  # identical outputs: 300 dB


def randomized(model, seed):
    """The model with its weights perturbed (per-channel PReLU slopes in [0, 0.5]).

    RRDBNet's last conv is scaled up and biased to 0.5 so that its output is a picture in [0, 1]
    with contrast (std ~0.2) rather than noise around 0 that the Upscaler would clip to black.
    """
    rng = np.random.default_rng(seed)
    weights = []
    for layer in model.layers:
        for k, w in enumerate(layer.get_weights()):
            if isinstance(layer, keras.layers.PReLU):
                w = rng.uniform(0.0, 0.5, w.shape)
            else:
                w = w + rng.normal(0.0, 0.02, w.shape)
            if isinstance(model, RRDBNet) and layer.name == "conv_last":
                w = w * 20 if k == 0 else w + 0.5
            weights.append(w.astype(np.float32))
    model.set_weights(weights)
    return model


def tiny_general_x4v3_blend():
    """The denoise-strength blend of two general-x4v3-shaped nets (official: 32 convs, PReLU)."""
    general = randomized(SRVGGNetCompact(num_feat=8, num_conv=2, name="general"), 11)
    wdn = randomized(SRVGGNetCompact(num_feat=8, num_conv=2, name="wdn"), 12)
    return blend_generators(general, wdn, 0.3)


ARCHITECTURES = {
    "srvgg_prelu_x4": lambda: randomized(SRVGGNetCompact(num_feat=8, num_conv=2), 1),
    "srvgg_relu_x2": lambda: randomized(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2, act="relu"), 2),
    "srvgg_leakyrelu_x3": lambda: randomized(
        SRVGGNetCompact(num_feat=8, num_conv=2, upscale=3, act="leakyrelu"), 3),
    "rrdbnet_x4": lambda: randomized(RRDBNet(scale=4, num_feat=8, num_block=1, num_grow_ch=4), 4),
    "rrdbnet_x2": lambda: randomized(RRDBNet(scale=2, num_feat=8, num_block=1, num_grow_ch=4), 5),
    "rrdbnet_x1": lambda: randomized(RRDBNet(scale=1, num_feat=8, num_block=1, num_grow_ch=4), 6),
    "general_x4v3_blend": tiny_general_x4v3_blend,
}
SCALES = {"srvgg_prelu_x4": 4, "srvgg_relu_x2": 2, "srvgg_leakyrelu_x3": 3, "rrdbnet_x4": 4, "rrdbnet_x2": 2,
          "rrdbnet_x1": 1, "general_x4v3_blend": 4}
RRDB_OPS = {"Conv", "LeakyRelu", "Concat", "Mul", "Add", "Resize"}
MOD_PAD_OPS = {"Shape", "Slice", "Mod", "Sub", "Concat", "Pad", "SpaceToDepth"}
OPS = {
    "srvgg_prelu_x4": {"Conv", "PRelu", "DepthToSpace", "Resize", "Add"},
    "srvgg_relu_x2": {"Conv", "Relu", "DepthToSpace", "Resize", "Add"},
    "srvgg_leakyrelu_x3": {"Conv", "LeakyRelu", "DepthToSpace", "Resize", "Add"},
    "rrdbnet_x4": RRDB_OPS,
    "rrdbnet_x2": RRDB_OPS | MOD_PAD_OPS,
    "rrdbnet_x1": RRDB_OPS | MOD_PAD_OPS,
    "general_x4v3_blend": {"Conv", "PRelu", "DepthToSpace", "Resize", "Add"},
}
FLOOR_DB = {False: 60.0, True: 45.0}  # fp32, fp16 files vs Keras fp32


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    return {name: build() for name, build in ARCHITECTURES.items()}


@pytest.fixture(scope="module")
def files(models, tmp_path_factory, options_type):
    """(architecture, fp16) -> the .onnx path written by `write`."""
    folder = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name, model in models.items():
        for fp16 in (False, True):
            path = str(folder / f"{name}{'-fp16' if fp16 else ''}.onnx")
            assert write(model, options_type(output=path, fp16=fp16, source=f"tiny {name}")) == path
            paths[name, fp16] = path
    return paths


def keras_reference(model, lq, scale):
    """Keras on the official mod-padded input, cropped back (what the Upscaler does for x2 / x1)."""
    multiple = {2: 2, 1: 4}.get(scale, 1) if isinstance(model, RRDBNet) else 1
    h, w = lq.shape[1:3]
    return model(reflect_pad_to_multiple(lq, multiple)).numpy()[:, : h * scale, : w * scale]


def run_ort(path, lq):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    (sr,) = session.run(["output"], {"input": lq.transpose(0, 3, 1, 2).astype(dtype)})
    assert sr.dtype == dtype
    return sr.astype(np.float32).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_onnx_runtime_matches_keras_on_odd_sizes(name, fp16, models, files, rng):
    """13 x 11 (odd, not a multiple of the x2 / x1 unshuffle: the graph's own mod_pad), batch 1."""
    lq = rng.random((1, 13, 11, 3), np.float32)
    scale = SCALES[name]
    expected = keras_reference(models[name], lq, scale)
    sr = run_ort(files[name, fp16], lq)
    assert sr.shape == (1, 13 * scale, 11 * scale, 3)
    assert psnr(sr, expected) >= FLOOR_DB[fp16], (name, psnr(sr, expected))


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_openvino_matches_keras(name, fp16, models, files, rng):
    lq = rng.random((1, 13, 11, 3), np.float32)
    scale = SCALES[name]
    compiled = ov.Core().compile_model(files[name, fp16], "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    sr = compiled(lq.transpose(0, 3, 1, 2).astype(np.float16 if fp16 else np.float32))[0]
    sr = sr.astype(np.float32).transpose(0, 2, 3, 1)
    assert psnr(sr, keras_reference(models[name], lq, scale)) >= FLOOR_DB[fp16]


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_file_is_valid_with_names_dynamic_axes_and_metadata(name, files):
    model = onnx.load(files[name, False])
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == IR_VERSION
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "output")
    for value in (inp, out):
        dims = value.type.tensor_type.shape.dim
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert [d.dim_param or d.dim_value for d in dims] == [
            "batch", 3, *(("height", "width") if value is inp else ("out_height", "out_width"))]
    assert {n.op_type for n in model.graph.node} == OPS[name]
    depth_to_space = [n for n in model.graph.node if n.op_type == "DepthToSpace"]
    assert all(onnx.helper.get_attribute_value(a) == b"DCR" for n in depth_to_space
               for a in n.attribute if a.name == "mode")
    meta = {p.key: p.value for p in model.metadata_props}
    arch = "RRDBNet" if name.startswith("rrdbnet") else "SRVGGNetCompact"
    assert (meta["scale"], meta["architecture"], meta["precision"]) == (str(SCALES[name]), arch, "fp32")
    assert meta["source"] == f"tiny {name}"
    assert model.producer_name == "real-esrgan-tf"


def test_fp16_file_stores_half_weights_and_half_io(files):
    model = onnx.load(files["rrdbnet_x2", True])
    onnx.checker.check_model(model, full_check=True)
    floats = [t for t in model.graph.initializer
              if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    # Only Resize's scales stay float32 (the operator requires it).
    assert {t.name for t in floats if t.data_type == onnx.TensorProto.FLOAT} == {"up1.scales", "up2.scales"}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "fp16"
    half, full = os.path.getsize(files["rrdbnet_x2", True]), os.path.getsize(files["rrdbnet_x2", False])
    assert 0.45 < half / full < 0.6


@pytest.mark.parametrize("name", ["srvgg_prelu_x4", "rrdbnet_x1"])
def test_one_file_serves_several_sizes_and_batches(name, models, files, rng):
    scale = SCALES[name]
    for shape in [(1, 16, 20, 3), (2, 9, 14, 3), (1, 5, 7, 3)]:
        lq = rng.random(shape, np.float32)
        sr = run_ort(files[name, False], lq)
        assert sr.shape == (shape[0], shape[1] * scale, shape[2] * scale, 3)
        assert psnr(sr, keras_reference(models[name], lq, scale)) >= 60


def test_discriminator_is_refused_with_one_line(tmp_path, options_type):
    path = tmp_path / "d.onnx"
    with pytest.raises(ExportError) as err:
        write(UNetDiscriminatorSN(num_feat=8), options_type(output=str(path), source="unet_d"))
    message = str(err.value)
    assert "\n" not in message and "unet_d" in message and "discriminator" in message
    assert os.listdir(tmp_path) == []


def test_layer_without_translation_names_it(tmp_path, options_type):
    lq = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(3 * 4, 3, padding="same")(lq)
    x = keras.layers.Lambda(lambda t: keras.ops.repeat(keras.ops.repeat(t[..., :3], 2, 1), 2, 2),
                            name="magic")(x)
    model = keras.Model(lq, x)
    with pytest.raises(ExportError, match=r"layer 'magic' \(Lambda\) has no ONNX translation"):
        write(model, options_type(output=str(tmp_path / "m.onnx"), source="custom"))
    assert os.listdir(tmp_path) == []


def test_unwritable_output_leaves_nothing(tmp_path, models, options_type, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError, match="cannot write") as err:
        write(models["srvgg_prelu_x4"], options_type(output=str(blocker / "m.onnx")))
    assert "\n" not in str(err.value)

    def fail_rename(src, dst):  # the disk fills up at the last moment
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail_rename)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExportError, match="No space left"):
        write(models["srvgg_prelu_x4"], options_type(output=str(out / "m.onnx")))
    assert os.listdir(out) == []


def test_nested_functional_model_and_extra_layers(rng):
    """A generator wrapped in another functional model with a Rescaling and a ReLU(max_value)."""
    keras.utils.set_random_seed(3)
    inner = randomized(SRVGGNetCompact(num_feat=8, num_conv=1, upscale=2), 7)
    lq = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(0.5, offset=0.25)(lq)
    x = inner(x)
    x = keras.layers.ReLU(max_value=1.0)(x)
    outer = keras.Model(lq, x, name="wrapped")
    proto = to_model_proto(outer, source="wrapped")
    assert {p.key: p.value for p in proto.metadata_props}["scale"] == "2"  # measured: no `scale` attribute
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = rng.random((1, 7, 9, 3), np.float32)
    (sr,) = session.run(None, {"input": x.transpose(0, 3, 1, 2)})
    assert psnr(sr.transpose(0, 2, 3, 1), outer(x).numpy()) >= 60
