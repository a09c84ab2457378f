"""Face detection as facexlib's `RetinaFace.detect_faces` does it, on our Keras RetinaFace.

What `FaceRestoreHelper.get_face_landmarks_5` (called by `GFPGANer.enhance` with `resize=None`)
asks of facexlib 0.3.0: `detect_faces(bgr_image, 0.97)` with its defaults `nms_threshold=0.4`,
`use_origin_size=True`, so the network sees the image at its own size (no resizing; the 1600/2150
target sizes apply only to `use_origin_size=False`) and coordinates come back in its pixels:

1. BGR float pixels minus the mean (104, 117, 123);
2. the network; scores = softmax column 1;
3. prior boxes for the image size (`PriorBox`: strides 8/16/32, anchor sizes 16,32 / 64,128 /
   256,512 px, centres at (j + 0.5) * stride, normalised by the image width and height);
4. decode with variances 0.1 (centres, landmarks) and 0.2 (log sizes), scale to pixels;
5. keep scores > threshold, sort by score (descending), NMS at IoU > 0.4 as `torchvision.ops.nms`
   (areas without the +1, greedy in score order). facexlib keeps every box NMS keeps: no top-k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BGR_MEAN = (104.0, 117.0, 123.0)
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
CONF_THRESHOLD = 0.97  # FaceRestoreHelper.get_face_landmarks_5
NMS_THRESHOLD = 0.4  # RetinaFace.detect_faces default


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, in the order facexlib returns them (descending score).

    boxes [N, 4] x1, y1, x2, y2 and landmarks [N, 5, 2] (x, y: left eye, right eye, nose, left and
    right mouth corner, as facexlib orders them) in the input image's pixel coordinates (float32),
    scores [N] (float32).
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def as_facexlib(self) -> np.ndarray:
        """[N, 15] rows `x1, y1, x2, y2, score, lx0, ly0, ..., lx4, ly4` as `detect_faces` returns."""
        return np.concatenate(
            [self.boxes, self.scores[:, None], self.landmarks.reshape(len(self), 10)], axis=1
        ).astype(np.float32)


def prior_boxes(height: int, width: int) -> np.ndarray:
    """[P, 4] anchors (cx, cy, w, h), normalised by width/height, in the heads' row order.

    facexlib's `PriorBox` values exactly (float64 arithmetic, then float32), without its Python loop.
    """
    levels = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / width
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / height
        anchors = np.empty((rows, cols, len(sizes), 4), np.float64)
        anchors[..., 0] = cx[None, :, None]
        anchors[..., 1] = cy[:, None, None]
        anchors[..., 2] = np.asarray(sizes, np.float64) / width
        anchors[..., 3] = np.asarray(sizes, np.float64) / height
        levels.append(anchors.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def decode_boxes(loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """[P, 4] offsets -> x1, y1, x2, y2 normalised (facexlib `decode`, float32)."""
    centre = priors[:, :2] + loc[:, :2] * np.float32(VARIANCES[0]) * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * np.float32(VARIANCES[1]))
    top_left = centre - size / 2
    return np.concatenate([top_left, size + top_left], axis=1)


def decode_landmarks(offsets: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """[P, 10] offsets -> [P, 10] normalised x, y of five points (facexlib `decode_landm`)."""
    points = offsets.reshape(-1, 5, 2) * np.float32(VARIANCES[0]) * priors[:, None, 2:]
    return (priors[:, None, :2] + points).reshape(-1, 10)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first, as `torchvision.ops.nms` computes it (float32)."""
    boxes = boxes.astype(np.float32, copy=False)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for position, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[position + 1 :]
        rest = rest[~suppressed[rest]]
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_threshold]] = True
    return np.asarray(keep, np.int64)


def bgr_minus_mean(image_rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] RGB values in [0, 255] (uint8, or float as facexlib scales 16-bit) -> the net's input.

    A gray [H, W] image is repeated to three channels and an alpha channel dropped, as
    `FaceRestoreHelper.read_image` does.
    """
    image = np.asarray(image_rgb)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be [H, W], [H, W, 3] or [H, W, 4], got shape {image.shape}")
    bgr = image[:, :, 2::-1].astype(np.float32)
    return bgr - np.asarray(BGR_MEAN, np.float32)


class FaceDetector:
    """facexlib's RetinaFace `detect_faces` on a Keras `RetinaFaceResNet50`.

    Args:
      model: a `RetinaFaceResNet50` with weights (`weights.facexlib_pth.load_retinaface`).
    """

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self._forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)],
            reduce_retracing=True,
        )

    @classmethod
    def from_file(cls, path: str) -> FaceDetector:
        """A detector with the weights of facexlib's `detection_Resnet50_Final.pth` at `path`."""
        from real_esrgan_tf.weights.facexlib_pth import load_retinaface

        return cls(load_retinaface(path))

    def raw_outputs(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(loc [P, 4], face scores [P], landmark offsets [P, 10]) of the network for one image."""
        x = bgr_minus_mean(image_rgb)[None]
        loc, scores, landmarks = (np.asarray(t) for t in self._forward(x))
        return loc[0], scores[0, :, 1], landmarks[0]

    def detect(
        self,
        image_rgb: np.ndarray,
        conf_threshold: float = CONF_THRESHOLD,
        nms_threshold: float = NMS_THRESHOLD,
    ) -> Detections:
        """Faces in one RGB image (values in [0, 255]), in its pixel coordinates, highest score first."""
        height, width = np.shape(image_rgb)[:2]
        loc, scores, offsets = self.raw_outputs(image_rgb)
        priors = prior_boxes(height, width)
        if len(priors) != len(scores):  # cannot happen unless the model is not RetinaFaceResNet50
            raise ValueError(f"{len(scores)} anchors from the network, {len(priors)} prior boxes")
        keep = np.flatnonzero(scores > conf_threshold)
        keep = keep[np.argsort(scores[keep], kind="stable")[::-1]]  # facexlib: argsort()[::-1]
        scale = np.asarray([width, height], np.float32)
        boxes = decode_boxes(loc[keep], priors[keep]) * np.tile(scale, 2)
        landmarks = decode_landmarks(offsets[keep], priors[keep]) * np.tile(scale, 5)
        kept = nms(boxes, scores[keep], nms_threshold)
        return Detections(
            boxes=boxes[kept].astype(np.float32),
            scores=scores[keep][kept].astype(np.float32),
            landmarks=landmarks[kept].reshape(-1, 5, 2).astype(np.float32),
        )
