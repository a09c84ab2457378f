"""read_torch_checkpoint against torch.load (the oracle) in both formats, and its refusal of foreign globals.

The files are written by `torch.save` (zip and `_use_new_zipfile_serialization=False`) or, for the
malformed / malicious cases, assembled here from pickle opcodes so nothing depends on torch's pickler.
"""

import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from real_esrgan_tf.weights.torch_pickle import (
    ALLOWED_GLOBALS,
    TorchCheckpointError,
    read_torch_checkpoint,
    state_dict_from_checkpoint,
)

FORMATS = ("zip", "legacy")


def _torch():
    return pytest.importorskip("torch")


def _save(torch, obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def _np_dtype(torch, dtype):
    if dtype == torch.bfloat16:
        return np.dtype(ml_dtypes.bfloat16)
    return torch.empty((), dtype=dtype).numpy().dtype


def _assert_same(ours, theirs, torch, where="root"):
    """Same structure, container types, dtypes, shapes and bits as torch.load's result."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, np.ndarray), where
        assert ours.dtype == _np_dtype(torch, theirs.dtype), where
        assert ours.shape == tuple(theirs.shape), where
        t = theirs.detach().resolve_conj().resolve_neg()
        if t.dtype == torch.bfloat16:  # numpy has no bf16 from torch: compare the bits
            t, ours = t.view(torch.int16), ours.view(np.int16)
        assert np.array_equal(ours, t.numpy()), where
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs), where
        assert list(ours) == list(theirs), where
        for key in theirs:
            _assert_same(ours[key], theirs[key], torch, f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _assert_same(a, b, torch, f"{where}[{i}]")
    else:
        assert type(ours) is type(theirs) and ours == theirs, where


def _check_against_torch(torch, obj, path, fmt):
    _save(torch, obj, path, fmt)
    ours = read_torch_checkpoint(path)
    _assert_same(ours, torch.load(path, map_location="cpu", weights_only=True), torch)
    return ours


# ---------------------------------------------------------------------------------------------
# Official layouts (BasicSR keys, tiny sizes)


def _unet_sn_state(torch, nf=4):
    """A real torch spectral-norm U-Net D state (conv0/conv9 plain, conv1..8 weight_orig/_u/_v)."""
    torch.manual_seed(0)
    sn, conv = torch.nn.utils.spectral_norm, torch.nn.Conv2d
    chans = [(3, nf), (nf, 2 * nf), (2 * nf, 4 * nf), (4 * nf, 8 * nf), (8 * nf, 4 * nf)]
    chans += [(4 * nf, 2 * nf), (2 * nf, nf), (nf, nf), (nf, nf), (nf, 1)]
    layers = torch.nn.Module()
    for i, (cin, cout) in enumerate(chans):
        k = 4 if i in (1, 2, 3) else 3
        c = conv(cin, cout, k, 2 if k == 4 else 1, 1, bias=i in (0, 9))
        setattr(layers, f"conv{i}", c if i in (0, 9) else sn(c))
    return layers.state_dict()


@pytest.mark.parametrize("fmt", FORMATS)
def test_official_layouts_read_as_torch_load_and_pick_basicsr_params(tmp_path, fmt):
    torch = _torch()
    from tests import torch_oracles as oracles  # official key layouts, tiny sizes

    rrdb, decoy = (OrderedDict(oracles.rrdbnet_state(4, 8, 2, 4, seed=s)) for s in (1, 2))
    srvgg, netd = OrderedDict(oracles.srvgg_state(8, 3, 4, seed=3)), _unet_sn_state(torch)
    assert {"conv1.weight_orig", "conv1.weight_u", "conv1.weight_v", "conv0.bias"} <= set(netd)

    cases = {  # x4plus / RealESRNet / x2plus; general-x4v3 / animevideov3 / anime_6B; x4plus netD
        "x4plus": ({"params": decoy, "params_ema": rrdb}, rrdb),
        "compact": ({"params": srvgg}, srvgg),
        "netD": ({"params": netd}, netd),
        "bare_dataparallel": (OrderedDict((f"module.{k}", v) for k, v in srvgg.items()), srvgg),
    }
    for name, (obj, expected) in cases.items():
        ours = _check_against_torch(torch, obj, tmp_path / f"{name}.pth", fmt)
        state = state_dict_from_checkpoint(ours, tmp_path / f"{name}.pth")
        assert list(state) == list(expected), name
        for key, tensor in expected.items():
            assert state[key].dtype == np.float32 and np.array_equal(state[key], tensor.numpy()), (name, key)


@pytest.mark.parametrize("fmt", FORMATS)
def test_dtypes_views_shared_storages_and_scalars_match_torch_load(tmp_path, fmt):
    torch = _torch()
    g = torch.Generator().manual_seed(2)
    base = torch.randn(6, 5, generator=g)
    obj = {
        "f16": torch.randn(3, 4, generator=g).half(),
        "bf16": torch.randn(2, 3, 5, generator=g).bfloat16(),
        "f64": torch.randn(4, generator=g).double(),
        "i32": torch.randint(-1000, 1000, (7,), generator=g, dtype=torch.int32),
        "i8": torch.randint(-128, 127, (3,), generator=g, dtype=torch.int8),
        "u8": torch.randint(0, 255, (2, 2), generator=g, dtype=torch.uint8),
        "bool": torch.rand(5, generator=g) > 0.5,
        "c64": torch.randn(3, dtype=torch.complex64, generator=g),
        "num_batches_tracked": torch.tensor(12345678901, dtype=torch.int64),  # 0-d int64
        "transposed": base.t(),  # non-contiguous view saved directly
        "sliced": base[1:5:2, 1:4],  # storage offset + strides
        "row": base[3],  # shares base's storage
        "base": base,
        "expanded": torch.randn(3, generator=g).expand(4, 3),  # stride 0
        "negated": torch._neg_view(torch.randn(3, generator=g)),  # metadata {'neg': True}
        "conjugated": torch.randn(2, dtype=torch.complex64, generator=g).conj(),  # {'conj': True}
        "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        "nested": [1, 2.5, "text", None, True, (torch.ones(1), -3)],
    }
    ours = _check_against_torch(torch, obj, tmp_path / "mixed.pth", fmt)
    assert ours["bf16"].astype(np.float32).tolist() == obj["bf16"].float().tolist()
    assert int(ours["num_batches_tracked"]) == 12345678901
    # Views share one buffer as in torch; unrelated tensors do not.
    assert np.shares_memory(ours["row"], ours["base"]) and np.shares_memory(ours["sliced"], ours["base"])
    assert np.shares_memory(ours["transposed"], ours["base"])
    assert not np.shares_memory(ours["f16"], ours["base"])
    assert ours["transposed"].strides == (4, 20)


@pytest.mark.parametrize("seed", range(12))
def test_random_views_of_random_dtypes_match_torch_load(tmp_path, seed):
    torch = _torch()
    rng = np.random.default_rng(seed)
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.bool]
    obj = OrderedDict()
    for i in range(4):
        shape = tuple(int(n) for n in rng.integers(1, 6, size=rng.integers(0, 5)))
        dtype = dtypes[rng.integers(len(dtypes))]
        t = torch.from_numpy(np.asarray(rng.normal(size=shape) * 10, np.float32)).to(dtype)
        if t.ndim >= 2:
            t = t.permute(*rng.permutation(t.ndim).tolist())
        if t.ndim >= 1 and t.shape[0] > 1:
            t = t[int(rng.integers(1, t.shape[0])) :: int(rng.integers(1, 3))]
        obj[f"t{i}"] = t
    obj["alias"] = obj["t0"]  # the same tensor twice -> the same array twice
    for fmt in FORMATS:
        ours = _check_against_torch(torch, obj, tmp_path / f"{fmt}.pth", fmt)
        assert ours["alias"] is ours["t0"]


def test_big_endian_zip_is_swapped_like_torch(tmp_path):
    """A zip whose byteorder record says "big" (written on a big-endian machine): same values."""
    torch = _torch()
    g = torch.Generator().manual_seed(3)
    obj = {
        "f": torch.randn(5, generator=g),
        "h": torch.randn(3, generator=g).half(),
        "l": torch.tensor([1, -2, 3]),
        "c": torch.randn(2, dtype=torch.complex64, generator=g),
    }
    little = _save(torch, obj, tmp_path / "little.pth", "zip")
    units = {"0": 4, "1": 2, "2": 8, "3": 4}  # storage keys follow the save order; complex swaps halves
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            folder, _, tail = info.filename.partition("/")
            if tail == "byteorder":
                data = b"big"
            elif tail.startswith("data/") and tail[5:] in units:
                data = np.frombuffer(data, f"<u{units[tail[5:]]}").astype(f">u{units[tail[5:]]}").tobytes()
            dst.writestr(info, data)
    ours = read_torch_checkpoint(big)
    _assert_same(ours, torch.load(big, weights_only=True), torch)
    _assert_same(ours, obj, torch)


# ---------------------------------------------------------------------------------------------
# Hand-assembled pickles: malicious and malformed files are refused, nothing runs


def _str(s):
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(n):
    return b"J" + struct.pack("<i", n)


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"


def _global(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def _tensor(key, numel, offset, size, stride, storage="FloatStorage", legacy=False, view=None):
    """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.

    The storage is persistent id ("storage", torch.<storage>, key, "cpu", numel), in the legacy
    format followed by view_metadata: None or (view_key, offset, numel) (torch/serialization.py).
    """
    fields = [_str("storage"), _global("torch", storage), _str(key), _str("cpu"), _int(numel)]
    if legacy:
        fields.append(b"N" if view is None else _tuple(_str(view[0]), _int(view[1]), _int(view[2])))
    pid = _tuple(*fields) + b"Q"
    args = _tuple(
        pid,
        _int(offset),
        _tuple(*map(_int, size)),
        _tuple(*map(_int, stride)),
        b"\x89",
        _global("collections", "OrderedDict") + b")R",
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _dict(**items):
    return b"}(" + b"".join(_str(k) + v for k, v in items.items()) + b"u"


def _pickle(body):
    return b"\x80\x02" + body + b"."


def _write_zip(path, data_pkl, storages=(), folder="archive"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{folder}/data.pkl", data_pkl)
        z.writestr(f"{folder}/byteorder", "little")
        z.writestr(f"{folder}/version", "3\n")
        for key, data in storages:
            z.writestr(f"{folder}/data/{key}", data)
    return path


def _write_legacy(path, data_pkl, storages=(), little=True):
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": little}):
            pickle.dump(header, f, protocol=2)
        f.write(data_pkl)
        pickle.dump([key for key, _, _ in storages], f, protocol=2)
        for _, numel, data in storages:
            f.write(struct.pack("<q" if little else ">q", numel) + data)
    return path


def test_hand_assembled_checkpoint_reads_as_expected(tmp_path):
    """The opcode helpers below write what torch writes: a strided view over a 6-float storage."""

    def pkl(legacy):
        return _pickle(_dict(w=_tensor("0", 6, 1, (2, 2), (1, 2), legacy=legacy), step=_int(7)))

    data = np.arange(6, dtype="<f4")
    expected = np.array([[1.0, 3.0], [2.0, 4.0]], np.float32)
    files = [
        _write_zip(tmp_path / "a.pth", pkl(False), [("0", data.tobytes())], folder="some_other_name"),
        _write_legacy(tmp_path / "b.pth", pkl(True), [("0", 6, data.tobytes())]),
    ]
    for path in files:
        got = read_torch_checkpoint(path)
        assert got["step"] == 7 and np.array_equal(got["w"], expected) and got["w"].dtype == np.float32
    try:
        import torch
    except ImportError:
        return
    for path in files:
        assert np.array_equal(torch.load(path, weights_only=True)["w"].numpy(), expected)


def test_legacy_storage_views_and_big_endian_legacy_files(tmp_path):
    """Pre-1.0 torch wrote storage views (view_metadata); a big-endian machine writes big-endian bytes."""
    data = np.arange(8, dtype="<f4")
    view = _tensor("0", 8, 1, (2,), (2,), legacy=True, view=("0-view", 3, 4))  # elements 3..6, then 4, 6
    path = _write_legacy(tmp_path / "view.pth", _pickle(_dict(v=view)), [("0", 8, data.tobytes())])
    assert read_torch_checkpoint(path)["v"].tolist() == [4.0, 6.0]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:  # torch.load agrees
        assert torch.load(path, weights_only=True)["v"].tolist() == [4.0, 6.0]
    tensors = _dict(
        f=_tensor("0", 3, 0, (3,), (1,), legacy=True),
        l=_tensor("1", 2, 0, (2,), (1,), "LongStorage", legacy=True),
    )
    storages = [
        ("0", 3, np.array([1.5, -2, 3], ">f4").tobytes()),
        ("1", 2, np.array([7, -9], ">i8").tobytes()),
    ]
    got = read_torch_checkpoint(_write_legacy(tmp_path / "big.pth", _pickle(tensors), storages, little=False))
    assert got["f"].tolist() == [1.5, -2.0, 3.0] and got["l"].tolist() == [7, -9]
    assert got["f"].dtype == np.float32 and got["l"].dtype == np.int64


@pytest.mark.parametrize("protocol", [4, 5])
def test_newer_pickle_protocols_match_torch_load(tmp_path, protocol):
    """torch.save(pickle_protocol=4/5): STACK_GLOBAL, FRAME and MEMOIZE instead of protocol 2's opcodes."""
    torch = _torch()
    g = torch.Generator().manual_seed(4)
    obj = {"params": OrderedDict(w=torch.randn(2, 3, generator=g).t(), n=torch.tensor(3))}
    for fmt in FORMATS:
        path = tmp_path / f"{fmt}.pth"
        torch.save(obj, path, pickle_protocol=protocol, _use_new_zipfile_serialization=fmt == "zip")
        # torch's own weights_only unpickler stops at FRAME ("Unsupported operand 149"); the file
        # is written just above, so the full unpickler is a safe oracle here.
        _assert_same(read_torch_checkpoint(path), torch.load(path, weights_only=False), torch)


class _Payload:
    """Pickles as a call of `function(argument)`: what a malicious checkpoint would run on load."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def _payloads(marker):
    return {
        "posix.system": _Payload(os.system, f"touch {marker}"),  # os.system pickles as posix.system
        "builtins.eval": _Payload(eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.exec": _Payload(exec, f"open({str(marker)!r}, 'w').close()"),
    }


def test_payloads_do_run_under_plain_pickle(tmp_path):
    """Control: the payloads used below are live (plain pickle.loads creates the marker)."""
    for name, payload in _payloads(tmp_path / "marker").items():
        pickle.loads(pickle.dumps(payload, protocol=2))
        assert (tmp_path / "marker").exists(), name
        (tmp_path / "marker").unlink()


@pytest.mark.parametrize("fmt", FORMATS)
def test_foreign_globals_are_refused_and_nothing_runs(tmp_path, fmt):
    marker = tmp_path / "marker"
    tensor = _tensor("0", 2, 0, (2,), (1,), legacy=fmt == "legacy")
    data = np.ones(2, "<f4").tobytes()
    for name, payload in _payloads(marker).items():
        # The REDUCE of the payload without PROTO/STOP; fix_imports=False keeps the name `builtins`.
        evil = pickle.dumps(payload, protocol=2, fix_imports=False)[2:-1]
        pkl = _pickle(_dict(weight=tensor, params=evil))
        write = _write_zip if fmt == "zip" else _write_legacy
        path = write(tmp_path / f"{name}.pth", pkl, [("0", data)] if fmt == "zip" else [("0", 2, data)])
        with pytest.raises(TorchCheckpointError) as err:
            read_torch_checkpoint(path)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and f"global {name} " in message and "\n" not in message
        assert not marker.exists(), name
    # os.system spelled `os` (protocol 0 GLOBAL) in the first pickle of a legacy file, before any check.
    path = tmp_path / "os_system.pth"
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(TorchCheckpointError, match=r"global os\.system "):
        read_torch_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_torch_saved_file_with_a_payload_is_refused(tmp_path, fmt):
    """torch.save pickles whatever it is given: a real checkpoint with a payload beside the weights."""
    torch = _torch()
    marker = tmp_path / "marker"
    path = _save(
        torch,
        {"params": {"w": torch.ones(2)}, "x": _payloads(marker)["posix.system"]},
        tmp_path / "evil.pth",
        fmt,
    )
    with pytest.raises(TorchCheckpointError, match=r"global posix\.system "):
        read_torch_checkpoint(path)
    assert not marker.exists()


def test_allowed_globals_cannot_be_modified_or_leak(tmp_path):
    """BUILD on an allowed global, a bare storage type as a value, or a pickled nn.Module: refused."""
    rebuild = _global("torch._utils", "_rebuild_tensor_v2")
    cases = {
        "build": (rebuild + _dict(__defaults__=_int(1)) + b"b", r"BUILD applied to torch\._utils"),
        "leak": (_global("torch", "FloatStorage"), r"torch\.FloatStorage outside a tensor"),
        "module": (_tuple(_str("module"), _str("Net"), _str("x.py"), _str("")) + b"Q", "nn.Module"),
        "odict_build": (_global("collections", "OrderedDict") + _dict(x=_int(1)) + b"b", "malformed"),
    }
    for name, (body, pattern) in cases.items():
        path = _write_zip(tmp_path / f"{name}.pth", _pickle(body))
        with pytest.raises(TorchCheckpointError, match=pattern):
            read_torch_checkpoint(path)
    assert ALLOWED_GLOBALS >= {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2"}
    assert not any(g.startswith(("builtins", "os", "posix", "subprocess")) for g in ALLOWED_GLOBALS)


def test_out_of_bounds_tensors_and_short_storages_are_refused(tmp_path):
    data = np.arange(6, dtype="<f4").tobytes()
    cases = {
        "past_storage": (_tensor("0", 6, 4, (2, 2), (1, 2)), [("0", data)], "reads element 7"),
        "short_member": (_tensor("0", 8, 0, (8,), (1,)), [("0", data)], "holds 24 bytes, 32 needed"),
        "missing_member": (_tensor("1", 6, 0, (6,), (1,)), [("0", data)], "archive/data/1 is missing"),
        "rank_mismatch": (_tensor("0", 6, 0, (2, 3), (1,)), [("0", data)], "size"),
        "unknown_storage": (_tensor("0", 6, 0, (6,), (1,), "QInt8Storage"), [("0", data)], "QInt8Storage"),
    }
    for name, (body, storages, pattern) in cases.items():
        path = _write_zip(tmp_path / f"{name}.pth", _pickle(body), storages)
        with pytest.raises(TorchCheckpointError, match=pattern):
            read_torch_checkpoint(path)
    path = _write_legacy(
        tmp_path / "legacy_short.pth",
        _pickle(_tensor("0", 6, 0, (6,), (1,), legacy=True)),
        [("0", 1 << 40, data)],
    )  # an element count far past the end of the file
    with pytest.raises(TorchCheckpointError, match="runs past the end of the file"):
        read_torch_checkpoint(path)


def test_truncated_missing_and_foreign_files_name_the_file(tmp_path):
    def pkl(legacy):
        return _pickle(_dict(w=_tensor("0", 6, 0, (6,), (1,), legacy=legacy)))

    data = np.arange(6, dtype="<f4").tobytes()
    whole = [
        _write_zip(tmp_path / "z.pth", pkl(False), [("0", data)]).read_bytes(),
        _write_legacy(tmp_path / "l.pth", pkl(True), [("0", 6, data)]).read_bytes(),
    ]
    files = {"png.pth": b"\x89PNG\r\n\x1a\n" + bytes(100), "text.pth": b"hello", "empty.pth": b""}
    for i, blob in enumerate(whole):
        for cut in (len(blob) // 3, len(blob) * 2 // 3, len(blob) - 3):
            files[f"cut{i}_{cut}.pth"] = blob[:cut]
    for name, blob in files.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(TorchCheckpointError) as err:
            read_torch_checkpoint(path)
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value), name
    with pytest.raises(TorchCheckpointError, match="missing.pth: cannot read"):
        read_torch_checkpoint(tmp_path / "missing.pth")
    zip_without_pickle = tmp_path / "nopkl.pth"
    with zipfile.ZipFile(zip_without_pickle, "w") as z:
        z.writestr("archive/constants.pkl", b"")
    with pytest.raises(TorchCheckpointError, match="data.pkl"):
        read_torch_checkpoint(zip_without_pickle)


def test_state_dict_from_checkpoint_convention():
    a, b = np.zeros(2, np.float32), np.ones(2, np.float32)
    assert state_dict_from_checkpoint({"params": {"x": a}, "params_ema": {"x": b}}, "f")["x"] is b
    assert state_dict_from_checkpoint({"params": {"module.x": a}}, "f") == {"x": a}
    assert state_dict_from_checkpoint(OrderedDict(y=a), "f") == {"y": a}
    bad = [[], {}, {"params": {}}, {"params_ema": {"x": 1}}, {"x": a, "meta": 3}, {"module.x": a, "x": b}]
    for obj in bad:
        with pytest.raises(TorchCheckpointError, match=r"^f: "):
            state_dict_from_checkpoint(obj, "f")


def test_reading_needs_no_torch(tmp_path):
    """The module alone (numpy, ml_dtypes), with `import torch` made to fail."""
    pkl = _pickle(_dict(params=_dict(w=_tensor("0", 3, 0, (3,), (1,)))))
    path = _write_zip(tmp_path / "a.pth", pkl, [("0", np.arange(3, dtype="<f4").tobytes())])
    module = Path(__file__).resolve().parents[1] / "real_esrgan_tf" / "weights" / "torch_pickle.py"
    code = (
        "import importlib.util, sys; sys.modules['torch'] = None\n"
        f"spec = importlib.util.spec_from_file_location('torch_pth', {str(module)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"s = m.state_dict_from_checkpoint(m.read_torch_checkpoint({str(path)!r}), 'a')\n"
        "print(s['w'].tolist(), 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[0.0,", "1.0,", "2.0]", "False"]


def test_views_of_one_storage_are_writable_views_of_one_buffer(tmp_path):
    torch = _torch()
    base = torch.arange(12.0)
    path = _save(torch, {"a": base[:6], "b": base[4:].view(2, 4)}, tmp_path / "v.pth", "zip")
    got = read_torch_checkpoint(path)
    assert got["a"].flags.writeable and got["b"].flags.writeable
    got["a"][4] = 100.0  # as in torch, where both tensors view one storage
    assert got["b"][0, 0] == 100.0
