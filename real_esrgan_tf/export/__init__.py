"""Deployment formats: one module per format, listed in `export.formats.FORMATS` (`--format`)."""

from real_esrgan_tf._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "ExportError": "real_esrgan_tf.export.common",
        "Quantization": "real_esrgan_tf.export.common",
        "generator_scale": "real_esrgan_tf.export.common",
        "FORMATS": "real_esrgan_tf.export.formats",
        "ExportOptions": "real_esrgan_tf.export.formats",
        "export_generator": "real_esrgan_tf.export.formats",
        "SAVED_MODEL_INTERFACE_VERSION": "real_esrgan_tf.export.saved_model",
        "ServingConfig": "real_esrgan_tf.export.saved_model",
        "SuperResolutionModule": "real_esrgan_tf.export.saved_model",
        "export_saved_model": "real_esrgan_tf.export.saved_model",
        "next_version": "real_esrgan_tf.export.saved_model",
        "degraded_lq_crops": "real_esrgan_tf.export.tflite",
        "export_tflite": "real_esrgan_tf.export.tflite",
        "export_tflite_models": "real_esrgan_tf.export.tflite",
        "fixed_size_model": "real_esrgan_tf.export.tflite",
        "int8_friendly": "real_esrgan_tf.export.tflite",
        "write_tfjs": "real_esrgan_tf.export.tfjs",
    },
)
