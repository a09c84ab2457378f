"""A TF.js graph model of any generator (`model.json` + weight shards), for upscaling in the browser.

Written directly in TF.js's documented graph-model format: the Keras model is traced once with a
dynamic input, frozen (variables -> constants), cleaned by TensorFlow's own grappler passes, a few
ops fused the way TF.js runs them fastest, and the GraphDef written as protobuf JSON with every
Const's value moved to the weight shards (what the `tensorflowjs` converter does; that package
cannot be installed beside TensorFlow 2.21, see BUILD_NOTES "TF.js export").

The model's interface:
- input `lq`: float32 NHWC [1, H, W, 3] in [0, 1], any H and W (one file for every tile size);
- output `sr`: float32 [1, H*scale, W*scale, 3], not clipped.
- padding rule: the graph does NOT pad. RRDBNet x2 / x1 fold the input with a pixel-unshuffle by
  2 / 4, so their H and W must be multiples of `multiple` (2 / 4; 1 for every other model): the
  caller reflect-pads up to the multiple and crops the output (as `tiling`'s mod-pad and the web
  page's tiler do); other sizes fail in TF.js's Reshape.
- `userDefinedMetadata` in model.json: {"scale", "architecture", "name", "source", "multiple",
  "fp16", "input", "output"}.

Ops: only `TFJS_OPS`, each mapped by TF.js 4.22's converter and implemented by its CPU, WebGL,
WebGPU and WASM backends (tests/test_export_tfjs.py checks both against the npm packages). TF.js
has no SpaceToDepth, so the pixel-unshuffle is traced as rank-4 reshape -> transpose -> reshape; Keras'
nearest upsampling (a repeat: six ops per layer) as one ResizeNearestNeighbor. Generators in
float16 / bfloat16 / mixed precision are exported in float32 (fp16 is a storage option here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid

import keras
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import attr_value_pb2
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.framework import convert_to_constants
from tensorflow.python.grappler import cluster, tf_optimizer

import real_esrgan_tf
from real_esrgan_tf.export.common import ExportError, generator_scale
from real_esrgan_tf.models.layers import PixelUnshuffle, input_multiple

MODEL_JSON = "model.json"
SHARD_BYTES = 4 * 1024 * 1024  # the converter's default shard size (browser caches like small files)
INPUT_NAME, OUTPUT_NAME = "lq", "sr"
_SHARD_NAME = re.compile(r"group\d+-shard\d+of\d+\.bin")
_WEIGHTS_SUFFIX = re.compile(r"(\.weights)?\.(h5|keras|pth)$")

# TF op -> the TF.js kernels that run it (empty: the graph executor computes it without a kernel).
TFJS_KERNELS = {
    "Placeholder": (), "Const": (), "Identity": (), "Shape": (),
    "Conv2D": ("Conv2D",), "_FusedConv2D": ("FusedConv2D",), "BiasAdd": ("Add",),
    "AddV2": ("Add",), "Mul": ("Multiply",), "Neg": ("Neg",), "FloorDiv": ("FloorDiv",),
    "Relu": ("Relu",), "LeakyRelu": ("LeakyRelu",), "Prelu": ("Prelu",),
    "DepthToSpace": ("DepthToSpace",), "Reshape": ("Reshape",), "Transpose": ("Transpose",),
    "ExpandDims": ("Reshape",), "Squeeze": ("Reshape",), "Tile": ("Tile",), "Cast": ("Cast",),
    "StridedSlice": ("StridedSlice",), "Pack": ("Pack",), "ConcatV2": ("Concat",),
    "ResizeNearestNeighbor": ("ResizeNearestNeighbor",),
}
TFJS_OPS = frozenset(TFJS_KERNELS)
_FUSABLE_ACTIVATIONS = {"Relu": b"Relu", "LeakyRelu": b"LeakyRelu", "Prelu": b"Prelu"}
_WEIGHT_DTYPES = {1: "float32", 3: "int32", 10: "bool"}  # DataType enum -> TF.js dtype
# TensorProto fields holding values (cleared once the value is in a shard, as the converter does).
_VALUE_FIELDS = ("tensor_content", "half_val", "float_val", "double_val", "int_val", "string_val",
                 "scomplex_val", "int64_val", "bool_val", "uint32_val", "uint64_val")


# -- the Keras model TF.js can run ---------------------------------------------------------------
def _float32_generator(generator):
    """The generator in float32 (TF.js has no float16 tensors; fp16 is a storage option): models
    built in float16/bfloat16 or under a mixed policy are rebuilt with the same weights."""
    if all(w.dtype == "float32" for w in generator.weights) and all(
        getattr(layer, "compute_dtype", "float32") == "float32" for layer in generator.layers
    ):
        return generator
    from real_esrgan_tf.serve.keras_backend import rebuild_model

    return rebuild_model(generator, "float32")


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class ReshapePixelUnshuffle(keras.layers.Layer):
    """PixelUnshuffle (TensorFlow channel order) without SpaceToDepth, which TF.js lacks."""

    def __init__(self, scale: int, **kwargs):
        super().__init__(**kwargs)
        self.scale = int(scale)

    def call(self, x):
        # Rank 4 throughout (every backend's fast path): rows (b*h, i), columns (w, j) with j and the
        # channel c merged; swapping i and w gives channel i*s*C + j*C + c = (i*s + j)*C + c.
        s, channels = self.scale, x.shape[-1]
        shape = tf.shape(x)
        b, h, w = shape[0], shape[1] // s, shape[2] // s
        x = tf.reshape(x, tf.stack([b * h, s, w, s * channels]))
        x = tf.transpose(x, [0, 2, 1, 3])
        return tf.reshape(x, tf.stack([b, h, w, s * s * channels]))

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="real_esrgan_tf")
class ResizeNearestUpsample(keras.layers.Layer):
    """UpSampling2D(nearest) as one ResizeNearestNeighbor: Keras' repeat is ExpandDims + Tile +
    Reshape per axis (six ops and two full-size copies); integer factors give the same pixels."""

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = tuple(int(f) for f in size)

    def call(self, x):
        shape = tf.shape(x)
        return tf.image.resize(x, tf.stack([shape[1] * self.size[0], shape[2] * self.size[1]]), "nearest")

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def _tfjs_friendly_model(generator):
    """A functional copy sharing the generator's layers; pixel-unshuffle and nearest upsampling
    rewritten as ops TF.js runs (well)."""
    if not getattr(generator, "inputs", None):
        raise ExportError(f"{generator.name}: not a functional Keras model, cannot trace it for TF.js")
    def replace(layer):
        if isinstance(layer, PixelUnshuffle):
            return ReshapePixelUnshuffle(layer.scale, name=layer.name)
        if (isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "nearest"
                and layer.data_format == "channels_last"):
            return ResizeNearestUpsample(layer.size, name=layer.name)
        return layer  # the same layer object: weights shared, not copied

    return keras.models.clone_model(keras.Model(generator.inputs, generator.outputs), clone_function=replace)


# -- graph ----------------------------------------------------------------------------------------
def _frozen_graph(model):
    """(GraphDef, input tensor name, output tensor name) of model on [1, None, None, 3] float32."""
    spec = tf.TensorSpec([1, None, None, 3], tf.float32, name=INPUT_NAME)
    function = tf.function(lambda lq: {OUTPUT_NAME: tf.cast(model([lq], training=False), tf.float32)},
                           input_signature=[spec])
    frozen = convert_to_constants.convert_variables_to_constants_v2(function.get_concrete_function())
    return frozen.graph, frozen.inputs[0].name, frozen.outputs[0].name


def _grappler(graph, output_name: str):
    """TensorFlow's pruning, constant folding and arithmetic simplification of the frozen graph."""
    meta_graph = tf.compat.v1.train.export_meta_graph(graph_def=graph.as_graph_def(), graph=graph)
    meta_graph.collection_def["train_op"].node_list.value.append(output_name.split(":")[0])
    config = config_pb2.ConfigProto()
    rewrite = config.graph_options.rewrite_options
    rewrite.optimizers[:] = ["pruning", "constfold", "arithmetic", "dependency", "pruning", "constfold"]
    rewrite.min_graph_nodes = -1  # also tiny test graphs
    return tf_optimizer.OptimizeGraph(config, meta_graph, cluster=cluster.Cluster())


