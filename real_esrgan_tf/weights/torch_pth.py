"""Official PyTorch `.pth` checkpoints -> our Keras generators and discriminator, without torch.

Files are read by the restricted unpickler of `torch_pickle` (tensor-rebuild globals only).

Architecture and scale are detected from tensor shapes (BasicSR's RRDBNet and SRVGGNetCompact key
layouts); every key must be used. Kernels go from torch (out, in, kh, kw) to Keras (kh, kw, in, out).
"""

from __future__ import annotations

import os

import keras
import numpy as np

from real_esrgan_tf.models import RRDBNet, SRVGGNetCompact
from real_esrgan_tf.models.layers import torch_to_tf_unshuffle_perm
from real_esrgan_tf.weights.errors import InitError, WeightsError
from real_esrgan_tf.weights.torch_pickle import (
    TorchCheckpointError,
    read_torch_checkpoint,
    state_dict_from_checkpoint,
)


def read_state_dict(
    path: str, what: str | None = None, keys: tuple[str, ...] = ("params_ema", "params")
) -> dict[str, np.ndarray]:
    """The state dict of an official checkpoint as float32 numpy arrays.

    BasicSR saves `{"params_ema": ..., "params": ...}` (generators; the EMA weights are the ones
    released) or `{"params": ...}` (discriminators); a bare state dict works too. A `module.` prefix
    (DataParallel) is dropped. `what` names the file in errors (default: the path).
    """
    what = what or path
    try:
        checkpoint = read_torch_checkpoint(path)
    except TorchCheckpointError as e:  # one line naming the file
        reason = str(e).removeprefix(f"{path}: ")
        raise WeightsError(f"{what}: {reason}") from None
    if isinstance(checkpoint, dict):
        for key in keys:
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    try:
        state = state_dict_from_checkpoint(checkpoint, what)
    except TorchCheckpointError as e:
        raise WeightsError(str(e)) from None
    return {key: np.asarray(value, np.float32) for key, value in state.items()}


def _arch_from_state_dict(
    state: dict[str, np.ndarray], path: str, act: str | None = None
) -> tuple[type[keras.Model], dict]:
    if "conv_first.weight" in state and "conv_last.weight" in state:
        if act is not None:
            raise WeightsError(f"{path}: act {act!r} does not apply, an RRDBNet has no choice of activation")
        num_feat, in_total = state["conv_first.weight"].shape[:2]
        num_out_ch = state["conv_last.weight"].shape[0]
        ratio = in_total // num_out_ch if in_total % num_out_ch == 0 else 0
        scales = {1: 4, 4: 2, 16: 1}
        if ratio not in scales:
            raise WeightsError(
                f"{path}: conv_first has {in_total} input channels for {num_out_ch} output channels: "
                "not an RRDBNet x4 (x1), x2 (x4) or x1 (x16)"
            )
        blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("body.") and ".rdb" in k})
        if not blocks or blocks != list(range(len(blocks))) or "body.0.rdb1.conv1.weight" not in state:
            raise WeightsError(f"{path}: RRDBNet state dict without body.N.rdbK.* blocks 0..N-1")
        scale = scales[ratio]
        return RRDBNet, dict(
            scale=scale,
            num_in_ch=in_total // ratio,
            num_out_ch=num_out_ch,
            num_feat=num_feat,
            num_block=len(blocks),
            num_grow_ch=state["body.0.rdb1.conv1.weight"].shape[0],
        )
    convs = sorted(
        int(k.split(".")[1])
        for k in state
        if k.startswith("body.") and k.endswith(".weight") and k.count(".") == 2 and state[k].ndim == 4
    )
    if convs and convs[0] == 0 and len(convs) >= 2 and convs == list(range(0, 2 * len(convs), 2)):
        first, last = state["body.0.weight"], state[f"body.{convs[-1]}.weight"]
        num_in_ch = first.shape[1]
        upscale = int(round(np.sqrt(last.shape[0] / num_in_ch)))
        if upscale < 1 or upscale * upscale * num_in_ch != last.shape[0]:
            raise WeightsError(f"{path}: last conv has {last.shape[0]} output channels, not 3 * r * r")
        if "body.1.weight" in state:  # PReLU slopes
            if act not in (None, "prelu"):
                raise WeightsError(
                    f"{path}: act {act!r} does not apply, this SRVGGNetCompact has PReLU weights"
                )
            act = "prelu"
        elif act in (None, "prelu"):
            raise WeightsError(
                f"{path}: SRVGGNetCompact without PReLU weights: its activation cannot be told from the "
                "weights; give the one it was trained with: relu or leakyrelu (act=..., upscale --act)"
            )
        return SRVGGNetCompact, dict(
            num_in_ch=num_in_ch,
            num_out_ch=num_in_ch,
            num_feat=first.shape[0],
            num_conv=len(convs) - 2,
            upscale=upscale,
            act=act,
        )
    sample = ", ".join(sorted(state)[:4])
    raise WeightsError(
        f"{path}: unrecognised state dict (keys {sample}, ...): expected RRDBNet "
        "(conv_first.*, body.N.rdbK.*) or SRVGGNetCompact (body.N.*)"
    )


