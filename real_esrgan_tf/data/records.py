"""The TFRecord schema of `prepare` shards, and parsing that names the shard and record of bad data.

One record = one PNG crop (single mode) or one aligned GT/LQ crop pair (paired mode). Keys follow
the common `image/*` convention so other tools can read the shards. Building examples needs only
`tf.train.Example`; parsing runs inside tf.data, where a failing op would raise an error that names
neither file nor record, so every fallible step runs in a one-element nested dataset with
`ignore_errors` and reports a status code instead (measured: no slower than a bare decode).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib

SHARD_SUFFIX = ".tfrecord"
MANIFEST_NAME = "manifest.json"


@dataclasses.dataclass(frozen=True)
class CropRecord:
    """One encoded crop and where it came from. crop_box: (top, left, bottom, right) in the
    coordinates of the source image after its `variant` resize (e.g. "x0.5")."""

    encoded: bytes
    height: int
    width: int
    bit_depth: int
    source: str
    variant: str
    crop_box: tuple[int, int, int, int]


def _bytes(values: list[bytes]):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values: list[int]):
    import tensorflow as tf

    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _image_features(prefix: str, crop: CropRecord) -> dict:
    return {
        f"{prefix}/encoded": _bytes([crop.encoded]),
        f"{prefix}/format": _bytes([b"png"]),
        f"{prefix}/height": _ints([crop.height]),
        f"{prefix}/width": _ints([crop.width]),
        f"{prefix}/channels": _ints([3]),
        f"{prefix}/bit_depth": _ints([crop.bit_depth]),
        f"{prefix}/source": _bytes([crop.source.encode("utf-8")]),
        f"{prefix}/variant": _bytes([crop.variant.encode("utf-8")]),
        f"{prefix}/crop_box": _ints(list(crop.crop_box)),
    }


def build_example(gt: CropRecord, lq: CropRecord | None = None) -> bytes:
    """Serialized tf.train.Example: `image/*` for the (GT) crop, `lq/*` too in paired mode.

    Keys sorted (`deterministic=True`): protobuf's map order otherwise changes from one process to the
    next, so two runs of `prepare` (or a resumed one) would write different bytes for the same crops.
    """
    import tensorflow as tf

    features = _image_features("image", gt)
    if lq is not None:
        features.update(_image_features("lq", lq))
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)


class RecordStatus(enum.IntEnum):
    """Why a record is unusable (OK when it is fine); the value travels through tf.data as int32."""

    OK = 0
    WRONG_SCHEMA = 1
    UNDECODABLE = 2
    SIZE_MISMATCH = 3


STATUS_REASONS = {
    RecordStatus.WRONG_SCHEMA: (
        "does not match the record schema (missing or mistyped image/* keys, or lq/* keys for pairs)"
    ),
    RecordStatus.UNDECODABLE: "its PNG fails to decode",
    RecordStatus.SIZE_MISMATCH: "decoded size differs from image/height, image/width",
}


def _schema(prefix: str) -> dict:
    import tensorflow as tf

    return {
        f"{prefix}/encoded": tf.io.FixedLenFeature([], tf.string),
        f"{prefix}/height": tf.io.FixedLenFeature([], tf.int64),
        f"{prefix}/width": tf.io.FixedLenFeature([], tf.int64),
        f"{prefix}/bit_depth": tf.io.FixedLenFeature([], tf.int64, default_value=8),
        f"{prefix}/source": tf.io.FixedLenFeature([], tf.string, default_value=""),
        f"{prefix}/variant": tf.io.FixedLenFeature([], tf.string, default_value=""),
        f"{prefix}/crop_box": tf.io.FixedLenFeature([4], tf.int64, default_value=[0, 0, 0, 0]),
    }


def _empty_parsed(prefixes: tuple[str, ...]) -> dict:
    import tensorflow as tf

    out = {}
    for p in prefixes:
        out.update(
            {
                f"{p}/encoded": tf.constant(b""),
                f"{p}/height": tf.constant(0, tf.int64),
                f"{p}/width": tf.constant(0, tf.int64),
                f"{p}/bit_depth": tf.constant(8, tf.int64),
                f"{p}/source": tf.constant(b""),
                f"{p}/variant": tf.constant(b""),
                f"{p}/crop_box": tf.zeros([4], tf.int64),
            }
        )
    return out


def _try(fn, value, fallback):
    """Runs fn(value) in a one-element dataset: (fn(value), True), or (fallback, False) if it raises."""
    import tensorflow as tf

    ok = tf.data.Dataset.from_tensors(value).map(lambda v: (fn(v), tf.constant(True))).ignore_errors()
    failed = tf.data.Dataset.from_tensors((fallback, tf.constant(False)))
    return ok.concatenate(failed).take(1).get_single_element()


_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with


def decode_png_01(encoded, bit_depth):
    """PNG bytes -> float32 [H, W, 3] in [0, 1], divided by the maximum of its bit depth.

    Raises on a PNG without its final IEND chunk: libpng decodes some truncated files silently
    (zero-filled rows), which would feed damaged crops to training.
    """
    import tensorflow as tf

    tail = tf.strings.substr(encoded, tf.strings.length(encoded) - len(_PNG_END), len(_PNG_END))
    complete = tf.debugging.Assert(tf.equal(tail, _PNG_END), ["PNG without IEND chunk (truncated)"])

    def sixteen():
        return tf.cast(tf.io.decode_png(encoded, channels=3, dtype=tf.uint16), tf.float32) / 65535.0

    def eight():
        return tf.cast(tf.io.decode_png(encoded, channels=3, dtype=tf.uint8), tf.float32) / 255.0

    with tf.control_dependencies([complete]):
        return tf.cond(bit_depth == 16, sixteen, eight)


def parse_record(serialized, paired: bool = False) -> tuple[dict, object]:
    """Serialized example -> (features with decoded float32 "image" (and "lq") [H, W, 3], status).

    Never raises: a bad record gives a non-OK RecordStatus and empty [0, 0, 3] images.
    """
    import tensorflow as tf

    prefixes = ("image", "lq") if paired else ("image",)
    schema = {}
    for p in prefixes:
        schema.update(_schema(p))
    parsed, parsed_ok = _try(
        lambda s: tf.io.parse_single_example(s, schema), serialized, _empty_parsed(prefixes)
    )
    status = tf.where(parsed_ok, int(RecordStatus.OK), int(RecordStatus.WRONG_SCHEMA))
    out = dict(parsed)
    for p in prefixes:
        key = "image" if p == "image" else "lq"
        image, decoded_ok = _try(
            lambda e, p=p: decode_png_01(e, parsed[f"{p}/bit_depth"]),
            parsed[f"{p}/encoded"],
            tf.zeros([0, 0, 3], tf.float32),
        )
        shape = tf.shape(image, out_type=tf.int64)
        size_ok = tf.logical_and(
            tf.equal(shape[0], parsed[f"{p}/height"]), tf.equal(shape[1], parsed[f"{p}/width"])
        )
        status = tf.where(
            tf.equal(status, int(RecordStatus.OK)),
            tf.where(
                decoded_ok,
                tf.where(size_ok, int(RecordStatus.OK), int(RecordStatus.SIZE_MISMATCH)),
                int(RecordStatus.UNDECODABLE),
            ),
            status,
        )
        out[key] = image
        del out[f"{p}/encoded"]
    return out, status


def status_message(shard, index, status):
    """A scalar string tensor: '<shard>: record <index> <reason>'."""
    import tensorflow as tf

    reasons = tf.constant(
        ["is fine"] + [STATUS_REASONS[RecordStatus(i)] for i in range(1, len(RecordStatus))]
    )
    return tf.strings.join([shard, ": record ", tf.strings.as_string(index), " ", reasons[status]])


def shard_name(k: int, n: int) -> str:
    return f"shard-{k:05d}-of-{n:05d}{SHARD_SUFFIX}"


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
