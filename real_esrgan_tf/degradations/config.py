"""Typed configuration of the high-order degradation, defaulting to the official x4plus recipe.

Every default below is the value of `train_realesrgan_x4plus.yml` (RealESRNet uses the same), so a
`DegradationConfig()` reproduces the official degradations. Validation happens at construction, so a
bad YAML/flag fails before any graph is traced.
"""

from __future__ import annotations

import dataclasses
import enum
import math

Range = tuple[float, float]


class KernelType(enum.IntEnum):
    """Blur kernel families; the integer is the index used inside the graph."""

    ISO = 0
    ANISO = 1
    GENERALIZED_ISO = 2
    GENERALIZED_ANISO = 3
    PLATEAU_ISO = 4
    PLATEAU_ANISO = 5


class ResizeMode(enum.IntEnum):
    """PyTorch `F.interpolate` modes used by the official degradation (drawn uniformly)."""

    AREA = 0
    BILINEAR = 1
    BICUBIC = 2


class ResizeDirection(enum.IntEnum):
    UP = 0
    DOWN = 1
    KEEP = 2


class DegradationConfigError(ValueError):
    """An invalid degradation setting; the message names the field and the reason."""


def _check_prob(name: str, p: float) -> None:
    if not (0.0 <= p <= 1.0) or math.isnan(p):
        raise DegradationConfigError(f"{name}: probability {p} is outside [0, 1]")


def _check_range(name: str, r: Range, low: float | None = None) -> None:
    if len(r) != 2:
        raise DegradationConfigError(f"{name}: expected (low, high), got {r!r}")
    lo, hi = r
    if not lo < hi:
        raise DegradationConfigError(f"{name}: empty range [{lo}, {hi}] (low must be < high)")
    if low is not None and lo < low:
        raise DegradationConfigError(f"{name}: low end {lo} is below the minimum {low}")


def _check_distribution(name: str, probs: tuple[float, ...]) -> None:
    for i, p in enumerate(probs):
        _check_prob(f"{name}[{i}]", p)
    if abs(sum(probs) - 1.0) > 1e-6:
        raise DegradationConfigError(f"{name}: probabilities {probs} sum to {sum(probs):.6g}, not 1")


@dataclasses.dataclass(frozen=True)
class KernelMix:
    """Probability of each blur kernel family (official: iso .45, aniso .25, ...)."""

    iso: float = 0.45
    aniso: float = 0.25
    generalized_iso: float = 0.12
    generalized_aniso: float = 0.03
    plateau_iso: float = 0.12
    plateau_aniso: float = 0.03

    def as_tuple(self) -> tuple[float, ...]:
        """Probabilities in `KernelType` order."""
        return (self.iso, self.aniso, self.generalized_iso, self.generalized_aniso, self.plateau_iso,
                self.plateau_aniso)

    def __post_init__(self):
        _check_distribution("kernel_mix", self.as_tuple())


@dataclasses.dataclass(frozen=True)
class ResizeChoice:
    """Probability of up-, down-scaling or keeping the size, drawn once per batch."""

    up: float
    down: float
    keep: float

    def as_tuple(self) -> tuple[float, float, float]:
        """Probabilities in `ResizeDirection` order."""
        return (self.up, self.down, self.keep)

    def __post_init__(self):
        _check_distribution("resize_prob", self.as_tuple())


@dataclasses.dataclass(frozen=True)
class BlurConfig:
    """How one stage draws its blur kernel (per sample)."""

    kernel_mix: KernelMix = KernelMix()
    sinc_prob: float = 0.1
    blur_sigma: Range = (0.2, 3.0)
    betag_range: Range = (0.5, 4.0)
    betap_range: Range = (1.0, 2.0)
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)

    def __post_init__(self):
        _check_prob("sinc_prob", self.sinc_prob)
        _check_range("blur_sigma", self.blur_sigma, low=1e-3)
        _check_range("betag_range", self.betag_range, low=1e-3)
        # The official beta draw is U(lo, 1) or U(1, hi) with p 0.5: 1 must lie in [lo, hi].
        for name, (lo, hi) in (("betag_range", self.betag_range), ("betap_range", self.betap_range)):
            if not lo <= 1.0 <= hi or not lo < hi:
                raise DegradationConfigError(f"{name}: [{lo}, {hi}] must be non-empty and contain 1")
        if not self.kernel_sizes:
            raise DegradationConfigError("kernel_sizes: empty")
        for k in self.kernel_sizes:
            if k % 2 != 1 or not 3 <= k <= 21:
                raise DegradationConfigError(f"kernel_sizes: {k} is not an odd size in [3, 21]")


