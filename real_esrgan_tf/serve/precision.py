"""Which compute precision a device runs natively: what `--precision auto` picks, and why an explicit
choice would be slow.

A reduced precision only pays where the hardware computes in it. Without it the kernels emulate it
or fall back to generic code: RRDBNet x4plus in bf16 on a Xeon with AVX-512 but no AVX512_BF16 ran
3.1x slower than fp32 (issue 16). So `auto` is:

- CPU: bf16 when /proc/cpuinfo lists `avx512_bf16` or `amx_bf16` (oneDNN's native bf16 paths), else
  fp32. Never fp16: TensorFlow's CPU convolutions have no fp16 fast path (`avx512_fp16`/`amx_fp16`
  merely spare the warning for an explicit fp16).
- GPU: fp16 from compute capability 7.0 (tensor cores, Volta and later; also what the official
  RealESRGANer runs on CUDA), else fp32. fp16 rather than bf16 on Ampere and later: the same tensor
  core rate with 3 more mantissa bits, and the Upscaler redoes an image in fp32 when an fp16 output
  is not finite (overflow), so the range is never a trap. Several GPUs: the oldest one decides.
- TPU: bf16 (the MXU's native input type).

`resolve_precision` returns the precision and, for an explicit choice the device does not run
natively, one line saying why (the CLI prints it; library code never prints).
"""

from __future__ import annotations

import dataclasses
import enum

from real_esrgan_tf.serve.keras_backend import Precision

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPU_FP16_FLAGS = ("avx512_fp16", "amx_fp16")
GPU_FP16_MIN_CAPABILITY = (7, 0)  # tensor cores (Volta)
GPU_BF16_MIN_CAPABILITY = (8, 0)  # bf16 tensor cores (Ampere)


class DeviceKind(enum.StrEnum):
    CPU = "cpu"
    GPU = "gpu"
    TPU = "tpu"


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """The facts the precision rule reads; build one by hand to ask about any device.

    kind: where the network runs. name: for messages. cpu_flags: the CPU's feature flags (as in
    /proc/cpuinfo). compute_capability: a GPU's (major, minor), the lowest over the visible GPUs,
    None when unknown (e.g. ROCm).
    """

    kind: DeviceKind
    name: str = ""
    cpu_flags: frozenset[str] = frozenset()
    compute_capability: tuple[int, int] | None = None

    @property
    def cpu_bf16(self) -> bool:
        return any(flag in self.cpu_flags for flag in CPU_BF16_FLAGS)

    @property
    def cpu_fp16(self) -> bool:
        return any(flag in self.cpu_flags for flag in CPU_FP16_FLAGS)


def read_cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """(model name, feature flags) of the first CPU in a Linux cpuinfo file; ("", {}) where there is
    none (macOS, Windows: no native bf16 is assumed, so `auto` stays fp32 there)."""
    name, flags = "", frozenset()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:  # x86, ARM
                    flags = frozenset(value.split())
                if name and flags:
                    break
    except OSError:
        pass
    return name, flags


def detect_device() -> DeviceInfo:
    """The device TensorFlow runs a model on by default here: a TPU, else the GPUs, else the CPU."""
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU"):
        return DeviceInfo(DeviceKind.TPU, "TPU")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
        capabilities = [d.get("compute_capability") for d in details]
        capability = None if None in capabilities else min(tuple(c) for c in capabilities)
        return DeviceInfo(DeviceKind.GPU, details[0].get("device_name", "GPU"), compute_capability=capability)
    name, flags = read_cpu_info()
    return DeviceInfo(DeviceKind.CPU, name or "CPU", cpu_flags=flags)


def auto_precision(device: DeviceInfo) -> Precision:
    """The fastest precision `device` runs natively (see the module docstring)."""
    if device.kind is DeviceKind.TPU:
        return Precision.BF16
    if device.kind is DeviceKind.GPU:
        capability = device.compute_capability
        return Precision.FP16 if capability and capability >= GPU_FP16_MIN_CAPABILITY else Precision.FP32
    return Precision.BF16 if device.cpu_bf16 else Precision.FP32


def _not_native(precision: Precision, device: DeviceInfo) -> str | None:
    """Why `device` does not run `precision` natively, or None when it does."""
    name = f" ({device.name})" if device.name else ""
    if device.kind is DeviceKind.CPU:
        if precision is Precision.BF16 and not device.cpu_bf16:
            return (f"this CPU{name} has no native bf16 (neither {' nor '.join(CPU_BF16_FLAGS)}): bf16 is "
                    "emulated and can be several times slower than fp32 (3.1x for x4plus on an AVX-512 Xeon)")
        if precision is Precision.FP16 and not device.cpu_fp16:
            return (f"this CPU{name} has no native fp16 (neither {' nor '.join(CPU_FP16_FLAGS)}): fp16 runs "
                    "on generic kernels, slower than fp32")
        return None
    if device.kind is DeviceKind.GPU:
        capability = device.compute_capability
        shown = "unknown" if capability is None else f"{capability[0]}.{capability[1]}"
        if precision is Precision.BF16 and (capability is None or capability < GPU_BF16_MIN_CAPABILITY):
            return (f"this GPU{name} (compute capability {shown}) has no bf16 tensor cores (8.0+): "
                    "slower than fp16")
        if precision is Precision.FP16 and (capability is None or capability < GPU_FP16_MIN_CAPABILITY):
            return (f"this GPU{name} (compute capability {shown}) has no tensor cores (7.0+): fp16 may be "
                    "no faster than fp32")
        return None
    if precision is Precision.FP16:
        return "TPUs compute in bf16, not fp16"
    return None


def resolve_precision(requested: Precision | str, device: DeviceInfo) -> tuple[Precision, str | None]:
    """(precision to run, warning or None) for `requested` on `device`.

    `auto` picks `auto_precision(device)` and never warns. An explicit precision is kept as asked;
    when the device does not run it natively the warning ("bf16: this CPU ... ; auto runs fp32
    here") says why and what `auto` would run.
    """
    requested = Precision(requested)
    if requested is Precision.AUTO:
        return auto_precision(device), None
    reason = _not_native(requested, device)
    if reason is None:
        return requested, None
    better = auto_precision(device)
    return requested, f"{requested.value}: {reason}; auto runs {better.value} here"


TRAINING_POLICIES = {"mixed_bfloat16": Precision.BF16, "mixed_float16": Precision.FP16}


def training_precision_warning(policy: str, device: DeviceInfo) -> str | None:
    """Why `train.precision` = `policy` (a Keras dtype policy name) is slow on `device`, or None.

    Training's default is float32 on every device (nothing is picked for the user, so nothing to
    resolve); a mixed policy is an explicit choice that gets the same warning as `--precision`.
    """
    precision = TRAINING_POLICIES.get(str(policy))
    reason = None if precision is None else _not_native(precision, device)
    if reason is None:
        return None
    return f"{policy}: {reason}; float32 or {auto_precision(device).value} would be faster here"
