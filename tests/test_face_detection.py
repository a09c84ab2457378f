"""Face detection against facexlib 0.3.0 (the oracle): the real `RetinaFace(network_name="resnet50")`
with seeded random weights saved by `torch.save` in the official layout, read by our torch-free
loader, on the same photo (a crop of scikit-image's astronaut, odd size).

Random weights find no faces, so, on both sides alike (it is in the saved file): batch norms are
calibrated on the photo (running statistics of one train-mode pass, so activations stay in range)
and the class head's "face" bias of anchor 0 is raised so some anchors score above 0.97.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from real_esrgan_tf.faces import detection
from real_esrgan_tf.weights import WeightsError

torch = pytest.importorskip("torch")
from tests.upstream import calibrate_batch_norms, import_upstream  # noqa: E402 (after the torch guard)

FACE_BIAS = 3.0  # added to every level's anchor-0 "face" logit bias: ~50 anchors above 0.97


def _photo() -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut()[20:177, 140:283])  # 157 x 143, RGB uint8


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """facexlib's detector with the test weights, its outputs on the photo, and the weights file."""
    retinaface = import_upstream("facexlib.detection.retinaface")
    torch.manual_seed(0)
    net = retinaface.RetinaFace(network_name="resnet50", half=False, device="cpu")
    image = _photo()
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    x = torch.from_numpy(
        (bgr.astype(np.float32) - np.float32([104, 117, 123])).transpose(2, 0, 1)[None].copy()
    )
    with torch.no_grad():
        calibrate_batch_norms(net, x)
        for head in net.ClassHead:
            head.conv1x1.bias[1] += FACE_BIAS
        loc, conf, landmarks = net(x)
        expected = net.detect_faces(bgr, 0.97)  # what FaceRestoreHelper.get_face_landmarks_5 calls
    path = tmp_path_factory.mktemp("retinaface") / "detection_Resnet50_Final.pth"
    torch.save(net.state_dict(), path)
    raw = (loc[0].numpy(), conf[0, :, 1].numpy(), landmarks[0].numpy())
    return {"net": net, "path": str(path), "image": image, "raw": raw, "expected": expected}


@pytest.fixture(scope="module")
def detector(oracle):
    from real_esrgan_tf.weights.facexlib_pth import load_retinaface

    saved, sys.modules["torch"] = sys.modules["torch"], None  # `import torch` raises while loading
    try:
        model = load_retinaface(oracle["path"])
    finally:
        sys.modules["torch"] = saved
    return detection.FaceDetector(model)


@pytest.mark.slow
def test_network_outputs_equal_facexlib(oracle, detector):
    loc, scores, landmarks = detector.raw_outputs(oracle["image"])
    ref_loc, ref_scores, ref_landmarks = oracle["raw"]
    assert loc.shape == ref_loc.shape == (950, 4)  # (20*18 + 10*9 + 5*5) positions x 2 anchors
    np.testing.assert_allclose(loc, ref_loc, atol=2e-3)
    np.testing.assert_allclose(landmarks, ref_landmarks, atol=2e-3)
    np.testing.assert_allclose(scores, ref_scores, atol=2e-4)


@pytest.mark.slow
def test_detect_equals_facexlib_detect_faces(oracle, detector):
    expected = oracle["expected"]
    _, ref_scores, _ = oracle["raw"]
    candidates = np.sort(ref_scores[ref_scores > 0.97])
    assert 10 <= len(candidates) <= 200, len(candidates)  # the test image makes detections happen
    # The order of near-equal scores could legitimately differ: the seed gives none closer than this.
    assert np.diff(candidates).min() > 2e-6 and np.abs(ref_scores - 0.97).min() > 1e-4

    found = detector.detect(oracle["image"])  # conf_threshold defaults to the helper's 0.97
    assert len(found) == len(expected) >= 5
    np.testing.assert_allclose(found.boxes, expected[:, :4], atol=0.5)
    np.testing.assert_allclose(found.landmarks.reshape(-1, 10), expected[:, 5:], atol=0.5)
    np.testing.assert_allclose(found.scores, expected[:, 4], atol=2e-4)
    assert np.all(np.diff(found.scores) <= 0)
    np.testing.assert_allclose(found.as_facexlib(), expected, atol=0.5)
    assert found.boxes.dtype == found.scores.dtype == found.landmarks.dtype == np.float32


def _assert_same_faces(found, expected):
    """Same faces within 0.5 px and 2e-4 in score, matched one to one: the order of scores that are
    closer than the two frameworks' float error (many at low thresholds) is not compared."""
    ours = found.as_facexlib()
    assert ours.shape == expected.shape and len(ours) > 0
    free = np.ones(len(ours), bool)
    for row in expected:
        close = free & (np.abs(ours - row).max(axis=1) <= 0.5) & (np.abs(ours[:, 4] - row[4]) <= 2e-4)
        assert close.any(), f"facexlib face {row[:5]} not found"
        free[np.flatnonzero(close)[0]] = False
    assert np.all(np.diff(found.scores) <= 0)


