"""`--precision auto`: the rule per device kind (faked devices), this machine's detection, and the CLI
default path (no warning here) and explicit bf16 on a faked CPU without bf16 (exactly one warning)."""

import numpy as np
import pytest

from real_esrgan_tf.cli.main import main
from real_esrgan_tf.images import encode_image, read_image
from real_esrgan_tf.serve import precision as precision_module
from real_esrgan_tf.serve.keras_backend import Precision
from real_esrgan_tf.serve.precision import (
    DeviceInfo,
    DeviceKind,
    auto_precision,
    detect_device,
    read_cpu_info,
    resolve_precision,
)

ZEN5 = DeviceInfo(DeviceKind.CPU, "AMD EPYC", frozenset({"avx512f", "avx512_bf16"}))
SAPPHIRE_RAPIDS = DeviceInfo(DeviceKind.CPU, "Xeon 8480", frozenset({"avx512f", "amx_bf16", "avx512_fp16"}))
XEON_NO_BF16 = DeviceInfo(DeviceKind.CPU, "Xeon 8272", frozenset({"avx512f", "avx512_vnni"}))
ZEN3 = DeviceInfo(DeviceKind.CPU, "AMD EPYC 7B13", frozenset({"avx2", "fma"}))
UNKNOWN_CPU = DeviceInfo(DeviceKind.CPU)  # no /proc/cpuinfo (macOS, Windows)
A100 = DeviceInfo(DeviceKind.GPU, "A100", compute_capability=(8, 0))
T4 = DeviceInfo(DeviceKind.GPU, "T4", compute_capability=(7, 5))
V100 = DeviceInfo(DeviceKind.GPU, "V100", compute_capability=(7, 0))
P100 = DeviceInfo(DeviceKind.GPU, "P100", compute_capability=(6, 0))
GPU_UNKNOWN = DeviceInfo(DeviceKind.GPU, "ROCm GPU")
TPU = DeviceInfo(DeviceKind.TPU, "TPU")


@pytest.mark.parametrize("device, expected", [
    (ZEN5, Precision.BF16), (SAPPHIRE_RAPIDS, Precision.BF16), (XEON_NO_BF16, Precision.FP32),
    (ZEN3, Precision.FP32), (UNKNOWN_CPU, Precision.FP32), (A100, Precision.FP16), (T4, Precision.FP16),
    (V100, Precision.FP16), (P100, Precision.FP32), (GPU_UNKNOWN, Precision.FP32), (TPU, Precision.BF16),
])
def test_auto_per_device_kind(device, expected):
    assert auto_precision(device) is expected
    assert resolve_precision("auto", device) == (expected, None)  # auto never warns


@pytest.mark.parametrize("device, requested, reason", [
    (XEON_NO_BF16, "bf16", "no native bf16"), (ZEN3, "bf16", "no native bf16"),
    (UNKNOWN_CPU, "bf16", "no native bf16"), (ZEN5, "fp16", "no native fp16"),
    (T4, "bf16", "no bf16 tensor cores"), (GPU_UNKNOWN, "bf16", "no bf16 tensor cores"),
    (P100, "fp16", "no tensor cores"), (TPU, "fp16", "TPUs compute in bf16"),
])
def test_explicit_non_native_precision_is_kept_with_a_reason(device, requested, reason):
    chosen, warning = resolve_precision(requested, device)
    assert chosen is Precision(requested)  # the user's choice stands
    assert reason in warning and "\n" not in warning
    assert warning.startswith(f"{requested}: ")
    assert warning.endswith(f"auto runs {auto_precision(device).value} here")


@pytest.mark.parametrize("device, requested", [
    (ZEN5, "bf16"), (SAPPHIRE_RAPIDS, "bf16"), (SAPPHIRE_RAPIDS, "fp16"), (A100, "bf16"), (A100, "fp16"),
    (V100, "fp16"), (TPU, "bf16"), (XEON_NO_BF16, "fp32"), (P100, "fp32"), (TPU, "fp32"),
])
def test_native_or_fp32_choices_do_not_warn(device, requested):
    assert resolve_precision(requested, device) == (Precision(requested), None)


