"""Read PyTorch `.pth` checkpoints without torch: a restricted unpickler that yields numpy arrays.

`torch.load` needs a 700 MB install and unpickles arbitrary code from a downloaded file. The official
Real-ESRGAN checkpoints are plain state dicts, so this reader allows only the globals that rebuild a
tensor (see `ALLOWED_GLOBALS`) and refuses every other global before anything is called. Both formats
`torch.save` writes are read (torch/serialization.py, `_save` and `_legacy_save`):

- zip (default since torch 1.6): `<archive>/data.pkl`, one `<archive>/data/<key>` member of raw bytes
  per storage and a `<archive>/byteorder` record ("little" when absent);
- legacy (`_use_new_zipfile_serialization=False`): the pickles of a magic number, the protocol version
  (1001) and a sys_info dict, then the object pickle, then the pickled sorted list of storage keys, then
  per key an 8-byte element count followed by the storage's raw bytes.

Tensors are `np.ndarray` views over one buffer per storage (strides, offsets and sharing honoured as in
torch); storages are read from disk only when a tensor refers to them.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable

import ml_dtypes
import numpy as np

__all__ = [
    "ALLOWED_GLOBALS",
    "TorchCheckpointError",
    "read_torch_checkpoint",
    "state_dict_from_checkpoint",
]


class TorchCheckpointError(ValueError):
    """A `.pth` file that cannot be read safely; the message is one line naming the file and the reason."""


class _Malformed(Exception):
    """Internal: a reason without the file name (added once, at the top)."""


# Storage classes torch pickles as `torch.<Name>Storage` (torch/storage.py, _dtype_to_storage_type_map);
# the quantized ones are left out (their bytes need scale/zero-point from elsewhere).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "ComplexFloatStorage": np.dtype("<c8"),
    "ComplexDoubleStorage": np.dtype("<c16"),
}
_REBUILD_FUNCTIONS = (
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
)
ALLOWED_GLOBALS: frozenset[str] = frozenset(
    ["collections.OrderedDict"]
    + [f"torch._utils.{name}" for name in _REBUILD_FUNCTIONS]
    + [f"torch.{name}" for name in _STORAGE_DTYPES]
)
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001


# Objects the unpickler hands to the pickle. All are slotted and refuse BUILD (`__setstate__`), so a
# pickle cannot change them; tensors stay `_TensorRef`s until the whole pickle has been read.
class _Frozen:
    __slots__ = ()

    def __setstate__(self, state):
        raise _Malformed(f"BUILD applied to {self!r}")


class _StorageType(_Frozen):
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage(_Frozen):
    """A persistent-id storage: `key` names its bytes; `view` is a legacy (offset, numel) slice."""

    __slots__ = ("key", "dtype", "numel", "view")

    def __init__(self, key: str, dtype: np.dtype, numel: int, view: tuple[int, int] | None):
        for name, value in zip(self.__slots__, (key, dtype, numel, view), strict=True):
            object.__setattr__(self, name, value)

    def __repr__(self):
        return f"storage {self.key!r}"


class _TensorRef(_Frozen):
    __slots__ = ("storage", "offset", "size", "stride", "neg", "conj")

    def __init__(self, storage, offset, size, stride, neg=False, conj=False):
        for name, value in zip(self.__slots__, (storage, offset, size, stride, neg, conj), strict=True):
            object.__setattr__(self, name, value)

    def __repr__(self):
        return "a tensor"


class _RebuildFunction(_Frozen):
    __slots__ = ("name", "function")

    def __init__(self, name: str, function: Callable):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "function", function)

    def __call__(self, *args):
        return self.function(*args)

    def __repr__(self):
        return f"torch._utils.{self.name}"


def _is_int_tuple(value) -> bool:
    return isinstance(value, tuple) and all(type(v) is int and v >= 0 for v in value)


def _rebuild_tensor(storage, storage_offset, size, stride):
    if not isinstance(storage, _Storage):
        raise _Malformed(f"a tensor whose storage is {type(storage).__name__}, not a persistent storage")
    if type(storage_offset) is not int or storage_offset < 0:
        raise _Malformed(f"a tensor with storage offset {storage_offset!r}")
    if not (_is_int_tuple(size) and _is_int_tuple(stride) and len(size) == len(stride)):
        raise _Malformed(f"a tensor with size {size!r} and stride {stride!r}")
    if all(size):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= storage.numel:
            raise _Malformed(
                f"a tensor of size {size} stride {stride} offset {storage_offset} reads element {last} "
                f"of {storage!r}, which has {storage.numel}"
            )
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    ref = _rebuild_tensor(storage, storage_offset, size, stride)
    if metadata:  # torch._utils.set_tensor_metadata: lazy negation / conjugation bits
        if not isinstance(metadata, dict) or not set(metadata) <= {"neg", "conj"}:
            raise _Malformed(f"tensor metadata {metadata!r} (only 'neg'/'conj' are known)")
        ref = _TensorRef(
            *(getattr(ref, n) for n in ("storage", "offset", "size", "stride")),
            neg=bool(metadata.get("neg")),
            conj=bool(metadata.get("conj")),
        )
    return ref


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, _TensorRef):
        raise _Malformed(f"a parameter holding {type(data).__name__}, not a tensor")
    return data


_FUNCTIONS = {
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose globals are `ALLOWED_GLOBALS` and whose persistent ids are storages."""

    def __init__(self, file, storage_from_id: Callable | None):
        super().__init__(file)
        self._storage_from_id = storage_from_id

    def find_class(self, module, name):
        qualified = f"{module}.{name}"
        if qualified not in ALLOWED_GLOBALS:
            raise _Malformed(
                f"refuses the global {qualified} (only tensor-rebuilding globals are allowed: "
                "not a plain state dict, or a malicious file)"
            )
        if module == "collections":
            return OrderedDict
        if module == "torch._utils":
            return _RebuildFunction(name, _FUNCTIONS[name])
        return _StorageType(name, _STORAGE_DTYPES[name])

    def persistent_load(self, pid):
        if self._storage_from_id is None:
            raise _Malformed("a persistent id outside the object pickle")
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            kind = pid[0] if isinstance(pid, tuple) and pid else type(pid).__name__
            hint = (
                " (a pickled nn.Module: save its state_dict() instead)"
                if kind in ("module", b"module")
                else ""
            )
            raise _Malformed(f"persistent id {kind!r} is not a storage{hint}")
        return self._storage_from_id(pid[1:])