@dataclasses.dataclass(frozen=True)
class NoiseResizeConfig:
    """Resize and noise of one stage: direction/scale/mode and Gaussian-vs-Poisson per batch."""

    resize_prob: ResizeChoice = ResizeChoice(0.2, 0.7, 0.1)
    resize_range: Range = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: Range = (1.0, 30.0)  # sigma on the 0..255 scale
    poisson_scale_range: Range = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: Range = (30.0, 95.0)

    def __post_init__(self):
        _check_range("resize_range", self.resize_range, low=1e-3)
        lo, hi = self.resize_range
        if not lo <= 1.0 <= hi:
            raise DegradationConfigError(f"resize_range: [{lo}, {hi}] must contain 1 (up is U(1, hi))")
        _check_prob("gaussian_noise_prob", self.gaussian_noise_prob)
        _check_range("noise_range", self.noise_range, low=0.0)
        _check_range("poisson_scale_range", self.poisson_scale_range, low=0.0)
        _check_prob("gray_noise_prob", self.gray_noise_prob)
        _check_range("jpeg_range", self.jpeg_range, low=1.0)
        if self.jpeg_range[1] > 100:
            raise DegradationConfigError(f"jpeg_range: {self.jpeg_range} exceeds quality 100")


def _second_blur() -> BlurConfig:
    return BlurConfig(blur_sigma=(0.2, 1.5))


def _second_noise() -> NoiseResizeConfig:
    return NoiseResizeConfig(resize_prob=ResizeChoice(0.3, 0.4, 0.3), resize_range=(0.3, 1.2),
                             noise_range=(1.0, 25.0), poisson_scale_range=(0.05, 2.5))


@dataclasses.dataclass(frozen=True)
class DegradationConfig:
    """The whole second-order degradation (official RealESRGAN/RealESRNet x4plus defaults)."""

    scale: int = 4
    gt_size: int = 256
    queue_size: int = 180
    blur1: BlurConfig = dataclasses.field(default_factory=BlurConfig)
    blur2: BlurConfig = dataclasses.field(default_factory=_second_blur)
    stage1: NoiseResizeConfig = dataclasses.field(default_factory=NoiseResizeConfig)
    stage2: NoiseResizeConfig = dataclasses.field(default_factory=_second_noise)
    second_blur_prob: float = 0.8
    final_sinc_prob: float = 0.8
    # Ablation switches of the paper's ablation study (Wang et al. 2021); defaults = the official recipe.
    # second_order=False: the first stage (blur, resize, noise, JPEG) goes straight to the final stage
    # (resize to H/scale, sinc, JPEG); the second blur, resize and noise are skipped.
    second_order: bool = True
    # sinc=False: no sinc filter anywhere, i.e. blur1/blur2 never pick the sinc kernel (sinc_prob is
    # ignored) and the final sinc is the identity (final_sinc_prob is ignored).
    sinc: bool = True
    # USM sharpening of the GT (BasicSR USMSharp: 51x51 Gaussian with sigma 8 = OpenCV's default for 51).
    usm_kernel_size: int = 51
    usm_sigma: float = 8.0
    usm_weight: float = 0.5
    usm_threshold: float = 10.0

    def __post_init__(self):
        if self.scale not in (1, 2, 4):
            raise DegradationConfigError(f"scale: {self.scale} is not 1, 2 or 4")
        if self.gt_size <= 0 or self.gt_size % self.scale:
            raise DegradationConfigError(f"gt_size: {self.gt_size} is not a positive multiple of scale")
        if self.queue_size < 0:
            raise DegradationConfigError(f"queue_size: {self.queue_size} is negative")
        _check_prob("second_blur_prob", self.second_blur_prob)
        _check_prob("final_sinc_prob", self.final_sinc_prob)
        if self.usm_kernel_size % 2 != 1 or self.usm_kernel_size < 3:
            raise DegradationConfigError(f"usm_kernel_size: {self.usm_kernel_size} is not odd and >= 3")
        if self.usm_sigma <= 0:
            raise DegradationConfigError(f"usm_sigma: {self.usm_sigma} must be > 0")

    @property
    def lq_size(self) -> int:
        return self.gt_size // self.scale

    def check_batch_size(self, batch_size: int) -> None:
        """The pool swaps whole batches: queue_size must be a multiple of the (per-replica) batch."""
        if batch_size <= 0:
            raise DegradationConfigError(f"batch size {batch_size} must be positive")
        if self.queue_size and self.queue_size % batch_size:
            raise DegradationConfigError(
                f"queue_size {self.queue_size} is not divisible by the per-replica batch size {batch_size}")
