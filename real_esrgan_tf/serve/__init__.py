"""Serving a generator: the tiled `Upscaler`, its Keras and TFLite backends, the model loader of the
commands, and the TensorFlow Serving client."""

from real_esrgan_tf._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "Upscaler": "real_esrgan_tf.serve.upscaler",
        "AlphaMode": "real_esrgan_tf.serve.upscaler",
        "Precision": "real_esrgan_tf.serve.keras_backend",
        "KerasSuperResolver": "real_esrgan_tf.serve.keras_backend",
        "TFLiteGenerator": "real_esrgan_tf.serve.tflite_backend",
        "load_upscale_model": "real_esrgan_tf.serve.loading",
        "ModelLoadError": "real_esrgan_tf.serve.loading",
    },
)
