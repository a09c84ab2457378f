"""`FaceEnhancer` against the official helper logic: gfpgan 1.3.8 `GFPGANer.enhance` with facexlib 0.3.0's
real `FaceRestoreHelper` (sorting, eye-distance filter, centre face, LMEDS alignment, warps, inverse affine,
ParseNet mask with its blur, float64 blend, truncation), with small stand-in networks computed identically
on both sides (a flip-and-scale "restorer", a parser whose classes follow the red channel, a detector
returning fixed boxes and landmarks) and the same background upscale. The real networks meet in the whole-
chain test (tests/test_face_chain.py). No face: the plain upscale, bit for bit, for every image kind.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from real_esrgan_tf.faces.detection import Detections
from real_esrgan_tf.faces.restorer import FaceEnhancer

# triton (pulled in by torchvision) segfaults when loaded after TensorFlow; torch runs without it on the CPU
sys.modules.setdefault("triton", None)
torch = pytest.importorskip("torch")
from tests.upstream import import_upstream  # noqa: E402 (after the torch guard)


def _restore_numpy(x):  # (N, 512, 512, 3) in [-1, 1]
    return x[:, :, ::-1] * np.float32(0.8)


def _parse_numpy(x):  # (N, 512, 512, 3) -> (N, 512, 512, 19) logits: class 1 (face) where red is high
    red, green = x[..., 0], x[..., 1]
    logits = np.full(x.shape[:3] + (19,), -100.0, np.float32)
    logits[..., 0] = red * np.float32(-10)
    logits[..., 1] = red * np.float32(10) + green * np.float32(5)
    logits[..., 16] = green * np.float32(3)  # hair: kept out of the mask
    return logits


class _TorchRestorer(torch.nn.Module):
    def forward(self, x, return_rgb=False, weight=0.5, **kwargs):
        return torch.flip(x, dims=[3]) * 0.8, []


class _TorchParser(torch.nn.Module):
    def forward(self, x):
        red, green = x[:, 0:1], x[:, 1:2]
        logits = torch.full((x.shape[0], 19) + tuple(x.shape[2:]), -100.0)
        logits[:, 0:1] = red * -10
        logits[:, 1:2] = red * 10 + green * 5
        logits[:, 16:17] = green * 3
        return logits, x


class _FixedDetector:
    """Both sides' detector: the same rows [x1, y1, x2, y2, score, 10 landmark coordinates]."""

    def __init__(self, rows):
        self.rows = np.asarray(rows, np.float32).reshape(-1, 15)

    def detect(self, image, conf_threshold=0.97):
        self.seen = np.array(image)
        r = self.rows
        return Detections(r[:, :4], r[:, 4], r[:, 5:].reshape(-1, 5, 2))

    def detect_faces(self, image, threshold):  # facexlib's RetinaFace API
        self.seen_bgr = np.array(image)
        return self.rows.copy()


def _face_row(cx, cy, eye_distance, angle=0.0, score=0.99):
    template = np.array([[-0.5, -0.1], [0.5, -0.1], [0.0, 0.35], [-0.42, 0.8], [0.42, 0.8]])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = template @ rotation.T * eye_distance + [cx, cy]
    half = eye_distance
    return [cx - half, cy - half, cx + half, cy + 1.3 * half, score, *points.ravel()]


@pytest.fixture(scope="module")
def upscaler():
    import keras

    from real_esrgan_tf.models.srvgg import SRVGGNetCompact
    from real_esrgan_tf.serve.upscaler import Upscaler

    keras.utils.set_random_seed(0)
    net = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4)
    net(np.zeros((1, 8, 8, 3), np.float32))
    return Upscaler(net)


class _Background:
    """GFPGANer's bg_upsampler: our upscale of the same image, in OpenCV's channel order."""

    def __init__(self, upscaler):
        self.upscaler = upscaler

    def enhance(self, img, outscale):
        rgb = img.copy()
        if img.ndim == 3:
            rgb[..., :3] = img[..., 2::-1]
        out = self.upscaler.upscale(rgb)
        if out.ndim == 3:
            out[..., :3] = out[..., 2::-1].copy()
        return out, None


