"""ncnn generator files -> our Keras generators, matched layer by layer (types, shapes and wiring)."""

from __future__ import annotations

import logging

import keras
import numpy as np

from real_esrgan_tf.models import PixelShuffle, PixelUnshuffle, RRDBNet, ScaledResidual, SRVGGNetCompact
from real_esrgan_tf.models.layers import torch_to_tf_unshuffle_perm
from real_esrgan_tf.weights.errors import WeightsError
from real_esrgan_tf.weights.ncnn_format import NcnnFormatError, NcnnLayer, load_ncnn
from real_esrgan_tf.weights.pretrained import PretrainedModel

log = logging.getLogger(__name__)


def _arch_from_ncnn(layers: list[NcnnLayer], path: str) -> tuple[type[keras.Model], dict]:
    """Architecture class and constructor arguments that the ncnn graph describes."""
    convs = [layer for layer in layers if layer.type == "Convolution"]
    if len(convs) < 3:
        raise WeightsError(f"{path}: not a Real-ESRGAN generator ({len(convs)} convolutions)")
    first, last = convs[0].weights["weight"], convs[-1].weights["weight"]
    shuffles = [layer for layer in layers if layer.type == "PixelShuffle"]
    if shuffles:
        upscale = int(shuffles[0].param(0, 1))
        acts = {layer.type for layer in layers} & {"PReLU", "ReLU"}
        if acts == {"PReLU"}:
            act = "prelu"
        elif acts == {"ReLU"}:  # after `_unfuse_activations`
            slopes = {float(layer.param(0, 0.0)) for layer in layers if layer.type == "ReLU"}
            act = "relu" if slopes == {0.0} else "leakyrelu"
        else:
            raise WeightsError(
                f"{path}: cannot tell the SRVGGNetCompact activation from layers {sorted(acts)}"
            )
        kwargs = dict(
            num_in_ch=first.shape[1],
            num_out_ch=last.shape[0] // (upscale * upscale),
            num_feat=first.shape[0],
            num_conv=len(convs) - 2,
            upscale=upscale,
            act=act,
        )
        return SRVGGNetCompact, kwargs
    if (len(convs) - 6) % 15:
        raise WeightsError(f"{path}: {len(convs)} convolutions do not make an RRDBNet (6 + 15 per block)")
    unshuffle = int(next((layer.param(0, 1) for layer in layers if layer.type == "Reorg"), 1))
    if unshuffle not in (1, 2, 4):
        raise WeightsError(f"{path}: a pixel-unshuffle by {unshuffle} makes no RRDBNet (2: x2, 4: x1)")
    kwargs = dict(
        scale=4 // unshuffle,
        num_in_ch=first.shape[1] // (unshuffle * unshuffle),
        num_out_ch=last.shape[0],
        num_feat=first.shape[0],
        num_block=(len(convs) - 6) // 15,
        num_grow_ch=convs[1].weights["weight"].shape[0],
    )
    return RRDBNet, kwargs


def _strip_output_resize(layers: list[NcnnLayer]) -> tuple[list[NcnnLayer], float]:
    """Drop a final resize of the output (animevideov3 x2/x3 files); return it as a factor."""
    last = layers[-1]
    if last.type == "Interp" and any(last.inputs[0] in layer.outputs for layer in layers[:-1]):
        feeder = next(layer for layer in layers if last.inputs[0] in layer.outputs)
        if feeder.type in ("BinaryOp", "Eltwise", "Convolution"):
            return layers[:-1], float(last.param(1, 1.0))
    return layers, 1.0


def _unfuse_activations(layers: list[NcnnLayer]) -> list[NcnnLayer]:
    """SRVGGNetCompact graphs with ReLU / LeakyReLU fused into their convolutions (`9=1`, `9=2`, as
    ncnnoptimize and our export write them) as separate ReLU layers, the layers our model has."""
    if not any(layer.type == "PixelShuffle" for layer in layers):
        return layers  # RRDBNet: our convolutions carry the fused LeakyReLU too
    result = []
    for layer in layers:
        act = int(layer.param(9, 0)) if layer.type == "Convolution" else 0
        if act not in (1, 2):
            result.append(layer)
            continue
        slope = float(layer.param(10, (0.0,))[0]) if act == 2 else 0.0
        params = {k: v for k, v in layer.params.items() if k not in (9, 10)}
        preact = layer.outputs[0] + "_preact"
        result.append(NcnnLayer(layer.type, layer.name, layer.inputs, (preact,), params, layer.weights))
        relu_params = {0: slope} if slope else {}
        result.append(NcnnLayer("ReLU", layer.name + "_act", (preact,), layer.outputs, relu_params))
    return result