def _consumers(graph_def) -> dict:
    counts: dict[str, int] = {}
    for node in graph_def.node:
        for name in node.input:
            base = name.lstrip("^").split(":")[0]
            counts[base] = counts.get(base, 0) + 1
    return counts


def _const_value(node) -> np.ndarray:
    return tf.make_ndarray(node.attr["value"].tensor)


def _fuse_prelu(graph_def) -> None:
    """Keras' PReLU, relu(x) + (-alpha) * relu(-x) (five ops), -> one TF.js `Prelu(x, alpha)`."""
    nodes = {n.name: n for n in graph_def.node}
    counts = _consumers(graph_def)
    for add in list(graph_def.node):
        if add.op != "AddV2" or len(add.input) != 2:
            continue
        relu, mul = (nodes.get(name) for name in add.input)
        if relu is None or mul is None or relu.op != "Relu":
            relu, mul = mul, relu
        if relu is None or mul is None or relu.op != "Relu" or mul.op != "Mul":
            continue
        factors = [nodes.get(name) for name in mul.input]
        negative_alpha = next((n for n in factors if n is not None and n.op == "Const"), None)
        relu_neg = next((n for n in factors if n is not None and n.op == "Relu"), None)
        neg = nodes.get(relu_neg.input[0]) if relu_neg is not None else None
        if negative_alpha is None or neg is None or neg.op != "Neg" or neg.input[0] != relu.input[0]:
            continue
        if any(counts.get(n.name, 0) != 1 for n in (relu, mul, relu_neg, neg, negative_alpha)):
            continue
        alpha = -_const_value(negative_alpha)
        negative_alpha.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(alpha.reshape(-1)))
        dtype = add.attr["T"].type
        add.op = "Prelu"
        del add.input[:]
        add.input.extend([relu.input[0], negative_alpha.name])
        add.attr.clear()
        add.attr["T"].CopyFrom(attr_value_pb2.AttrValue(type=dtype))
        for dead in (relu, mul, relu_neg, neg):
            graph_def.node.remove(dead)


