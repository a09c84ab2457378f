"""SavedModel export for TensorFlow Serving: signatures, equality with Keras and with `upscale`."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from real_esrgan_tf.export import (
    SAVED_MODEL_INTERFACE_VERSION,
    ExportError,
    ServingConfig,
    SuperResolutionModule,
    export_saved_model,
    next_version,
)
from real_esrgan_tf.models import RRDBNet, SRVGGNetCompact
from real_esrgan_tf.serve.upscaler import Upscaler


def psnr(a, b, peak=1.0):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def encode(pixels, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **kw)
    return buf.getvalue()


def decode_png(data):
    return tf.io.decode_png(data, channels=0, dtype=tf.uint16 if data[24] == 16 else tf.uint8).numpy()


@pytest.fixture(scope="module")
def rrdb_x2():
    # x2 exercises the pixel-unshuffle: inputs are reflect-padded to even sizes.
    return RRDBNet(scale=2, num_block=1, num_feat=8, num_grow_ch=4)


@pytest.fixture(scope="module")
def exported(rrdb_x2, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("savedmodels") / "rrdb-x2")
    path = export_saved_model(rrdb_x2, base, config=ServingConfig(tile=24, tile_pad=4))
    return path, tf.saved_model.load(path)


def test_layout_is_tensorflow_serving_versions(exported, tmp_path, rrdb_x2):
    path, _ = exported
    assert os.path.basename(path) == "1" and os.path.isfile(os.path.join(path, "saved_model.pb"))
    base = os.path.dirname(path)
    assert next_version(base) == 2
    assert [d for d in os.listdir(base) if d.startswith(".tmp")] == []  # saved atomically
    with pytest.raises(ExportError, match="already exists"):
        export_saved_model(rrdb_x2, base, version=1)


def test_version_folder_is_readable_by_the_server_user(exported):
    """The temporary folder (mkdtemp: mode 0700) becomes the version: a TF Serving process running as
    another user must still be able to read it, as any folder made under the current umask."""
    import stat

    path, _ = exported
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777 & ~umask
    assert stat.S_IMODE(os.stat(os.path.join(path, "saved_model.pb")).st_mode) == 0o666 & ~umask


@pytest.mark.slow
def test_saved_model_cli_lists_both_signatures(exported):
    path, _ = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    out = subprocess.run(
        [cli, "show", "--dir", path, "--all"], capture_output=True, text=True, check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ).stdout
    assert "signature_def['serving_default']" in out and "signature_def['upscale_image']" in out
    serving = out.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    assert "inputs['lq']" in serving and "DT_FLOAT" in serving and "shape: (-1, -1, -1, 3)" in serving
    assert "inputs['lr']" not in serving  # interface version 2 renamed it
    assert int(tf.saved_model.load(path).interface_version.numpy()) == SAVED_MODEL_INTERFACE_VERSION == 2
    upscale = out.split("signature_def['upscale_image']")[1].split("signature_def[")[0]
    for expected in ("inputs['image']", "DT_STRING", "inputs['outscale']", "outputs['png_bytes']"):
        assert expected in upscale


def test_outscale_is_optional_with_the_model_scale_as_default(exported):
    from tensorflow.core.protobuf import saved_model_pb2

    path, _ = exported
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    defaults = proto.meta_graphs[0].signature_def["upscale_image"].defaults
    assert tf.make_ndarray(defaults["outscale"]) == 2.0  # TF Serving fills in omitted inputs from here


@pytest.mark.parametrize("name, size", [("astronaut", (37, 53)), ("coffee", (40, 31))])
def test_serving_default_equals_keras_on_photos(exported, rrdb_x2, photos, name, size):
    _, loaded = exported
    h, w = size
    lr = (photos[name][100 : 100 + h, 120 : 120 + w].astype(np.float32) / 255.0)[None]
    sr = loaded.signatures["serving_default"](lq=tf.constant(lr))["sr"].numpy()
    assert sr.shape == (1, 2 * h, 2 * w, 3)
    padded = np.pad(lr, [(0, 0), (0, h % 2), (0, w % 2), (0, 0)], mode="reflect")  # official mod_pad
    expected = rrdb_x2(padded).numpy()[:, : 2 * h, : 2 * w]
    assert psnr(sr, expected) >= 60


def test_serving_default_batches(exported, rrdb_x2, rng):
    _, loaded = exported
    lr = rng.random((3, 12, 16, 3), dtype=np.float32)
    sr = loaded.signatures["serving_default"](lq=tf.constant(lr))["sr"].numpy()
    np.testing.assert_allclose(sr, rrdb_x2(lr).numpy(), atol=1e-5)


def test_upscale_image_on_a_jpeg_gives_the_pixels_of_upscale(exported, rrdb_x2, photos):
    """Tiled in the graph (tile 24, pad 4) and tiled by `Upscaler` the same way: same pixels."""
    _, loaded = exported
    jpeg = encode(photos["astronaut"][30:87, 200:271], "JPEG", quality=85)  # 57 x 71: odd, not tile multiples
    png = loaded.upscale_image(image=tf.constant(jpeg))["png_bytes"].numpy()
    served = decode_png(png)
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)))
    # TF's default JPEG IDCT differs from Pillow's by a few levels; the graph uses the accurate one.
    assert not np.array_equal(tf.io.decode_jpeg(jpeg).numpy(), pixels)
    expected = Upscaler(rrdb_x2, tile=24, tile_pad=4).upscale(pixels)
    assert served.shape == expected.shape == (114, 142, 3)
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1  # float op order only
    assert np.mean(served == expected) > 0.999


def test_in_graph_tiles_are_seamless():
    """With tile_pad beyond the receptive field (3 convs: 3 px), tiling must not change anything."""
    model = SRVGGNetCompact(num_conv=1, num_feat=8)
    image = np.random.default_rng(3).random((29, 43, 3), dtype=np.float32)
    whole = model(image[None]).numpy()[0]
    for tile in (8, 13, 64):
        tiled = SuperResolutionModule(model, ServingConfig(tile=tile, tile_pad=4)).tiled_upscale(
            tf.constant(image)).numpy()
        np.testing.assert_allclose(tiled, whole, atol=2e-5, err_msg=f"tile {tile}")


def test_upscale_image_formats(exported, rrdb_x2, photos):
    _, loaded = exported
    crop = photos["chelsea"][50:70, 60:86]  # 20 x 26
    gray = crop.mean(-1).astype(np.uint8)
    gray_out = decode_png(loaded.upscale_image(image=tf.constant(encode(gray, "PNG")))["png_bytes"].numpy())
    assert gray_out.shape == (40, 52, 1) and gray_out.dtype == np.uint8
    np.testing.assert_allclose(gray_out[..., 0], Upscaler(rrdb_x2).upscale(gray), atol=1)

    rgba = np.concatenate([crop, np.tile(np.linspace(0, 255, 26, dtype=np.uint8), (20, 1))[..., None]], -1)
    rgba_out = decode_png(loaded.upscale_image(image=tf.constant(encode(rgba, "PNG")))["png_bytes"].numpy())
    np.testing.assert_allclose(rgba_out, Upscaler(rrdb_x2).upscale(rgba), atol=1)

    def served(data):
        return loaded.upscale_image(image=tf.constant(data))["png_bytes"].numpy()

    assert served(encode(crop, "WEBP", lossless=True)) == served(encode(crop, "PNG"))

    deep = crop.astype(np.uint16) * 257 + 100  # 16-bit in -> 16-bit out
    deep_png = tf.io.encode_png(deep).numpy()
    deep_out = decode_png(loaded.upscale_image(image=tf.constant(deep_png))["png_bytes"].numpy())
    assert deep_out.dtype == np.uint16
    np.testing.assert_allclose(deep_out, Upscaler(rrdb_x2).upscale(deep), atol=2)


def test_images_of_one_pixel_side_are_mod_padded_like_upscale(exported, rrdb_x2, rng):
    """x2 unshuffles 2x2 blocks: a 1-pixel side needs a reflect pad longer than the side itself,
    which MirrorPad refuses; numpy (and `upscale`) repeat the reflection."""
    _, loaded = exported
    for h, w in [(1, 5), (3, 1), (1, 1)]:
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        png = loaded.upscale_image(image=tf.constant(encode(pixels, "PNG")))["png_bytes"].numpy()
        served = decode_png(png)
        expected = Upscaler(rrdb_x2).upscale(pixels)
        assert served.shape == expected.shape == (2 * h, 2 * w, 3)
        assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1
    lr = rng.random((2, 1, 3, 3), dtype=np.float32)
    sr = loaded.signatures["serving_default"](lq=tf.constant(lr))["sr"].numpy()
    expected = rrdb_x2(np.pad(lr, [(0, 0), (0, 1), (0, 1), (0, 0)], mode="reflect")).numpy()[:, :2, :6]
    np.testing.assert_allclose(sr, expected, atol=1e-5)


def test_upscale_image_outscale_resizes_like_upscale(exported, rrdb_x2, photos):
    _, loaded = exported
    pixels = photos["coffee"][100:133, 200:241]  # 33 x 41
    png = encode(pixels, "PNG")
    for outscale in (1.5, 3.0):
        out = decode_png(loaded.upscale_image(image=tf.constant(png), outscale=tf.constant(outscale))
                         ["png_bytes"].numpy())
        expected = Upscaler(rrdb_x2, outscale=outscale).upscale(pixels)
        assert out.shape == expected.shape == (int(33 * outscale), int(41 * outscale), 3)
        assert psnr(out, expected, 255) > 40  # TF's and Pillow's Lanczos-3 differ in rounding only


def test_outscale_output_size_is_the_official_int_of_the_product(exported, rrdb_x2, rng):
    """int(25 * 1.16) is 28 in Python (float64); in float32 the product rounds up to 29.0."""
    _, loaded = exported
    pixels = rng.integers(0, 256, (25, 6, 3), dtype=np.uint8)
    for outscale in (1.16, 2.12):
        out = decode_png(loaded.upscale_image(image=tf.constant(encode(pixels, "PNG")),
                                              outscale=tf.constant(outscale))["png_bytes"].numpy())
        assert out.shape == Upscaler(rrdb_x2, outscale=outscale).upscale(pixels).shape, outscale


def test_upscale_image_rejects_bad_input(exported):
    _, loaded = exported
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.upscale_image(image=tf.constant(b"not an image at all"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="outscale"):
        loaded.upscale_image(image=tf.constant(encode(np.zeros((4, 4, 3), np.uint8), "PNG")),
                             outscale=tf.constant(-1.0))


def test_network_and_tiling_have_gpu_kernels(rrdb_x2):
    """On a GPU server only image decoding/encoding and the outscale resize stay on the host."""
    from tests.graph_checks import ops_without_gpu_kernel

    module = SuperResolutionModule(rrdb_x2, ServingConfig(tile=16, tile_pad=4))
    assert ops_without_gpu_kernel(module.serving_default.get_concrete_function()) == set()
    host_only = {"DecodeImage", "DecodeJpeg", "DecodePng", "EncodePng", "Substr", "StringJoin",
                 "ScaleAndTranslate"}  # the last one: Lanczos for outscale
    assert ops_without_gpu_kernel(module.upscale_image.get_concrete_function()) == host_only


def test_negative_versions_are_refused_before_anything_is_written(rrdb_x2, tmp_path):
    base = tmp_path / "savedmodels" / "rrdb-x2"
    with pytest.raises(ExportError, match="only version folders >= 0"):
        export_saved_model(rrdb_x2, str(base), version=-1)
    assert not base.exists()


@pytest.mark.parametrize("seed", range(3))
def test_in_graph_tile_plan_equals_the_python_plan(seed, rrdb_x2):
    """The exported graph tiles with `tiling`'s rule: same windows and spans as the Upscaler's plan."""
    from real_esrgan_tf.tiling import plan_tiles

    rng = np.random.default_rng(seed)
    compact = SRVGGNetCompact(num_conv=0, num_feat=4)
    for generator, align in ((compact, 1), (rrdb_x2, 2)):
        for _ in range(20):
            tile, tile_pad = int(rng.integers(1, 64)), int(rng.integers(0, 16))
            module = SuperResolutionModule(generator, ServingConfig(tile=tile, tile_pad=tile_pad))
            plan_fn = tf.function(module.tile_plan)
            height, width = (int(v) * align for v in rng.integers(1, 150, size=2))  # padded sizes
            (win_h, win_w), spans = plan_fn(tf.constant(height), tf.constant(width))
            expected = plan_tiles(height, width, tile, tile_pad, align)
            assert (int(win_h), int(win_w)) == (expected.win_h, expected.win_w)
            got = [tuple(int(v) for v in row) for row in spans.numpy().reshape(-1, 6)]
            assert got == [(t.y0, t.y1, t.win_y, t.x0, t.x1, t.win_x) for t in expected.tiles]


def test_upscale_loader_runs_an_exported_saved_model(exported, rrdb_x2, photos):
    """`--model savedmodels/<name>` (the base folder: its highest version) or a version folder runs the
    served graph through the Upscaler: same pixels as the Keras model."""
    from real_esrgan_tf.serve.loading import load_upscale_model

    path, _ = exported
    image = photos["coffee"][40:71, 50:87]  # odd sizes: the graph pads for the x2 unshuffle
    expected = Upscaler(rrdb_x2).upscale(image)
    for spec in (path, os.path.dirname(path)):
        loaded = load_upscale_model(spec)
        assert loaded.model.scale == 2 and loaded.model.interface_version == 2
        assert loaded.model.input_name == "lq"
        got = Upscaler(loaded.model).upscale(image)
        assert got.shape == expected.shape and np.abs(got.astype(int) - expected.astype(int)).max() <= 1