def test_read_cpu_info_x86_and_arm(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Fake Xeon\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                   "processor\t: 1\nmodel name\t: Fake Xeon\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert read_cpu_info(str(x86)) == ("Fake Xeon", frozenset({"fpu", "avx512f", "avx512_bf16"}))
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\nCPU part\t: 0xd40\n")
    assert read_cpu_info(str(arm)) == ("", frozenset({"fp", "asimd", "bf16"}))
    assert read_cpu_info(str(tmp_path / "missing")) == ("", frozenset())


def test_this_machine_is_detected_as_its_cpuinfo_says():
    device = detect_device()  # no GPU or TPU on the test machines
    assert device.kind is DeviceKind.CPU
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split(":", 1)[1].split()
    assert device.cpu_flags == frozenset(flags)
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert auto_precision(device) is (Precision.BF16 if native else Precision.FP32)


def test_upscaler_resolves_auto_for_keras_models_only(monkeypatch):
    from real_esrgan_tf.models import SRVGGNetCompact
    from real_esrgan_tf.serve.upscaler import Upscaler

    model = SRVGGNetCompact(num_conv=0, num_feat=4, upscale=2)
    for device, expected in ((ZEN5, Precision.BF16), (XEON_NO_BF16, Precision.FP32)):
        monkeypatch.setattr(precision_module, "detect_device", lambda d=device: d)
        upscaler = Upscaler(model, precision="auto")
        assert upscaler.precision is expected and upscaler.backend.precision is expected

    class Nearest:  # a non-Keras backend runs in its file's precision
        scale, input_size = 2, None

        def __call__(self, lq):
            return np.repeat(np.repeat(lq, 2, axis=1), 2, axis=2)

    assert Upscaler(Nearest(), precision="auto").precision is Precision.FP32
    with pytest.raises(ValueError, match="only be changed for a Keras model"):
        Upscaler(Nearest(), precision="bf16")
    with pytest.raises(ValueError, match="resolve it first"):
        Precision.AUTO.keras_dtype  # noqa: B018


def test_auto_runs_16bit_images_in_fp32_and_8bit_natively(monkeypatch):
    """bf16 holds 8 significant bits: auto must not spend a 16-bit image's depth on speed."""
    from real_esrgan_tf.models import SRVGGNetCompact
    from real_esrgan_tf.serve.upscaler import Upscaler

    monkeypatch.setattr(precision_module, "detect_device", lambda: ZEN5)
    model = SRVGGNetCompact(num_conv=1, num_feat=8, upscale=2)
    deep = np.random.default_rng(3).integers(0, 65536, (9, 11, 3)).astype(np.uint16)
    shallow = (deep >> 8).astype(np.uint8)
    auto, fp32, bf16 = (Upscaler(model, precision=p) for p in ("auto", "fp32", "bf16"))
    assert auto.precision is Precision.BF16
    np.testing.assert_array_equal(auto.upscale(deep), fp32.upscale(deep))
    np.testing.assert_array_equal(auto.upscale_batch(deep[None]), fp32.upscale_batch(deep[None]))
    assert np.abs(bf16.upscale(deep).astype(int) - fp32.upscale(deep)).max() > 16  # what auto avoids
    np.testing.assert_array_equal(auto.upscale(shallow), bf16.upscale(shallow))
    assert auto.precision is Precision.BF16  # still native for the next 8-bit image


# ---------------------------------------------------------------------------- CLI
@pytest.fixture
def cli_run(tmp_path, photos, monkeypatch):
    """Runs `upscale` on a 20x24 photo with a tiny x2 model; returns (exit code, stderr lines, the
    precision the Upscaler got, the output pixels)."""
    from real_esrgan_tf.cli import upscale as upscale_cli
    from real_esrgan_tf.models import SRVGGNetCompact
    from real_esrgan_tf.weights import save_generator

    model_file = tmp_path / "tiny_x2.weights.h5"
    save_generator(SRVGGNetCompact(num_conv=1, num_feat=4, upscale=2), model_file)
    (tmp_path / "in").mkdir()
    photo = photos["astronaut"][::16, ::16][:20, :24]
    (tmp_path / "in" / "photo.png").write_bytes(encode_image(photo, "png"))
    used = []

    class RecordingUpscaler(upscale_cli.Upscaler):
        def __init__(self, model, **kwargs):
            super().__init__(model, **kwargs)
            used.append(self.precision)

    monkeypatch.setattr(upscale_cli, "Upscaler", RecordingUpscaler)

    def run(*extra, capsys):
        out = tmp_path / "out"
        code = main(["real-esrgan-tf", "upscale", "--input", str(tmp_path / "in"), "--output", str(out),
                     "--model", str(model_file), *extra])
        lines = capsys.readouterr().err.splitlines()
        return code, lines, used[-1], read_image(str(out / "photo_out.png")).pixels

    return run


def test_cli_default_is_auto_and_silent_here(cli_run, capsys):
    code, lines, used, pixels = cli_run(capsys=capsys)
    assert code == 0
    assert not [line for line in lines if "warning:" in line], lines
    assert used is auto_precision(detect_device())  # bf16 on this Zen 5 (avx512_bf16)
    assert pixels.shape == (40, 48, 3)


def test_cli_explicit_bf16_on_a_cpu_without_it_warns_once(cli_run, capsys, monkeypatch):
    monkeypatch.setattr(precision_module, "detect_device", lambda: XEON_NO_BF16)
    code, lines, used, bf16_pixels = cli_run("--precision", "bf16", capsys=capsys)
    assert code == 0 and used is Precision.BF16
    warnings = [line for line in lines if "warning:" in line]
    assert len(warnings) == 1, lines
    assert warnings[0].startswith("real-esrgan-tf upscale: warning: --precision bf16: this CPU (Xeon 8272) "
                                  "has no native bf16")
    code, lines, used, auto_pixels = cli_run(capsys=capsys)  # the default on that CPU: fp32, silent
    assert code == 0 and used is Precision.FP32
    assert not [line for line in lines if "warning:" in line], lines
    assert 0 < np.abs(auto_pixels.astype(int) - bf16_pixels).max() <= 8  # really two precisions


@pytest.mark.parametrize("policy, device, expected", [
    ("float32", XEON_NO_BF16, None), ("float32", TPU, None), ("mixed_bfloat16", ZEN5, None),
    ("mixed_bfloat16", TPU, None), ("mixed_float16", A100, None),
    ("mixed_bfloat16", XEON_NO_BF16, "mixed_bfloat16: this CPU (Xeon 8272) has no native bf16"),
    ("mixed_float16", ZEN5, "mixed_float16: this CPU (AMD EPYC) has no native fp16"),
    ("mixed_bfloat16", T4, "mixed_bfloat16: this GPU (T4) (compute capability 7.5) has no bf16 tensor cores"),
])
def test_training_precision_warning(policy, device, expected):
    from real_esrgan_tf.serve.precision import training_precision_warning
    from real_esrgan_tf.training.config import PipelineConfig

    assert str(PipelineConfig().train.precision) == "float32"  # the default is never slow
    warning = training_precision_warning(policy, device)
    if expected is None:
        assert warning is None
    else:
        assert warning.startswith(expected) and "\n" not in warning


def test_train_cli_prints_the_warning_once(monkeypatch, capsys):
    from real_esrgan_tf.cli import train

    monkeypatch.setattr(precision_module, "detect_device", lambda: XEON_NO_BF16)
    train._warn_slow_precision("mixed_bfloat16")
    train._warn_slow_precision("float32")
    lines = capsys.readouterr().err.splitlines()
    assert lines == [line for line in lines if "warning:" in line] and len(lines) == 1
    assert lines[0].startswith("real-esrgan-tf train: warning: train.precision mixed_bfloat16: this CPU")