def generator_from_ncnn(param_path: str, bin_path: str, info: PretrainedModel | None) -> keras.Model:
    try:
        layers = load_ncnn(param_path, bin_path)
    except NcnnFormatError as e:
        raise WeightsError(str(e)) from e
    layers, out_resize = _strip_output_resize(layers)
    layers = _unfuse_activations(layers)
    if out_resize != 1.0 and info is None:
        log.info(
            "%s ends in a x%g resize of the output; loading the network without it", param_path, out_resize
        )
    arch, kwargs = _arch_from_ncnn(layers, param_path)
    if info is not None:
        expected = dict(info.arch_kwargs)
        mismatch = {k: (v, kwargs.get(k)) for k, v in expected.items() if kwargs.get(k) != v}
        if arch is not info.arch or mismatch:
            raise WeightsError(
                f"{param_path}: ncnn graph is a {arch.__name__} {kwargs}, "
                f"expected {info.arch.__name__} {expected}"
            )
        if abs(info.net_scale * out_resize - info.outscale) > 1e-6:
            raise WeightsError(
                f"{param_path}: the ncnn graph scales by {info.net_scale} x {out_resize}, "
                f"expected {info.outscale}"
            )
    model = arch(**kwargs)
    _assign_ncnn_weights(layers, model, param_path)
    return model


