"""The ONNX Runtime and OpenVINO backends behind the `Upscaler`: an exported file gives the pixels the
Keras generator gives, on real photographs of odd sizes, whole and tiled; bad files get one line."""

import numpy as np
import onnx
import pytest

from real_esrgan_tf.export.onnx import to_bytes, to_model_proto
from real_esrgan_tf.serve import onnx_backend, openvino_backend
from real_esrgan_tf.serve.backends import BackendError, BackendOptions
from real_esrgan_tf.serve.upscaler import Upscaler
from tests.test_export_onnx import ARCHITECTURES, SCALES

OPTIONS = BackendOptions(threads=2)


def psnr8(a, b):
    """PSNR of two uint8 images (peak 255)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-30))


@pytest.fixture(scope="module")
def models():
    import keras

    keras.utils.set_random_seed(0)
    return {name: ARCHITECTURES[name]() for name in ("srvgg_prelu_x4", "rrdbnet_x4", "rrdbnet_x2",
                                                     "rrdbnet_x1", "general_x4v3_blend")}


@pytest.fixture(scope="module")
def photo(photos):
    return photos["astronaut"][90:135, 170:207]  # 45 x 37: odd, a face edge


def export(model, folder, fp16=False):
    path = str(folder / f"{model.name}{'-fp16' if fp16 else ''}.onnx")
    with open(path, "wb") as f:
        f.write(to_bytes(model, fp16=fp16, source=model.name))
    return path


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", ["srvgg_prelu_x4", "rrdbnet_x4", "rrdbnet_x2", "rrdbnet_x1",
                                  "general_x4v3_blend"])
def test_upscaler_on_onnx_runtime_equals_keras(name, fp16, models, photo, tmp_path):
    """Whole image and tiles of 16 (+4 context): the same plan, so the same pixels up to fp noise;
    x2 / x1 go through the Upscaler's mod-pad (45 x 37 is a multiple of neither 2 nor 4)."""
    model = models[name]
    runner = onnx_backend.open_model(export(model, tmp_path, fp16), OPTIONS)
    assert runner.scale == SCALES[name] and runner.input_size is None
    floor = 45 if fp16 else 60
    for tile in (0, 16):
        expected = Upscaler(model, tile=tile, tile_pad=4).upscale(photo)
        got = Upscaler(runner, tile=tile, tile_pad=4).upscale(photo)
        assert got.shape == expected.shape == (45 * SCALES[name], 37 * SCALES[name], 3)
        assert psnr8(got, expected) >= floor, (tile, psnr8(got, expected))
        assert np.std(expected) > 5  # a real picture, not a flat clipped output


@pytest.mark.parametrize("name", ["srvgg_prelu_x4", "rrdbnet_x2", "rrdbnet_x1"])
def test_upscaler_on_openvino_equals_keras(name, models, photo, tmp_path):
    runner = openvino_backend.open_model(export(models[name], tmp_path), OPTIONS)
    assert runner.scale == SCALES[name] and runner.metadata["source"] == models[name].name
    for tile in (0, 16):
        expected = Upscaler(models[name], tile=tile, tile_pad=4).upscale(photo)
        assert psnr8(Upscaler(runner, tile=tile, tile_pad=4).upscale(photo), expected) >= 60


@pytest.mark.parametrize("backend", [onnx_backend, openvino_backend], ids=["onnxruntime", "openvino"])
def test_from_generator_runs_a_keras_model_on_the_runtime(backend, models, photo):
    model = models["rrdbnet_x2"]
    runner = backend.from_generator(model, OPTIONS)
    assert runner.scale == 2
    assert psnr8(Upscaler(runner).upscale(photo), Upscaler(model).upscale(photo)) >= 60


def test_batch_of_frames_through_upscale_batch(models, photos, tmp_path):
    frames = np.stack([photos["coffee"][:21, :19], photos["chelsea"][:21, :19]])
    runner = onnx_backend.open_model(export(models["srvgg_prelu_x4"], tmp_path), OPTIONS)
    got = Upscaler(runner).upscale_batch(frames)
    assert psnr8(got, Upscaler(models["srvgg_prelu_x4"]).upscale_batch(frames)) >= 60


def test_scale_is_measured_when_the_file_has_no_metadata(models, rng):
    proto = to_model_proto(models["rrdbnet_x1"])
    del proto.metadata_props[:]
    runner = onnx_backend.OnnxRuntimeGenerator(proto.SerializeToString())
    assert runner.scale == 1 and runner.metadata == {}
    lq = rng.random((1, 8, 12, 3), np.float32)
    np.testing.assert_allclose(runner(lq), models["rrdbnet_x1"](lq).numpy(), atol=1e-5)


@pytest.mark.parametrize("backend", [onnx_backend, openvino_backend], ids=["onnxruntime", "openvino"])
@pytest.mark.parametrize("content", [b"", b"\x08\x07not a protobuf" * 8], ids=["empty", "garbage"])
def test_corrupt_file_is_one_line(backend, content, tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(BackendError) as err:
        backend.open_model(str(path), OPTIONS)
    message = str(err.value)
    assert message.startswith(f"{path}: not a loadable ONNX model") and "\n" not in message


@pytest.mark.parametrize("backend", [onnx_backend, openvino_backend], ids=["onnxruntime", "openvino"])
def test_missing_file_and_non_image_model(backend, tmp_path):
    with pytest.raises(BackendError, match="ONNX file not found"):
        backend.open_model(str(tmp_path / "nope.onnx"), OPTIONS)
    # A valid ONNX file that is not an image model: [N, 1, H, W] in.
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 1, "h", "w"])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 1, "h", "w"])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "gray.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8),
              str(path))
    with pytest.raises(BackendError, match=r"gray.onnx: input must be NCHW RGB") as err:
        backend.open_model(str(path), OPTIONS)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_official_animevideov3_on_onnx_runtime_and_openvino_equals_keras(photos, tmp_path):
    """The real realesr-animevideov3 weights loaded by name (from the bundled ncnn files)."""
    from real_esrgan_tf.serve.loading import load_keras_generator

    model = load_keras_generator("realesr-animevideov3")
    path = tmp_path / "animevideov3.onnx"
    path.write_bytes(to_bytes(model, source="realesr-animevideov3"))
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["pretrained"] == "realesr-animevideov3" and meta["scale"] == "4"
    photo = photos["chelsea"][100:133, 200:241]  # 33 x 41
    expected = Upscaler(model).upscale(photo)
    for backend in (onnx_backend, openvino_backend):
        got = Upscaler(backend.open_model(str(path), OPTIONS)).upscale(photo)
        assert psnr8(got, expected) >= 60, backend.__name__
