"""Face parsing as facexlib's `FaceRestoreHelper.paste_faces_to_input_image` runs it (`use_parse=True`).

The helper resizes each restored face (BGR uint8) to 512x512, converts it to RGB, scales to [0, 1],
normalises with mean 0.5 / std 0.5, runs ParseNet and takes the argmax over the 19 classes; the
labels become the paste-back mask through `MASK_COLORMAP` (255 for skin, brows, eyes, nose, mouth,
...; 0 for background, neck/cloth/hair/hat and label 14). Blurring and warping that mask is the
caller's part.
"""

from __future__ import annotations

import numpy as np

PARSING_SIZE = 512
# facexlib 0.3.0 paste_faces_to_input_image: the mask value of each ParseNet label.
MASK_COLORMAP = (0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0)


def parsing_input(faces_rgb: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] RGB in [0, 255] -> float32 in [-1, 1]: `(x / 255 - 0.5) / 0.5` as facexlib."""
    faces = np.asarray(faces_rgb, np.float32) / np.float32(255.0)
    return (faces - np.float32(0.5)) / np.float32(0.5)


def mask_from_labels(labels: np.ndarray) -> np.ndarray:
    """[..., H, W] labels -> float32 mask of 0 / 255 per `MASK_COLORMAP` (before facexlib's blurs)."""
    return np.asarray(MASK_COLORMAP, np.float32)[labels]


class FaceParser:
    """ParseNet logits and labels for batches of faces.

    Args:
      model: a `ParseNet` with weights (`weights.facexlib_pth.load_parsenet`).
    """

    def __init__(self, model):
        import tensorflow as tf

        self.model = model
        self._forward = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
            reduce_retracing=True,
        )

    @classmethod
    def from_file(cls, path: str) -> FaceParser:
        """A parser with the weights of facexlib's `parsing_parsenet.pth` at `path`."""
        from real_esrgan_tf.weights.facexlib_pth import load_parsenet

        return cls(load_parsenet(path))

    def logits(self, faces_rgb: np.ndarray) -> np.ndarray:
        """[N, H, W, 3] RGB faces in [0, 255] (512x512 as the helper feeds them) -> [N, H, W, 19] float32."""
        faces = np.asarray(faces_rgb)
        if faces.ndim != 4 or faces.shape[-1] != 3:
            raise ValueError(f"faces must be [N, H, W, 3], got shape {faces.shape}")
        out = self._forward(parsing_input(faces))
        if isinstance(out, (tuple, list)):  # a ParseNet built with_image
            out = out[0]
        return np.asarray(out, np.float32)

    def labels(self, faces_rgb: np.ndarray) -> np.ndarray:
        """[N, H, W] int64 argmax labels (first maximum on ties, as torch's argmax on the CPU)."""
        return np.argmax(self.logits(faces_rgb), axis=-1)