def _ncnn_matches(nl: NcnnLayer, kl: keras.layers.Layer) -> str | None:
    """Why ncnn layer `nl` cannot be Keras layer `kl`, or None when it matches."""
    if isinstance(kl, keras.layers.InputLayer):
        return None if nl.type == "Input" else "expected Input"
    if isinstance(kl, keras.layers.Conv2D):
        if nl.type != "Convolution":
            return "expected Convolution"
        w = nl.weights["weight"]
        kh, kw, cin, cout = kl.kernel.shape
        if w.shape != (cout, cin, kh, kw):
            return f"weight shape {w.shape}, model needs {(cout, cin, kh, kw)}"
        if nl.param(2, 1) != 1 or nl.param(3, 1) != 1 or nl.param(4, 0) not in (kw // 2, -233):
            return "only stride 1, dilation 1, 'same' padding is supported"
        if ("bias" in nl.weights) != kl.use_bias:
            return "bias presence differs"
        act = kl.get_config()["activation"]
        nact = int(nl.param(9, 0))
        if act == "linear" and nact == 0:
            return None
        if act == "leaky_relu" and nact == 2 and np.isclose(nl.param(10, (0.0,))[0], 0.2):
            return None
        return f"fused activation {nact} {nl.param(10)} does not match {act}"
    if isinstance(kl, (keras.layers.ReLU, keras.layers.LeakyReLU)):
        slope = float(kl.get_config().get("negative_slope") or 0.0)
        ok = nl.type == "ReLU" and np.isclose(float(nl.param(0, 0.0)), slope)
        return None if ok else f"expected ReLU with slope {slope}"
    if isinstance(kl, PixelUnshuffle):
        ok = nl.type == "Reorg" and nl.param(0) == kl.scale and nl.param(1, 0) in (0, 1)
        return None if ok else f"expected Reorg (pixel-unshuffle) by {kl.scale}"
    if isinstance(kl, keras.layers.PReLU):
        ok = nl.type == "PReLU" and nl.weights["slope"].shape[0] == kl.alpha.shape[-1]
        return None if ok else "expected PReLU with one slope per channel"
    if isinstance(kl, keras.layers.Concatenate):
        return (
            None if nl.type == "Concat" and nl.param(0, 0) == 0 and kl.axis in (-1, 3) else "expected Concat"
        )
    if isinstance(kl, ScaledResidual):
        ok = nl.type == "Eltwise" and nl.param(0) == 1 and np.allclose(nl.param(1, ()), (kl.beta, 1.0))
        return None if ok else f"expected Eltwise sum with coefficients ({kl.beta}, 1)"
    if isinstance(kl, keras.layers.Add):
        ok = (nl.type == "BinaryOp" and nl.param(0, 0) == 0 and not nl.param(1, 0)) or (
            nl.type == "Eltwise" and nl.param(0) == 1 and not nl.param(1)
        )
        return None if ok else "expected an addition"
    if isinstance(kl, keras.layers.UpSampling2D):
        s = kl.size
        ok = (
            nl.type == "Interp"
            and nl.param(0) == 1
            and kl.interpolation == "nearest"
            and (nl.param(1), nl.param(2)) == (float(s[0]), float(s[1]))
        )
        return None if ok else f"expected nearest Interp x{s}"
    if isinstance(kl, PixelShuffle):
        ok = nl.type == "PixelShuffle" and nl.param(0) == kl.scale and nl.param(1, 0) in (0, 1)
        return None if ok else f"expected PixelShuffle x{kl.scale}"
    return f"no ncnn counterpart known for {type(kl).__name__}"


def _assign_ncnn_weights(layers: list[NcnnLayer], model: keras.Model, path: str) -> None:
    """Match the ncnn graph to `model` layer by layer (types, shapes and connections), then copy weights.

    ncnn lists layers in the exporter's topological order, which is the order our functional models
    create their layers in; Split layers only fan a blob out and have no Keras counterpart.
    """
    producer: dict[str, int] = {}
    kept: list[NcnnLayer] = []
    for layer in layers:
        if layer.type == "Split":
            for blob in layer.outputs:
                producer[blob] = producer[layer.inputs[0]]
            continue
        for blob in layer.outputs:
            producer[blob] = len(kept)
        kept.append(layer)
    keras_layers = model.layers
    if len(kept) != len(keras_layers):
        raise WeightsError(
            f"{path}: ncnn graph has {len(kept)} layers (without Split), {model.name} has {len(keras_layers)}"
        )
    index_of = {id(layer): i for i, layer in enumerate(keras_layers)}
    kernels: dict[int, list[np.ndarray]] = {}
    unshuffled: dict[int, int] = {}  # index of a mode 0 Reorg -> its stride
    for i, (nl, kl) in enumerate(zip(kept, keras_layers, strict=True)):
        problem = _ncnn_matches(nl, kl)
        if problem is not None:
            raise WeightsError(f"{path}: ncnn layer {nl.name} ({nl.type}) vs {kl.name}: {problem}")
        k_in = [index_of[id(t._keras_history[0])] for t in kl._inbound_nodes[0].input_tensors]
        try:
            n_in = [producer[blob] for blob in nl.inputs]
        except KeyError as e:
            raise WeightsError(f"{path}: ncnn layer {nl.name} reads blob {e} that nothing produces") from e
        if (sorted(k_in) != sorted(n_in)) if isinstance(kl, keras.layers.Add) else (k_in != n_in):
            raise WeightsError(f"{path}: ncnn layer {nl.name} is wired differently from {kl.name}")
        if nl.type == "Convolution":
            w = nl.weights["weight"].transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
            if n_in[0] in unshuffled:  # mode 0 Reorg: PyTorch's channel order -> ours
                s = unshuffled[n_in[0]]
                w = w[:, :, torch_to_tf_unshuffle_perm(w.shape[2] // (s * s), s)]
            kernels[i] = [w] + ([nl.weights["bias"]] if "bias" in nl.weights else [])
        elif nl.type == "Reorg" and nl.param(1, 0) == 0:
            unshuffled[i] = kl.scale
        elif nl.type == "PReLU":
            kernels[i] = [nl.weights["slope"].reshape(kl.alpha.shape)]
        elif nl.type == "PixelShuffle" and nl.param(1, 0) == 0:
            # Mode 0 is PyTorch's channel order; our PixelShuffle uses depth_to_space's, so permute
            # the output channels of the convolution feeding it.
            (src,) = n_in
            if src not in kernels:
                raise WeightsError(f"{path}: ncnn PixelShuffle {nl.name} is not fed by a convolution")
            channels = kernels[src][0].shape[-1] // (kl.scale * kl.scale)
            perm = torch_to_tf_unshuffle_perm(channels, kl.scale)
            kernels[src] = [kernels[src][0][..., perm]] + [b[perm] for b in kernels[src][1:]]
    for i, arrays in kernels.items():
        keras_layers[i].set_weights(arrays)


