"""`real-esrgan-tf upscale` on the less common image files users have: gray + alpha, colour-key
transparency, EXIF orientation, animations, outputs too large for WEBP/JPEG, odd flag values."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from real_esrgan_tf.cli.main import main
from real_esrgan_tf.images import decode_image, encode_image, read_image
from real_esrgan_tf.models import SRVGGNetCompact
from real_esrgan_tf.weights import save_generator


def up2(pixels):
    return np.repeat(np.repeat(pixels, 2, axis=0), 2, axis=1)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An SRVGGNetCompact x2 with a zero last conv: exactly nearest-neighbour upsampling."""
    model = SRVGGNetCompact(num_conv=0, num_feat=4, upscale=2)
    last = model.get_layer("body_2")
    last.kernel.assign(tf.zeros_like(last.kernel))
    last.bias.assign(tf.zeros_like(last.bias))
    path = tmp_path_factory.mktemp("model") / "nearest_x2.weights.h5"
    save_generator(model, path)
    return str(path)


def upscale(*args):
    return main(["real-esrgan-tf", "upscale", *args])


def errors(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


def pil_bytes(im, fmt, **kwargs):
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


# ---------------------------------------------------------------------------- gray + alpha, tRNS
@pytest.mark.parametrize("depth", [8, 16])
def test_gray_alpha_png_comes_out_as_gray_alpha(depth, model_file, tmp_path, capsys, rng):
    """A gray + alpha PNG came out as RGBA (and a 16-bit one used to fail): now an LA PNG of the same
    bit depth, like gray and 16-bit inputs; without alpha (--alpha none) a gray image, JPEG if asked."""
    dtype = np.uint16 if depth == 16 else np.uint8
    la = rng.integers(0, np.iinfo(dtype).max + 1, (5, 7, 2)).astype(dtype)
    src = tmp_path / f"la{depth}.png"
    src.write_bytes(tf.io.encode_png(la).numpy())
    # other readers (prepare, calibration) keep cv2's RGBA; upscale asks for the two channels
    np.testing.assert_array_equal(read_image(str(src)).pixels, la[..., [0, 0, 0, 1]])
    np.testing.assert_array_equal(read_image(str(src), keep_gray_alpha=True).pixels, la)
    out = tmp_path / "out"
    for extra in ([], ["--ext", "jpg"]):  # JPEG cannot store alpha: PNG, as for RGBA
        assert upscale("--input", str(src), "--output", str(out), "--model", model_file, *extra) == 0
    assert errors(capsys) == [] and os.listdir(out) == [f"la{depth}_out.png"]
    data = (out / f"la{depth}_out.png").read_bytes()
    assert data[24:26] == bytes([depth, 4])  # IHDR bit depth, colour type 4 = gray + alpha
    np.testing.assert_array_equal(tf.io.decode_png(data, dtype=tf.as_dtype(dtype)).numpy(), up2(la))
    code = upscale("--input", str(src), "--output", str(out), "--model", model_file, "--alpha", "none",
                   "--ext", "jpg", "--suffix", "flat")
    assert code == 0, errors(capsys)
    with Image.open(out / f"la{depth}_flat.jpg") as im:
        assert im.mode == "L" and im.size == (14, 10)


def test_gray_png_with_colour_key_is_gray_alpha_for_upscale(rng):
    pixels = rng.integers(1, 256, (4, 5), dtype=np.uint8)
    pixels[1, 2] = 0
    data = pil_bytes(Image.fromarray(pixels, "L"), "PNG", transparency=0)
    decoded = decode_image(data, keep_gray_alpha=True)
    expected_alpha = np.full((4, 5), 255, np.uint8)
    expected_alpha[1, 2] = 0
    np.testing.assert_array_equal(decoded.pixels, np.stack([pixels, expected_alpha], axis=-1))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_png_colour_key_transparency_becomes_alpha(mode, rng):
    """A tRNS chunk on an RGB (or gray) PNG makes one colour transparent: kept as alpha (cv2 does for
    RGB), not dropped."""
    pixels = rng.integers(1, 256, (4, 5, 3), dtype=np.uint8)
    pixels[1, 2] = 0
    im = Image.fromarray(pixels) if mode == "RGB" else Image.fromarray(pixels[..., 0], "L")
    decoded = decode_image(pil_bytes(im, "PNG", transparency=(0, 0, 0) if mode == "RGB" else 0)).pixels
    assert decoded.shape == (4, 5, 4)
    expected_alpha = np.full((4, 5), 255, np.uint8)
    expected_alpha[1, 2] = 0
    np.testing.assert_array_equal(decoded[..., 3], expected_alpha)
    expected_rgb = pixels if mode == "RGB" else np.repeat(pixels[..., :1], 3, axis=2)
    np.testing.assert_array_equal(decoded[..., :3], expected_rgb)


# ---------------------------------------------------------------------------- EXIF orientation
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pillow_exif_transpose(orientation, rng):
    pixels = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = orientation
    data = pil_bytes(im, "PNG", exif=exif)  # lossless, so pixels compare exactly
    with Image.open(io.BytesIO(data)) as shown:
        expected = np.asarray(ImageOps.exif_transpose(shown).convert("RGB"))
    np.testing.assert_array_equal(decode_image(data, exif_orientation=True).pixels, expected)
    np.testing.assert_array_equal(decode_image(data).pixels, pixels)  # off by default: stored pixels


def test_upscale_writes_phone_photos_the_way_up_viewers_show_them(model_file, tmp_path, capsys, rng):
    """A camera JPEG stored landscape with Orientation 6 (rotate 90 cw) is shown portrait; outputs carry no
    EXIF, so the output pixels must be turned (official cv2.IMREAD_UNCHANGED ignores the tag and writes
    the picture on its side)."""
    im = Image.fromarray(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6
    src = tmp_path / "phone.jpg"
    src.write_bytes(pil_bytes(im, "JPEG", exif=exif, quality=95))
    out = tmp_path / "out"
    assert upscale("--input", str(src), "--output", str(out), "--model", model_file, "--ext", "png") == 0
    with Image.open(src) as shown:
        upright = np.asarray(ImageOps.exif_transpose(shown))
    assert upright.shape == (12, 8, 3)
    np.testing.assert_array_equal(read_image(str(out / "phone_out.png")).pixels, up2(upright))


# ---------------------------------------------------------------------------- animations
@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_image_upscales_the_first_frame_with_a_warning(fmt, model_file, tmp_path, capsys):
    frames = [Image.fromarray(np.full((4, 6, 3), 40 + 80 * i, np.uint8)) for i in range(3)]
    src = tmp_path / f"anim.{fmt.lower()}"
    lossless = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(src, fmt, save_all=True, append_images=frames[1:], **lossless)
    assert read_image(str(src)).frames == 3
    out = tmp_path / "out"
    assert upscale("--input", str(src), "--output", str(out), "--model", model_file, "--ext", "png") == 0
    err = capsys.readouterr().err
    assert f"warning: {src}: 3 frames (animated); only the first is upscaled" in err, err
    first = np.full((8, 12, 3), 40, np.uint8)
    np.testing.assert_array_equal(read_image(str(out / "anim_out.png")).pixels, first)


# ---------------------------------------------------------------------------- output size limits
def test_output_too_large_for_webp_is_written_as_png(model_file, tmp_path, capsys):
    """WEBP stores at most 16383 px a side: the encoder failed after the whole upscale was done."""
    tall = np.tile(np.arange(8200, dtype=np.uint16)[:, None, None] % 251, (1, 2, 3)).astype(np.uint8)
    src = tmp_path / "tall.webp"
    src.write_bytes(pil_bytes(Image.fromarray(tall), "WEBP", lossless=True))
    out = tmp_path / "out"
    code = upscale("--input", str(src), "--output", str(out), "--model", model_file, "--tile", "4096")
    err = capsys.readouterr().err
    assert code == 0 and "error:" not in err, err
    assert f"{src}: the 4x16400 output is too large for WEBP (max side 16383); writing PNG" in err, err
    np.testing.assert_array_equal(read_image(str(out / "tall_out.png")).pixels, up2(tall))


def test_output_path_falls_back_to_png_only_over_the_format_limit():
    from real_esrgan_tf.cli.upscale import output_path

    assert output_path("a.jpg", "o", "auto", "out", False, (65500, 10)) == os.path.join("o", "a_out.jpg")
    assert output_path("a.jpg", "o", "auto", "out", False, (10, 65501)) == os.path.join("o", "a_out.png")
    assert output_path("a.png", "o", "jpg", "out", False, (65501, 1)) == os.path.join("o", "a_out.png")
    assert output_path("a.png", "o", "webp", "x", False, (16383, 16383)) == os.path.join("o", "a_x.webp")
    assert output_path("a.png", "o", "png", "out", False, (10**6, 1)) == os.path.join("o", "a_out.png")


# ---------------------------------------------------------------------------- flag values
@pytest.mark.parametrize("outscale", ["0", "-2", "inf", "nan"])
def test_bad_outscale_is_one_line_before_any_work(outscale, model_file, tmp_path, capsys, rng):
    """--outscale 0 used to be taken as 'not given' (silently the net's scale), inf to fail per image."""
    src = tmp_path / "a.png"
    src.write_bytes(pil_bytes(Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)), "PNG"))
    out = tmp_path / "out"
    code = upscale("--input", str(src), "--output", str(out), "--model", model_file, "--outscale", outscale)
    lines = errors(capsys)
    assert code == 1 and len(lines) == 1 and "outscale must be a finite number > 0" in lines[0], lines
    assert os.listdir(out) == []


