"""Face parsing against facexlib 0.3.0 (the oracle): the real `ParseNet(in_size=512, out_size=512,
parsing_ch=19)` with seeded random weights saved by `torch.save` in the official layout, read by our
torch-free loader, on scikit-image's astronaut (512x512, a face photo) normalised as facexlib's
`paste_faces_to_input_image` does it. Batch norms get random affine parameters and running statistics
calibrated on the photo (one train-mode pass), so every saved tensor matters and activations stay in
range.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from real_esrgan_tf.faces import parsing
from real_esrgan_tf.weights import WeightsError

torch = pytest.importorskip("torch")
from tests.upstream import calibrate_batch_norms, import_upstream  # noqa: E402 (after the torch guard)


def _astronaut() -> np.ndarray:
    return pytest.importorskip("skimage.data").astronaut()  # 512 x 512 RGB uint8


def _facexlib_input(faces_rgb: np.ndarray):
    """The helper's preprocessing, by the helper's own functions: BGR uint8 -> img2tensor(bgr2rgb) /
    255 -> normalize(0.5, 0.5)."""
    misc = import_upstream("facexlib.utils.misc")
    from torchvision.transforms.functional import normalize

    tensors = []
    for face in faces_rgb:
        bgr = np.ascontiguousarray(face[:, :, ::-1])
        t = misc.img2tensor(bgr.astype("float32") / 255.0, bgr2rgb=True, float32=True)
        normalize(t, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), inplace=True)
        tensors.append(t)
    return torch.stack(tensors)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    parsenet = import_upstream("facexlib.parsing.parsenet")
    torch.manual_seed(0)
    net = parsenet.ParseNet(in_size=512, out_size=512, parsing_ch=19)
    with torch.no_grad():
        calibrate_batch_norms(net, _facexlib_input(_astronaut()[None, 160:288, 180:308]))
    path = tmp_path_factory.mktemp("parsenet") / "parsing_parsenet.pth"
    torch.save(net.state_dict(), path)
    return {"net": net, "path": str(path)}


def _load_without_torch(path, **kwargs):
    from real_esrgan_tf.weights.facexlib_pth import load_parsenet

    saved, sys.modules["torch"] = sys.modules["torch"], None  # `import torch` raises while loading
    try:
        return load_parsenet(path, **kwargs)
    finally:
        sys.modules["torch"] = saved


@pytest.fixture(scope="module")
def parser(oracle):
    return parsing.FaceParser(_load_without_torch(oracle["path"]))


def _check_against_facexlib(oracle, parser, faces):
    with torch.no_grad():
        mask, _ = oracle["net"](_facexlib_input(faces))
    expected = mask.numpy().transpose(0, 2, 3, 1)
    logits = parser.logits(faces)
    assert logits.shape == faces.shape[:3] + (19,)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(logits, expected, atol=2e-4 * scale)
    labels = parser.labels(faces)
    expected_labels = mask.argmax(dim=1).numpy()
    # Equal wherever facexlib's top two logits are further apart than both frameworks' float error;
    # where they are not (random weights: 47 of 262144 pixels at 512x512), either label of
    # the tied pair is right.
    top2 = np.sort(expected, axis=-1)[..., -2:]
    tied = top2[..., 1] - top2[..., 0] < 1e-4
    assert tied.mean() < 1e-3
    np.testing.assert_array_equal(labels[~tied], expected_labels[~tied])
    ours_in_theirs = np.take_along_axis(expected, labels[..., None], -1)[..., 0]
    assert np.all(ours_in_theirs[tied] >= top2[tied][:, 0])
    assert len(np.unique(labels)) >= 5  # a map with structure, not one class everywhere
    return labels


@pytest.mark.slow
def test_parsing_equals_facexlib_small(oracle, parser):
    """Two 96x96 crops in one batch (the graph takes any size divisible by 16)."""
    image = _astronaut()
    faces = np.stack([image[40:136, 170:266], image[200:296, 60:156]])
    _check_against_facexlib(oracle, parser, faces)


@pytest.mark.slow
def test_parsing_equals_facexlib_at_512(oracle, parser):
    """The size the helper feeds: the whole 512x512 photo, mask values as facexlib's colormap."""
    faces = _astronaut()[None]
    labels = _check_against_facexlib(oracle, parser, faces)
    expected_mask = np.zeros(labels.shape[1:])
    for idx, color in enumerate(parsing.MASK_COLORMAP):  # facexlib's loop, on the same labels
        expected_mask[labels[0] == idx] = color
    np.testing.assert_array_equal(parsing.mask_from_labels(labels[0]), expected_mask)


