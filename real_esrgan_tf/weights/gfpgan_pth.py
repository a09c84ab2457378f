"""Official GFPGAN v1.3 / v1.4 `.pth` files -> `GFPGANv1Clean`, without torch.

`GFPGANv1.3.pth` and `GFPGANv1.4.pth` share one layout (GFPGANer builds the same "clean" arch for
both): `{"params_ema": state_dict}` (else `{"params": ...}`), 285 tensors, 87,143,276 values (BUILD_NOTES
"GFPGAN v1.3/v1.4 weights layout"). The architecture's sizes (out_size, widths, style width, MLP depth,
different_w, sft_half) are read from the tensor shapes; `input_is_latent` is not in the weights
(GFPGANer: True). Every key must be used and every variable filled; a wrong file fails with one line
naming the missing or unexpected key.

Layouts: conv (out, in, kh, kw) -> (kh, kw, in, out); linear (out, in) -> (in, out), and
`final_linear`'s input rows go from torch's (C, H, W) flatten to NHWC's (H, W, C); modulated conv
(1, out, in, k, k) -> (k, k, in, out); per-channel (1, C, 1, 1) -> (C,); constant input and noise
buffers NCHW -> NHWC.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from real_esrgan_tf.weights.errors import WeightsError
from real_esrgan_tf.weights.torch_pth import read_state_dict

STATE_KEYS = ("params_ema", "params")


def _conv(w):
    return w.transpose(2, 3, 1, 0)


def _linear(w):
    return w.T


def _modulated(w):
    return w[0].transpose(2, 3, 1, 0)


def _channels(w):
    return w.reshape(-1)


def _nchw(w):
    return w.transpose(0, 2, 3, 1)


def _same(w):
    return w


def _final_linear(w):
    """(out, C*4*4) torch rows in (C, H, W) order -> Keras kernel (4*4*C, out) in (H, W, C) order."""
    out, n = w.shape
    c = n // 16
    return w.T.reshape(c, 4, 4, out).transpose(1, 2, 0, 3).reshape(n, out)


def _dense(layer, key, kernel=_linear):
    return [(f"{key}.weight", layer.kernel, kernel), (f"{key}.bias", layer.bias, _same)]


def _conv2d(layer, key):
    pairs = [(f"{key}.weight", layer.kernel, _conv)]
    return pairs + ([(f"{key}.bias", layer.bias, _same)] if layer.use_bias else [])


def _modulated_conv(layer, key):
    return _dense(layer.modulation, f"{key}.modulation") + [(f"{key}.weight", layer.kernel, _modulated)]


def gfpgan_assignments(model) -> list[tuple[str, object, Callable[[np.ndarray], np.ndarray]]]:
    """(official key, our variable, torch array -> our array) for every weight of a `GFPGANv1Clean`."""
    pairs = _conv2d(model.conv_body_first, "conv_body_first")
    for group in ("conv_body_down", "conv_body_up"):
        for i, block in enumerate(getattr(model, group)):
            for part in ("conv1", "conv2", "skip"):
                pairs += _conv2d(getattr(block, part), f"{group}.{i}.{part}")
    pairs += _conv2d(model.final_conv, "final_conv")
    for i, conv in enumerate(model.to_rgb):
        pairs += _conv2d(conv, f"toRGB.{i}")
    pairs += _dense(model.final_linear, "final_linear", _final_linear)
    for group in ("condition_scale", "condition_shift"):
        for i, cond in enumerate(getattr(model, group)):
            pairs += _conv2d(cond.conv_0, f"{group}.{i}.0") + _conv2d(cond.conv_2, f"{group}.{i}.2")
    dec, d = model.stylegan_decoder, "stylegan_decoder"
    for j, dense in enumerate(dec.style_mlp):
        pairs += _dense(dense, f"{d}.style_mlp.{2 * j + 1}")
    pairs.append((f"{d}.constant_input.weight", dec.constant_input.constant, _nchw))
    for key, conv in [(f"{d}.style_conv1", dec.style_conv1)] + [
        (f"{d}.style_convs.{i}", c) for i, c in enumerate(dec.style_convs)
    ]:
        pairs += _modulated_conv(conv.modulated_conv, f"{key}.modulated_conv")
        pairs += [(f"{key}.weight", conv.noise_strength, _same), (f"{key}.bias", conv.bias, _channels)]
    for key, to_rgb in [(f"{d}.to_rgb1", dec.to_rgb1)] + [
        (f"{d}.to_rgbs.{i}", t) for i, t in enumerate(dec.to_rgbs)
    ]:
        pairs += _modulated_conv(to_rgb.modulated_conv, f"{key}.modulated_conv")
        pairs.append((f"{key}.bias", to_rgb.bias, _channels))
    for i, noise in enumerate(dec.noises):
        pairs.append((f"{d}.noises.noise{i}", noise, _nchw))
    return pairs


def _require(state, key, path, ndim):
    if key not in state:
        raise WeightsError(f"{path}: not a GFPGAN v1 clean state dict: missing key {key!r}")
    if state[key].ndim != ndim:
        raise WeightsError(f"{path}: {key} has shape {state[key].shape}, expected {ndim} dimensions")
    return state[key]


def config_from_state_dict(state: dict[str, np.ndarray], path: str) -> dict:
    """`GFPGANv1Clean` sizes read from the official tensor shapes (all but input_is_latent)."""
    d = "stylegan_decoder"
    num_layers = sum(1 for k in state if k.startswith(f"{d}.noises.noise"))
    if num_layers == 0:
        raise WeightsError(f"{path}: not a GFPGAN v1 clean state dict: missing key '{d}.noises.noise0'")
    log_size = (num_layers - 1) // 2 + 2
    out_size = 2**log_size
    if num_layers < 3 or num_layers % 2 == 0:
        raise WeightsError(
            f"{path}: not a GFPGAN v1 clean state dict: {num_layers} '{d}.noises.noise*' buffers "
            "(expected 2 * log2(out_size) - 3)"
        )
    const = _require(state, f"{d}.constant_input.weight", path, 4)
    narrow = const.shape[1] / 512
    num_style_feat = _require(state, f"{d}.style_conv1.modulated_conv.modulation.weight", path, 2).shape[1]
    # the first level whose width depends on the multiplier: 64 (256 * multiplier * narrow)
    level64 = 2 * (6 - 3) + 1 if out_size >= 64 else None
    channel_multiplier = 2
    if level64 is not None:
        width = _require(state, f"{d}.style_convs.{level64}.bias", path, 4).shape[1]
        channel_multiplier = max(1, round(width / (256 * narrow)))
    num_mlp = sum(1 for k in state if k.startswith(f"{d}.style_mlp.") and k.endswith(".weight"))
    linear_out = _require(state, "final_linear.weight", path, 2).shape[0]
    different_w = linear_out != num_style_feat
    scale_out, scale_in = _require(state, "condition_scale.0.2.weight", path, 4).shape[:2]
    return dict(
        out_size=out_size,
        num_style_feat=int(num_style_feat),
        channel_multiplier=channel_multiplier,
        num_mlp=num_mlp,
        different_w=different_w,
        narrow=narrow,
        sft_half=scale_out == scale_in,
    )


def load_gfpgan(path: str, input_is_latent: bool = True, dtype=None, what: str | None = None):
    """A `GFPGANv1Clean` with the weights of an official GFPGAN v1.3 / v1.4 `.pth` (torch-free).

    `params_ema` is used when present (what GFPGANer loads), else `params`. `what` names the file in
    errors (default: the path). Raises `WeightsError` with one line for a missing file, a file that is
    not a torch checkpoint, or a different layout (the first missing or unexpected key).
    """
    from real_esrgan_tf.models.gfpgan import GFPGANv1Clean

    what = what or str(path)
    if not os.path.isfile(path):
        raise WeightsError(f"{what}: no such file")
    state = read_state_dict(str(path), what, keys=STATE_KEYS)
    config = config_from_state_dict(state, what)
    model = GFPGANv1Clean(input_is_latent=input_is_latent, dtype=dtype, **config)
    pairs = gfpgan_assignments(model)
    expected = {key for key, _, _ in pairs}
    missing = [key for key, _, _ in pairs if key not in state]
    if missing:
        raise WeightsError(
            f"{what}: not a GFPGAN v1 clean state dict: missing key {missing[0]!r} ({len(missing)} missing)"
        )
    unexpected = sorted(set(state) - expected)
    if unexpected:
        raise WeightsError(
            f"{what}: not a GFPGAN v1 clean state dict: unexpected key {unexpected[0]!r} "
            f"({len(unexpected)} unexpected)"
        )
    for key, variable, convert in pairs:
        value = convert(state[key])
        if tuple(value.shape) != tuple(variable.shape):
            raise WeightsError(
                f"{what}: {key} has shape {state[key].shape}, which does not fit "
                f"GFPGANv1Clean({_describe(config)})"
            )
        variable.assign(value)
    return model


def _describe(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())
