"""Typed training configuration and the loading of pipeline files (TOML, stdlib `tomllib`).

A pipeline file is a TOML document whose tables mirror `PipelineConfig`'s fields. Loading is strict:
an unknown key, a wrong type or an invalid value is an error naming the file and the dotted key,
before anything is built. `--set train.total_steps=100` style overrides go through the same check.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import tomllib
import types
import typing
from typing import Any

from real_esrgan_tf.degradations.config import DegradationConfig, DegradationConfigError

# (block, number of convs, filters) of VGG19's feature part; a 2x2 max pool follows each block.
VGG19_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))
# Official layer weights of the perceptual loss (BasicSR names convB_C = Keras blockB_convC).
DEFAULT_LAYER_WEIGHTS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}


class ConfigError(ValueError):
    """A pipeline file or override that does not describe a valid training run."""


class Stage(enum.StrEnum):
    REALESRNET = "realesrnet"  # stage 1: generator only, L1
    REALESRGAN = "realesrgan"  # stage 2: + U-Net discriminator, perceptual and GAN losses


class GeneratorArch(enum.StrEnum):
    RRDBNET = "rrdbnet"
    SRVGG_COMPACT = "srvgg_compact"


class Precision(enum.StrEnum):
    FLOAT32 = "float32"
    MIXED_FLOAT16 = "mixed_float16"
    MIXED_BFLOAT16 = "mixed_bfloat16"


class XlaScope(enum.StrEnum):
    AUTO = "auto"  # per device and strategy: see `training.strategy.resolve_xla`
    OFF = "off"
    MODEL_STEP = "model_step"  # XLA for the G/D/EMA update; degradation and pool in graph mode
    FULL_STEP = "full_step"  # XLA for the whole step, degradation included


class DiscriminatorArch(enum.StrEnum):
    UNET = "unet"  # Real-ESRGAN's U-Net D: one logit per pixel
    VGG = "vgg"  # ESRGAN's VGG-style D (the paper's comparison): one logit per image, input = gt_size


class StrategyKind(enum.StrEnum):
    """`train --strategy`: how replicas are laid out (see `training.strategy.make_strategy`)."""
    DEFAULT = "default"
    MIRRORED = "mirrored"
    MULTI_WORKER = "multi_worker"
    TPU = "tpu"


# `train --strategy multi_worker`: seconds without a heartbeat before the cluster declares a worker
# lost. TF's own default (10 s) killed a healthy 2-worker run here when the hosts were busy (a
# worker's heartbeat RPC timed out while both traced their first step next to other jobs; BUILD_NOTES
# "Preemption and multi-worker"). A worker that dies is mostly noticed within seconds (a collective
# fails); only when no peer was talking to it at that moment does it take the heartbeat timeout.
DEFAULT_HEARTBEAT_TIMEOUT_SECONDS = 60.0


class DataKind(enum.StrEnum):
    SYNTHETIC = "synthetic"  # GT crops degraded on the fly (the Real-ESRGAN recipe)
    PAIRED = "paired"  # ready-made (LQ, GT) pairs (fine-tuning)


@dataclasses.dataclass
class GeneratorConfig:
    arch: GeneratorArch = GeneratorArch.RRDBNET
    num_feat: int = 64
    num_block: int = 23  # RRDBNet
    num_grow_ch: int = 32  # RRDBNet
    num_conv: int = 32  # SRVGGNetCompact
    act: str = "prelu"  # SRVGGNetCompact
    # SRVGGNetCompact kernel init: "default" (PyTorch's, as the official code) or "dirac" (identity body
    # convs; from scratch it leaves the nearest-upsampling plateau in minutes instead of hours).
    init: str = "default"


@dataclasses.dataclass
class DiscriminatorConfig:
    arch: DiscriminatorArch = DiscriminatorArch.UNET
    num_feat: int = 64
    skip_connection: bool = True  # U-Net only
    # U-Net only; False is the paper's ablation (plain convs: no spectral-norm state or power iteration).
    spectral_norm: bool = True


@dataclasses.dataclass
class LossConfig:
    l1_weight: float = 1.0
    perceptual_weight: float = 1.0
    gan_weight: float = 0.1
    perceptual_layer_weights: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_LAYER_WEIGHTS)
    )
    # "imagenet" (Keras download/cache), a local Keras .h5 / torchvision .pth, or "random" (tests only).
    vgg_weights: str = "imagenet"
    # Official: L1 and perceptual against the USM-sharpened GT, D sees the plain GT.
    l1_gt_usm: bool = True
    perceptual_gt_usm: bool = True
    gan_gt_usm: bool = False


@dataclasses.dataclass
class OptimizerConfig:
    """Adam for G and D with a MultiStep schedule (official: one milestone at the last iteration)."""

    g_lr: float = 1e-4
    d_lr: float = 1e-4
    beta_1: float = 0.9
    beta_2: float = 0.99
    milestones: tuple[int, ...] = (400_000,)
    gamma: float = 0.5


@dataclasses.dataclass
class InitConfig:
    """Where the weights come from. `generator` goes through `weights.load_generator` (a name or a path)."""

    generator: str = ""
    ema_generator: str = ""  # default: same as generator
    discriminator: str = ""  # a `.weights.h5` of the configured D, or the official U-Net netD `.pth`
    # Layers left at their fresh initialisation (x2plus from x4plus: conv_first has 12 input channels).
    skip_layers: tuple[str, ...] = ()


@dataclasses.dataclass
class TrainConfig:
    stage: Stage = Stage.REALESRGAN
    data: DataKind = DataKind.SYNTHETIC
    scale: int = 4
    gt_size: int = 256  # training crop (after the degradation for synthetic data)
    crop_size: int = 400  # synthetic data: crop read from the shards (official crop_pad_size)
    batch_size_per_replica: int = 12
    total_steps: int = 400_000
    ema_decay: float = 0.999
    precision: Precision = Precision.FLOAT32
    xla: XlaScope = XlaScope.AUTO
    seed: int = 0
    shuffle_buffer: int = 256


@dataclasses.dataclass
class CheckpointConfig:
    every_steps: int = 5_000
    keep_checkpoint_max: int = 5


@dataclasses.dataclass
class MonitoringConfig:
    log_every_steps: int = 100
    image_every_steps: int = 1_000
    validation_every_steps: int = 5_000
    # Paired validation set (file pattern of TFRecords with "lq"/"gt"); empty: no validation.
    validation_data: str = ""
    validation_max_images: int = 16


@dataclasses.dataclass
class PipelineConfig:
    name: str = "pipeline"
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = dataclasses.field(default_factory=DiscriminatorConfig)
    losses: LossConfig = dataclasses.field(default_factory=LossConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    init: InitConfig = dataclasses.field(default_factory=InitConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    monitoring: MonitoringConfig = dataclasses.field(default_factory=MonitoringConfig)
    # Overrides of the official degradation; scale / gt_size come from [train].
    degradation: DegradationConfig = dataclasses.field(default_factory=DegradationConfig)

    def __post_init__(self):
        t = self.train
        if t.scale not in (1, 2, 4):
            raise ConfigError(f"train.scale: {t.scale} is not 1, 2 or 4")
        if t.gt_size % (8 * t.scale) if t.stage is Stage.REALESRGAN else t.gt_size % t.scale:
            raise ConfigError(
                f"train.gt_size: {t.gt_size} must be a multiple of scale (x 8 with the U-Net D)"
            )
        if self.generator.arch is GeneratorArch.RRDBNET and t.scale < 4 and t.gt_size % 4:
            # RRDBNet x2 / x1 fold the LQ by pixel-unshuffle 2 / 4 before conv_first.
            raise ConfigError(
                f"train.gt_size: {t.gt_size} must be a multiple of 4 for RRDBNet at scale {t.scale}"
            )
        for key in ("batch_size_per_replica", "total_steps"):
            if getattr(t, key) <= 0:
                raise ConfigError(f"train.{key}: must be positive, got {getattr(t, key)}")
        if not 0.0 <= t.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay: {t.ema_decay} is outside [0, 1)")
        if self.generator.arch is GeneratorArch.SRVGG_COMPACT and t.scale == 1:
            raise ConfigError("generator.arch: srvgg_compact needs scale >= 2")
        if self.generator.init not in ("default", "dirac"):
            raise ConfigError(f"generator.init: {self.generator.init!r} is not 'default' or 'dirac'")
        if self.generator.init != "default" and self.generator.arch is not GeneratorArch.SRVGG_COMPACT:
            raise ConfigError("generator.init: 'dirac' is for generator.arch srvgg_compact only")
        vgg_layers = {f"conv{b}_{c}" for b, n, _ in VGG19_BLOCKS for c in range(1, n + 1)}
        for name in self.losses.perceptual_layer_weights:
            if name not in vgg_layers:
                raise ConfigError(f"losses.perceptual_layer_weights: unknown VGG19 layer {name!r}")
        vgg_d = self.discriminator.arch is DiscriminatorArch.VGG
        if vgg_d and (t.gt_size < 16 or t.gt_size & (t.gt_size - 1)):
            raise ConfigError(
                f"train.gt_size: {t.gt_size} must be a power of two >= 16 for discriminator.arch vgg "
                "(BasicSR: 128 or 256)"
            )
        if vgg_d and self.init.discriminator.endswith((".pth", ".pt")):
            raise ConfigError(
                "init.discriminator: a .pth is read as the official U-Net netD; "
                "with discriminator.arch vgg give a .weights.h5"
            )
        if t.data is DataKind.SYNTHETIC and t.crop_size < t.gt_size:
            raise ConfigError(f"train.crop_size: {t.crop_size} is smaller than train.gt_size {t.gt_size}")
        if list(self.optimizer.milestones) != sorted(self.optimizer.milestones):
            raise ConfigError(f"optimizer.milestones: {self.optimizer.milestones} is not increasing")
        if any(m < 1 for m in self.optimizer.milestones):
            raise ConfigError(f"optimizer.milestones: {self.optimizer.milestones} must be iterations >= 1")
        for key in ("every_steps", "keep_checkpoint_max"):
            if getattr(self.checkpoint, key) <= 0:
                raise ConfigError(f"checkpoint.{key}: must be positive")
        for key in ("log_every_steps", "image_every_steps", "validation_every_steps"):
            if getattr(self.monitoring, key) <= 0:
                raise ConfigError(f"monitoring.{key}: must be positive, got {getattr(self.monitoring, key)}")
        if self.monitoring.validation_max_images <= 0:
            n = self.monitoring.validation_max_images
            raise ConfigError(f"monitoring.validation_max_images: must be positive, got {n}")
        if (self.degradation.scale, self.degradation.gt_size) != (t.scale, t.gt_size):
            try:
                self.degradation = dataclasses.replace(self.degradation, scale=t.scale, gt_size=t.gt_size)
            except DegradationConfigError as e:
                raise ConfigError(f"degradation: {e}") from e
        if t.data is DataKind.SYNTHETIC:
            try:
                self.degradation.check_batch_size(t.batch_size_per_replica)
            except DegradationConfigError as e:
                raise ConfigError(f"degradation: {e}") from e

    @property
    def uses_discriminator(self) -> bool:
        return self.train.stage is Stage.REALESRGAN and self.losses.gan_weight > 0

    @property
    def uses_perceptual(self) -> bool:
        # Stage 1 (RealESRNet) is L1 only, whatever the loss weights say (official recipe).
        return self.train.stage is Stage.REALESRGAN and self.losses.perceptual_weight > 0


# ---------------------------------------------------------------- strict dict -> dataclass


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return _convert(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return _from_dict(hint, value, key)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not one of {[m.value for m in hint]}") from None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected an array, got {type(value).__name__}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        _, value_hint = typing.get_args(hint)
        return {str(k): _convert(v, value_hint, f"{key}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {hint!r}")


def _from_dict(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in fields:
            where = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"unknown key {where!r} (known: {', '.join(sorted(fields))})")
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (ConfigError, DegradationConfigError) as e:
        raise ConfigError(f"{prefix + ': ' if prefix else ''}{e}") from None


def _parse_override(assignment: str) -> tuple[list[str], Any]:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare string: --set init.generator=runs/x/ema.weights.h5
    return key.split("."), value


def _merge(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part!r} is not a table")
    node[path[-1]] = value


def pipeline_from_dict(data: dict, overrides: typing.Sequence[str] = ()) -> PipelineConfig:
    data = _deep_copy(data)
    for assignment in overrides:
        path, value = _parse_override(assignment)
        _merge(data, path, value)
    degradation = data.get("degradation", {})
    for derived in ("scale", "gt_size"):
        if isinstance(degradation, dict) and derived in degradation:
            raise ConfigError(f"degradation.{derived}: set train.{derived} instead (one source of truth)")
    return _from_dict(PipelineConfig, data)


def _deep_copy(data):
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


PIPELINE_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "pipelines"
)


def resolve_pipeline_path(name_or_path: str) -> str:
    """`pipelines/x.toml`, `x.toml` or just `x` (looked up in the repository's pipelines/)."""
    candidates = [
        name_or_path,
        name_or_path + ".toml",
        os.path.join(PIPELINE_DIR, name_or_path),
        os.path.join(PIPELINE_DIR, name_or_path + ".toml"),
    ]
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise ConfigError(f"{name_or_path}: no such pipeline file (looked in . and {PIPELINE_DIR})")


def load_pipeline(name_or_path: str, overrides: typing.Sequence[str] = ()) -> PipelineConfig:
    """Read and validate a pipeline file; errors name the file and the key."""
    path = resolve_pipeline_path(name_or_path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    data.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    try:
        return pipeline_from_dict(data, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# ---------------------------------------------------------------- dataclass -> TOML (the run's record)


def pipeline_to_dict(config: PipelineConfig) -> dict:
    """The config as plain TOML values (enums by value, tuples as lists); `pipeline_from_dict` reads it
    back to an equal config. degradation.scale / gt_size are left out: they come from [train]."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    data = plain(config)
    for derived in ("scale", "gt_size"):
        data["degradation"].pop(derived)
    return data


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, (int, float)):
        return repr(value)  # 0.0001, 1e-07, inf: all valid TOML
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def pipeline_to_toml(config: PipelineConfig) -> str:
    """A pipeline file that `load_pipeline` reads back to `config` (written into each run's model_dir)."""
    lines: list[str] = []

    def table(name: str, data: dict, fields_of) -> None:
        scalars = {k: v for k, v in data.items() if not (isinstance(v, dict) and k in fields_of)}
        if name:
            lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        for k, v in data.items():
            if k not in scalars:
                table(f"{name}.{k}" if name else k, v, _dataclass_fields(fields_of[k]))

    table("", pipeline_to_dict(config), _dataclass_fields(config))
    return "\n".join(lines).lstrip("\n") + "\n"


def _dataclass_fields(obj) -> dict:
    """Field name -> value of the dataclass-valued fields of `obj` (sub-tables in TOML)."""
    return {
        f.name: getattr(obj, f.name)
        for f in dataclasses.fields(obj)
        if f.init and dataclasses.is_dataclass(getattr(obj, f.name))
    }