@pytest.mark.parametrize("outscale, size", [(0.5, (2, 2)), (0.26, (1, 1)), (1.0, (4, 5))])
def test_outscale_below_one_shrinks(outscale, size, model_file, tmp_path, capsys, rng):
    src = tmp_path / "a.png"
    src.write_bytes(pil_bytes(Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)), "PNG"))
    out = tmp_path / "out"
    code = upscale("--input", str(src), "--output", str(out), "--model", model_file, f"--outscale={outscale}")
    assert code == 0, errors(capsys)
    assert read_image(str(out / "a_out.png")).pixels.shape == (*size, 3)


def test_long_file_names_up_to_the_filesystem_limit(model_file, tmp_path, capsys, rng):
    """The temp file of the atomic write was '.tmp-XXXXXXXX' + the whole output name: 13 bytes over
    NAME_MAX for an output name that is itself fine."""
    stem = "p" * (255 - len("_out.png"))
    src = tmp_path / "in" / f"{stem}.png"
    src.parent.mkdir()
    src.write_bytes(pil_bytes(Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)), "PNG"))
    out = tmp_path / "out"
    code = upscale("--input", str(src.parent), "--output", str(out), "--model", model_file)
    assert code == 0, errors(capsys)
    assert os.listdir(out) == [f"{stem}_out.png"]


