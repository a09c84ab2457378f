"""`export --format ncnn`: NAME.param + NAME.bin laid out as the official realesrgan-ncnn-vulkan models.

The Keras graph is walked in layer order (the order the official files list their layers in) and
each layer becomes the ncnn layer the official files use for it:

  Conv2D (+ fused relu / leaky_relu / a following ReLU/LeakyReLU)  Convolution 9=1 / 9=2 -23310=1,slope
  PReLU (one slope per channel)                                    PReLU 0=C
  Concatenate (channels)                                           Concat
  ScaledResidual (`r * beta + x`)                                  Eltwise 0=1 -23301=2,beta,1
  Add (two inputs)                                                 BinaryOp (0 = add)
  UpSampling2D nearest                                             Interp 0=1 1=sh 2=sw
  PixelShuffle                                                     PixelShuffle 0=s (PyTorch order)
  PixelUnshuffle (RRDBNet x2 / x1)                                 Reorg 0=s (PyTorch order)

Weights are stored in fp16 with ncnn's tag (as the official files), biases and PReLU slopes in fp32.
Our (un)shuffles use TensorFlow's channel order; the adjacent convolution's channels are permuted
back to PyTorch's so that the file holds what the official .pth would give (mode 1, TF order, is
used only where no convolution is next to the shuffle). Splits follow onnx2ncnn's rules
(`weights.ncnn_format.insert_splits`). Layer and blob names are the Keras layer names; the input
and output blobs are `ExportOptions.ncnn_blobs` (official: data, output).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from real_esrgan_tf.export.common import ExportError, generator_scale
from real_esrgan_tf.weights.ncnn_format import (
    NcnnFormatError,
    NcnnLayer,
    format_bin,
    format_param,
    insert_splits,
)

_ACTIVATION_PARAMS = {"linear": {}, "relu": {9: 1}, "leaky_relu": {9: 2, 10: (0.2,)}, "sigmoid": {9: 4}}


def _unshuffle_perm(channels: int, scale: int) -> np.ndarray:
    from real_esrgan_tf.models.layers import torch_to_tf_unshuffle_perm

    return np.asarray(torch_to_tf_unshuffle_perm(channels, scale))


class _Graph:
    """The generator's layers with their producers and consumers (one call per layer)."""

    def __init__(self, model):
        import keras

        self.model = model
        self.layers = list(model.layers)
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ExportError(f"{model.name}: ncnn export needs one input and one output")
        self.inputs: dict[int, list] = {}
        self.consumers: dict[int, list] = {id(layer): [] for layer in self.layers}
        for layer in self.layers:
            nodes = layer._inbound_nodes
            if isinstance(layer, keras.Model) or len(nodes) != 1:
                raise ExportError(
                    f"{model.name}: layer {layer.name} is a nested model or called more than once; "
                    "ncnn export needs a flat functional graph"
                )
            sources = [t._keras_history[0] for t in nodes[0].input_tensors]
            self.inputs[id(layer)] = sources
            for source in sources:
                self.consumers[id(source)].append(layer)
        self.output_layer = model.outputs[0]._keras_history[0]

    def only_consumer(self, layer):
        consumers = self.consumers[id(layer)]
        return consumers[0] if len(consumers) == 1 and layer is not self.output_layer else None


def _weights32(layer) -> list[np.ndarray]:
    return [np.asarray(w).astype(np.float32) for w in layer.get_weights()]


def _convolution(layer, model_name: str) -> NcnnLayer:
    config = layer.get_config()
    kh, kw = config["kernel_size"]
    problem = None
    if tuple(config["strides"]) != (1, 1) or tuple(config["dilation_rate"]) != (1, 1):
        problem = "strides and dilation must be 1 (an upscaling generator has no strided convolution)"
    elif config.get("groups", 1) != 1 or config.get("data_format") == "channels_first":
        problem = "grouped or channels_first convolutions are not supported"
    elif config["padding"] == "same" and (kh % 2 == 0 or kw % 2 == 0):
        problem = "'same' padding of an even kernel is asymmetric"
    elif config["activation"] not in _ACTIVATION_PARAMS:
        problem = f"activation {config['activation']!r} has no ncnn fused counterpart"
    if problem:
        raise ExportError(f"{model_name}: layer {layer.name}: {problem}")
    weights = _weights32(layer)
    kernel = weights[0].transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> ncnn (out, in, kh, kw)
    pad_h, pad_w = (kh // 2, kw // 2) if config["padding"] == "same" else (0, 0)
    params: dict = {0: kernel.shape[0], 1: kw}
    if kh != kw:
        params[11] = kh
    if pad_w:
        params[4] = pad_w
    if pad_h != pad_w:
        params[14] = pad_h
    params[5] = int(config["use_bias"])
    params[6] = int(kernel.size)
    params.update(_ACTIVATION_PARAMS[config["activation"]])
    tensors = {"weight": kernel}
    if config["use_bias"]:
        tensors["bias"] = weights[1]
    return NcnnLayer("Convolution", layer.name, (), (layer.name,), params, tensors)


def _relu_slope(layer) -> float | None:
    """The negative slope of a ReLU / LeakyReLU layer that is a plain (leaky) ReLU, else None."""
    import keras

    if not isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU)):
        return None
    config = layer.get_config()
    if isinstance(layer, keras.layers.LeakyReLU):
        return float(config["negative_slope"])
    plain = config.get("max_value") is None and not config.get("threshold")
    return float(config.get("negative_slope") or 0.0) if plain else None


