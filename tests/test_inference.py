"""Upscaler: official pre/post-processing, seam-free tiling, precision, TTA, alpha, 16-bit and gray."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from real_esrgan_tf.models import PixelShuffle, RRDBNet, SRVGGNetCompact
from real_esrgan_tf.serve.keras_backend import KerasSuperResolver, Precision, blend_generators
from real_esrgan_tf.serve.upscaler import NonFiniteOutputError, Upscaler, resize_planes
from real_esrgan_tf.tiling import plan_tiles, reflect_pad_to_multiple


def psnr(a, b, peak=255.0):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def nearest_model(scale=4):
    """SRVGGNetCompact with a zero last conv: exactly nearest-neighbour upsampling."""
    model = SRVGGNetCompact(num_conv=0, num_feat=4, upscale=scale)
    last = model.get_layer("body_2")
    last.kernel.assign(tf.zeros_like(last.kernel))
    last.bias.assign(tf.zeros_like(last.bias))
    return model


def local_model(scale=2, seed=0):
    """Two 3x3 convs + pixel shuffle: each output pixel sees only a 5x5 LR neighbourhood (radius 2)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(3 * scale * scale, 3, padding="same", activation="sigmoid")(x)
    model = keras.Model(inputs, PixelShuffle(scale)(x))
    model.scale = scale
    return model


def nearest_repeat(pixels, s):
    return np.repeat(np.repeat(pixels, s, axis=0), s, axis=1)


# ---------------------------------------------------------------------------- RRDBNet tail strips
@pytest.mark.parametrize("scale, size, strip", [(4, (37, 23), 8), (4, (13, 9), 3), (2, (52, 20), 4),
                                                (1, (72, 36), 5), (4, (9, 5), 1)])
