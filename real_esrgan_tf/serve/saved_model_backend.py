"""An exported SavedModel (`real-esrgan-tf export --format saved_model`) as an upscaling backend.

Lets `upscale`, `evaluate` and `video` run exactly what TensorFlow Serving would serve. Calls the
`serving_default` signature, whose input is `lq` (interface version 2) or `lr` (version 1): the
name is read from the signature, so both generations of exports work.
"""

from __future__ import annotations

import os

import numpy as np


class SavedModelError(ValueError):
    """A folder that is not a usable SavedModel of ours; one line naming it and the reason."""


def resolve_saved_model_dir(path: str) -> str | None:
    """`path` if it holds a saved_model.pb, the highest numeric version below it (TF Serving's base
    folder layout), else None."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        return None
    versions = sorted(
        int(name)
        for name in os.listdir(path)
        if name.isdigit() and os.path.isfile(os.path.join(path, name, "saved_model.pb"))
    )
    return os.path.join(path, str(versions[-1])) if versions else None


class SavedModelGenerator:
    """`SuperResolver` over a SavedModel: float32 [1, h, w, 3] in [0, 1] -> [1, h*s, w*s, 3].

    The exported graph reflect-pads sizes the x2/x1 unshuffle cannot take and crops back, so any
    size works; `scale` is measured once on a 16x16 input.
    """

    input_size = None

    def __init__(self, path: str):
        import tensorflow as tf

        self.path = path
        try:
            loaded = tf.saved_model.load(path)
            self._signature = loaded.signatures["serving_default"]
        except (OSError, KeyError, ValueError, tf.errors.OpError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SavedModelError(f"{path}: not a usable SavedModel ({reason})") from None
        self._loaded = loaded  # keeps the variables alive
        inputs = self._signature.structured_input_signature[1]
        if len(inputs) != 1 or "sr" not in self._signature.structured_outputs:
            raise SavedModelError(f"{path}: serving_default is not lq -> sr (inputs {sorted(inputs)})")
        (self.input_name,) = inputs
        self.interface_version = int(getattr(loaded, "interface_version", tf.constant(1)).numpy())
        probe = self(np.zeros((1, 16, 16, 3), np.float32))
        self.scale = int(probe.shape[1]) // 16

    def __call__(self, lq: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self._signature(**{self.input_name: tf.constant(lq, tf.float32)})["sr"].numpy()


def open_model(path: str, options) -> SavedModelGenerator:
    """The `serve.backends` entry point: a SavedModel folder (or TF Serving base folder) as a backend."""
    from real_esrgan_tf.serve.backends import BackendError

    saved = resolve_saved_model_dir(path)
    if saved is None:
        raise BackendError(f"{path}: no saved_model.pb in the folder or its version folders")
    try:
        return SavedModelGenerator(saved)
    except SavedModelError as e:
        raise BackendError(str(e)) from None
