"""The `export` command: from a training folder or a weights file to a SavedModel or a TFLite model."""

import os

import numpy as np
import pytest
import tensorflow as tf

from real_esrgan_tf.cli import main as cli
from real_esrgan_tf.models import SRVGGNetCompact
from real_esrgan_tf.serve.tflite_backend import TFLiteGenerator, check_builtin_ops
from real_esrgan_tf.weights import EMA_EXPORT_NAME, save_generator


@pytest.fixture(scope="module")
def model():
    return SRVGGNetCompact(num_conv=2, num_feat=8)


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    """A training --model_dir as `real-esrgan-tf train` leaves it: checkpoints plus the EMA export."""
    folder = tmp_path_factory.mktemp("run")
    save_generator(model, str(folder / EMA_EXPORT_NAME))
    (folder / "checkpoint").write_text('model_checkpoint_path: "ckpt-10"\n')
    return str(folder)


def export(*flags):
    return cli.main(["real-esrgan-tf", "export", *flags])


@pytest.mark.slow
def test_saved_model_from_a_training_folder(model, model_dir, tmp_path, capsys):
    base = tmp_path / "savedmodels" / "compact"
    assert export(f"--model={model_dir}", "--format=saved_model", f"--output={base}", "--tile=32") == 0
    assert capsys.readouterr().out.strip() == str(base / "1")
    lr = np.random.default_rng(0).random((1, 11, 13, 3), dtype=np.float32)
    sr = tf.saved_model.load(str(base / "1")).signatures["serving_default"](lq=tf.constant(lr))["sr"]
    np.testing.assert_allclose(sr.numpy(), model(lr).numpy(), atol=1e-5)


def test_int8_tflite_from_a_weights_file(model, model_dir, tmp_path, photos):
    out = tmp_path / "compact-int8.tflite"
    weights = os.path.join(model_dir, EMA_EXPORT_NAME)
    assert export(f"--model={weights}", "--format=tflite", "--quantization=int8", "--input_size=32",
                  "--calibration_crops=4", f"--output={out}") == 0
    ops = check_builtin_ops(out.read_bytes())
    assert {"QUANTIZE", "CONV_2D", "LEAKY_RELU"} <= ops and "PRELU" not in ops
    runner = TFLiteGenerator(str(out))
    assert runner.scale == 4 and runner.input_size == (32, 32)
    lr = photos["coffee"][:40, :50].astype(np.float32)[None] / 255.0
    assert runner(lr).shape == (1, 160, 200, 3)


@pytest.mark.parametrize(
    "make_model, message",
    [
        (lambda tmp: str(tmp), "is not a training folder: no exported EMA generator"),
        (lambda tmp: "realesrgan-x9", "realesrgan-x9: unknown model name"),
        (lambda tmp: str(tmp / "missing.weights.h5"), "missing.weights.h5: weights file not found"),
    ],
)
def test_bad_models_are_one_line_errors(make_model, message, tmp_path, capsys):
    assert export(f"--model={make_model(tmp_path)}", f"--output={tmp_path / 'out'}") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["version", "tile", "tile_pad"])
def test_a_negative_version_or_tile_is_a_one_line_error(flag, model_dir, tmp_path, capsys):
    """TF Serving only loads non-negative integer version folders: savedmodels/<name>/-1 would never load;
    a negative tile or tile_pad has no meaning."""
    base = tmp_path / "savedmodels" / "compact"
    assert export(f"--model={model_dir}", "--format=saved_model", f"--output={base}", f"--{flag}=-1") != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--{flag}" in err[0] and "non-negative" in err[0], err
    assert not base.parent.exists()  # nothing written, not even the base folder
