"""`real-esrgan-tf upscale` in-process: outputs, naming, and one clear line per bad input."""

import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from real_esrgan_tf.cli.main import main
from real_esrgan_tf.images import encode_image, read_image
from real_esrgan_tf.models import SRVGGNetCompact
from real_esrgan_tf.serve.keras_backend import blend_generators
from real_esrgan_tf.serve.upscaler import Upscaler
from real_esrgan_tf.weights import save_generator


def nearest_x2():
    """An SRVGGNetCompact x2 with a zero last conv: exactly nearest-neighbour upsampling."""
    model = SRVGGNetCompact(num_conv=0, num_feat=4, upscale=2)
    last = model.get_layer("body_2")
    last.kernel.assign(tf.zeros_like(last.kernel))
    last.bias.assign(tf.zeros_like(last.bias))
    return model


def up2(pixels):
    return np.repeat(np.repeat(pixels, 2, axis=0), 2, axis=1)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "nearest_x2.weights.h5"
    save_generator(nearest_x2(), path)
    return str(path)


def digest(folder):
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in sorted(os.listdir(folder))}


@pytest.fixture
def inputs(tmp_path, photos):
    folder = tmp_path / "in"
    folder.mkdir()
    rgb = photos["astronaut"][::16, ::16][:20, :24]
    (folder / "photo.png").write_bytes(encode_image(rgb, "png"))
    (folder / "deep.png").write_bytes(encode_image(rgb.astype(np.uint16) * 257 + 3, "png"))
    (folder / "gray.png").write_bytes(encode_image(rgb[..., :1], "png"))
    rgba = np.concatenate([rgb, np.tile(np.arange(24, dtype=np.uint8)[None, :, None] * 10, (20, 1, 1))], 2)
    (folder / "rgba.png").write_bytes(encode_image(rgba, "png"))
    (folder / "pic.jpg").write_bytes(encode_image(rgb, "jpg"))
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(encode_image(photos["coffee"][:64, :64], "png")[:300])
    (folder / "notes.txt").write_text("not an image\n")
    return folder, {"photo": rgb, "rgba": rgba}