@pytest.mark.slow
def test_detect_thresholds_and_input_kinds(oracle, detector):
    image = oracle["image"]
    net = oracle["net"]
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    with torch.no_grad():
        loose = net.detect_faces(bgr, 0.96, nms_threshold=0.6)
    found = detector.detect(image, conf_threshold=0.96, nms_threshold=0.6)
    assert len(loose) > len(oracle["expected"])
    _assert_same_faces(found, loose)
    assert len(detector.detect(image, conf_threshold=0.9999)) == 0

    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(detector.detect(rgba).as_facexlib(), detector.detect(image).as_facexlib())
    gray = image[:, :, 1]
    with torch.no_grad():
        expected_gray = net.detect_faces(np.repeat(gray[:, :, None], 3, axis=2), 0.97)
    _assert_same_faces(detector.detect(gray), expected_gray)
    as_float = image.astype(np.float64) * (254.5 / 255)  # 16-bit input as facexlib scales it: floats
    with torch.no_grad():
        expected_float = net.detect_faces(np.ascontiguousarray(as_float[:, :, ::-1]), 0.97)
    _assert_same_faces(detector.detect(as_float), expected_float)


@pytest.mark.parametrize("height, width", [(157, 143), (64, 64), (33, 71), (1, 9), (481, 640)])
def test_prior_boxes_equal_facexlib(height, width):
    utils = import_upstream("facexlib.detection.retinaface_utils")
    cfg = import_upstream("facexlib.detection.retinaface").generate_config("resnet50")
    expected = utils.PriorBox(cfg, image_size=(height, width)).forward().numpy()
    np.testing.assert_array_equal(detection.prior_boxes(height, width), expected)


def test_decode_and_nms_equal_facexlib():
    utils = import_upstream("facexlib.detection.retinaface_utils")
    rng = np.random.default_rng(3)
    priors = detection.prior_boxes(57, 41)
    loc = rng.normal(0, 2, (len(priors), 4)).astype(np.float32)
    offsets = rng.normal(0, 2, (len(priors), 10)).astype(np.float32)
    t = torch.from_numpy
    np.testing.assert_allclose(
        detection.decode_boxes(loc, priors), utils.decode(t(loc), t(priors), [0.1, 0.2]).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(
        detection.decode_landmarks(offsets, priors),
        utils.decode_landm(t(offsets), t(priors), [0.1, 0.2]).numpy(),
        atol=1e-6,
    )
    for threshold in (0.4, 0.1, 0.7):
        corner = rng.uniform(0, 50, (300, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(1, 30, (300, 2))], 1).astype(np.float32)
        scores = rng.permutation(300).astype(np.float32) / 300  # distinct
        dets = np.concatenate([boxes, scores[:, None]], 1)
        expected = [int(i) for i in utils.py_cpu_nms(dets, threshold)]
        assert detection.nms(boxes, scores, threshold).tolist() == expected
    assert detection.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4).tolist() == []


@pytest.mark.parametrize("source, target", [((5, 5), (10, 9)), ((3, 4), (5, 7)), ((4, 4), (8, 8))])
def test_nearest_resize_equals_torch(source, target):
    from real_esrgan_tf.models.retinaface import NearestResizeLike

    x = np.random.default_rng(0).normal(size=(1, *source, 3)).astype(np.float32)
    ours = np.asarray(NearestResizeLike()(x, np.zeros((1, *target, 1), np.float32)))
    theirs = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=target)
    np.testing.assert_array_equal(ours, theirs.numpy().transpose(0, 2, 3, 1))


# ---------------------------------------------------------------------------------------------
# The weights file layouts and bad files


@pytest.mark.slow
def test_module_prefixed_and_legacy_files_load_the_same(oracle, detector, tmp_path):
    from real_esrgan_tf.weights.facexlib_pth import load_retinaface

    state = torch.load(oracle["path"])
    assert len(state) == 456 and "body.layer4.2.bn3.num_batches_tracked" in state
    prefixed = tmp_path / "module_prefix.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, prefixed, _use_new_zipfile_serialization=False)
    model = load_retinaface(str(prefixed))
    for ours, reference in zip(model.weights, detector.model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))
    clone = type(model).from_config(model.get_config())
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]


@pytest.mark.slow
def test_bad_detection_files(oracle, tmp_path):
    from real_esrgan_tf.weights.facexlib_pth import load_retinaface

    state = torch.load(oracle["path"])

    def saved(name, obj):
        path = tmp_path / name
        torch.save(obj, path)
        return str(path)

    def error(path):
        with pytest.raises(WeightsError) as info:
            load_retinaface(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(path), message
        return message

    missing = {k: v for k, v in state.items() if k != "fpn.merge1.1.running_var"}
    assert "lacks fpn.merge1.1.running_var" in error(saved("missing.pth", missing))
    extra = {**state, "extra.weight": torch.zeros(3)}
    assert "not used" in error(saved("extra.pth", extra)) and "extra.weight" in error(saved("e.pth", extra))
    wrong = {**state, "ClassHead.1.conv1x1.weight": torch.zeros(6, 256, 1, 1)}
    assert "ClassHead.1.conv1x1" in error(saved("wrong.pth", wrong))
    retinaface = import_upstream("facexlib.detection.retinaface")
    mobile = retinaface.RetinaFace(network_name="mobile0.25", half=False, device="cpu").state_dict()
    assert "not a RetinaFace ResNet-50" in error(saved("mobilenet.pth", mobile))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    error(str(garbage))
