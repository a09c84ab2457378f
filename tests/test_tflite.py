"""TFLite export and the tiled runner, against Keras on real photographs.

Quantisation is judged with the real realesr-animevideov3 weights (a randomly initialised network
has activation ranges nothing like a trained one and quantises badly); calibration crops come from
other photographs (rocket, motorcycle) than the test crops (coffee, astronaut, chelsea).
"""

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from PIL import Image
from skimage import data

from real_esrgan_tf.cli import main as cli
from real_esrgan_tf.export import (
    ExportError,
    Quantization,
    degraded_lq_crops,
    export_tflite,
    export_tflite_models,
    int8_friendly,
)
from real_esrgan_tf.models import RRDBNet, SRVGGNetCompact
from real_esrgan_tf.serve.tflite_backend import TFLiteGenerator, TFLiteModelError, check_builtin_ops
from real_esrgan_tf.serve.upscaler import Upscaler
from real_esrgan_tf.tiling import plan_tiles
from real_esrgan_tf.weights import load_generator

INPUT = 64  # fixed LR window of the exported models
# PSNR floors against Keras fp32 (issue 5).
FLOOR = {Quantization.FP32: 50, Quantization.FP16: 40, Quantization.DYNAMIC_INT8: 30, Quantization.INT8: 30}
BUILTIN = {"CONV_2D", "PRELU", "ADD", "DEPTH_TO_SPACE", "RESHAPE", "TILE", "QUANTIZE", "DEQUANTIZE",
           "CONCATENATION", "LEAKY_RELU", "MUL", "RESIZE_NEAREST_NEIGHBOR"}


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))


@pytest.fixture(scope="module")
def animevideov3():
    return load_generator("realesr-animevideov3")


