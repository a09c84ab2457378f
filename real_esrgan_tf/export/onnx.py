"""ONNX for chaiNNer, vs-mlrt, ONNX Runtime, OpenVINO and TensorRT, written from the Keras layer graph.

The graph is written node by node with the `onnx` package (no tf2onnx, no torch): the Keras
functional graph is walked in its own execution order and each layer becomes the ONNX ops that
compute it in NCHW (BUILD_NOTES "ONNX export": this gives the graph the official
`scripts/pytorch2onnx.py` gives, Conv/PRelu/Resize/DepthToSpace, where Keras' own tf2onnx export
gives NHWC Transposes and PReLU/UpSampling spelled out in a dozen ops each).

The file: input `input` [N, 3, H, W] RGB in [0, 1], output `output` [N, 3, H*s, W*s] (not clipped),
dynamic N/H/W, opset 17 with IR version 8 (ONNX 1.12: what runtimes from 2022 on load). The x2 / x1
RRDBNet reflect-pads H and W up to a multiple of 2 / 4 inside the graph and crops the output (the
official mod_pad), so the file takes any size like the other scales. `fp16`: weights, compute and
input/output in float16 (what chaiNNer writes and reads for a half-precision ONNX model).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from real_esrgan_tf.export.common import ExportError

OPSET = 17
IR_VERSION = 8
INPUT_NAME = "input"
OUTPUT_NAME = "output"
PRODUCER = "real-esrgan-tf"

# Keras axis of an NHWC tensor -> ONNX axis of the same tensor in NCHW.
_NCHW_AXIS = {-1: 1, 3: 1, 1: 2, -3: 2, 2: 3, -2: 3, 0: 0, -4: 0}


def _onnx():
    try:
        import onnx
    except ImportError as e:  # the `onnx` extra
        raise ImportError(f"ONNX export needs the onnx package (the `onnx` extra): {e}") from None
    return onnx


@dataclasses.dataclass(frozen=True)
class _Tensor:
    """A value of the ONNX graph standing for a Keras tensor (a leaf for keras' tree utilities)."""

    name: str


class _GraphWriter:
    """Collects the nodes and initialisers of one graph; `layer` translates one Keras layer call."""

    def __init__(self, float_type: np.dtype, where: str):
        self.onnx = _onnx()
        self.float_type = np.dtype(float_type)
        self.where = where  # names the model in errors
        self.nodes = []
        self.initializers = []
        self._used: set[str] = set()
        self.unshuffle = 1  # product of the SpaceToDepth blocks: input sides must be multiples of it

    # -- building blocks ------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self._used:
            k += 1
            name = f"{hint}_{k}"
        self._used.add(name)
        return name

    def const(self, array, hint: str, keep_type: bool = False) -> str:
        """An initialiser; float arrays take the graph's float type unless `keep_type`."""
        array = np.asarray(array)
        if array.dtype.kind == "f" and not keep_type:
            array = array.astype(self.float_type)
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attrs) -> str:
        out = self.fresh(hint)
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def fail(self, layer, reason: str):
        raise ExportError(f"{self.where}: layer {layer.name!r} ({type(layer).__name__}) {reason}")

    # -- the graph ------------------------------------------------------------------------------
    def run_model(self, model, inputs: list[_Tensor]) -> list[_Tensor]:
        """Translates a functional model applied to `inputs` (recursing into nested models)."""
        if not hasattr(model, "_run_through_graph") or not hasattr(model, "_nodes_by_depth"):
            raise ExportError(f"{self.where}: {type(model).__name__} is not a functional Keras model")

        def translate(layer):
            return lambda *args, **kwargs: self.layer(layer, args, kwargs)

        import keras

        out = model._run_through_graph(inputs, operation_fn=translate)
        return [t for t in keras.tree.flatten(out)]

    def layer(self, layer, args, kwargs) -> _Tensor:
        import keras

        tensors = [t.name for t in keras.tree.flatten((args, kwargs)) if isinstance(t, _Tensor)]
        if hasattr(layer, "_run_through_graph") and hasattr(layer, "_nodes_by_depth"):  # a nested model
            outs = self.run_model(layer, [_Tensor(t) for t in tensors])
            if len(outs) != 1:
                self.fail(layer, "has several outputs")
            return outs[0]
        handler = None
        for cls in type(layer).__mro__:
            handler = getattr(self, f"_layer_{cls.__name__}", None)
            if handler is not None:
                break
        if handler is None:
            self.fail(layer, "has no ONNX translation here")
        return _Tensor(handler(layer, tensors))

    # -- layers (NCHW) ----------------------------------------------------------------------------
    def activation(self, fn, x: str, hint: str, layer) -> str:
        name = getattr(fn, "__name__", str(fn))
        if name == "linear":
            return x
        if name == "relu":
            return self.node("Relu", [x], hint + "_relu")
        if name == "leaky_relu":  # keras.activations.leaky_relu: slope 0.2
            return self.node("LeakyRelu", [x], hint + "_lrelu", alpha=0.2)
        if name in ("sigmoid", "tanh"):
            return self.node(name.capitalize(), [x], f"{hint}_{name}")
        self.fail(layer, f"uses activation {name!r}, which has no ONNX translation here")

    def _layer_InputLayer(self, layer, xs):
        return xs[0]

    def _layer_Dropout(self, layer, xs):  # inference: identity
        return xs[0]

    def _layer_Identity(self, layer, xs):
        return xs[0]

    def _layer_Conv2D(self, layer, xs):
        if layer.data_format != "channels_last":
            self.fail(layer, "is channels_first")
        weights = [np.asarray(w, np.float32) for w in layer.get_weights()]
        kernel = weights[0].transpose(3, 2, 0, 1)  # HWIO -> OIHW
        kh, kw = kernel.shape[2:]
        strides, dilations = list(layer.strides), list(layer.dilation_rate)
        attrs = {"kernel_shape": [kh, kw], "strides": strides, "dilations": dilations, "group": layer.groups}
        if layer.padding == "same" and strides == [1, 1]:
            span_h, span_w = dilations[0] * (kh - 1), dilations[1] * (kw - 1)
            attrs["pads"] = [span_h // 2, span_w // 2, span_h - span_h // 2, span_w - span_w // 2]
        elif layer.padding == "same":
            attrs["auto_pad"] = "SAME_UPPER"  # TensorFlow puts the odd pixel at the end too
        elif layer.padding != "valid":
            self.fail(layer, f"has padding {layer.padding!r}")
        inputs = [xs[0], self.const(kernel, layer.name + ".weight")]
        if layer.use_bias:
            inputs.append(self.const(weights[1], layer.name + ".bias"))
        y = self.node("Conv", inputs, layer.name, **attrs)
        return self.activation(layer.activation, y, layer.name, layer)

    def _layer_Activation(self, layer, xs):
        return self.activation(layer.activation, xs[0], layer.name, layer)

    def _layer_ReLU(self, layer, xs):
        if layer.threshold:
            self.fail(layer, "has a threshold")
        x = xs[0]
        if layer.negative_slope:
            x = self.node("LeakyRelu", [x], layer.name, alpha=float(layer.negative_slope))
        else:
            x = self.node("Relu", [x], layer.name)
        if layer.max_value is not None:
            bound = self.const(np.array(layer.max_value, np.float32), layer.name + ".max")
            x = self.node("Min", [x, bound], layer.name + "_max")
        return x

    def _layer_LeakyReLU(self, layer, xs):
        return self.node("LeakyRelu", xs, layer.name, alpha=float(layer.negative_slope))

    def _layer_PReLU(self, layer, xs):
        alpha = np.asarray(layer.get_weights()[0], np.float32)  # (H|1, W|1, C)
        if alpha.ndim != 3 or alpha.shape[:2] != (1, 1):
            self.fail(layer, f"has slopes of shape {list(alpha.shape)} (only per-channel slopes export)")
        slope = self.const(alpha.reshape(-1, 1, 1), layer.name + ".weight")  # (C, 1, 1) broadcasts on NCHW
        return self.node("PRelu", [xs[0], slope], layer.name)

    def _binary_chain(self, op, layer, xs):
        if len(xs) < 2:
            self.fail(layer, "has fewer than two inputs")
        y = xs[0]
        for k, x in enumerate(xs[1:]):
            y = self.node(op, [y, x], layer.name if k == len(xs) - 2 else f"{layer.name}_{k}")
        return y

    def _layer_Add(self, layer, xs):
        return self._binary_chain("Add", layer, xs)

    def _layer_Subtract(self, layer, xs):
        return self._binary_chain("Sub", layer, xs)

    def _layer_Multiply(self, layer, xs):
        return self._binary_chain("Mul", layer, xs)

    def _layer_Maximum(self, layer, xs):
        return self.node("Max", xs, layer.name)

    def _layer_Minimum(self, layer, xs):
        return self.node("Min", xs, layer.name)

    def _layer_Concatenate(self, layer, xs):
        if layer.axis not in _NCHW_AXIS:
            self.fail(layer, f"concatenates on axis {layer.axis}")
        return self.node("Concat", xs, layer.name, axis=_NCHW_AXIS[layer.axis])

    def _resize(self, x, scales, mode, hint):
        scales = self.const(np.array([1, 1, *scales], np.float32), hint + ".scales", keep_type=True)
        if mode == "nearest":  # out[i] = in[floor(i / s)]: exact pixel replication for integer s
            attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                     "nearest_mode": "floor"}
        else:  # half-pixel centres, edge clamped: TF / PyTorch (align_corners=False) bilinear
            attrs = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
        return self.node("Resize", [x, "", scales], hint, **attrs)

    def _layer_UpSampling2D(self, layer, xs):
        if layer.data_format != "channels_last":
            self.fail(layer, "is channels_first")
        if layer.interpolation not in ("nearest", "bilinear"):
            self.fail(layer, f"uses {layer.interpolation!r} interpolation")
        return self._resize(xs[0], [float(s) for s in layer.size], layer.interpolation, layer.name)

    def _layer_BilinearUpsample2x(self, layer, xs):
        return self._resize(xs[0], [2.0, 2.0], "bilinear", layer.name)

    def _layer_PixelUnshuffle(self, layer, xs):
        # ONNX SpaceToDepth puts pixel (i, j) of channel c at (i*s + j)*C + c: TensorFlow's order.
        self.unshuffle *= layer.scale
        return self.node("SpaceToDepth", xs, layer.name, blocksize=layer.scale)

    def _layer_PixelShuffle(self, layer, xs):
        # DCR reads channel (i*s + j)*C + c as pixel (i, j) of channel c (TensorFlow's depth_to_space);
        # CRD would be PyTorch's PixelShuffle order, which our weights are permuted away from at load.
        return self.node("DepthToSpace", xs, layer.name, blocksize=layer.scale, mode="DCR")

    def _layer_ScaledResidual(self, layer, xs):
        beta = self.const(np.array(layer.beta, np.float32), layer.name + ".beta")
        scaled = self.node("Mul", [xs[0], beta], layer.name + "_scaled")
        return self.node("Add", [scaled, xs[1]], layer.name)

    def _layer_Rescaling(self, layer, xs):
        scale = self.const(np.array(layer.scale, np.float32), layer.name + ".scale")
        offset = self.const(np.array(layer.offset, np.float32), layer.name + ".offset")
        return self.node("Add", [self.node("Mul", [xs[0], scale], layer.name + "_mul"), offset], layer.name)

    # -- the official mod_pad ---------------------------------------------------------------------
    def mod_pad(self, x: str, multiple: int) -> tuple[str, str]:
        """Reflect-pads x's H and W at the bottom/right up to a multiple; returns (padded, size [H, W])."""
        i64 = np.int64
        shape = self.node("Shape", [x], "input_shape")
        size = self.node("Slice", [shape, self.const(np.array([2], i64), "hw_start"),
                                   self.const(np.array([4], i64), "hw_end")], "input_hw")
        m = self.const(np.array(multiple, i64), "multiple")
        rem = self.node("Mod", [self.node("Sub", [m, self.node("Mod", [size, m], "hw_mod")], "hw_gap"), m],
                        "hw_pad")
        pads = self.node("Concat", [self.const(np.zeros(6, i64), "pads_before"), rem], "pads", axis=0)
        return self.node("Pad", [x, pads], "mod_pad", mode="reflect"), size

    def crop(self, y: str, size: str, scale: int, output: str):
        ends = self.node("Mul", [size, self.const(np.array(scale, np.int64), "scale")], "output_hw")
        axes = self.const(np.array([2, 3], np.int64), "hw_axes")
        starts = self.const(np.zeros(2, np.int64), "hw_zero")
        self.nodes.append(self.onnx.helper.make_node("Slice", [y, starts, ends, axes], [output], name=output))

    def rename(self, old: str, new: str) -> None:
        for n in self.nodes:
            n.input[:] = [new if v == old else v for v in n.input]
            n.output[:] = [new if v == old else v for v in n.output]