def test_rrdbnet_tail_in_row_strips_equals_one_piece(scale, size, strip):
    """The 4x tail run on strips of trunk rows (2-row halo, last strip slid up) gives the same pixels."""
    keras.utils.set_random_seed(scale)
    feat = 8
    model = RRDBNet(scale=scale, num_feat=feat, num_block=1, num_grow_ch=4)
    for v in model.weights:  # larger than the default init so every layer matters
        v.assign(tf.random.normal(v.shape, stddev=0.3))
    lr = np.random.default_rng(0).random((1, *size, 3), np.float32)
    rows, width = size[0] * scale // 4, size[1] * scale // 4  # trunk features
    # a budget of exactly `strip + 4` rows of one float32 HR activation
    strips = KerasSuperResolver(model, tail_activation_bytes=(strip + 4) * 16 * width * feat * 4)
    count = -(-rows // strip)
    assert strips.strip_rows(rows, width, feat, 4) == -(-rows // count) < rows
    whole = KerasSuperResolver(model, tail_activation_bytes=0)
    assert whole.strip_rows(rows, width, feat, 4) == rows
    expected = whole(lr)
    assert expected.shape == (1, size[0] * scale, size[1] * scale, 3)
    np.testing.assert_allclose(strips(lr), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_tail_strips_are_only_for_rrdbnet_and_large_windows():
    assert KerasSuperResolver(nearest_model()).tail_activation_bytes == 0
    x4plus_like = KerasSuperResolver(RRDBNet(num_feat=8, num_block=1, num_grow_ch=4))
    assert x4plus_like.strip_rows(128, 128, 64, 4) == 128  # LR 128 window: 64 MB, one piece
    assert x4plus_like.strip_rows(276, 276, 64, 4) == 92  # tile 256 + 2 x 10: three strips


# ---------------------------------------------------------------------------- tile plan
@pytest.mark.parametrize("seed", range(6))
def test_tile_plan_covers_every_pixel_once_with_context(seed):
    rng = np.random.default_rng(seed)
    align = int(rng.choice([1, 2, 4]))
    h, w = (int(v) * align for v in rng.integers(1, 40, size=2))
    tile, pad = int(rng.integers(0, 30)), int(rng.integers(0, 12))
    plan = plan_tiles(h, w, tile, pad, align)
    count = np.zeros((h, w), int)
    for t in plan.tiles:
        count[t.y0:t.y1, t.x0:t.x1] += 1
        # the window is inside the image, of the plan's single shape, aligned, and holds the core
        assert 0 <= t.win_y and t.win_y + plan.win_h <= h and 0 <= t.win_x and t.win_x + plan.win_w <= w
        assert t.win_y % align == 0 and t.win_x % align == 0
        # at least `pad` context on every side that is not an image border
        assert t.y0 - t.win_y >= min(pad, t.y0) and (t.win_y + plan.win_h) - t.y1 >= min(pad, h - t.y1)
        assert t.x0 - t.win_x >= min(pad, t.x0) and (t.win_x + plan.win_w) - t.x1 >= min(pad, w - t.x1)
    np.testing.assert_array_equal(count, 1)


# ---------------------------------------------------------------------------- tiling
@pytest.mark.parametrize("tile, tile_pad", [(8, 2), (7, 3), (16, 2)])
def test_tiles_equal_whole_image_when_pad_covers_receptive_field(tile, tile_pad, photos):
    model = local_model(scale=2)
    img = photos["coffee"][100:140, 200:246]
    whole = Upscaler(model).upscale(img)
    tiled = Upscaler(model, tile=tile, tile_pad=tile_pad).upscale(img)
    assert np.abs(whole.astype(int) - tiled).max() <= 1  # float summation order only


@pytest.mark.slow
def test_tiled_equals_untiled_real_weights(photos):
    weights = pytest.importorskip("real_esrgan_tf.weights")
    model = weights.load_generator("realesrgan-x4plus-anime-6b")
    img = photos["astronaut"][180:236, 200:256]  # 56x56 -> 3x3 tiles of 32 (pad 10)
    whole = Upscaler(model).upscale(img)
    tiled = Upscaler(model, tile=32, tile_pad=10).upscale(img)
    assert whole.shape == (224, 224, 3)
    assert psnr(whole, tiled) >= 50.0


def test_tiling_x2_rrdbnet_stays_aligned_to_the_unshuffle(photos):
    keras.utils.set_random_seed(3)
    model = RRDBNet(scale=2, num_block=1, num_feat=8, num_grow_ch=4)
    img = photos["chelsea"][50:91, 60:97]  # odd sizes: mod padding
    whole = Upscaler(model).upscale(img)
    tiled = Upscaler(model, tile=13, tile_pad=9).upscale(img)  # rounded up to 14 / 10
    assert whole.shape == (82, 74, 3)
    assert psnr(whole, tiled) >= 50.0


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_pre_pad_and_mod_pad_follow_the_official_order(scale, photos):
    """Reference: reflect pre_pad, reflect to a multiple of 4/scale, run, crop (RealESRGANer)."""
    keras.utils.set_random_seed(scale)
    model = RRDBNet(scale=scale, num_block=1, num_feat=8, num_grow_ch=4)
    img = photos["astronaut"][10:27, 30:49]  # 17 x 19
    pre_pad = 3
    x = img.astype(np.float32) / 255
    x = np.pad(x, ((0, pre_pad), (0, pre_pad), (0, 0)), mode="reflect")
    mod = {1: 4, 2: 2, 4: 1}[scale]
    x = np.pad(x, ((0, -x.shape[0] % mod), (0, -x.shape[1] % mod), (0, 0)), mode="reflect")
    y = model(x[None]).numpy()[0][: 17 * scale, : 19 * scale]
    expected = np.rint(np.clip(y, 0, 1) * 255).astype(np.uint8)
    out = Upscaler(model, pre_pad=pre_pad).upscale(img)
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected).max() <= 1


# ---------------------------------------------------------------------------- backends
class FixedSizeBackend:
    """Like a TFLite model with a fixed input: fails on any other shape."""

    def __init__(self, model, size):
        self.model, self.scale, self.input_size = model, model.scale, size
        self.shapes = set()

    def __call__(self, lr):
        assert lr.shape[1:3] == self.input_size, lr.shape
        self.shapes.add(lr.shape)
        return self.model(lr).numpy()


@pytest.mark.parametrize("size", [(20, 20), (24, 28)])
def test_fixed_input_size_backend(size, photos):
    model = local_model(scale=2)
    img = photos["coffee"][:37, :45]
    backend = FixedSizeBackend(model, size)
    out = Upscaler(backend, tile_pad=2).upscale(img)
    assert np.abs(out.astype(int) - Upscaler(model).upscale(img)).max() <= 1
    small = img[:9, :13]  # smaller than the window: padded up, cropped back
    assert np.abs(Upscaler(backend, tile_pad=2).upscale(small).astype(int)
                  - Upscaler(model).upscale(small)).max() <= 1


class OutOfMemoryAbove:
    """A backend that raises ResourceExhaustedError for windows larger than `limit` pixels."""

    def __init__(self, model, limit):
        self.model, self.scale, self.limit, self.input_size = model, model.scale, limit, None
        self.sizes = []

    def __call__(self, lr):
        self.sizes.append(lr.shape[1] * lr.shape[2])
        if lr.shape[1] * lr.shape[2] > self.limit:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
        return self.model(lr).numpy()


def test_resource_exhausted_retries_with_smaller_tiles(photos):
    model = local_model(scale=2)
    img = photos["chelsea"][:64, :64]
    backend = OutOfMemoryAbove(model, limit=30 * 30)
    upscaler = Upscaler(backend, tile_pad=4, min_tile=8)
    out = upscaler.upscale(img)
    assert upscaler.tile == 16  # 64 (whole) -> 32 (window 40x40 too big) -> 16 (window 24x24)
    assert max(s for s in backend.sizes[-16:]) <= 30 * 30
    assert np.abs(out.astype(int) - Upscaler(model).upscale(img)).max() <= 1
    with pytest.raises(tf.errors.ResourceExhaustedError):
        Upscaler(OutOfMemoryAbove(model, limit=10), tile_pad=4, min_tile=8).upscale(img)


def test_whole_image_mode_tiles_images_larger_than_auto_tile(photos):
    model = local_model(scale=2)
    img = photos["coffee"][:40, :36]
    counter = OutOfMemoryAbove(model, limit=10**9)
    out = Upscaler(counter, auto_tile=16, tile_pad=4).upscale(img)
    assert len(counter.sizes) == 9 and set(counter.sizes) == {24 * 24}  # 3 x 3 windows of 16 + 2 * 4
    assert np.abs(out.astype(int) - Upscaler(model, auto_tile=0).upscale(img)).max() <= 1


# ---------------------------------------------------------------------------- TTA
def test_tta_is_a_no_op_for_an_equivariant_model_and_not_otherwise(photos):
    img = photos["astronaut"][100:124, 100:130]
    inputs = keras.Input((None, None, 3))
    mix = keras.layers.Conv2D(3, 1, activation="sigmoid")(inputs)  # 1x1 conv: commutes with flips
    equivariant = keras.Model(inputs, keras.layers.UpSampling2D(2)(mix))
    plain, tta = Upscaler(equivariant).upscale(img), Upscaler(equivariant, tta=True).upscale(img)
    assert np.abs(plain.astype(int) - tta).max() <= 1
    keras.utils.set_random_seed(5)
    skewed = keras.Model(inputs, keras.layers.UpSampling2D(2)(
        keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid")(inputs)))
    diff = np.abs(Upscaler(skewed).upscale(img).astype(int) - Upscaler(skewed, tta=True).upscale(img))
    assert diff.mean() > 1.0


def test_tta_averages_the_eight_symmetries(photos):
    """Hand-computed reference: mean over rot90^k and flipped rot90^k, each undone."""
    model = local_model(scale=2, seed=7)
    img = photos["coffee"][:16, :16]
    x = img.astype(np.float32)[None] / 255
    outs = []
    for flip in (False, True):
        for k in range(4):
            t = np.rot90(x[:, :, ::-1] if flip else x, k, axes=(1, 2))
            y = np.rot90(model(np.ascontiguousarray(t)).numpy(), -k, axes=(1, 2))
            outs.append(y[:, :, ::-1] if flip else y)
    expected = np.rint(np.clip(np.mean(outs, axis=0)[0], 0, 1) * 255)
    assert np.abs(Upscaler(model, tta=True).upscale(img) - expected).max() <= 1


# ---------------------------------------------------------------------------- bit depth, gray, alpha
def test_16bit_in_16bit_out_exact_values():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 65536, size=(9, 11, 3)).astype(np.uint16)
    out = Upscaler(nearest_model()).upscale(img)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, nearest_repeat(img, 4))


def test_int32_input_uses_the_official_max_rule():
    img = np.array([[[300, 0, 65535]]], np.int32)
    assert Upscaler(nearest_model()).upscale(img).dtype == np.uint16
    assert Upscaler(nearest_model()).upscale(np.array([[[200, 0, 255]]], np.int32)).dtype == np.uint8


@pytest.mark.parametrize("shape", [(13, 10), (13, 10, 1)])
def test_gray_in_gray_out(shape):
    img = np.random.default_rng(1).integers(0, 256, size=shape).astype(np.uint8)
    out = Upscaler(nearest_model(2)).upscale(img)
    assert out.shape == (26, 20) + shape[2:]
    np.testing.assert_array_equal(out, nearest_repeat(img, 2))


def test_gray_output_is_bt601_luma_of_the_rgb_output(photos):
    model = local_model(scale=2)
    gray = photos["coffee"][:20, :24, 1]
    rgb_out = Upscaler(model).upscale(np.repeat(gray[..., None], 3, axis=2)).astype(np.float64)
    expected = rgb_out @ [0.299, 0.587, 0.114]
    assert np.abs(Upscaler(model).upscale(gray) - expected).max() <= 1.0


def _rgba(rng, h=12, w=14):
    img = rng.integers(0, 256, size=(h, w, 4)).astype(np.uint8)
    img[..., 3] = np.linspace(0, 255, w).astype(np.uint8)[None, :]
    return img


def test_alpha_modes():
    rng = np.random.default_rng(2)
    img = _rgba(rng)
    model = nearest_model(2)
    by_model = Upscaler(model, alpha="model").upscale(img)
    np.testing.assert_array_equal(by_model, nearest_repeat(img, 2))
    bicubic = Upscaler(model, alpha="bicubic").upscale(img)
    reference = np.asarray(Image.fromarray(img[..., 3], "L").resize((28, 24), Image.Resampling.BICUBIC))
    assert np.abs(bicubic[..., 3].astype(int) - reference).max() <= 1
    np.testing.assert_array_equal(bicubic[..., :3], by_model[..., :3])
    dropped = Upscaler(model, alpha="none").upscale(img)
    assert dropped.shape == (24, 28, 3)
    np.testing.assert_array_equal(dropped, by_model[..., :3])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("mode", ["model", "bicubic", "none"])
def test_gray_alpha_in_gray_alpha_out(dtype, mode, photos):
    """Gray + alpha (an LA PNG) used to come out as RGBA: now 2 channels of the same depth, the gray plane
    upscaled as a gray image (BT.601 luma of the net's RGB output, rounded once) and the alpha as for RGBA."""
    model = local_model(scale=2, seed=3)  # random weights: R, G and B of the output differ
    peak = np.iinfo(dtype).max
    gray = photos["coffee"][:20, :24, 1].astype(dtype) * (257 if dtype == np.uint16 else 1)
    alpha = (np.linspace(0, peak, 24)[None, :] * np.linspace(0.2, 1, 20)[:, None]).astype(dtype)
    la = np.stack([gray, alpha], axis=-1)
    out = Upscaler(model, alpha=mode).upscale(la)
    assert out.dtype == dtype and out.shape == (40, 48, 1 if mode == "none" else 2)

    def expected_plane(plane):  # the net on (p, p, p) in [0, 1], luma, then rounded: no Upscaler code
        x = np.repeat(plane[None, :, :, None], 3, axis=3).astype(np.float32) / peak
        y = np.asarray(model(x))[0].astype(np.float64) @ [0.299, 0.587, 0.114]
        return np.rint(np.clip(y, 0, 1) * peak)

    got_gray = out[..., 0]
    assert np.abs(got_gray - expected_plane(gray)).max() <= 1
    np.testing.assert_array_equal(got_gray, Upscaler(model).upscale(gray))  # same as a gray image
    if mode == "none":
        return
    rgba = Upscaler(model, alpha=mode).upscale(np.stack([gray, gray, gray, alpha], axis=-1))
    np.testing.assert_array_equal(out[..., 1], rgba[..., 3])  # alpha as the RGBA path does it
    assert np.abs(got_gray - rgba[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114]).max() <= 1.0
    if mode == "model":
        assert np.abs(out[..., 1] - expected_plane(alpha)).max() <= 1
    else:
        reference = resize_planes(alpha[..., None], (48, 40), Image.Resampling.BICUBIC)[..., 0]
        np.testing.assert_array_equal(out[..., 1], reference)


def test_constant_alpha_is_kept_without_running_the_model():
    img = np.full((5, 6, 4), 255, np.uint8)
    img[..., :3] = 40
    img[..., 3] = 200
    calls = OutOfMemoryAbove(local_model(scale=2), limit=10**9)
    out = Upscaler(calls).upscale(img)
    assert len(calls.sizes) == 1 and (out[..., 3] == 200).all()


# ---------------------------------------------------------------------------- outscale
@pytest.mark.parametrize("outscale, size", [(2.5, (32, 37)), (1.0, (13, 15)), (3.3, (42, 49)), (4, (52, 60))])
def test_outscale_sizes_truncate_as_official(outscale, size):
    img = np.random.default_rng(3).integers(0, 256, size=(13, 15, 3)).astype(np.uint8)
    out = Upscaler(nearest_model(4), outscale=outscale).upscale(img)
    assert out.shape == size + (3,)


def test_outscale_lanczos_close_to_opencv_lanczos4(photos):
    cv2 = pytest.importorskip("cv2")
    img = photos["astronaut"][::8, ::8][:40, :40]
    base = Upscaler(nearest_model(2)).upscale(img)
    ours = Upscaler(nearest_model(2), outscale=3).upscale(img)  # a 1.5x Lanczos upsizing after the net
    theirs = cv2.resize(base, (120, 120), interpolation=cv2.INTER_LANCZOS4)
    assert psnr(ours, theirs) > 30.0
    # and both are far from a plain nearest resize
    assert psnr(ours, np.asarray(Image.fromarray(base).resize((120, 120), Image.Resampling.NEAREST))) < psnr(
        ours, theirs)


def test_resize_planes_keeps_16bit_precision():
    ramp = (np.linspace(0, 65535, 64)[None, :, None] * np.ones((8, 1, 1))).astype(np.uint16)
    out = resize_planes(ramp, (128, 16))
    assert out.dtype == np.uint16
    assert np.abs(np.diff(out[4, 8:-8, 0].astype(int))).max() < 600  # smooth at 16-bit, not 8-bit steps


# ---------------------------------------------------------------------------- precision
@pytest.mark.parametrize("precision, min_psnr", [("fp16", 45.0), ("bf16", 33.0)])
def test_low_precision_is_finite_and_close_to_fp32(precision, min_psnr, photos):
    keras.utils.set_random_seed(11)
    model = RRDBNet(scale=4, num_block=2, num_feat=16, num_grow_ch=8)
    img = photos["astronaut"][200:224, 180:204]
    reference = Upscaler(model).upscale(img)
    upscaler = Upscaler(model, precision=precision)
    out = upscaler.upscale(img)
    assert upscaler.backend.model.layers[-1].compute_dtype == Precision(precision).keras_dtype
    assert upscaler.precision is Precision(precision)  # no fallback needed
    assert psnr(reference, out) >= min_psnr


def test_fp16_overflow_falls_back_to_fp32(photos, caplog):
    """Weights representable in fp16, activations not."""
    inputs = keras.Input((None, None, 3))
    big = keras.layers.Conv2D(3, 1, kernel_initializer=keras.initializers.Constant(3e4))(inputs)
    small = keras.layers.Conv2D(12, 1, kernel_initializer=keras.initializers.Constant(1e-5))(big)
    model = keras.Model(inputs, PixelShuffle(2)(small))  # fp16 max is 65504: `big` reaches 3 * 3e4 * x
    img = 255 - photos["coffee"][:10, :12] // 16  # bright: x >= 0.94
    upscaler = Upscaler(model, precision="fp16")
    with pytest.raises(NonFiniteOutputError):
        upscaler._run_window((img.astype(np.float32) / 255)[None])  # a batch of one window
    out = upscaler.upscale(img)
    assert upscaler.precision is Precision.FP32
    assert "falling back to fp32" in caplog.text
    np.testing.assert_array_equal(out, Upscaler(model).upscale(img))


# ---------------------------------------------------------------------------- misc
def test_denoise_blend_interpolates_weights():
    keras.utils.set_random_seed(1)
    general = SRVGGNetCompact(num_conv=1, num_feat=4)
    wdn = SRVGGNetCompact(num_conv=1, num_feat=4)
    blended = blend_generators(general, wdn, 0.3)
    for g, d, b in zip(general.get_weights(), wdn.get_weights(), blended.get_weights(), strict=True):
        np.testing.assert_allclose(b, 0.3 * g + 0.7 * d, rtol=1e-6, atol=1e-7)
    x = np.random.default_rng(0).random((1, 6, 6, 3), np.float32)
    np.testing.assert_allclose(blend_generators(general, wdn, 1.0)(x), general(x), atol=1e-6)
    with pytest.raises(ValueError, match="architectures"):
        blend_generators(general, SRVGGNetCompact(num_conv=2, num_feat=4), 0.5)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 5), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((0, 4, 3), np.uint8)])