def _fuse_conv(graph_def) -> None:
    """Conv2D -> BiasAdd [-> Relu | LeakyRelu | Prelu] as one `_FusedConv2D` (one WebGL program)."""
    nodes = {n.name: n for n in graph_def.node}
    counts = _consumers(graph_def)
    by_input: dict[str, list] = {}
    for node in graph_def.node:
        for name in node.input:
            by_input.setdefault(name, []).append(node)
    for conv in list(graph_def.node):
        consumers = by_input.get(conv.name, [])
        if conv.op != "Conv2D" or counts.get(conv.name, 0) != 1 or len(consumers) != 1:
            continue
        bias_add = consumers[0]
        if bias_add.op != "BiasAdd" or bias_add.input[0] != conv.name:
            continue
        bias = nodes.get(bias_add.input[1])
        if bias is None or bias.op != "Const":
            continue
        fused_ops, args, last = [b"BiasAdd"], [bias.name], bias_add
        followers = by_input.get(bias_add.name, [])
        single = counts.get(bias_add.name, 0) == 1 and len(followers) == 1
        if single and followers[0].op in _FUSABLE_ACTIVATIONS:
            activation = followers[0]
            fused_ops.append(_FUSABLE_ACTIVATIONS[activation.op])
            if activation.op == "Prelu":
                args.append(activation.input[1])
            elif activation.op == "LeakyRelu":
                conv.attr["leakyrelu_alpha"].CopyFrom(activation.attr["alpha"])
            last = activation
        conv.op = "_FusedConv2D"
        conv.input.extend(args)
        conv.attr["fused_ops"].CopyFrom(attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(
            s=fused_ops)))
        conv.attr["num_args"].CopyFrom(attr_value_pb2.AttrValue(i=len(args)))
        conv.attr["epsilon"].CopyFrom(attr_value_pb2.AttrValue(f=0.0))
        # The fused node takes the name of the last op it replaces: consumers need no rewiring.
        for dead in {bias_add.name: bias_add, last.name: last}.values():
            graph_def.node.remove(dead)
        conv.name = last.name


def tfjs_graph(generator):
    """(GraphDef ready for TF.js, input tensor name, output tensor name) of a Keras generator."""
    model = _tfjs_friendly_model(_float32_generator(generator))
    graph, input_name, output_name = _frozen_graph(model)
    graph_def = _grappler(graph, output_name)
    _fuse_prelu(graph_def)
    _fuse_conv(graph_def)
    unsupported = sorted({n.op for n in graph_def.node} - TFJS_OPS)
    unsupported += sorted({f"{n.op} to {n.attr['DstT'].type}" for n in graph_def.node
                           if n.op == "Cast" and n.attr["DstT"].type not in _WEIGHT_DTYPES})
    if unsupported:
        raise ExportError(f"{generator.name}: ops TF.js cannot run: {', '.join(unsupported)}")
    return graph_def, input_name, output_name


