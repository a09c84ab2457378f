"""The in-graph high-order degradation of Real-ESRGAN (official x4plus defaults).

API used by training and data pipelines:
- `DegradationConfig`: typed, validated settings.
- `sample_kernels(config, seed, batch_size=None)`: per-sample blur/sinc kernels, stateless-seeded.
- `RealESRGANDegrader(config)(gt, kernels, seed) -> (lq, gt, gt_usm)`, `USMSharp`.
- `TrainingPairPool(queue_size)`: the variable-backed training-pair pool.
"""

from real_esrgan_tf.degradations.config import (
    BlurConfig,
    DegradationConfig,
    DegradationConfigError,
    KernelMix,
    KernelType,
    NoiseResizeConfig,
    ResizeChoice,
    ResizeDirection,
    ResizeMode,
)
from real_esrgan_tf.degradations.degrader import RealESRGANDegrader
from real_esrgan_tf.degradations.filtering import USMSharp
from real_esrgan_tf.degradations.kernels import KERNEL_SIZE, sample_kernels
from real_esrgan_tf.degradations.pool import TrainingPairPool

__all__ = [
    "KERNEL_SIZE",
    "BlurConfig",
    "DegradationConfig",
    "DegradationConfigError",
    "KernelMix",
    "KernelType",
    "NoiseResizeConfig",
    "RealESRGANDegrader",
    "ResizeChoice",
    "ResizeDirection",
    "ResizeMode",
    "TrainingPairPool",
    "USMSharp",
    "sample_kernels",
]
