"""real-esrgan-tf: Real-ESRGAN blind super-resolution in TensorFlow 2 / Keras 3.

The public API is imported lazily so `real-esrgan-tf --help` stays fast.
"""

__version__ = "0.1.0"

_LAZY = {
    "RRDBNet": "real_esrgan_tf.models",
    "SRVGGNetCompact": "real_esrgan_tf.models",
    "UNetDiscriminatorSN": "real_esrgan_tf.models",
    "load_generator": "real_esrgan_tf.weights",
    "save_generator": "real_esrgan_tf.weights",
    "pretrained_info": "real_esrgan_tf.weights",
    "Upscaler": "real_esrgan_tf.inference",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'real_esrgan_tf' has no attribute {name!r}")