def test_rejects_unsupported_arrays(bad):
    with pytest.raises(ValueError):
        Upscaler(nearest_model()).upscale(bad)


def test_reflect_pad_to_multiple_mirrors_without_repeating_the_edge():
    """The official mod_pad: reflect (edge not repeated) at the bottom/right; any side, even 1 px."""
    row = np.arange(5, dtype=np.float32).reshape(1, 5, 1)  # (h=1, w=5, C=1)
    padded = reflect_pad_to_multiple(row, 4)
    assert padded.shape == (4, 8, 1)
    np.testing.assert_array_equal(padded[0, :, 0], [0, 1, 2, 3, 4, 3, 2, 1])
    np.testing.assert_array_equal(padded[:, :5, 0], np.repeat(row[..., 0], 4, axis=0))  # 1 px: repeated
    batch = np.arange(2 * 3 * 2 * 3, dtype=np.float32).reshape(2, 3, 2, 3)  # (B, h=3, w=2, C)
    padded = reflect_pad_to_multiple(batch, 2)
    assert padded.shape == (2, 4, 2, 3)
    np.testing.assert_array_equal(padded[:, 3], batch[:, 1])  # row 3 mirrors row 1
    assert reflect_pad_to_multiple(padded, 2) is padded  # already a multiple: no copy