def _check_generator(generator, where: str) -> None:
    """Refuses what is not an RGB image generator (a discriminator, a multi-input model)."""
    inputs, outputs = getattr(generator, "inputs", None), getattr(generator, "outputs", None)
    if not inputs or not outputs:
        raise ExportError(f"{where}: not a functional Keras model")
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(f"{where}: a generator has one input and one output, this model has "
                          f"{len(inputs)} and {len(outputs)}")
    in_shape, out_shape = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if len(in_shape) != 4 or in_shape[-1] != 3 or len(out_shape) != 4 or out_shape[-1] != 3:
        raise ExportError(f"{where}: not an RGB image generator (input {list(in_shape)}, output "
                          f"{list(out_shape)}; a discriminator cannot be exported)")


def provenance(source: str) -> dict[str, str]:
    """Where the weights came from, for the file's metadata: what --model named, and what it is.

    A training folder adds its run record (`config.toml`) and the exported EMA file's SHA-256; a
    weights file its SHA-256; a pretrained name its description and official output scale.
    """
    import hashlib

    from real_esrgan_tf.weights.pretrained import find_pretrained

    def sha256(path):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    meta = {"source": source} if source else {}
    if not source:
        return meta
    if os.path.isdir(source):
        from real_esrgan_tf.weights.save import EMA_EXPORT_NAME

        record = os.path.join(source, "config.toml")
        if os.path.isfile(record):
            with open(record, encoding="utf-8") as f:
                meta["training_config"] = f.read()
        ema = os.path.join(source, EMA_EXPORT_NAME)
        if os.path.isfile(ema):
            meta["weights_sha256"] = sha256(ema)
    elif os.path.isfile(source):
        meta["weights_sha256"] = sha256(source)
    elif (info := find_pretrained(source)) is not None:
        meta["pretrained"] = info.name
        meta["pretrained_description"] = info.description
        meta["outscale"] = f"{info.outscale:g}"
    return meta