def _storage_fields(fields, with_view: bool):
    """Checks (storage_type, key, location, numel[, view_metadata]) of a 'storage' persistent id."""
    if len(fields) != (5 if with_view else 4):
        raise _Malformed(f"storage persistent id with {len(fields) + 1} fields")
    storage_type, key, _location, numel = fields[:4]
    if not isinstance(storage_type, _StorageType):
        raise _Malformed(f"storage persistent id with type {storage_type!r}")
    if isinstance(key, bytes):
        key = key.decode("ascii", "replace")
    if not isinstance(key, str) or type(numel) is not int or numel < 0:
        raise _Malformed(f"storage persistent id with key {key!r} and size {numel!r}")
    view = fields[4] if with_view else None
    if view is not None:
        if not (isinstance(view, tuple) and len(view) == 3 and _is_int_tuple(view[1:])):
            raise _Malformed(f"storage view {view!r}")
        view = view[1:]
    return storage_type.dtype, key, numel, view


def _load_pickle(data: io.BufferedIOBase, storage_from_id=None):
    return _RestrictedUnpickler(data, storage_from_id).load()


class _Storages:
    """One buffer per storage key, read by `read(key)` on first use and byte-swapped once if needed."""

    def __init__(self, read: Callable[[str], bytearray], swap_bytes: bool):
        self._read, self._swap, self._buffers, self._swapped = read, swap_bytes, {}, set()

    def array(self, storage: _Storage) -> np.ndarray:
        buffer = self._buffers.get(storage.key)
        if buffer is None:
            buffer = self._buffers[storage.key] = self._read(storage.key)
        start, numel = (0, storage.numel) if storage.view is None else storage.view
        itemsize = storage.dtype.itemsize
        if (start + numel) * itemsize > len(buffer):
            raise _Malformed(f"{storage!r} holds {len(buffer)} bytes, {(start + numel) * itemsize} needed")
        if self._swap and itemsize > 1 and storage.key not in self._swapped:
            unit = itemsize // 2 if storage.dtype.kind == "c" else itemsize
            np.frombuffer(buffer, f"u{unit}", len(buffer) // unit).byteswap(inplace=True)
            self._swapped.add(storage.key)
        return np.frombuffer(buffer, storage.dtype, numel, start * itemsize)


def _materialize(obj, storages: _Storages):
    """The unpickled object with each `_TensorRef` replaced by its array (shared refs -> one array)."""
    arrays: dict[int, np.ndarray] = {}
    seen: set[int] = set()

    def tensor(ref: _TensorRef) -> np.ndarray:
        if id(ref) not in arrays:
            flat = storages.array(ref.storage)
            item = flat.itemsize
            if not all(ref.size):
                out = np.zeros(ref.size, flat.dtype)
            else:
                out = np.ndarray(
                    ref.size, flat.dtype, flat, ref.offset * item, [s * item for s in ref.stride]
                )
            if ref.neg:
                out = -out
            if ref.conj:
                out = np.conj(out)
            arrays[id(ref)] = out
        return arrays[id(ref)]

    def walk(value):
        if isinstance(value, _TensorRef):
            return tensor(value)
        if isinstance(value, _Frozen):
            raise _Malformed(f"{value!r} outside a tensor")
        if isinstance(value, (dict, list)):
            if id(value) not in seen:
                seen.add(id(value))
                items = value.items() if isinstance(value, dict) else enumerate(value)
                for key, item in list(items):
                    if isinstance(key, _Frozen):
                        raise _Malformed(f"{key!r} used as a dict key")
                    value[key] = walk(item)
                attributes = getattr(value, "__dict__", {})  # OrderedDict._metadata
                for name, item in list(attributes.items()):
                    attributes[name] = walk(item)
            return value
        if isinstance(value, tuple):
            return tuple(walk(item) for item in value)
        if isinstance(value, (set, frozenset)) and any(isinstance(item, _Frozen) for item in value):
            raise _Malformed("a tensor inside a set")
        return value

    return walk(obj)


# ---------------------------------------------------------------------------------------------
# The two container formats


def _read_zip(file):
    with zipfile.ZipFile(file) as archive:
        names = {info.filename: info for info in archive.infolist()}
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise _Malformed(
                "a zip archive without exactly one <archive>/data.pkl (not a torch.save checkpoint; "
                "TorchScript files are not read)"
            )
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = archive.read(prefix + "byteorder") if prefix + "byteorder" in names else b"little"
        if byteorder not in (b"little", b"big"):
            raise _Malformed(f"byteorder record {byteorder[:20]!r}")
        file_size = os.fstat(file.fileno()).st_size

        def read_member(key: str) -> bytearray:
            info = names.get(f"{prefix}data/{key}")
            if info is None:
                raise _Malformed(f"storage {prefix}data/{key} is missing")
            if info.compress_type != zipfile.ZIP_STORED:  # not written by torch, but a valid zip
                return bytearray(archive.read(info))
            file.seek(info.header_offset)
            header = file.read(30)
            if len(header) != 30 or header[:4] != b"PK\x03\x04":
                raise _Malformed(f"bad zip local header for {info.filename}")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            if start + info.file_size > file_size:
                raise _Malformed(f"{info.filename} runs past the end of the file")
            buffer = bytearray(info.file_size)
            file.seek(start)
            if file.readinto(buffer) != info.file_size:
                raise _Malformed(f"{info.filename} is truncated")
            return buffer

        def storage_from_id(fields):
            dtype, key, numel, _ = _storage_fields(fields, with_view=False)
            return _Storage(key, dtype, numel, None)

        obj = _load_pickle(io.BytesIO(archive.read(pickles[0])), storage_from_id)
        return _materialize(obj, _Storages(read_member, swap_bytes=byteorder == b"big"))


def _read_legacy(file):
    try:
        magic = _load_pickle(file)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError) as e:
        raise _Malformed(
            f"not a PyTorch checkpoint, neither a zip archive nor a pickle ({_first_line(e)})"
        ) from None
    if magic != _LEGACY_MAGIC:
        raise _Malformed("not a PyTorch checkpoint (no zip archive, no legacy magic number)")
    protocol = _load_pickle(file)
    if protocol != _LEGACY_PROTOCOL:
        raise _Malformed(f"legacy protocol version {protocol!r}, expected {_LEGACY_PROTOCOL}")
    sys_info = _load_pickle(file)
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
    roots: dict[str, np.dtype] = {}  # key -> dtype of its first use (its bytes were written in that unit)

    def storage_from_id(fields):
        dtype, key, numel, view = _storage_fields(fields, with_view=True)
        roots.setdefault(key, dtype)
        return _Storage(key, dtype, numel if view is None else view[1], view)

    obj = _load_pickle(file, storage_from_id)
    keys = _load_pickle(file)
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        raise _Malformed("the storage key list after the object pickle is not a list of strings")
    buffers: dict[str, bytearray] = {}
    file_size = os.fstat(file.fileno()).st_size
    for key in keys:
        if key not in roots:
            raise _Malformed(f"storage {key!r} is listed but no tensor uses it")
        header = file.read(8)
        if len(header) != 8:
            raise _Malformed(f"truncated before storage {key!r}")
        numel = int.from_bytes(header, "little" if little else "big")
        nbytes = numel * roots[key].itemsize
        if file.tell() + nbytes > file_size:
            raise _Malformed(f"storage {key!r} ({nbytes} bytes) runs past the end of the file")
        buffers[key] = bytearray(nbytes)
        if file.readinto(buffers[key]) != nbytes:
            raise _Malformed(f"storage {key!r} is truncated")

    def read(key: str) -> bytearray:
        if key not in buffers:
            raise _Malformed(f"storage {key!r} has no data after the pickles")
        return buffers[key]

    return _materialize(obj, _Storages(read, swap_bytes=not little))


