"""From what a user types after `--model` to a ready upscaling backend.

One loader for every command that runs a generator (`upscale`, `evaluate`, `video`): a pretrained
name, an official `.pth`, our `.weights.h5` / `.keras`, a training `--model_dir` (its exported EMA
generator), an exported SavedModel folder or a `.tflite` file; plus the official denoise-strength
blend of realesr-general-x4v3 with its wdn twin (`inference_realesrgan.py --denoise_strength`).
"""

from __future__ import annotations

import dataclasses
import logging
import os

log = logging.getLogger(__name__)

GENERAL_X4V3 = "realesr-general-x4v3"
GENERAL_WDN_X4V3 = "realesr-general-wdn-x4v3"


class ModelLoadError(ValueError):
    """A model that cannot be loaded; the message is one line naming the file (or name) and the reason."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """model: a keras.Model or a `SuperResolver` backend (TFLite); default_outscale: the pretrained
    model's own output scale (animevideov3-x2/-x3 are the x4 net + a downscale), else None."""

    model: object
    default_outscale: float | None


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def wdn_path(model_path: str, explicit: str | None = None) -> str:
    """The realesr-general-wdn-x4v3 file beside a realesr-general-x4v3 one (official naming)."""
    if explicit:
        return explicit
    folder, name = os.path.split(model_path)
    return os.path.join(folder, name.replace(GENERAL_X4V3, GENERAL_WDN_X4V3))


def _load_tflite(spec: str, act: str | None):
    if act:
        raise ModelLoadError(f"{spec}: --act is for SRVGGNetCompact .pth files, not TFLite models")
    if not os.path.isfile(spec):
        raise ModelLoadError(f"{spec}: weights file not found")
    try:
        from real_esrgan_tf.serve.tflite_backend import TFLiteGenerator

        return TFLiteGenerator(spec)
    except Exception as e:  # TFLiteModelError, or ImportError without ai-edge-litert
        message = _first_line(e)
        raise ModelLoadError(message if spec in message else f"{spec}: {message}") from None


def load_keras_generator(spec: str, act: str | None = None):
    """A Keras generator from a name, weights file or training model_dir (its EMA generator);
    ModelLoadError (one line) otherwise."""
    from real_esrgan_tf import weights

    try:
        source = weights.exported_weights_in(spec) if os.path.isdir(spec) else spec
        return weights.load_generator(source, act=act)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as e:
        message = _first_line(e)
        raise ModelLoadError(message if spec in message else f"{spec}: {message}") from None


def load_upscale_model(
    spec: str,
    *,
    act: str | None = None,
    denoise_strength: float = 0.5,
    wdn_model: str | None = None,
    denoise_requested: bool = False,
) -> LoadedModel:
    """Loads `spec` as `real-esrgan-tf upscale --model` does.

    Args:
      spec: pretrained name, `.pth`, `.weights.h5`, `.keras`, `.tflite`, a SavedModel folder (or a
        TF Serving base folder: its highest version), or a training model_dir (its EMA generator).
      act: the activation of an SRVGGNetCompact `.pth` without PReLU weights (relu, leakyrelu).
      denoise_strength: realesr-general-x4v3 only: 1 keeps noise, 0 removes it (weight blend
        strength * general + (1 - strength) * wdn, as official).
      wdn_model: the wdn weights; default: beside `spec`.
      denoise_requested: the user asked for denoising explicitly, so missing wdn weights are an
        error (otherwise a warning and no blend, as with the official default).
    Returns:
      LoadedModel. Raises ModelLoadError (one line) for anything that cannot be loaded.
    """
    from real_esrgan_tf import weights
    from real_esrgan_tf.serve.keras_backend import blend_generators

    if spec.endswith(".tflite"):
        return LoadedModel(_load_tflite(spec, act), None)
    if os.path.isdir(spec):
        from real_esrgan_tf.serve.saved_model_backend import (
            SavedModelError,
            SavedModelGenerator,
            resolve_saved_model_dir,
        )

        saved = resolve_saved_model_dir(spec)
        if saved is not None:
            if act:
                raise ModelLoadError(f"{spec}: --act is for SRVGGNetCompact .pth files, not SavedModels")
            try:
                return LoadedModel(SavedModelGenerator(saved), None)
            except SavedModelError as e:
                raise ModelLoadError(str(e)) from None
    model = load_keras_generator(spec, act)
    if GENERAL_X4V3 in os.path.basename(spec) and denoise_strength != 1.0:
        wdn = wdn_path(spec, wdn_model)
        if os.path.isfile(wdn):
            model = blend_generators(model, load_keras_generator(wdn, act), denoise_strength)
        elif denoise_requested or wdn_model:
            raise ModelLoadError(f"{wdn}: wdn weights for --denoise_strength not found")
        else:
            log.warning("%s not found; using %s without denoise blending", wdn, GENERAL_X4V3)
    elif wdn_model or denoise_requested:
        raise ModelLoadError(f"{spec}: --denoise_strength needs realesr-general-x4v3 weights")
    info = weights.find_pretrained(spec) if not os.path.exists(spec) else None
    return LoadedModel(model, None if info is None else float(info.outscale))