def _architecture(generator) -> tuple[str, str]:
    """(class name, JSON config) of the generator (the config minus its dtype)."""
    try:
        config = generator.get_config()
    except (NotImplementedError, TypeError):
        config = {}
    config = {k: v for k, v in config.items() if k != "dtype"}
    return type(generator).__name__, json.dumps(config, sort_keys=True, default=str)


def to_model_proto(generator, *, fp16: bool = False, source: str = "", scale: int | None = None):
    """The generator as an `onnx.ModelProto` (checked with `onnx.checker`, full check).

    Args:
      generator: a functional Keras generator, NHWC [B, H, W, 3] -> [B, H*s, W*s, 3].
      fp16: float16 weights, compute, input and output.
      source: what --model named (provenance in the metadata).
      scale: the upscaling factor (default: the model's `scale`, else measured on a 16x16 input).
    Raises ExportError (one line) for a model that is not an RGB generator or has a layer without
    a translation.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper

    from real_esrgan_tf.serve.keras_backend import infer_scale

    where = source or getattr(generator, "name", type(generator).__name__)
    _check_generator(generator, where)
    if scale is None:
        scale = infer_scale(generator)
    writer = _GraphWriter(np.float16 if fp16 else np.float32, where)
    body_in = writer.fresh("lq")
    (body_out,) = [t.name for t in writer.run_model(generator, [_Tensor(body_in)])]
    if writer.unshuffle > 1:  # x2 / x1 RRDBNet: the official mod_pad, inside the graph
        body_nodes = writer.nodes
        writer.nodes = []
        padded, size = writer.mod_pad(INPUT_NAME, writer.unshuffle)
        writer.nodes.extend(body_nodes)
        writer.rename(body_in, padded)
        writer.crop(body_out, size, scale, OUTPUT_NAME)
    else:
        writer.rename(body_in, INPUT_NAME)
        writer.rename(body_out, OUTPUT_NAME)

    elem = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    graph = helper.make_graph(
        writer.nodes,
        getattr(generator, "name", "generator"),
        [helper.make_tensor_value_info(INPUT_NAME, elem, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, elem, ["batch", 3, "out_height", "out_width"])],
        writer.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
        producer_version=_version(),
        doc_string=f"Real-ESRGAN x{scale} generator: input NCHW RGB in [0, 1], output x{scale} (not clipped)",
    )
    arch, config = _architecture(generator)
    meta = {
        "scale": str(scale),
        "architecture": arch,
        "architecture_config": config,
        "precision": "fp16" if fp16 else "fp32",
        "layout": "NCHW RGB [0, 1]",
        "input_multiple": "1",  # the graph pads itself to the unshuffle multiple
        **provenance(source),
    }
    helper.set_model_props(model, meta)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:  # a translation bug, not a user error: keep the detail
        raise ExportError(f"{where}: the ONNX graph does not validate ({str(e).splitlines()[0]})") from e
    return model


def _version() -> str:
    from real_esrgan_tf import __version__

    return __version__


def to_bytes(generator, *, fp16: bool = False, source: str = "", scale: int | None = None) -> bytes:
    """The serialised ONNX file (for backends that run a Keras generator through ONNX in memory)."""
    return to_model_proto(generator, fp16=fp16, source=source, scale=scale).SerializeToString()


def write(generator, options) -> str:
    """`export --format onnx` (the `export.formats` entry point): writes options.output atomically."""
    from real_esrgan_tf.images import write_bytes_atomic

    path = options.output
    content = to_bytes(generator, fp16=options.fp16, source=options.source)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        write_bytes_atomic(path, content)
    except OSError as e:
        raise ExportError(f"{path}: cannot write ({e.strerror or e})") from None
    return path