@pytest.fixture(scope="module")
def exported(animevideov3, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tflite")
    photos = [data.rocket(), data.stereo_motorcycle()[0]]
    calibration = degraded_lq_crops(photos, size=INPUT, scale=4, count=8)
    paths = {q: str(folder / f"animevideov3-{q.value}.tflite") for q in Quantization}
    export_tflite_models(animevideov3, paths, input_size=INPUT, calibration=calibration)
    return paths


@pytest.mark.parametrize("seed", [0, *(pytest.param(s, marks=pytest.mark.slow) for s in range(1, 5))])
def test_fixed_window_plan_covers_the_image_with_context(seed):
    """The TFLite runner tiles with the Upscaler's planner: full-size windows inside the image, cores
    covering every pixel once, each core with `pad` pixels of context or the image border."""
    rng = np.random.default_rng(seed)
    for _ in range(50):
        size = int(rng.integers(8, 80))
        pad = int(rng.integers(0, (size - 1) // 2 + 1))
        height, width = (int(v) for v in rng.integers(size, 400, size=2))
        plan = plan_tiles(height, width, 0, pad, 1, (size, size))
        assert (plan.win_h, plan.win_w) == (size, size)
        covered = np.zeros((height, width), np.int32)
        for t in plan.tiles:
            covered[t.y0:t.y1, t.x0:t.x1] += 1
            for c0, c1, start, length in ((t.y0, t.y1, t.win_y, height), (t.x0, t.x1, t.win_x, width)):
                assert 0 <= start and start + size <= length and start <= c0 < c1 <= start + size
                assert c0 - start >= pad or start == 0  # context before the core, or the image border
                assert start + size - c1 >= pad or start + size == length
        assert (covered == 1).all()


@pytest.mark.slow
def test_tiled_runner_equals_keras_when_the_pad_covers_the_receptive_field(tmp_path, photos):
    """3 convs see 3 px: with tile_pad 4 every tile sees all it needs, so tiling changes nothing."""
    model = SRVGGNetCompact(num_conv=1, num_feat=8)
    path = str(tmp_path / "tiny.tflite")
    export_tflite(model, path, input_size=24)
    runner = TFLiteGenerator(path, num_threads=2, tile_pad=4)
    assert runner.scale == 4 and runner.input_size == (24, 24)
    lr = photos["chelsea"][10:67, 30:113].astype(np.float32)[None] / 255.0  # 57 x 83: no multiple of 24
    np.testing.assert_allclose(runner(lr), model(lr).numpy(), atol=2e-5)
    small = lr[:, :10, :17]  # smaller than the window: padded up to it as the Upscaler pads
    assert runner(small).shape == (1, 40, 68, 3)


@pytest.mark.slow
@pytest.mark.parametrize("quantization", list(Quantization), ids=lambda q: q.value)
def test_tflite_matches_keras_on_photos(exported, animevideov3, photos, quantization):
    runner = TFLiteGenerator(exported[quantization], num_threads=2)
    assert runner.scale == 4 and runner.input_size == (INPUT, INPUT)
    for name, (y, x) in [("coffee", (100, 200)), ("astronaut", (40, 150))]:
        window = photos[name][y : y + INPUT, x : x + INPUT].astype(np.float32) / 255.0
        assert psnr(runner.run_window(window), animevideov3(window[None]).numpy()[0]) >= FLOOR[quantization]
    # The tiled runner on a size that is no multiple of the window, against one untiled Keras run.
    lr = photos["chelsea"][60:150, 120:251].astype(np.float32)[None] / 255.0  # 90 x 131
    assert psnr(runner(lr), animevideov3(lr).numpy()) >= FLOOR[quantization]


@pytest.mark.slow
def test_exported_models_are_builtin_ops_only(exported):
    for q, path in exported.items():
        with open(path, "rb") as f:
            ops = check_builtin_ops(f.read(), path)
        assert "CONV_2D" in ops and ops <= BUILTIN, (q, ops)
        assert ("QUANTIZE" in ops) == (q is Quantization.INT8)  # full int8: int8 inside, float at the edges
        assert ("PRELU" in ops) == (q is not Quantization.INT8)  # int8: LEAKY_RELU + MUL + ADD instead


@pytest.mark.slow
def test_int8_prelu_rewrite_is_exact_and_fully_delegated(exported, animevideov3, photos):
    lr = photos["astronaut"][:48, :40].astype(np.float32)[None] / 255.0
    np.testing.assert_allclose(int8_friendly(animevideov3)(lr).numpy(), animevideov3(lr).numpy(), atol=2e-5)

    def delegate_partitions(path):  # XNNPACK replaces each run of supported ops by one DELEGATE node
        interp = Interpreter(model_path=path, num_threads=1)
        interp.allocate_tensors()
        return sum(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())

    partitions = {q: delegate_partitions(exported[q]) for q in (Quantization.INT8, Quantization.FP32)}
    assert partitions[Quantization.INT8] == partitions[Quantization.FP32], partitions


def test_flex_ops_are_rejected():
    class Erosion(tf.Module):  # Dilation2D has no TFLite builtin: it can only run as a Flex op
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
        def __call__(self, x):
            return tf.nn.dilation2d(x, tf.zeros([3, 3, 3]), [1, 1, 1, 1], "SAME", "NHWC", [1, 1, 1, 1])

    module = Erosion()
    function = module.__call__.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    with pytest.raises(TFLiteModelError, match="not runnable with builtin TFLite ops"):
        check_builtin_ops(converter.convert(), "flex.tflite")


@pytest.mark.slow
def test_rrdbnet_exports_too(tmp_path, rng):
    model = RRDBNet(scale=2, num_block=1, num_feat=8, num_grow_ch=4)
    path = str(tmp_path / "rrdb.tflite")
    export_tflite(model, path, quantization=Quantization.FP16, input_size=16)
    runner = TFLiteGenerator(path)
    assert runner.scale == 2
    lr = rng.random((1, 16, 16, 3), dtype=np.float32)
    assert psnr(runner(lr), model(lr).numpy()) >= 40
    with pytest.raises(ExportError, match="multiple of 2"):
        export_tflite(model, None, input_size=15)
    with pytest.raises(ExportError, match="calibration"):
        export_tflite(model, None, quantization=Quantization.INT8, input_size=16)


@pytest.mark.slow
def test_upscale_command_runs_a_tflite_model(exported, animevideov3, photos, tmp_path):
    src = tmp_path / "in" / "coffee.png"
    src.parent.mkdir()
    lr = photos["coffee"][200:277, 300:393]  # 77 x 93
    Image.fromarray(lr).save(src)
    out = tmp_path / "out"
    assert cli.main(["real-esrgan-tf", "upscale", f"--input={src}", f"--output={out}",
                     f"--model={exported[Quantization.DYNAMIC_INT8]}"]) == 0
    (result,) = list(out.iterdir())
    sr = np.asarray(Image.open(result), np.float32) / 255.0
    expected = animevideov3(lr[None].astype(np.float32) / 255.0).numpy()[0]
    expected = np.round(np.clip(expected, 0, 1) * 255) / 255
    assert sr.shape == (308, 372, 3) and psnr(sr, expected) >= 30


def test_unusable_files_are_clear_errors(tmp_path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(TFLiteModelError, match="broken.tflite: cannot load TFLite model"):
        TFLiteGenerator(str(bad))


def test_tiled_runner_keeps_the_unshuffle_blocks_of_x2_models(tmp_path, photos):
    """An x2 RRDBNet pixel-unshuffles 2x2 blocks: windows must start on even pixels and odd sizes be
    reflect-padded first (official mod_pad), or the windows see other blocks than the whole image."""
    import keras

    from real_esrgan_tf.models.layers import PixelShuffle, PixelUnshuffle

    lr_in = keras.Input((None, None, 3))
    x = PixelUnshuffle(2, name="pixel_unshuffle")(lr_in)
    x = keras.layers.Conv2D(48, 3, padding="same", kernel_initializer="he_normal")(x)  # sees 2 LR px
    model = keras.Model(lr_in, PixelShuffle(4)(x))
    model.scale = 2
    path = str(tmp_path / "x2.tflite")
    export_tflite(model, path, input_size=16)
    runner = TFLiteGenerator(path, tile_pad=3)
    assert runner.scale == 2
    for h, w in [(41, 53), (36, 19)]:  # odd and even sizes, larger than the window
        lr = photos["astronaut"][100 : 100 + h, 200 : 200 + w].astype(np.float32)[None] / 255.0
        padded = np.pad(lr, [(0, 0), (0, h % 2), (0, w % 2), (0, 0)], mode="reflect")
        expected = model(padded).numpy()[:, : 2 * h, : 2 * w]
        np.testing.assert_allclose(runner(lr), expected, atol=2e-5, err_msg=f"{h}x{w}")
    assert runner(lr[:, :9, :11]).shape == (1, 18, 22, 3)  # odd and smaller than the window


class KerasWindow:
    """The Keras model behind a fixed input, as the Upscaler sees a TFLite model; keeps its last output."""

    def __init__(self, model, size):
        self.model, self.scale, self.input_size = model, model.scale, (size, size)

    def __call__(self, lr):
        assert lr.shape[1:3] == self.input_size, lr.shape
        self.last = self.model(lr).numpy()
        return self.last


def unshuffle_model(factor):
    """PixelUnshuffle(factor) + a 3x3 conv + PixelShuffle(4): the x2 (factor 2) / x1 (4) RRDBNet's ends."""
    import keras

    from real_esrgan_tf.models.layers import PixelShuffle, PixelUnshuffle

    lr_in = keras.Input((None, None, 3))
    x = PixelUnshuffle(factor, name="pixel_unshuffle")(lr_in)
    x = keras.layers.Conv2D(48, 3, padding="same", kernel_initializer="he_normal")(x)
    model = keras.Model(lr_in, PixelShuffle(4)(x))
    model.scale = 4 // factor
    return model


@pytest.mark.parametrize(
    "make_model, window, sizes",
    [
        (lambda: SRVGGNetCompact(num_conv=1, num_feat=8), 24,
         [(13, 17), (5, 23), (23, 2), (2, 9), (1, 17), (13, 1), (1, 1), (12, 12)]),
        (lambda: unshuffle_model(2), 16, [(9, 11), (1, 9), (7, 1), (3, 15), (8, 3), (1, 1)]),
        (lambda: unshuffle_model(4), 16, [(9, 11), (1, 5), (6, 1), (2, 13), (1, 1)]),
    ],
    ids=["x4-compact", "x2-unshuffle", "x1-unshuffle"],
)
def test_images_smaller_than_the_window_are_padded_as_the_upscaler_pads(make_model, window, sizes, tmp_path,
                                                                         photos):
    """An image smaller than the fixed input is padded up to it: the runner on its own gives what the
    Upscaler gives with the Keras model behind the same fixed window (reflect, symmetric or edge padding
    after the unshuffle's reflect mod-pad), not an edge-replicated border."""
    model = make_model()
    path = str(tmp_path / "small.tflite")
    export_tflite(model, path, input_size=window)
    runner = TFLiteGenerator(path, tile_pad=2)
    keras_window = KerasWindow(model, window)
    upscaler = Upscaler(keras_window, tile_pad=2)
    s = model.scale
    for h, w in sizes:
        img = photos["chelsea"][150 : 150 + h, 200 : 200 + w]
        upscaler.upscale(img)  # one window: the whole (padded) image
        expected = keras_window.last[:, : h * s, : w * s]
        got = runner(img[None].astype(np.float32) / 255.0)
        assert got.shape == expected.shape == (1, h * s, w * s, 3)
        np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=f"{h}x{w}")


def test_strips_thinner_than_the_window_are_padded_as_the_upscaler_pads(tmp_path, photos):
    """Only one side smaller than the window: padded along it, tiled along the other. tile_pad 4 covers
    the 3 px the model sees, so the two tilings agree and only the padding could differ."""
    model = SRVGGNetCompact(num_conv=1, num_feat=8)
    path = str(tmp_path / "strip.tflite")
    export_tflite(model, path, input_size=24)
    runner = TFLiteGenerator(path, tile_pad=4)
    upscaler = Upscaler(KerasWindow(model, 24), tile_pad=4)
    for h, w in [(5, 53), (1, 40), (61, 2), (23, 30)]:
        img = photos["coffee"][80 : 80 + h, 120 : 120 + w].astype(np.uint16) * 257  # 16-bit: finer levels
        expected = upscaler.upscale(img).astype(int)
        got = np.rint(np.clip(runner(img[None].astype(np.float32) / 65535.0)[0], 0, 1) * 65535)
        assert got.shape == expected.shape == (4 * h, 4 * w, 3)
        assert np.abs(got - expected).max() <= 2, f"{h}x{w}"  # 2e-5 float tolerance ~ 1.3 levels