def test_unreadable_input_folder_is_one_line(model_file, tmp_path, capsys, monkeypatch):
    """os.listdir's PermissionError (a folder without r permission, for a non-root user) was a traceback."""
    folder = tmp_path / "locked"
    folder.mkdir()
    listdir = os.listdir

    def refuse(path="."):
        if os.fspath(path) == str(folder):
            raise PermissionError(13, "Permission denied", str(folder))
        return listdir(path)

    monkeypatch.setattr(os, "listdir", refuse)
    code = upscale("--input", str(folder), "--output", str(tmp_path / "out"), "--model", model_file)
    lines = errors(capsys)
    assert code == 1 and len(lines) == 1, lines
    assert f"{folder}: cannot list the folder (Permission denied)" in lines[0]


def test_exif_orientation_of_a_16bit_png(rng):
    """16-bit colour PNGs are decoded by TensorFlow; the Orientation tag still comes from the eXIf chunk."""
    import struct
    import zlib

    pixels = rng.integers(0, 65536, (3, 5, 3)).astype(np.uint16)
    png = tf.io.encode_png(pixels).numpy()
    exif = Image.Exif()
    exif[0x0112] = 8
    body = exif.tobytes()
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + body) & 0xFFFFFFFF)
    data = png[:33] + chunk + png[33:]  # right after IHDR (8-byte signature + 25-byte IHDR chunk)
    decoded = decode_image(data, exif_orientation=True).pixels
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, np.rot90(pixels, 1))  # 8: rotate 90 ccw to display
    np.testing.assert_array_equal(decode_image(data).pixels, pixels)


def test_folder_skips_sub_folders_and_hidden_files(model_file, tmp_path, capsys, rng):
    folder = tmp_path / "in"
    (folder / "nested").mkdir(parents=True)
    (folder / "nested.png").mkdir()  # a folder named like an image
    png = pil_bytes(Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)), "PNG")
    for name in ["a.png", "nested/b.png", ".hidden.png", ".tmp-k2j3-a_out.png"]:
        (folder / name).write_bytes(png)
    out = tmp_path / "out"
    code = upscale("--input", str(folder), "--output", str(out), "--model", model_file)
    assert code == 0 and errors(capsys) == []
    assert os.listdir(out) == ["a_out.png"]
    only_sub_folders = tmp_path / "empty"
    (only_sub_folders / "sub").mkdir(parents=True)
    code = upscale("--input", str(only_sub_folders), "--output", str(out), "--model", model_file)
    lines = errors(capsys)
    assert code == 1 and len(lines) == 1 and "no files in the folder" in lines[0], lines


