"""`load_generator`: any name or weights file -> a ready Keras generator, and the cache behind it.

Sources are dispatched by kind (pretrained name, `.pth`, `.weights.h5`, `.keras`, ncnn `.param`);
converted ncnn/`.pth` weights are cached as `.weights.h5` keyed by the source files' content, so the
second load skips parsing and converting. `copy_weights_by_layer` starts one model from another's
weights by layer name (x2plus / x1 from x4plus).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import keras

from real_esrgan_tf.models import SRVGGNetCompact
from real_esrgan_tf.models.srvgg import ACTIVATIONS
from real_esrgan_tf.weights.errors import InitError, WeightsError
from real_esrgan_tf.weights.ncnn import generator_from_ncnn
from real_esrgan_tf.weights.pretrained import DEFAULT_MODEL, find_pretrained, ncnn_files, unknown_name_message
from real_esrgan_tf.weights.save import (
    UnreadableWeightsFile,
    load_keras_file,
    load_saved_generator,
    rebuild_with_dtype,
    save_generator,
)
from real_esrgan_tf.weights.torch_pth import generator_from_pth

log = logging.getLogger(__name__)

# Bump when a conversion changes, so stale cache entries are not reused.
CONVERTER_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Entry point


def load_generator(
    name_or_path: str | os.PathLike = DEFAULT_MODEL, *, dtype=None, cache_dir=None, act: str | None = None
) -> keras.Model:
    """A generator with its weights loaded.

    `dtype` is passed to the generator's constructor (e.g. "float16", "bfloat16"; None = float32):
    the weights are converted in float32 and cast once. `act`: the activation of an SRVGGNetCompact
    `.pth` without PReLU weights ("relu" or "leakyrelu", which the weights cannot tell apart; such a
    file is refused without it); for any other source it must match the model's, if given. Raises
    WeightsError (one line, naming the file or name) for anything that cannot be loaded,
    MissingDependencyError for a missing extra.
    """
    if act is not None and act not in ACTIVATIONS:
        raise WeightsError(
            f"{os.fspath(name_or_path)}: act must be one of {', '.join(ACTIVATIONS)}, got {act!r}"
        )
    model = _load_generator(name_or_path, dtype, cache_dir, act)
    if act is not None and getattr(model, "act", None) != act:
        what = f"an SRVGGNetCompact with act {model.act!r}" if isinstance(model, SRVGGNetCompact) else (
            f"a {type(model).__name__}, which has no choice of activation")
        raise WeightsError(f"{os.fspath(name_or_path)}: act {act!r} does not apply, the model is {what}")
    return model


def _load_generator(name_or_path, dtype, cache_dir, act: str | None) -> keras.Model:
    info = find_pretrained(name_or_path)
    if info is not None:
        param_path, bin_path = ncnn_files(info)
        return _load_converted(
            [param_path, bin_path],
            info.ncnn_stem,
            lambda: generator_from_ncnn(param_path, bin_path, info),
            dtype,
            cache_dir,
        )

    path = os.fspath(name_or_path)
    suffix = (
        "".join(Path(path).suffixes[-2:]).lower()
        if path.lower().endswith(".weights.h5")
        else (Path(path).suffix.lower())
    )
    if not os.path.exists(path):
        if not suffix and os.sep not in path:
            raise WeightsError(unknown_name_message(path))
        raise WeightsError(f"{path}: weights file not found")
    if os.path.isdir(path):
        raise WeightsError(f"{path}: is a folder, expected a weights file")
    if suffix in (".pth", ".pt"):
        # the activation is not in the file, so it is part of the cache key
        stem = Path(path).stem + (f"-{act}" if act not in (None, "prelu") else "")
        return _load_converted([path], stem, lambda: generator_from_pth(path, act), dtype, cache_dir)
    if suffix == ".weights.h5":
        return load_saved_generator(path, dtype)
    if suffix == ".keras":
        return load_keras_file(path, dtype)
    if suffix in (".param", ".bin"):
        param_path, bin_path = str(Path(path).with_suffix(".param")), str(Path(path).with_suffix(".bin"))
        for p in (param_path, bin_path):
            if not os.path.isfile(p):
                raise WeightsError(f"{p}: ncnn file not found (the .param and .bin files go together)")
        return _load_converted(
            [param_path, bin_path],
            Path(path).stem,
            lambda: generator_from_ncnn(param_path, bin_path, None),
            dtype,
            cache_dir,
        )
    raise WeightsError(
        f"{path}: unsupported weights file type (expected .pth, .weights.h5, .keras or .param)"
    )


# ---------------------------------------------------------------------------------------------
# Cache of converted weights


def default_cache_dir() -> Path:
    """`$REAL_ESRGAN_TF_CACHE`, else `$XDG_CACHE_HOME/real-esrgan-tf`, else `~/.cache/real-esrgan-tf`."""
    if os.environ.get("REAL_ESRGAN_TF_CACHE"):
        return Path(os.environ["REAL_ESRGAN_TF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "real-esrgan-tf"


def cache_entry_path(source_paths: list[str], stem: str, cache_dir=None) -> Path:
    """Cache file for weights converted from `source_paths`: keyed by their content (sha256)."""
    digest = hashlib.sha256(f"converter-v{CONVERTER_VERSION}".encode())
    for p in source_paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                digest.update(chunk)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / f"{stem}-{digest.hexdigest()[:20]}.weights.h5"


def _load_converted(source_paths, stem, convert: Callable[[], keras.Model], dtype, cache_dir) -> keras.Model:
    try:
        entry = cache_entry_path(source_paths, stem, cache_dir)
    except OSError as e:
        raise WeightsError(f"{source_paths[0]}: cannot read ({e.strerror or e})") from e
    if entry.exists():
        try:
            return load_saved_generator(str(entry), dtype)
        except UnreadableWeightsFile as e:
            log.warning("discarding corrupt cache entry %s (%s)", entry, e)
            entry.unlink(missing_ok=True)
    model = convert()  # float32 variables, so the cache keeps full precision
    try:
        save_generator(model, entry)
    except OSError as e:
        log.warning("cannot write weights cache %s (%s); the next load converts again", entry, e)
    return model if dtype is None else rebuild_with_dtype(model, dtype, source_paths[0])




def copy_weights_by_layer(source: keras.Model, target: keras.Model, skip: tuple[str, ...], what: str) -> int:
    """Copy weights layer by layer (same names); `skip` layers keep their initialisation.

    This is how x2plus / x1 start from the x4plus weights: every layer but `conv_first` (whose input
    channels differ: 12 or 48 instead of 3) has the same shape.
    """
    copied = 0
    for layer in target.layers:
        if not layer.weights or layer.name in skip:
            continue
        try:
            src = source.get_layer(layer.name)
        except ValueError:
            raise InitError(f"{what}: has no layer {layer.name!r} (add it to init.skip_layers?)") from None
        values = src.get_weights()
        shapes = [tuple(v.shape) for v in values]
        wanted = [tuple(w.shape) for w in layer.weights]
        if shapes != wanted:
            raise InitError(
                f"{what}: layer {layer.name!r} has shapes {shapes}, the model needs {wanted} "
                "(add it to init.skip_layers?)"
            )
        layer.set_weights(values)
        copied += 1
    return copied
