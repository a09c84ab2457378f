"""`FaceEnhancer`: Real-ESRGAN on the image, GFPGAN on its faces, pasted back (`upscale --face_enhance`).

The official `inference_realesrgan.py --face_enhance` runs `GFPGANer.enhance` (gfpgan 1.3.8) with the
Real-ESRGAN upsampler as its background: facexlib's `FaceRestoreHelper` detects faces (RetinaFace, score
>= 0.97), drops those whose eyes are < 5 px apart, aligns each to the 512 FFHQ template (five-point
similarity, LMEDS), restores it with GFPGAN (weight 0.5, which the clean v1 generator ignores), and pastes
it into the upscaled image through the inverse similarity (times the scale, plus 0.5 * scale) under a soft
mask: ParseNet's face classes, blurred twice (Gaussian 101 x 101, sigma 11), 10 px border cleared. The
blend is float64 and truncated to the image's type at the end. This class does the same, with the faces of
one image batched through GFPGAN and ParseNet, and the paste computed only where a face can land (outside,
the official blend leaves the background exactly as it is).

Where the official code breaks we choose (documented in the README): gray images are detected and
restored as RGB and the faces pasted as BT.601 luma (facexlib's blend fails on a 2-D background);
16-bit images are detected and aligned as facexlib does (float value / 65535 * 255) and the 8-bit
restored faces scaled by 257 before the paste (facexlib pastes them unscaled into the 16-bit image).
Alpha always comes from the background upscale. An image without faces is exactly the plain upscale.

Reference: gfpgan 1.3.8 `utils.py` (GFPGANer.enhance); facexlib 0.3.0 `utils/face_restoration_helper.py`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from real_esrgan_tf.faces.alignment import (
    FACE_BORDER_RGB,
    FFHQ_TEMPLATE_512,
    destination_window,
    estimate_similarity,
    gaussian_blur,
    invert_affine,
    warp_affine,
)
from real_esrgan_tf.faces.parsing import mask_from_labels  # facexlib's MASK_COLORMAP

FACE_SIZE = 512
DETECTION_THRESHOLD = 0.97  # FaceRestoreHelper.get_face_landmarks_5
EYE_DIST_THRESHOLD = 5.0  # GFPGANer.enhance: faces with eyes closer than 5 px are skipped
RESTORE_WEIGHT = 0.5  # GFPGANer.enhance's default (GFPGANv1Clean does not use it)
_MASK_BLUR = (101, 11.0)  # kernel size, sigma; applied twice
_MASK_BORDER = 10
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclasses.dataclass
class Face:
    """One detected face: its box (x1, y1, x2, y2), five landmarks (x, y) and the alignment matrix."""

    box: np.ndarray
    landmarks: np.ndarray
    affine: np.ndarray


def graph_function(model):
    """A Keras face network as a traced function of (N, 512, 512, 3) float32 batches (one trace for
    every batch size; GFPGAN's noise is still drawn afresh per call)."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                          input_signature=[tf.TensorSpec([None, FACE_SIZE, FACE_SIZE, 3], tf.float32)])
    return lambda batch: forward(tf.constant(batch, tf.float32))


def _call(model, batch: np.ndarray) -> np.ndarray:
    out = model(batch)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return np.asarray(out, np.float32)


def _normalise(faces: np.ndarray) -> np.ndarray:
    """uint8/float [0, 255] faces -> float32 in [-1, 1] as basicsr img2tensor + normalize(0.5, 0.5)."""
    x = (np.asarray(faces, np.float64) / 255.0).astype(np.float32)
    return (x - np.float32(0.5)) / np.float32(0.5)


def center_face_index(boxes: np.ndarray, height: int, width: int) -> int:
    """facexlib get_center_face: the face whose box centre is nearest the image centre (first on ties)."""
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    distances = np.linalg.norm(centres - np.array([width / 2, height / 2]), axis=1)
    return int(np.argmin(distances))


class FaceEnhancer:
    """An `Upscaler` whose output has the faces restored with GFPGAN (official `--face_enhance`).

    Args:
      upscaler: the background `serve.upscaler.Upscaler` (its outscale is GFPGANer's `upscale`).
      restorer: GFPGAN generator, (N, 512, 512, 3) RGB in [-1, 1] -> same (a Keras model or callable).
      detector: has `detect(rgb, conf_threshold) -> Detections(boxes, scores, landmarks)`.
      parser: ParseNet, (N, 512, 512, 3) in [-1, 1] -> (N, 512, 512, 19) logits.
      only_center_face: keep only the face nearest the centre. eye_dist_threshold: skip faces whose eyes
        are closer (pixels). face_batch: faces per GFPGAN/ParseNet call.
    It has `upscale`, `upscale_batch` (video frames) and `output_size` like the Upscaler, and
    `restore_aligned` for faces that are already aligned 512 crops (`has_aligned`).
    """

    def __init__(self, upscaler, restorer, detector, parser, *, only_center_face: bool = False,
                 eye_dist_threshold: float = EYE_DIST_THRESHOLD, face_batch: int = 4):
        if face_batch < 1:
            raise ValueError(f"face_batch must be >= 1, got {face_batch}")
        self.background = upscaler
        self.restorer, self.detector, self.parser = restorer, detector, parser
        self.only_center_face = only_center_face
        self.eye_dist_threshold = eye_dist_threshold
        self.face_batch = face_batch
        outscale = upscaler.options.outscale
        self.upscale_factor = float(upscaler.scale if outscale is None else outscale)

    # ------------------------------------------------------------------ Upscaler interface
    @property
    def options(self):
        return self.background.options

    @property
    def scale(self) -> int:
        return self.background.scale

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.background.output_size(height, width)

    def upscale(self, pixels: np.ndarray) -> np.ndarray:
        """As `Upscaler.upscale`, with the faces restored."""
        pixels = np.asarray(pixels)
        return self.paste_faces(pixels, self.background.upscale(pixels))

    def upscale_batch(self, frames: np.ndarray) -> np.ndarray:
        """As `Upscaler.upscale_batch` (video frames), with the faces of each frame restored."""
        frames = np.asarray(frames)
        out = np.asarray(self.background.upscale_batch(frames))
        return np.stack([self.paste_faces(frame, big) for frame, big in zip(frames, out, strict=True)])

    # ------------------------------------------------------------------ the face path
    def face_input(self, pixels: np.ndarray) -> np.ndarray:
        """What facexlib's `read_image` makes of an image: (H, W, 3) RGB, uint8, or float64 in [0, 255]
        for 16-bit images."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        rgb = np.repeat(pixels[..., :1], 3, axis=2) if pixels.shape[2] <= 2 else pixels[..., :3]
        if rgb.dtype == np.uint8:
            return rgb
        return rgb / 65535 * 255  # facexlib: 16-bit -> float64 [0, 255]

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces of a `face_input` image in the detector's order, filtered and aligned as facexlib does."""
        found = self.detector.detect(image, conf_threshold=DETECTION_THRESHOLD)  # 16-bit: float [0, 255]
        boxes = np.asarray(found.boxes, np.float32).reshape(-1, 4)
        landmarks = np.asarray(found.landmarks, np.float32).reshape(-1, 5, 2)
        eyes = np.linalg.norm(landmarks[:, 0] - landmarks[:, 1], axis=1)
        keep = eyes >= self.eye_dist_threshold if self.eye_dist_threshold is not None else eyes == eyes
        boxes, landmarks = boxes[keep], landmarks[keep]
        if len(boxes) and self.only_center_face:
            i = center_face_index(boxes, *image.shape[:2])
            boxes, landmarks = boxes[i:i + 1], landmarks[i:i + 1]
        return [Face(box, points, estimate_similarity(points, FFHQ_TEMPLATE_512))
                for box, points in zip(boxes, landmarks, strict=True)]

    def crop(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The aligned 512 x 512 face (uint8 for 8-bit images, float64 otherwise) with the gray border."""
        return warp_affine(image, face.affine, (FACE_SIZE, FACE_SIZE), FACE_BORDER_RGB)

    def restore_aligned(self, faces) -> np.ndarray:
        """(N, 512, 512, 3) aligned faces (uint8, or float in [0, 255]) -> (N, 512, 512, 3) uint8 restored.

        Other sizes are resized to 512 first (Pillow bilinear; facexlib uses cv2.resize)."""
        batch = np.stack([self._to_512(f) for f in faces]) if len(faces) else np.zeros((0, 512, 512, 3))
        restored = []
        for start in range(0, len(batch), self.face_batch):
            out = _call(self.restorer, _normalise(batch[start:start + self.face_batch]))
            # basicsr tensor2img(min_max=(-1, 1)): clamp, to [0, 1], * 255, round half to even
            out = (np.clip(out, -1, 1) + np.float32(1)) / np.float32(2)
            restored.append(np.rint(out * np.float32(255.0)).astype(np.uint8))
        return np.concatenate(restored) if restored else np.zeros((0, 512, 512, 3), np.uint8)

    def paste_masks(self, restored: np.ndarray) -> np.ndarray:
        """(N, 512, 512) float64 soft masks from ParseNet on the restored faces (official soft edge)."""
        masks = []
        for start in range(0, len(restored), self.face_batch):
            logits = _call(self.parser, _normalise(restored[start:start + self.face_batch]))
            for classes in np.argmax(logits, axis=-1):
                mask = mask_from_labels(classes).astype(np.float64)  # 0 / 255
                mask = gaussian_blur(gaussian_blur(mask, *_MASK_BLUR), *_MASK_BLUR)
                b = _MASK_BORDER
                mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = 0, 0, 0, 0
                masks.append(mask / 255.0)
        return np.stack(masks) if masks else np.zeros((0, FACE_SIZE, FACE_SIZE))

    def paste_faces(self, pixels: np.ndarray, background: np.ndarray) -> np.ndarray:
        """Detects the faces of `pixels`, restores them and pastes them into `background` (its upscale).

        Returns `background` itself when there is no face."""
        image = self.face_input(pixels)
        faces = self.detect(image)
        if not faces:
            return background
        restored = self.restore_aligned([self.crop(image, f) for f in faces])
        masks = self.paste_masks(restored)
        return self._paste(background, faces, restored, masks)

    def _paste(self, background, faces, restored, masks) -> np.ndarray:
        squeeze = background.ndim == 2
        big = background[..., None] if squeeze else background
        colour = 1 if big.shape[2] <= 2 else 3
        h_up, w_up = big.shape[:2]
        planes = big[..., :colour].astype(np.float64)
        level = 257.0 if big.dtype == np.uint16 else 1.0  # 8-bit faces into a 16-bit image
        factor = self.upscale_factor
        for face, restored_face, mask in zip(faces, restored, masks, strict=True):
            inverse = invert_affine(face.affine) * factor
            if factor > 1:
                inverse[:, 2] += 0.5 * factor  # facexlib's "more precise back alignment"
            y0, y1, x0, x1 = window = destination_window(inverse, (FACE_SIZE, FACE_SIZE), (w_up, h_up))
            if y1 <= y0 or x1 <= x0:
                continue
            warped = warp_affine(restored_face, inverse, (w_up, h_up), 0, window=window).astype(np.float64)
            soft = warp_affine(mask, inverse, (w_up, h_up), 0, window=window)[..., None]
            if colour == 1:
                warped = (warped @ _LUMA)[..., None]
            region = planes[y0:y1, x0:x1]
            planes[y0:y1, x0:x1] = soft * (warped * level) + (1 - soft) * region
        out = big.copy()
        out[..., :colour] = planes.astype(big.dtype)  # truncation, as facexlib's astype
        return out[..., 0] if squeeze else out

    @staticmethod
    def _to_512(face) -> np.ndarray:
        face = np.asarray(face)
        if face.shape[:2] == (FACE_SIZE, FACE_SIZE):
            return face
        from PIL import Image

        planes = [np.asarray(Image.fromarray(np.asarray(face[..., c], np.float32), "F").resize(
            (FACE_SIZE, FACE_SIZE), Image.Resampling.BILINEAR)) for c in range(3)]
        return np.clip(np.stack(planes, -1), 0, 255)