def errors(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


def test_folder_with_good_and_bad_files(inputs, model_file, tmp_path, capsys):
    folder, pixels = inputs
    before = digest(folder)
    out = tmp_path / "out"
    code = main(["real-esrgan-tf", "upscale", "--input", str(folder), "--output", str(out),
                 "--model", model_file, "--precision", "fp32"])  # exact: auto is bf16 on a bf16 CPU
    assert code == 1
    lines = errors(capsys)
    assert len(lines) == 3, lines
    assert any("empty.png: empty file" in line for line in lines)
    assert any("truncated.png: cannot decode" in line for line in lines)
    assert any("notes.txt: not an image file" in line for line in lines)
    assert digest(folder) == before  # inputs untouched
    assert sorted(os.listdir(out)) == [
        "deep_out.png", "gray_out.png", "photo_out.png", "pic_out.jpg", "rgba_out.png"]  # no temp files left
    np.testing.assert_array_equal(read_image(str(out / "photo_out.png")).pixels, up2(pixels["photo"]))
    np.testing.assert_array_equal(read_image(str(out / "rgba_out.png")).pixels, up2(pixels["rgba"]))
    deep = read_image(str(out / "deep_out.png")).pixels
    assert deep.dtype == np.uint16 and deep.shape == (40, 48, 3)
    np.testing.assert_array_equal(deep, up2(pixels["photo"].astype(np.uint16) * 257 + 3))
    gray = read_image(str(out / "gray_out.png")).pixels
    np.testing.assert_array_equal(gray, up2(pixels["photo"][..., :1]))
    with Image.open(out / "pic_out.jpg") as im:
        assert im.format == "JPEG" and im.size == (48, 40)


def test_single_file_with_ext_suffix_and_outscale(inputs, model_file, tmp_path, capsys):
    folder, _ = inputs
    out = tmp_path / "out"
    code = main(["real-esrgan-tf", "upscale", "--input", str(folder / "photo.png"), "--output", str(out),
                 "--model", model_file, "--ext", "webp", "--suffix", "big", "--outscale", "3.5"])
    assert code == 0 and errors(capsys) == []
    with Image.open(out / "photo_big.webp") as im:
        assert im.format == "WEBP" and im.size == (84, 70)  # int(24 * 3.5), int(20 * 3.5)


def test_rgba_is_written_as_png_even_with_ext_jpg(inputs, model_file, tmp_path, capsys):
    folder, _ = inputs
    out = tmp_path / "out"
    args = ["--input", str(folder / "rgba.png"), "--output", str(out), "--model", model_file, "--ext", "jpg"]
    assert main(["real-esrgan-tf", "upscale", *args]) == 0
    assert os.listdir(out) == ["rgba_out.png"]
    assert main(["real-esrgan-tf", "upscale", *args, "--alpha", "none"]) == 0
    assert read_image(str(out / "rgba_out.jpg")).channels == 3


@pytest.mark.parametrize(
    "model, message",
    [("realesrgan-x9000", "realesrgan-x9000: unknown model name"),
     ("/nonexistent/RealESRGAN_x4plus.pth", "/nonexistent/RealESRGAN_x4plus.pth: weights file not found")],
)
def test_bad_model_is_one_line_and_exit_1(inputs, tmp_path, capsys, model, message):
    folder, _ = inputs
    code = main(["real-esrgan-tf", "upscale", "--input", str(folder / "photo.png"),
                 "--output", str(tmp_path / "out"), "--model", model])
    lines = errors(capsys)
    assert code == 1 and len(lines) == 1 and message in lines[0], lines


def test_corrupt_tflite_file_is_one_line(inputs, tmp_path, capsys):
    folder, _ = inputs
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\x00" * 64)
    code = main(["real-esrgan-tf", "upscale", "--input", str(folder / "photo.png"),
                 "--output", str(tmp_path / "out"), "--model", str(bad)])
    lines = errors(capsys)
    assert code == 1 and len(lines) == 1 and str(bad) in lines[0], lines


def test_output_that_is_a_file_is_refused(inputs, model_file, tmp_path, capsys):
    folder, _ = inputs
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    code = main(["real-esrgan-tf", "upscale", "--input", str(folder), "--output", str(blocker / "sub"),
                 "--model", model_file])
    lines = errors(capsys)
    assert code == 1 and len(lines) == 1 and "cannot create output folder" in lines[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_folder_is_refused(inputs, model_file, tmp_path, capsys):
    """Non-root only (chmod does not stop root): refused up front, before loading the model.
    test_unwritable_output_path_is_one_line_and_the_rest_continues covers a write failing for root too."""
    folder, _ = inputs
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code = main(["real-esrgan-tf", "upscale", "--input", str(folder), "--output", str(locked),
                 "--model", model_file])
    assert code == 1 and "not writable" in errors(capsys)[0]


def test_unwritable_output_path_is_one_line_and_the_rest_continues(inputs, model_file, tmp_path, capsys):
    """A write that fails for root too: the output path of one image is taken by a folder (rename onto a
    folder is EISDIR whoever you are). One error line naming that path and the reason, no temp file
    left, the other images written, exit code 1."""
    folder, pixels = inputs
    out = tmp_path / "out"
    (out / "photo_out.png").mkdir(parents=True)
    code = main(["real-esrgan-tf", "upscale", "--input", str(folder), "--output", str(out),
                 "--model", model_file])
    lines = [line for line in errors(capsys) if "photo" in line]
    assert code == 1 and len(lines) == 1, lines
    assert f"{out / 'photo_out.png'}: cannot write (Is a directory)" in lines[0]
    assert sorted(os.listdir(out)) == [
        "deep_out.png", "gray_out.png", "photo_out.png", "pic_out.jpg", "rgba_out.png"]  # no .tmp-*
    assert os.listdir(out / "photo_out.png") == []
    np.testing.assert_array_equal(read_image(str(out / "rgba_out.png")).pixels, up2(pixels["rgba"]))


def test_never_overwrites_an_input(inputs, model_file, capsys):
    folder, _ = inputs
    before = digest(folder)
    code = main(["real-esrgan-tf", "upscale", "--input", str(folder / "photo.png"), "--output", str(folder),
                 "--model", model_file, "--suffix", ""])
    lines = errors(capsys)
    assert code == 1 and len(lines) == 1 and "would overwrite an input" in lines[0]
    assert digest(folder) == before


def upscale_photo(src, out, model_file, *extra):
    return main(["real-esrgan-tf", "upscale", "--input", str(src), "--output", str(out),
                 "--model", model_file, *extra])


@pytest.mark.parametrize("ext", ["jpg", "webp"])
def test_single_file_never_overwrites_a_sibling_with_empty_suffix(inputs, model_file, ext, capsys):
    """photo.png --ext jpg --suffix "" into its own folder is named photo.jpg: when the user's own
    photo.jpg is there (an image, not an input of this run), it used to be replaced without a word."""
    folder, _ = inputs
    (folder / f"photo.{ext}").write_bytes(encode_image(np.zeros((3, 4, 3), np.uint8), ext))
    before = digest(folder)
    code = upscale_photo(folder / "photo.png", folder, model_file, "--ext", ext, "--suffix", "")
    lines = errors(capsys)
    assert code == 1 and len(lines) == 1, lines
    target = folder / f"photo.{ext}"
    assert f"output {target} would overwrite an existing file in the input's folder" in lines[0]
    assert digest(folder) == before
    # the same folder reached through a symlink is still the input's folder
    link = folder.parent / "link"
    link.symlink_to(folder, target_is_directory=True)
    assert upscale_photo(folder / "photo.png", link, model_file, "--ext", ext, "--suffix", "") == 1
    assert "would overwrite an existing file" in errors(capsys)[0] and digest(folder) == before


def test_single_file_outputs_that_may_be_replaced(inputs, model_file, tmp_path, capsys):
    """Previous outputs are replaced (atomically) as before: a free name in the input's folder is written
    (a second run then refuses it: with --suffix "" it cannot be told from the user's own image), an
    existing {stem}_{suffix} file in the input's folder and an existing file in another folder are
    taken as outputs of an earlier run."""
    folder, pixels = inputs
    src = folder / "photo.png"
    assert upscale_photo(src, folder, model_file, "--ext", "webp", "--suffix", "") == 0, errors(capsys)
    assert read_image(str(folder / "photo.webp")).pixels.shape == (40, 48, 3)
    assert upscale_photo(src, folder, model_file, "--ext", "webp", "--suffix", "") == 1
    assert "would overwrite an existing file" in errors(capsys)[0]
    stale = encode_image(np.zeros((3, 4, 3), np.uint8), "png")
    (folder / "photo_out.png").write_bytes(stale)
    assert upscale_photo(src, folder, model_file) == 0, errors(capsys)
    np.testing.assert_array_equal(read_image(str(folder / "photo_out.png")).pixels, up2(pixels["photo"]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo.png").write_bytes(stale)
    assert upscale_photo(src, out, model_file, "--suffix", "") == 0, errors(capsys)
    np.testing.assert_array_equal(read_image(str(out / "photo.png")).pixels, up2(pixels["photo"]))


def test_folder_into_itself_with_empty_suffix_skips_only_collisions(inputs, model_file, capsys):
    """Folder input, output = the same folder, --suffix "" --ext jpg: outputs that are inputs (pic.jpg
    itself, rgba.png forced to PNG) or that another input already wrote are refused, one line each;
    the others are written and the inputs are untouched."""
    folder, _ = inputs
    (folder / "deep.webp").write_bytes(encode_image(np.zeros((3, 4, 3), np.uint8), "webp"))  # -> deep.jpg
    before = digest(folder)
    code = main(["real-esrgan-tf", "upscale", "--input", str(folder), "--output", str(folder),
                 "--model", model_file, "--ext", "jpg", "--suffix", ""])
    lines = errors(capsys)
    assert code == 1
    assert any(f"rgba.png: output {folder / 'rgba.png'} would overwrite an input" in x for x in lines), lines
    assert any(f"pic.jpg: output {folder / 'pic.jpg'} would overwrite an input" in x for x in lines), lines
    assert any(f"deep.webp: output {folder / 'deep.jpg'} already written from" in x for x in lines), lines
    assert {n: h for n, h in digest(folder).items() if n in before} == before
    assert sorted(set(os.listdir(folder)) - set(before)) == ["deep.jpg", "gray.jpg", "photo.jpg"]


def test_missing_input_is_one_line(model_file, tmp_path, capsys):
    code = main(["real-esrgan-tf", "upscale", "--input", str(tmp_path / "nope"), "--output", str(tmp_path),
                 "--model", model_file])
    lines = errors(capsys)
    assert code == 1 and len(lines) == 1 and "nope: no such file or folder" in lines[0]


def test_pretrained_x2_name_uses_its_default_outscale(inputs, tmp_path, capsys):
    """realesr-animevideov3-x2 is the x4 net plus a downscale: output is 2x by default."""
    folder, _ = inputs
    out = tmp_path / "out"
    code = main(["real-esrgan-tf", "upscale", "--input", str(folder / "photo.png"), "--output", str(out),
                 "--model", "realesr-animevideov3-x2"])
    assert code == 0, errors(capsys)
    with Image.open(out / "photo_out.png") as im:
        assert im.size == (48, 40)


def test_denoise_strength_blends_general_and_wdn(inputs, tmp_path, capsys):
    import keras

    folder, _ = inputs
    keras.utils.set_random_seed(4)
    general, wdn = SRVGGNetCompact(num_conv=1, num_feat=4), SRVGGNetCompact(num_conv=1, num_feat=4)
    models = tmp_path / "models"
    save_generator(general, models / "realesr-general-x4v3.weights.h5")
    save_generator(wdn, models / "realesr-general-wdn-x4v3.weights.h5")  # found beside it, as official
    out = tmp_path / "out"
    code = main(["real-esrgan-tf", "upscale", "--input", str(folder / "photo.png"), "--output", str(out),
                 "--model", str(models / "realesr-general-x4v3.weights.h5"), "--denoise_strength", "0.25"])
    assert code == 0, errors(capsys)
    photo = read_image(str(folder / "photo.png")).pixels
    expected = Upscaler(blend_generators(general, wdn, 0.25)).upscale(photo)
    plain = Upscaler(general).upscale(photo)
    got = read_image(str(out / "photo_out.png")).pixels
    assert np.abs(got.astype(int) - expected).max() <= 1
    assert np.abs(got.astype(int) - plain).mean() > 0.5
    # --denoise_strength on another model is a mistake, not silently ignored
    code = main(["real-esrgan-tf", "upscale", "--input", str(folder / "photo.png"), "--output", str(out),
                 "--model", str(models / "realesr-general-wdn-x4v3.weights.h5"), "--denoise_strength", "0.5"])
    lines = errors(capsys)
    assert code == 1 and "needs realesr-general-x4v3" in lines[0]
