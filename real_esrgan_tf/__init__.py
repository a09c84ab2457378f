"""real-esrgan-tf: Real-ESRGAN blind super-resolution in TensorFlow 2 / Keras 3.

The flow, one sub-package per stage: `data` (image folders -> TFRecord shards -> tf.data) ->
`degradations` (in-graph high-order degradation) -> `models` + `training` (G, U-Net SN D, losses,
EMA, checkpoints) -> `weights` (official and own weight files) -> `export` (SavedModel, TFLite) ->
`serve` (tiled `Upscaler`, TFLite backend, Serving client). `cli` holds every command line.
Public names are imported lazily so `real-esrgan-tf --help` stays fast.
"""

from real_esrgan_tf._lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "RRDBNet": "real_esrgan_tf.models",
        "SRVGGNetCompact": "real_esrgan_tf.models",
        "UNetDiscriminatorSN": "real_esrgan_tf.models",
        "VGGStyleDiscriminator": "real_esrgan_tf.models",
        "load_generator": "real_esrgan_tf.weights",
        "save_generator": "real_esrgan_tf.weights",
        "pretrained_info": "real_esrgan_tf.weights",
        "Upscaler": "real_esrgan_tf.serve.upscaler",
    },
)