def _official(image, rows, upscaler, monkeypatch, only_center_face=False):
    """GFPGANer.enhance (paste_back) with the stand-ins; image RGB(A) -> result RGB(A)."""
    helper_module = import_upstream("facexlib.utils.face_restoration_helper")
    gfpgan_utils = import_upstream("gfpgan.utils")
    detector = _FixedDetector(rows)
    monkeypatch.setattr(helper_module, "init_detection_model", lambda *a, **k: detector)
    monkeypatch.setattr(helper_module, "init_parsing_model", lambda *a, **k: _TorchParser())
    enhancer = gfpgan_utils.GFPGANer.__new__(gfpgan_utils.GFPGANer)
    enhancer.upscale, enhancer.device = 4, torch.device("cpu")
    enhancer.bg_upsampler = _Background(upscaler)
    enhancer.gfpgan = _TorchRestorer()
    enhancer.face_helper = helper_module.FaceRestoreHelper(
        4, face_size=512, crop_ratio=(1, 1), det_model="retinaface_resnet50", save_ext="png", use_parse=True,
        device=torch.device("cpu"))
    bgr = image.copy()
    bgr[..., :3] = image[..., 2::-1]
    cropped, restored, out = enhancer.enhance(bgr, has_aligned=False, only_center_face=only_center_face,
                                              paste_back=True)
    out = out.copy()
    out[..., :3] = out[..., 2::-1].copy()
    return out, len(restored)


def _ours(image, rows, upscaler, only_center_face=False):
    enhancer = FaceEnhancer(upscaler, _restore_numpy, _FixedDetector(rows), _parse_numpy,
                            only_center_face=only_center_face, face_batch=2)
    faces = enhancer.detect(enhancer.face_input(image))
    return enhancer.upscale(image), len(faces)


