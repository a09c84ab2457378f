"""The in-graph high-order degradation of Real-ESRGAN (official x4plus defaults).

API used by training and data pipelines:
- `DegradationConfig`: typed, validated settings (`config`, no TensorFlow import).
- `sample_kernels(config, seed, batch_size=None)`: per-sample blur/sinc kernels, stateless-seeded.
- `RealESRGANDegrader(config)(gt, kernels, seed) -> (lq, gt, gt_usm)`, `USMSharp`.
- `TrainingPairPool(queue_size)`: the variable-backed training-pair pool.
- `preview`: degrade one image N times and record every drawn parameter.
"""

from real_esrgan_tf._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "BlurConfig": "real_esrgan_tf.degradations.config",
        "DegradationConfig": "real_esrgan_tf.degradations.config",
        "DegradationConfigError": "real_esrgan_tf.degradations.config",
        "KernelMix": "real_esrgan_tf.degradations.config",
        "KernelType": "real_esrgan_tf.degradations.config",
        "NoiseResizeConfig": "real_esrgan_tf.degradations.config",
        "ResizeChoice": "real_esrgan_tf.degradations.config",
        "ResizeDirection": "real_esrgan_tf.degradations.config",
        "ResizeMode": "real_esrgan_tf.degradations.config",
        "RealESRGANDegrader": "real_esrgan_tf.degradations.degrader",
        "USMSharp": "real_esrgan_tf.degradations.filtering",
        "KERNEL_SIZE": "real_esrgan_tf.degradations.kernels",
        "sample_kernels": "real_esrgan_tf.degradations.kernels",
        "TrainingPairPool": "real_esrgan_tf.degradations.pool",
    },
)
