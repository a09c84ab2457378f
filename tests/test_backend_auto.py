"""`--backend auto` for Keras generators: the measured preference of `serve.backends.AUTO` on a CPU in
fp32, the fallback when a runtime is not installed, and TensorFlow for fp16/bf16 and accelerators."""

import dataclasses

import numpy as np
import pytest

from real_esrgan_tf.serve import backends
from real_esrgan_tf.serve import precision as precision_module
from real_esrgan_tf.serve.backends import AUTO, BACKENDS, TENSORFLOW, generator_key, pick
from real_esrgan_tf.serve.precision import DeviceInfo, DeviceKind

# What benchmarks/bench_backends.py measured fastest in fp32 on a CPU (BUILD_NOTES, issue 16): the
# table must say the same.
MEASURED = {"RRDBNet": (TENSORFLOW,), "SRVGGNetCompact": ("ncnn",)}
XEON_NO_BF16 = DeviceInfo(DeviceKind.CPU, "Xeon 8272", frozenset({"avx512f"}))


def installed(name: str) -> bool:
    return name in BACKENDS and BACKENDS[name].available()


@pytest.mark.parametrize("architecture", sorted(MEASURED))
def test_auto_picks_the_measured_fastest_installed_runtime(architecture):
    assert AUTO[architecture] == MEASURED[architecture]
    expected = next((name for name in MEASURED[architecture] if installed(name)), TENSORFLOW)
    assert pick("auto", generator_key(architecture)).name == expected


@pytest.mark.parametrize("architecture", sorted(MEASURED))
def test_auto_falls_back_when_the_package_is_missing(architecture, monkeypatch):
    rows = dict(BACKENDS)
    monkeypatch.setattr(backends, "BACKENDS", rows)
    preference = [name for name in MEASURED[architecture] if name in rows and name != TENSORFLOW]
    for missing in range(len(preference) + 1):
        for name in preference[:missing]:  # the first `missing` runtimes are not installed
            rows[name] = dataclasses.replace(BACKENDS[name], runtime="no_such_runtime_pkg")
        rest = [name for name in preference[missing:] if rows[name].available()]
        assert pick("auto", generator_key(architecture)).name == (rest[0] if rest else TENSORFLOW)


@pytest.mark.parametrize("precision, device", [("bf16", "cpu"), ("fp16", "cpu"), ("fp16", "gpu"),
                                               ("fp32", "gpu"), ("bf16", "tpu")])
def test_reduced_precision_and_accelerators_stay_on_tensorflow(precision, device):
    for architecture in MEASURED:
        key = generator_key(architecture, precision, device)
        assert key != architecture
        assert pick("auto", key).name == TENSORFLOW


@pytest.mark.slow  # ~10 s on an idle 2-core machine (three model loads, an ncnn export)
def test_loading_follows_the_precision_the_generator_will_run_in(monkeypatch):
    """On this bf16 CPU `--precision auto` runs bf16, so auto keeps TensorFlow; on a CPU without
    bf16 (faked) auto runs fp32 and takes the table's runtime, which gives the same pixels."""
    import keras

    from real_esrgan_tf.serve.loading import load_upscale_model
    from real_esrgan_tf.serve.upscaler import Upscaler

    monkeypatch.setattr(precision_module, "detect_device",
                        lambda: DeviceInfo(DeviceKind.CPU, "Zen 5", frozenset({"avx512_bf16"})))
    assert isinstance(load_upscale_model("realesr-animevideov3", precision="auto").model, keras.Model)
    monkeypatch.setattr(precision_module, "detect_device", lambda: XEON_NO_BF16)
    keras_model = load_upscale_model("realesr-animevideov3", precision="fp32").model  # explicit: exact
    assert isinstance(keras_model, keras.Model)
    chosen = load_upscale_model("realesr-animevideov3", precision="auto").model
    expected = next((name for name in MEASURED["SRVGGNetCompact"] if installed(name)), TENSORFLOW)
    if expected == TENSORFLOW:
        assert isinstance(chosen, keras.Model)
        return
    assert type(chosen).__module__ == BACKENDS[expected].module
    pixels = (np.random.default_rng(3).random((21, 19, 3)) * 255).astype(np.uint8)
    ours = Upscaler(chosen, precision="auto").upscale(pixels)
    reference = Upscaler(keras_model, precision="fp32").upscale(pixels)
    assert np.abs(ours.astype(int) - reference).max() <= 1