def read_torch_checkpoint(path: str | os.PathLike) -> object:
    """The object a `.pth` file holds, every tensor as an `np.ndarray`, nothing from the file executed.

    Args:
        path: a file written by `torch.save` (zip or legacy format) holding tensors in nested
            dicts / OrderedDicts / lists / tuples and plain Python values.
    Returns:
        The same structure with arrays of the tensors' dtypes (bfloat16 as `ml_dtypes.bfloat16`) and
        shapes; tensors that were views of one storage are views of one buffer.
    Raises:
        TorchCheckpointError: unreadable, truncated, not a checkpoint, or a global outside
            `ALLOWED_GLOBALS` (e.g. `os.system`), named in the message.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            head = file.read(512)
            is_zip = zipfile.is_zipfile(file)
            file.seek(0)
            if is_zip:
                return _read_zip(file)
            if head[257:262] == b"ustar":
                raise _Malformed("a tar-format checkpoint (PyTorch < 0.4) is not supported")
            return _read_legacy(file)
    except _Malformed as e:
        raise TorchCheckpointError(f"{path}: {e}") from None
    except OSError as e:
        raise TorchCheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RecursionError, MemoryError) as e:
        raise TorchCheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(e)})") from None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError, struct.error) as e:
        raise TorchCheckpointError(f"{path}: malformed checkpoint ({_first_line(e)})") from None


def state_dict_from_checkpoint(obj: object, path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The generator/discriminator weights of an official checkpoint, BasicSR's convention.

    BasicSR saves `{"params_ema": ...}` (x4plus, RealESRNet, x2plus) or `{"params": ...}` (compact
    models, anime_6B, netD); `params_ema` wins when both are present. A bare state dict is taken as is,
    and a leading `module.` (saved from DataParallel) is dropped from the keys.

    Raises:
        TorchCheckpointError: no flat dict of arrays found.
    """
    if isinstance(obj, dict):
        for key in ("params_ema", "params"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())
    ):
        raise TorchCheckpointError(
            f"{os.fspath(path)}: not a state dict of tensors (nor params_ema/params holding one)"
        )
    state = {key.removeprefix("module."): value for key, value in obj.items()}
    if len(state) != len(obj):
        raise TorchCheckpointError(f"{os.fspath(path)}: keys clash once the 'module.' prefix is dropped")
    return state


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__