@pytest.mark.slow
def test_with_image_head_and_config(oracle):
    from real_esrgan_tf.models.parsenet import ParseNet

    model = _load_without_torch(oracle["path"], with_image=True)
    face = _astronaut()[None, 100:164, 200:264]
    logits, image = model(parsing.parsing_input(face))
    with torch.no_grad():
        mask, expected_image = oracle["net"](_facexlib_input(face))
    np.testing.assert_allclose(np.asarray(image), expected_image.numpy().transpose(0, 2, 3, 1), atol=1e-3)
    np.testing.assert_allclose(np.asarray(logits), mask.numpy().transpose(0, 2, 3, 1), atol=1e-2)
    clone = ParseNet.from_config(model.get_config())
    assert clone.get_config() == model.get_config() and len(clone.weights) == len(model.weights)


@pytest.mark.slow
def test_parsenet_file_layout_and_bad_files(oracle, tmp_path):
    from real_esrgan_tf.weights.facexlib_pth import load_parsenet

    state = torch.load(oracle["path"])
    assert len(state) == 238 and state["out_mask_conv.conv2d.weight"].shape == (19, 64, 3, 3)

    def saved(name, obj, **kwargs):
        path = tmp_path / name
        torch.save(obj, path, **kwargs)
        return str(path)

    def error(path):
        with pytest.raises(WeightsError) as info:
            load_parsenet(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(path), message
        return message

    legacy = saved("legacy.pth", state, _use_new_zipfile_serialization=False)
    ours = _load_without_torch(legacy)
    reference = _load_without_torch(oracle["path"])
    for a, b in zip(ours.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    missing = {k: v for k, v in state.items() if k != "body.4.conv2.norm.norm.running_mean"}
    assert "lacks body.4.conv2.norm.norm.running_mean" in error(saved("missing.pth", missing))
    assert "not used" in error(saved("extra.pth", {**state, "decoder.9.conv1.conv2d.weight": torch.zeros(1)}))
    wrong = {**state, "encoder.2.shortcut_func.conv2d.weight": torch.zeros(256, 64, 3, 3)}
    assert "encoder.2.shortcut_func" in error(saved("wrong.pth", wrong))
    no_image = {k: v for k, v in state.items() if not k.startswith("out_img_conv.")}
    assert "out_img_conv" in error(saved("no_image.pth", no_image))
    bisenet = import_upstream("facexlib.parsing.bisenet").BiSeNet(num_class=19).state_dict()
    assert "not a ParseNet" in error(saved("bisenet.pth", bisenet))
    detector_file = tmp_path / "empty.pth"
    detector_file.write_bytes(b"")
    error(str(detector_file))


def test_input_normalisation_and_reflection_pad_equal_facexlib():
    from real_esrgan_tf.models.parsenet import ReflectionPad2D

    faces = _astronaut()[None, 200:233, 100:140]
    expected = _facexlib_input(faces).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(parsing.parsing_input(faces), expected)
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 3)).astype(np.float32)
    theirs = torch.nn.ReflectionPad2d(2)(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_array_equal(np.asarray(ReflectionPad2D(2)(x)), theirs.transpose(0, 2, 3, 1))
    labels = np.arange(19).reshape(1, 19)
    assert parsing.mask_from_labels(labels).tolist() == [[float(v) for v in parsing.MASK_COLORMAP]]
