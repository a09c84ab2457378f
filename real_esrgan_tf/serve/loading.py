"""From what a user types after `--model` to a ready upscaling backend.

One loader for every command that runs a generator (`upscale`, `evaluate`, `video`): a pretrained
name, an official `.pth`, our `.weights.h5` / `.keras`, a training `--model_dir` (its exported EMA
generator), an exported SavedModel folder or a model file of another runtime (`serve.backends`);
plus the official denoise-strength blend of realesr-general-x4v3 with its wdn twin
(`inference_realesrgan.py --denoise_strength`), and `--backend`: which runtime runs it.
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


def _first_line_naming(spec: str, e: BaseException) -> str:
    message = _first_line(e)
    return message if spec in message else f"{spec}: {message}"


def _open_runtime_file(spec: str, backend, act: str | None, options):
    """A model file made for a runtime (.onnx, .tflite, ...) opened by that runtime's backend."""
    from real_esrgan_tf.serve import backends

    if act:
        raise ModelLoadError(f"{spec}: --act is for SRVGGNetCompact .pth files, not {backend.name} models")
    if not os.path.exists(spec):
        raise ModelLoadError(f"{spec}: model file not found")
    try:
        return backends.load_module(backend).open_model(spec, options)
    except (backends.BackendError, OSError, ImportError) as e:
        raise ModelLoadError(_first_line_naming(spec, e)) from None


def _on_backend(model, spec: str, requested: str, options, precision: str = "fp32"):
    """A loaded Keras generator on the backend `requested` (auto: the `AUTO` choice for its
    architecture, precision and device, see `backends.generator_key`): itself on TensorFlow, else the
    backend's `from_generator`."""
    from real_esrgan_tf.serve import backends

    architecture = type(model).__name__
    try:
        key = architecture
        if requested == "auto":
            from real_esrgan_tf.serve.precision import detect_device, resolve_precision

            device = detect_device()
            chosen, _ = resolve_precision(precision, device)
            key = backends.generator_key(architecture, str(precision), chosen.value, device.kind)
        backend = backends.pick(requested, key)
        if backend.name == backends.TENSORFLOW:
            return model
        module = backends.load_module(backend)
        if not hasattr(module, "from_generator"):
            raise backends.BackendError(f"--backend {backend.name} runs only its own model files")
        log.info("running %s on %s", architecture, backend.name)
        return module.from_generator(model, options)
    except (backends.BackendError, ImportError) as e:
        raise ModelLoadError(_first_line_naming(spec, e)) from None


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
    backend: str = "auto",
    backend_options=None,
    act: str | None = None,
    denoise_strength: float = 0.5,
    wdn_model: str | None = None,
    denoise_requested: bool = False,
    precision: str = "fp32",
) -> LoadedModel:
    """Loads `spec` as `real-esrgan-tf upscale --model` does.

    Args:
      spec: pretrained name, `.pth`, `.weights.h5`, `.keras`, a runtime's model file (`.tflite`,
        and whatever else `serve.backends.BACKENDS` opens), a SavedModel folder (or a TF Serving base
        folder: its highest version), or a training model_dir (its EMA generator).
      backend: a `serve.backends` name or `auto` (the `AUTO` table's choice for the file type or
        architecture): which runtime runs the model.
      backend_options: `serve.backends.BackendOptions` (threads), None for the defaults.
      act: the activation of an SRVGGNetCompact `.pth` without PReLU weights (relu, leakyrelu).
      denoise_strength: realesr-general-x4v3 only: 1 keeps noise, 0 removes it (weight blend
        strength * general + (1 - strength) * wdn, as official).
      wdn_model: the wdn weights; default: beside `spec`.
      denoise_requested: the user asked for denoising explicitly, so missing wdn weights are an
        error (otherwise a warning and no blend, as with the official default).
      precision: the `--precision` a Keras generator will run in (auto, fp32, fp16, bf16): with
        `backend` auto, the measured `AUTO` rows apply where precision auto means fp32 on a CPU;
        otherwise TensorFlow (see `backends.generator_key`).
    Returns:
      LoadedModel. Raises ModelLoadError (one line) for anything that cannot be loaded.
    """
    from real_esrgan_tf import weights
    from real_esrgan_tf.serve import backends
    from real_esrgan_tf.serve.keras_backend import blend_generators

    options = backend_options or backends.BackendOptions()
    runtime_file = backends.file_backends(spec)
    if runtime_file:
        suffix = os.path.splitext(spec)[1].lower()
        try:
            chosen = backends.pick(backend, suffix, runtime_file)
        except backends.BackendError as e:
            raise ModelLoadError(_first_line_naming(spec, e)) from None
        if chosen.name != backends.TENSORFLOW:
            return LoadedModel(_open_runtime_file(spec, chosen, act, options), None)
    if os.path.isdir(spec):
        from real_esrgan_tf.serve.saved_model_backend import resolve_saved_model_dir

        if resolve_saved_model_dir(spec) is not None:
            if backend not in ("auto", "saved_model", backends.TENSORFLOW):
                raise ModelLoadError(f"{spec}: a SavedModel runs on --backend saved_model (or auto)")
            return LoadedModel(_open_runtime_file(spec, backends.BACKENDS["saved_model"], act, options), None)
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
    model = _on_backend(model, spec, backend, options, precision)
    return LoadedModel(model, None if info is None else float(info.outscale))