# ---------------------------------------------------------------------------- colour profiles
def _profile(space):
    from PIL import ImageCms

    if space == "GRAY":  # Pillow makes no gray profile: relabel an sRGB one (only the header is read)
        rgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        return rgb[:16] + b"GRAY" + rgb[20:]
    return ImageCms.ImageCmsProfile(ImageCms.createProfile(space)).tobytes()


@pytest.mark.parametrize("fmt, mode, ext", [
    ("PNG", "RGB", "auto"), ("JPEG", "RGB", "auto"), ("WEBP", "RGBA", "auto"), ("PNG", "L", "png"),
    ("JPEG", "RGB", "webp"),
])
def test_colour_profile_is_kept(fmt, mode, ext, model_file, tmp_path, capsys, rng):
    """A Display P3 / Adobe RGB photo's pixels mean other colours than sRGB: without its ICC profile
    the output looked washed out in colour-managed viewers."""
    profile = _profile("GRAY" if mode == "L" else "sRGB")
    pixels = rng.integers(0, 256, (4, 6, len(mode)), dtype=np.uint8)
    src = tmp_path / f"p.{fmt.lower()}"
    src.write_bytes(pil_bytes(Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode), fmt,
                              icc_profile=profile))
    assert read_image(str(src)).icc_profile == profile
    out = tmp_path / "out"
    code = upscale("--input", str(src), "--output", str(out), "--model", model_file, "--ext", ext)
    assert code == 0, errors(capsys)
    (name,) = os.listdir(out)
    with Image.open(out / name) as im:
        assert im.info.get("icc_profile") == profile


def test_colour_profile_of_16bit_png_is_kept(model_file, tmp_path, capsys, rng):
    profile = _profile("sRGB")
    pixels = rng.integers(0, 65536, (3, 4, 3)).astype(np.uint16)
    src = tmp_path / "deep.png"
    src.write_bytes(encode_image(pixels, "png", icc_profile=profile))
    assert read_image(str(src)).icc_profile == profile
    out = tmp_path / "out"
    assert upscale("--input", str(src), "--output", str(out), "--model", model_file) == 0, errors(capsys)
    result = read_image(str(out / "deep_out.png"))
    np.testing.assert_array_equal(result.pixels, up2(pixels))
    assert result.icc_profile == profile


def test_colour_profile_that_does_not_fit_is_dropped(rng):
    """A CMYK JPEG's profile describes CMYK, not the RGB it is converted to; a gray profile does not
    describe RGBA (gray + alpha)."""
    cmyk = Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).convert("CMYK")
    fake_cmyk = _profile("sRGB")[:16] + b"CMYK" + _profile("sRGB")[20:]
    decoded = decode_image(pil_bytes(cmyk, "JPEG", icc_profile=fake_cmyk))
    assert decoded.channels == 3 and decoded.icc_profile is None
    la = Image.fromarray(rng.integers(0, 256, (4, 6, 2), dtype=np.uint8), "LA")
    decoded = decode_image(pil_bytes(la, "PNG", icc_profile=_profile("GRAY")))
    assert decoded.channels == 4 and decoded.icc_profile is None
    # read as gray + alpha (upscale), the gray profile describes it and is kept
    decoded = decode_image(pil_bytes(la, "PNG", icc_profile=_profile("GRAY")), keep_gray_alpha=True)
    assert decoded.channels == 2 and decoded.icc_profile == _profile("GRAY")
    with Image.open(io.BytesIO(encode_image(decoded.pixels, "png", icc_profile=decoded.icc_profile))) as im:
        assert im.mode == "LA" and im.info.get("icc_profile") == _profile("GRAY")
    rgb = encode_image(rng.integers(0, 256, (4, 6, 1), dtype=np.uint8), "png", icc_profile=_profile("sRGB"))
    assert decode_image(rgb).icc_profile is None


@pytest.mark.parametrize("channels", [1, 2])
def test_gray_webp_drops_the_gray_profile(channels, rng):
    """WEBP stores RGB(A) only, so gray pixels are written as RGB and a GRAY profile would mislabel them."""
    pixels = rng.integers(0, 256, (4, 6, channels), dtype=np.uint8)
    with Image.open(io.BytesIO(encode_image(pixels, "webp", icc_profile=_profile("GRAY")))) as im:
        assert im.mode in ("RGB", "RGBA") and im.info.get("icc_profile") is None