def _image(seed, shape=(56, 72, 3), dtype=np.uint8):
    rng = np.random.default_rng(seed)
    big = np.iinfo(dtype).max
    smooth = rng.integers(0, big, (shape[0] // 8 + 2, shape[1] // 8 + 2, shape[2])).astype(np.float64)
    from real_esrgan_tf.serve.upscaler import resize_planes

    image = resize_planes(smooth.astype(np.float32), (shape[1], shape[0]))
    return np.clip(image + rng.normal(0, big / 40, shape), 0, big).astype(dtype)


def _psnr(a, b, peak=255.0):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(peak**2 / mse)


ROWS = [_face_row(20, 22, 14, 0.1), _face_row(52, 30, 17, -0.3), _face_row(36, 45, 3.0)]  # 3rd: eyes < 5 px


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("channels", [3, 4])
def test_paste_back_equals_gfpganer_enhance(upscaler, monkeypatch, seed, channels):
    image = _image(seed, (56, 72, channels))
    if channels == 4:
        image[..., 3] = np.linspace(0, 255, image.shape[1])[None].astype(np.uint8)
    expected, official_faces = _official(image, ROWS, upscaler, monkeypatch)
    ours, faces = _ours(image, ROWS, upscaler)
    assert official_faces == faces == 2  # the third face's eyes are 3 px apart
    plain = upscaler.upscale(image)
    assert ours.shape == expected.shape == plain.shape and ours.dtype == expected.dtype
    assert _psnr(ours, plain) < 40  # the faces changed the image
    np.testing.assert_array_equal(ours[..., 3:], plain[..., 3:])  # alpha: the background's
    diff = np.abs(ours.astype(int) - expected)
    # OpenCV 5's uint8 warps round a few float32 sums differently (< 0.1 % of the crop's pixels, one level);
    # a parse class flipped by one moves the blurred mask a little over a wide area, and the final
    # truncation turns some of that into one-level steps: measured 0.1-0.7 % of the values, never 2.
    assert diff.max() <= 1 and (diff > 0).mean() < 0.02 and _psnr(ours, expected) > 60


def test_only_center_face_equals_gfpganer(upscaler, monkeypatch):
    image = _image(5)
    expected, official_faces = _official(image, ROWS, upscaler, monkeypatch, only_center_face=True)
    ours, faces = _ours(image, ROWS, upscaler, only_center_face=True)
    assert official_faces == faces == 1
    assert _psnr(ours, expected) > 60


def test_sixteen_bit_and_gray_follow_the_eight_bit_path(upscaler):
    """Our choices where facexlib breaks: 16-bit faces scaled by 257, gray faces pasted as luma."""
    image8 = _image(7)
    image16 = image8.astype(np.uint16) * 257
    enhancer = FaceEnhancer(upscaler, _restore_numpy, _FixedDetector(ROWS), _parse_numpy)
    out8, out16 = enhancer.upscale(image8), enhancer.upscale(image16)
    assert out16.dtype == np.uint16 and out16.shape == out8.shape
    # the same faces at 16 bits (background and blend differ by the 8-bit rounding only)
    assert _psnr(out16 / 257.0, out8.astype(np.float64)) > 45
    gray = image8[..., 1]
    out_gray = enhancer.upscale(gray)
    assert out_gray.ndim == 2 and out_gray.dtype == np.uint8
    plain_gray = upscaler.upscale(gray)
    assert _psnr(out_gray, plain_gray) < 40  # faces were pasted
    gray_alpha = np.stack([gray, np.full_like(gray, 200)], -1)
    out_la = enhancer.upscale(gray_alpha)
    np.testing.assert_array_equal(out_la[..., 0], out_gray)
    assert (out_la[..., 1] == 200).all()


@pytest.mark.parametrize("kind", ["rgb", "rgba", "gray", "gray_alpha", "rgb16", "rgba16"])
def test_no_face_is_the_plain_upscale_bit_for_bit(upscaler, kind):
    image = _image(11, (40, 48, 4), np.uint16 if kind.endswith("16") else np.uint8)
    image = {"rgb": image[..., :3], "rgba": image, "gray": image[..., 0], "gray_alpha": image[..., :2],
             "rgb16": image[..., :3], "rgba16": image}[kind]
    detector = _FixedDetector(np.zeros((0, 15)))
    enhancer = FaceEnhancer(upscaler, None, detector, None)  # networks never called without faces
    out = enhancer.upscale(image)
    plain = upscaler.upscale(image)
    assert out.dtype == plain.dtype and out.shape == plain.shape
    np.testing.assert_array_equal(out, plain)
    assert detector.seen.shape == image.shape[:2] + (3,)  # RGB; 16-bit as facexlib's value / 65535 * 255
    if kind.endswith("16"):
        np.testing.assert_allclose(detector.seen, image[..., :3] / 65535 * 255)
    else:
        np.testing.assert_array_equal(detector.seen, np.repeat(image[..., None], 3, 2) if image.ndim == 2
                                      else np.repeat(image[..., :1], 3, 2) if image.shape[2] == 2
                                      else image[..., :3])
    frames = np.stack([image[..., :3]] * 2) if image.ndim == 3 and image.shape[2] >= 3 else None
    if frames is not None:
        np.testing.assert_array_equal(enhancer.upscale_batch(frames), upscaler.upscale_batch(frames))


def test_restore_aligned_batches_faces(upscaler):
    """has_aligned: the 512 crops go straight to the restorer, face_batch at a time; output as tensor2img."""
    calls = []

    def restorer(x):
        calls.append(len(x))
        return np.tanh(x * np.float32(3))

    enhancer = FaceEnhancer(upscaler, restorer, None, None, face_batch=2)
    faces = np.random.default_rng(0).integers(0, 256, (3, 512, 512, 3), np.uint8)
    out = enhancer.restore_aligned(faces)
    assert calls == [2, 1] and out.dtype == np.uint8 and out.shape == faces.shape
    x = (faces / 255.0).astype(np.float32)
    expected = np.rint((np.tanh(((x - np.float32(0.5)) / np.float32(0.5)) * np.float32(3)) + 1) / 2 * 255)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


@pytest.mark.slow
def test_video_frames_get_their_faces(upscaler, tmp_path):
    """`video --face_enhance`: upscale_video with a FaceEnhancer writes each frame's face-restored upscale
    (ffv1 with an RGB pixel format: lossless)."""
    av = pytest.importorskip("av")
    from real_esrgan_tf.serve import video, video_io
    from tests.video_clips import make_clip

    source = str(tmp_path / "clip.mkv")
    make_clip(source, frames=3, size=(72, 56), audio=False, title=None)
    enhancer = FaceEnhancer(upscaler, _restore_numpy, _FixedDetector(ROWS), _parse_numpy)
    target = str(tmp_path / "out.mkv")
    settings = video_io.EncodeSettings(codec="ffv1", pix_fmt="bgr0", batch=2)
    video.upscale_video(source, target, [enhancer], settings)
    with av.open(source) as c:
        frames = [video_io.frame_to_rgb(f, "rgb24") for f in c.decode(video=0)]
    with av.open(target) as c:
        written = [video_io.frame_to_rgb(f, "rgb24") for f in c.decode(video=0)]
    assert len(written) == len(frames) == 3
    for frame, out in zip(frames, written, strict=True):
        np.testing.assert_array_equal(out, enhancer.upscale(frame))
        assert _psnr(out, upscaler.upscale(frame)) < 40  # faces pasted
