"""Round trips through the commands: `export --format onnx` -> `upscale --model x.onnx` gives the
pixels `upscale` gives with the Keras model, on a real photograph of odd size, on ONNX Runtime and
OpenVINO; bad inputs to export get one line and exit code 1, and leave nothing on disk."""

import os

import keras
import numpy as np
import pytest

from real_esrgan_tf.cli.main import main
from real_esrgan_tf.images import encode_image, read_image
from real_esrgan_tf.models import RRDBNet, UNetDiscriminatorSN
from real_esrgan_tf.weights import save_generator
from tests.test_export_onnx import ARCHITECTURES


def psnr8(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-30))


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("in")
    (folder / "coffee.png").write_bytes(encode_image(photos["coffee"][150:183, 250:279], "png"))  # 33 x 29
    return str(folder / "coffee.png")


def upscale(model, photo, out, *extra):
    code = main(["real-esrgan-tf", "upscale", "--model", model, "--input", photo, "--output", str(out),
                 "--tile", "16", *extra])
    assert code == 0
    return read_image(str(out / "coffee_out.png")).pixels


@pytest.mark.parametrize(
    "name, fp16",
    [("rrdbnet_x2", False), ("rrdbnet_x1", False), ("srvgg_prelu_x4", False), ("rrdbnet_x4", True),
     ("general_x4v3_blend", True)],
)
def test_export_then_upscale_equals_keras_upscale(name, fp16, photo_file, tmp_path, capsys):
    keras.utils.set_random_seed(0)
    weights = tmp_path / f"{name}.weights.h5"
    save_generator(ARCHITECTURES[name](), weights)
    onnx_path = tmp_path / "models" / f"{name}.onnx"  # a folder that does not exist yet
    code = main(["real-esrgan-tf", "export", "--model", str(weights), "--format", "onnx",
                 "--output", str(onnx_path), *(["--fp16"] if fp16 else [])])
    assert code == 0, capsys.readouterr().err
    assert sorted(os.listdir(onnx_path.parent)) == [onnx_path.name]  # no temporary file left beside it
    expected = upscale(str(weights), photo_file, tmp_path / "keras")
    floor = 45 if fp16 else 60
    for backend in ("onnxruntime", "openvino"):
        got = upscale(str(onnx_path), photo_file, tmp_path / backend, "--backend", backend)
        assert got.shape == expected.shape
        assert psnr8(got, expected) >= floor, (backend, psnr8(got, expected))


def export_errors(capsys, *args):
    code = main(["real-esrgan-tf", "export", "--format", "onnx", *args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, lines


def test_export_bad_inputs_are_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code, lines = export_errors(capsys, "--model", "no-such-model", "--output", str(out / "m.onnx"))
    assert code == 1 and len(lines) == 1 and "no-such-model" in lines[0]

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    weights = tmp_path / "x2.weights.h5"
    save_generator(RRDBNet(scale=2, num_feat=4, num_block=1, num_grow_ch=4), weights)
    code, lines = export_errors(capsys, "--model", str(weights), "--output", str(blocker / "m.onnx"))
    assert code == 1 and len(lines) == 1 and "cannot write" in lines[0]

    discriminator = tmp_path / "unet_d.weights.h5"
    save_generator(UNetDiscriminatorSN(num_feat=4), discriminator)
    code, lines = export_errors(capsys, "--model", str(discriminator), "--output", str(out / "d.onnx"))
    assert code == 1 and len(lines) == 1 and "discriminator" in lines[0], lines
    assert os.listdir(out) == []