def ncnn_layers(model, in_blob: str = "data", out_blob: str = "output") -> list[NcnnLayer]:
    """The ncnn layers of a Keras generator (without Splits, see `insert_splits`), weights in fp32.

    Raises ExportError naming the first layer that has no ncnn counterpart.
    """
    import keras

    from real_esrgan_tf.models.layers import PixelShuffle, PixelUnshuffle, ScaledResidual

    graph = _Graph(model)
    blob: dict[int, str] = {}  # Keras layer -> the ncnn blob holding its output
    made: dict[int, NcnnLayer] = {}  # Keras layer -> the ncnn layer that computes it
    in_perm: dict[int, np.ndarray] = {}  # Conv2D -> input channel permutation (after a Reorg)
    result: list[NcnnLayer] = []

    def emit(layer, ncnn_layer: NcnnLayer) -> None:
        ncnn_layer.inputs = tuple(blob[id(src)] for src in graph.inputs[id(layer)])
        result.append(ncnn_layer)
        made[id(layer)] = ncnn_layer
        blob[id(layer)] = ncnn_layer.outputs[0]

    for layer in graph.layers:
        sources = graph.inputs[id(layer)]
        producer = made.get(id(sources[0])) if len(sources) == 1 else None
        if isinstance(layer, keras.layers.InputLayer):
            emit(layer, NcnnLayer("Input", layer.name, (), (in_blob,)))
        elif isinstance(layer, keras.layers.Conv2D) and type(layer) is keras.layers.Conv2D:
            conv = _convolution(layer, model.name)
            if id(layer) in in_perm:
                weight = np.empty_like(conv.weights["weight"])
                weight[:, in_perm[id(layer)]] = conv.weights["weight"]
                conv.weights["weight"] = weight
            emit(layer, conv)
        elif _relu_slope(layer) is not None:
            slope = _relu_slope(layer)
            fusable = (
                producer is not None
                and producer.type == "Convolution"
                and 9 not in producer.params
                and graph.only_consumer(sources[0]) is layer
            )
            if fusable:  # what ncnnoptimize does: the convolution applies the activation
                producer.params.update({9: 1} if slope == 0.0 else {9: 2, 10: (slope,)})
                made[id(layer)], blob[id(layer)] = producer, blob[id(sources[0])]
            else:
                emit(layer, NcnnLayer("ReLU", layer.name, (), (layer.name,), {0: slope} if slope else {}))
        elif isinstance(layer, keras.layers.PReLU):
            alpha = _weights32(layer)[0]
            if alpha.ndim != 3 or alpha.shape[:2] != (1, 1):
                raise ExportError(f"{model.name}: layer {layer.name}: PReLU slopes must be shared over H, W")
            slope = alpha.reshape(-1)
            emit(layer, NcnnLayer("PReLU", layer.name, (), (layer.name,), {0: slope.size}, {"slope": slope}))
        elif isinstance(layer, keras.layers.Concatenate):
            if layer.axis not in (-1, 3):
                raise ExportError(f"{model.name}: layer {layer.name}: only channel concatenation exports")
            emit(layer, NcnnLayer("Concat", layer.name, (), (layer.name,)))
        elif isinstance(layer, ScaledResidual):
            emit(layer, NcnnLayer("Eltwise", layer.name, (), (layer.name,), {0: 1, 1: (layer.beta, 1.0)}))
        elif isinstance(layer, keras.layers.Add):
            if len(sources) == 2:
                emit(layer, NcnnLayer("BinaryOp", layer.name, (), (layer.name,)))
            else:
                emit(layer, NcnnLayer("Eltwise", layer.name, (), (layer.name,), {0: 1}))
        elif isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "nearest":
            sh, sw = (float(v) for v in layer.size)
            emit(layer, NcnnLayer("Interp", layer.name, (), (layer.name,), {0: 1, 1: sh, 2: sw}))
        elif isinstance(layer, PixelShuffle):
            s = layer.scale
            feeds_only_this = graph.only_consumer(sources[0]) is layer
            if producer is not None and producer.type == "Convolution" and feeds_only_this:
                # Mode 0 (PyTorch order, as the official files): permute the convolution's outputs.
                perm = _unshuffle_perm(producer.weights["weight"].shape[0] // (s * s), s)
                for key, value in producer.weights.items():
                    reordered = np.empty_like(value)
                    reordered[perm] = value
                    producer.weights[key] = reordered
                params = {0: s}
            else:
                params = {0: s, 1: 1}  # TensorFlow's channel order
            emit(layer, NcnnLayer("PixelShuffle", layer.name, (), (layer.name,), params))
        elif isinstance(layer, PixelUnshuffle):
            s = layer.scale
            consumer = graph.only_consumer(layer)
            if consumer is not None and type(consumer) is keras.layers.Conv2D:
                channels = int(layer.input.shape[-1])
                in_perm[id(consumer)] = _unshuffle_perm(channels, s)
                params = {0: s}  # mode 0: PyTorch's pixel_unshuffle order, what pnnx writes
            else:
                params = {0: s, 1: 1}
            emit(layer, NcnnLayer("Reorg", layer.name, (), (layer.name,), params))
        else:
            raise ExportError(
                f"{model.name}: layer {layer.name} ({type(layer).__name__}) has no ncnn counterpart; "
                "ncnn export covers the RRDBNet and SRVGGNetCompact generators"
            )

    final = blob[id(graph.output_layer)]
    names = {b for layer in result for b in layer.outputs} - {in_blob, final}
    if in_blob == out_blob or {in_blob, out_blob} & names:
        raise ExportError(f"{model.name}: ncnn blob names {in_blob!r}, {out_blob!r} clash with layer names")
    for ncnn_layer in result:
        ncnn_layer.inputs = tuple(out_blob if b == final else b for b in ncnn_layer.inputs)
        ncnn_layer.outputs = tuple(out_blob if b == final else b for b in ncnn_layer.outputs)
    return result


def _check_blob_names(blobs) -> tuple[str, str]:
    try:
        in_blob, out_blob = blobs
    except (TypeError, ValueError):
        raise ExportError(f"ncnn blob names must be two names (input, output), got {blobs!r}") from None
    for name in (in_blob, out_blob):
        if not isinstance(name, str) or not name or len(name) > 255 or any(c.isspace() for c in name):
            raise ExportError(f"ncnn blob name {name!r} must be 1-255 characters without spaces")
    return in_blob, out_blob


def output_paths(output: str, model_name: str) -> tuple[str, str]:
    """(NAME.param, NAME.bin) for `--output`: a .param path, a path without suffix, or a folder."""
    output = os.fspath(output)
    if os.path.isdir(output):
        output = os.path.join(output, model_name)
    stem = output[: -len(".param")] if output.endswith(".param") else output
    return stem + ".param", stem + ".bin"


def write_files(param_path: str, bin_path: str, param_text: str, bin_data: bytes) -> None:
    """Both files via temps in their folder and renames, the .param last; on failure nothing new stays."""
    folder = os.path.dirname(os.path.abspath(param_path))
    temps: list[str] = []
    placed: list[str] = []
    try:
        os.makedirs(folder, exist_ok=True)
        umask = os.umask(0)
        os.umask(umask)
        for path, data in ((bin_path, bin_data), (param_path, param_text.encode("ascii"))):
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path)[-32:], dir=folder)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        for tmp, path in zip(temps, (bin_path, param_path), strict=True):
            os.replace(tmp, path)
            placed.append(path)
    except OSError as e:
        for path in temps + placed:
            if os.path.exists(path):
                os.unlink(path)
        raise ExportError(f"{param_path}: cannot write the ncnn files ({e.strerror or e})") from None
    except BaseException:
        for path in temps + placed:
            if os.path.exists(path):
                os.unlink(path)
        raise


def write_ncnn(generator, output: str, blobs: tuple[str, str] = ("data", "output")) -> str:
    """Writes NAME.param and NAME.bin (fp16 weights, as the official files); returns the .param path.

    output: a .param path, a path without suffix, or a folder (NAME = the model's name).
    blobs: the input and output blob names.
    """
    name = getattr(generator, "name", "generator")
    try:
        generator_scale(generator)
    except ExportError:
        raise ExportError(
            f"{name}: not a super-resolution generator (no `scale`); only generators export to ncnn"
        ) from None
    in_blob, out_blob = _check_blob_names(blobs)
    layers = insert_splits(ncnn_layers(generator, in_blob, out_blob))
    try:
        bin_data = format_bin(layers, fp16=True)
    except NcnnFormatError as e:
        raise ExportError(f"{name}: {e}") from None
    param_path, bin_path = output_paths(output, name)
    write_files(param_path, bin_path, format_param(layers), bin_data)
    return param_path


def write(generator, options) -> str:
    """`export --format ncnn` (`export.formats`): `write_ncnn` with `options.output`, `options.ncnn_blobs`."""
    return write_ncnn(generator, options.output, options.ncnn_blobs)