def generator_from_pth(path: str, act: str | None = None) -> keras.Model:
    state = read_state_dict(path)
    arch, kwargs = _arch_from_state_dict(state, path, act)
    model = arch(**kwargs)
    unused = set(state)
    for layer in model.layers:
        if not layer.weights:
            continue
        key = _torch_prefix(layer.name)
        if isinstance(layer, keras.layers.PReLU):
            arrays = [state[f"{key}.weight"].reshape(layer.alpha.shape)]
            unused.discard(f"{key}.weight")
        else:
            names = [f"{key}.weight"] + ([f"{key}.bias"] if layer.use_bias else [])
            missing = [n for n in names if n not in state]
            if missing:
                raise WeightsError(f"{path}: state dict lacks {', '.join(missing)}")
            kernel = state[names[0]].transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
            arrays = [kernel] + [state[n] for n in names[1:]]
            unused.difference_update(names)
            if arch is RRDBNet and layer.name == "conv_first" and kwargs["scale"] < 4:
                s = 4 // kwargs["scale"]
                arrays[0] = arrays[0][:, :, torch_to_tf_unshuffle_perm(kwargs["num_in_ch"], s), :]
            if arch is SRVGGNetCompact and layer.name == f"body_{2 * kwargs['num_conv'] + 2}":
                perm = torch_to_tf_unshuffle_perm(kwargs["num_out_ch"], kwargs["upscale"])
                arrays = [arrays[0][..., perm]] + [b[perm] for b in arrays[1:]]
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [a.shape for a in arrays] != expected:
            raise WeightsError(
                f"{path}: {key} has shapes {[a.shape for a in arrays]}, model needs {expected}"
            )
        layer.set_weights(arrays)
    if unused:
        raise WeightsError(
            f"{path}: state dict keys not used by {arch.__name__}: {', '.join(sorted(unused)[:5])}"
        )
    return model


def _torch_prefix(layer_name: str) -> str:
    """Official state-dict prefix of one of our layers: `body_3_rdb2_conv4` -> `body.3.rdb2.conv4`."""
    if layer_name.startswith("body_"):
        return layer_name.replace("_", ".")
    return layer_name  # conv_first, conv_body, conv_up1, conv_up2, conv_hr, conv_last


def load_discriminator_weights(discriminator: keras.Model, path: str, what: str | None = None) -> None:
    """Fill `UNetDiscriminatorSN` from a `.weights.h5` (ours) or an official BasicSR `.pth`.

    The official fine-tuning recipes start D from `RealESRGAN_x4plus_netD.pth` (`{"params": ...}`,
    torch spectral norm: `convN.weight_orig` is the raw kernel, `weight_u`/`weight_v` the power
    iteration state; conv0/conv9 are plain convs with biases).
    """
    what = what or path
    if not os.path.isfile(path):
        raise InitError(f"{what}: no such file")
    if not (path.endswith(".pth") or path.endswith(".pt")):
        try:
            discriminator.load_weights(path)
        except Exception as e:  # wrong file or architecture: one line
            raise InitError(f"{what}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        return
    state = read_state_dict(path, what, keys=("params",))

    def get(key):
        if key not in state:
            raise InitError(f"{what}: not a UNetDiscriminatorSN state dict (no {key!r})")
        return state[key]

    def check(name, value, variable):
        if tuple(value.shape) != tuple(variable.shape):
            raise InitError(
                f"{what}: {name} has shape {tuple(value.shape)}, the model needs {tuple(variable.shape)} "
                "(discriminator.num_feat?)"
            )
        variable.assign(value)

    for layer in discriminator.layers:
        name = layer.name
        if not (name.startswith("conv") and layer.weights):
            continue
        if hasattr(layer, "sn_u"):  # spectral norm: (Cout, Cin, k, k) -> (k, k, Cin, Cout)
            w = get(f"{name}.weight_orig")
            if w.ndim != 4:
                raise InitError(f"{what}: {name}.weight_orig has shape {w.shape}, expected 4 dimensions")
            _, cin, k, _ = w.shape
            check(f"{name}.weight_orig", w.transpose(2, 3, 1, 0), layer.kernel)
            check(f"{name}.weight_u", get(f"{name}.weight_u"), layer.sn_u)
            v = get(f"{name}.weight_v")  # torch flattens W as (Cout, Cin*k*k); ours is (k*k*Cin, Cout)
            if v.size != layer.sn_v.shape[0]:
                raise InitError(
                    f"{what}: {name}.weight_v has {v.size} values, the model needs {layer.sn_v.shape[0]}"
                )
            check(f"{name}.weight_v", v.reshape(cin, k, k).transpose(1, 2, 0).reshape(-1), layer.sn_v)
        else:
            kernel, bias = layer.weights
            check(f"{name}.weight", get(f"{name}.weight").transpose(2, 3, 1, 0), kernel)
            check(f"{name}.bias", get(f"{name}.bias"), bias)
