"""The ncnn backend: `.param/.bin` files run by the `ncnn` runtime behind `Upscaler` and `--model x.param`,
against Keras on real photos (odd sizes, tiles), and one clear line for every bad file."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from real_esrgan_tf.cli.main import main
from real_esrgan_tf.images import encode_image, read_image
from real_esrgan_tf.models import RRDBNet
from real_esrgan_tf.serve.backends import BackendError, BackendOptions
from real_esrgan_tf.serve.loading import ModelLoadError, load_upscale_model
from real_esrgan_tf.serve.upscaler import Upscaler
from real_esrgan_tf.weights import load_generator, ncnn_files, pretrained_info

ncnn = pytest.importorskip("ncnn")
from real_esrgan_tf.serve import ncnn_backend  # noqa: E402 (needs ncnn)

ONE_THREAD = BackendOptions(threads=1)  # OpenMP spin-waits when the 2 cores are shared


def _psnr(a, b, peak=255.0):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(peak**2 / mse)


@pytest.fixture(scope="module")
def animevideo(tmp_path_factory):
    """(official animevideov3 .param, the Keras generator loaded from the same file)."""
    model = load_generator("realesr-animevideov3", cache_dir=tmp_path_factory.mktemp("cache"))
    return ncnn_files(pretrained_info("realesr-animevideov3"))[0], model


@pytest.mark.parametrize("tile", [0, 24])
def test_upscaler_on_ncnn_equals_upscaler_on_keras(animevideo, photos, tile):
    param, model = animevideo
    backend = ncnn_backend.open_model(param, ONE_THREAD)
    assert (backend.scale, backend.input_size, backend.threads) == (4, None, 1)
    image = photos["coffee"][100:161, 200:247]  # 61 x 47
    ours = Upscaler(backend, tile=tile, tile_pad=6).upscale(image)
    reference = Upscaler(model, tile=tile, tile_pad=6).upscale(image)
    assert ours.shape == reference.shape == (244, 188, 3) and ours.dtype == np.uint8
    assert np.std(reference) > 20
    assert _psnr(ours, reference) >= 45.0


def test_x2_generator_through_the_mod_pad_and_tiles(photos):
    """A tiny RRDBNet x2 (pixel-unshuffle: Reorg) by `from_generator`, on an odd-sized photo."""
    import keras

    keras.utils.set_random_seed(7)  # the initial weights too: the std check below must not be luck
    model = RRDBNet(scale=2, num_block=1, num_feat=16, num_grow_ch=8)
    rng = np.random.default_rng(7)
    weights = [w + rng.normal(0.0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()]
    weights[-1] += 0.5  # conv_last's bias: an output around mid-gray, not clipped away
    model.set_weights(weights)
    backend = ncnn_backend.from_generator(model, ONE_THREAD)
    assert (backend.scale, backend.align) == (2, 2)
    image = photos["astronaut"][50:83, 60:101]  # 33 x 41: odd, the Upscaler reflect-pads to even
    for tile in (0, 16):
        ours = Upscaler(backend, tile=tile, tile_pad=4).upscale(image)
        reference = Upscaler(model, tile=tile, tile_pad=4).upscale(image)
        assert ours.shape == reference.shape == (66, 82, 3)
        assert np.std(reference) > 10
        assert _psnr(ours, reference) >= 45.0


def test_odd_sides_are_padded_for_a_reorg_net(photos):
    """Called directly with sides that are no multiple of the unshuffle: reflect-pad, crop (as TFLite)."""
    model = RRDBNet(scale=1, num_block=1, num_feat=8, num_grow_ch=4)
    backend = ncnn_backend.from_generator(model, ONE_THREAD)
    image = photos["chelsea"][:13, :10].astype(np.float32)[None] / 255.0
    padded = np.pad(image, ((0, 0), (0, 3), (0, 2), (0, 0)), mode="reflect")
    out = backend(image)
    assert out.shape == (1, 13, 10, 3)
    np.testing.assert_allclose(out, np.asarray(model(padded))[:, :13, :10], atol=2e-3)


def test_official_x2_file_scales_by_2(tmp_path):
    """animevideov3-x2 ends in a bicubic x0.5 Interp: the backend measures scale 2."""
    param = ncnn_files(pretrained_info("realesr-animevideov3-x2"))[0]
    backend = ncnn_backend.open_model(param, ONE_THREAD)
    assert backend.scale == 2
    assert backend(np.full((1, 12, 20, 3), 0.5, np.float32)).shape == (1, 24, 40, 3)


def test_upscale_command_runs_an_exported_file_like_keras(tmp_path, photos):
    """export --format ncnn -> upscale --model x.param --backend ncnn = upscale on Keras (item 5)."""
    image = tmp_path / "in" / "photo.png"
    image.parent.mkdir()
    image.write_bytes(encode_image(photos["chelsea"][80:131, 120:163], "png"))  # 51 x 43
    param = tmp_path / "anime" / "x4.param"
    assert main(["real-esrgan-tf", "export", "--model", "realesr-animevideov3", "--format", "ncnn",
                 "--output", str(param), "--ncnn_blobs", "in0,out0"]) == 0
    assert sorted(os.listdir(param.parent)) == ["x4.bin", "x4.param"]
    outputs = {}
    for backend, model in (("ncnn", str(param)), ("tensorflow", "realesr-animevideov3")):
        out = tmp_path / backend
        assert main(["real-esrgan-tf", "upscale", "--model", model, "--backend", backend, "--threads", "1",
                     "--input", str(image), "--output", str(out), "--tile", "32",
                     "--precision", "fp32"]) == 0  # auto is bf16 on an AVX512_BF16 CPU
        outputs[backend] = read_image(str(out / "photo_out.png")).pixels
    assert outputs["ncnn"].shape == (204, 172, 3)
    assert _psnr(outputs["ncnn"], outputs["tensorflow"]) >= 45.0


def test_loading_by_backend_name(animevideo):
    param, _ = animevideo
    loaded = load_upscale_model(param, backend="ncnn", backend_options=ONE_THREAD)
    assert isinstance(loaded.model, ncnn_backend.NcnnSuperResolver) and loaded.model.scale == 4


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_bad_files_are_one_line(animevideo, tmp_path):
    param, _ = animevideo
    lonely = tmp_path / "lonely.param"
    shutil.copy(param, lonely)
    with pytest.raises(BackendError) as error:
        ncnn_backend.open_model(str(lonely), ONE_THREAD)
    assert _one_line(error) == f"{lonely}: its weights lonely.bin are missing beside it"
    with pytest.raises(ModelLoadError, match=r"lonely\.param: its weights lonely\.bin are missing"):
        load_upscale_model(str(lonely), backend="ncnn")

    truncated = tmp_path / "truncated.param"
    shutil.copy(param, truncated)
    (tmp_path / "truncated.bin").write_bytes(Path(param[:-6] + ".bin").read_bytes()[:100_000])
    with pytest.raises(BackendError, match=r"truncated\.bin: file ends at byte 100000") as error:
        ncnn_backend.open_model(str(truncated), ONE_THREAD)
    _one_line(error)

    foreign = tmp_path / "foreign.param"
    shutil.copy(param, foreign)
    other = ncnn_files(pretrained_info("realesrgan-x4plus-anime-6b"))[1]
    os.symlink(other, tmp_path / "foreign.bin")  # ncnn alone would load it without a word
    foreign_tag = r"foreign\.bin: layer .* unsupported weight encoding tag"
    with pytest.raises(BackendError, match=foreign_tag) as error:
        ncnn_backend.open_model(str(foreign), ONE_THREAD)
    _one_line(error)

    text = tmp_path / "text.param"
    text.write_text("hello\n")
    (tmp_path / "text.bin").write_bytes(b"")
    with pytest.raises(BackendError, match=r"text\.param: not an ncnn param file") as error:
        ncnn_backend.open_model(str(text), ONE_THREAD)
    _one_line(error)