# -- model.json and shards --------------------------------------------------------------------------
def _extract_weights(graph_def, fp16: bool) -> tuple[list[dict], bytes]:
    """Moves every Const's value out of the graph: (weightsManifest entries, their bytes)."""
    entries, chunks = [], []
    for node in graph_def.node:
        if node.op != "Const":
            continue
        tensor = node.attr["value"].tensor
        dtype = _WEIGHT_DTYPES.get(tensor.dtype)
        if dtype is None:
            raise ExportError(f"{node.name}: constant of dtype {tensor.dtype} (TF.js: float32, int32, bool)")
        value = _const_value(node)
        entry = {"name": node.name, "shape": list(value.shape), "dtype": dtype}
        if dtype == "float32" and fp16:
            value = value.astype(np.float16)
            entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
        elif dtype == "bool":
            value = value.astype(np.uint8)
        chunks.append(np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<")).tobytes())
        entries.append(entry)
        for field in _VALUE_FIELDS:
            tensor.ClearField(field)
    return entries, b"".join(chunks)


def _signature(input_name: str, output_name: str) -> dict:
    def info(name, height_width):
        dims = [{"size": "1"}] + [{"size": str(d)} for d in height_width] + [{"size": "3"}]
        return {"name": name, "dtype": "DT_FLOAT", "tensorShape": {"dim": dims}}

    return {"inputs": {INPUT_NAME: info(input_name, (-1, -1))},
            "outputs": {OUTPUT_NAME: info(output_name, (-1, -1))}}


def model_metadata(generator, *, fp16: bool, source: str) -> dict:
    """What a page needs to run the model: scale, input multiple, names (model.json userDefinedMetadata)."""
    name = _WEIGHTS_SUFFIX.sub("", os.path.basename(os.path.normpath(source))) if source else generator.name
    return {
        "scale": generator_scale(generator),
        "architecture": type(generator).__name__ if type(generator).__name__ != "Functional" else "keras",
        "name": name,
        "source": source,
        "multiple": input_multiple(generator),
        "fp16": bool(fp16),
        "input": {"name": INPUT_NAME, "layout": "NHWC", "range": [0, 1]},
        "output": {"name": OUTPUT_NAME, "layout": "NHWC", "clipped": False},
    }


def _is_previous_export(folder: str) -> bool:
    names = os.listdir(folder)
    return all(n == MODEL_JSON or _SHARD_NAME.fullmatch(n) for n in names)


def _write_files(tmp: str, model_json: dict, weights: bytes) -> None:
    count = max(1, -(-len(weights) // SHARD_BYTES))
    paths = []
    for i in range(count):
        path = f"group1-shard{i + 1}of{count}.bin"
        with open(os.path.join(tmp, path), "wb") as f:
            f.write(weights[i * SHARD_BYTES : (i + 1) * SHARD_BYTES])
        paths.append(path)
    model_json["weightsManifest"][0]["paths"] = paths
    with open(os.path.join(tmp, MODEL_JSON), "w", encoding="utf-8") as f:
        json.dump(model_json, f, separators=(",", ":"))


def write_tfjs(generator, folder: str, *, fp16: bool = False, source: str = "") -> str:
    """Writes `folder/model.json` and `folder/group1-shard*of*.bin`; returns `folder`.

    Written into a temporary sibling folder and renamed at the end: a failure leaves nothing
    behind, and an earlier TF.js export in `folder` is replaced only once the new one is complete.

    Args:
      generator: a functional Keras generator with a `scale` (RRDBNet, SRVGGNetCompact, a blend).
      folder: the model folder to create (or an empty folder, or an earlier TF.js export).
      fp16: store float32 weights as float16 (half the download; TF.js dequantises at load).
      source: where the weights came from (a pretrained name or path), kept in the metadata.
    Returns:
      `folder`. Raises ExportError (one line naming the folder) for a folder that cannot be written.
    """
    if os.path.exists(folder) and not (os.path.isdir(folder) and _is_previous_export(folder)):
        raise ExportError(f"{folder}: exists and is not an earlier TF.js export; choose another --output")
    parent = os.path.dirname(os.path.abspath(folder))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ExportError(f"{folder}: cannot write the TF.js model ({parent} is not a folder)")
    metadata = model_metadata(generator, fp16=fp16, source=source)
    graph_def, input_name, output_name = tfjs_graph(generator)
    entries, weights = _extract_weights(graph_def, fp16)
    model_json = {
        "format": "graph-model",
        "generatedBy": tf.__version__,
        "convertedBy": f"real-esrgan-tf {real_esrgan_tf.__version__}",
        "signature": _signature(input_name, output_name),
        "userDefinedMetadata": metadata,
        "modelTopology": json_format.MessageToDict(graph_def),
        "weightsManifest": [{"paths": [], "weights": entries}],
    }
    tmp = os.path.join(parent, f".tmp-tfjs-{uuid.uuid4().hex}")
    old = os.path.join(parent, f".old-tfjs-{uuid.uuid4().hex}")
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(tmp)  # not mkdtemp: its 0700 mode would hide the model from a web server's user
        _write_files(tmp, model_json, weights)
        if os.path.isdir(folder):
            os.rename(folder, old)
        os.rename(tmp, folder)
    except BaseException as e:
        if os.path.isdir(old) and not os.path.exists(folder):
            os.rename(old, folder)  # put the earlier export back
        if isinstance(e, OSError):
            raise ExportError(f"{folder}: cannot write the TF.js model ({e.strerror or e})") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder


def write(generator, options) -> str:
    """`export --format tfjs`: `write_tfjs` with the command's `ExportOptions` (output, fp16, source)."""
    return write_tfjs(generator, options.output, fp16=options.fp16, source=options.source)
