"""The backend and export-format tables: what `--backend` / `--format` pick and the one-line errors."""

import dataclasses

import numpy as np
import pytest

from real_esrgan_tf.export.common import ExportError
from real_esrgan_tf.export.formats import FORMATS, ExportFormat, ExportOptions, export_generator
from real_esrgan_tf.serve import backends
from real_esrgan_tf.serve.backends import AUTO, BACKENDS, Backend, BackendError, pick


@pytest.fixture
def table(monkeypatch):
    """A private copy of the tables with two fake runtimes: 'present' (a package that exists) and
    'absent' (one that does not), both opening '.fake' files."""
    rows = dict(BACKENDS)
    rows["present"] = Backend("present", "json", (".fake",), "json", "fake", "a runtime that is installed")
    rows["absent"] = Backend("absent", "json", (".fake",), "no_such_runtime_pkg", "absent", "not installed")
    monkeypatch.setattr(backends, "BACKENDS", rows)
    monkeypatch.setattr(backends, "AUTO", dict(AUTO))
    return rows


def test_auto_follows_the_preference_and_skips_missing_runtimes(table):
    fake = backends.file_backends("model.FAKE")
    assert [b.name for b in fake] == ["present", "absent"]
    assert pick("auto", ".fake", fake).name == "present"
    backends.AUTO[".fake"] = ("absent", "present")  # preferred but not installed: the next one
    assert pick("auto", ".fake", fake).name == "present"
    backends.AUTO["RRDBNet"] = ("absent", "present")
    assert pick("auto", "RRDBNet").name == "present"
    backends.AUTO["RRDBNet"] = ("absent",)
    assert pick("auto", "RRDBNet").name == backends.TENSORFLOW  # generators always have TensorFlow


def test_explicit_backends_are_checked(table):
    fake = backends.file_backends("x.fake")
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        pick("nope", ".fake", fake)
    needs = r"needs the no_such_runtime_pkg package .*real-esrgan-tf\[absent\]"
    with pytest.raises(BackendError, match=needs):
        pick("absent", ".fake", fake)
    refused = r"--backend tflite does not open .fake models \(these do: present"
    with pytest.raises(BackendError, match=refused):
        pick("tflite", ".fake", fake)
    only_absent = [table["absent"]]
    with pytest.raises(BackendError, match=r"\.fake models need one of: no_such_runtime_pkg \(\[absent\]\)"):
        pick("auto", ".fake", only_absent)


def test_every_row_names_an_importable_module_and_a_choice():
    import importlib.util

    for backend in BACKENDS.values():
        assert importlib.util.find_spec(backend.module) is not None, backend
        module = backends.load_module(backend)
        assert hasattr(module, "open_model") or backend.name == backends.TENSORFLOW, backend.name
        assert backend.name in backends.backend_names()
    for key, names in AUTO.items():
        assert names and all(name in BACKENDS for name in names), key
    for fmt in FORMATS.values():
        assert importlib.util.find_spec(fmt.module) is not None, fmt


def test_a_runtime_backend_refuses_a_generator_it_cannot_run(tmp_path):
    from real_esrgan_tf.serve.loading import ModelLoadError, load_upscale_model

    only_own = r"^realesr-animevideov3: --backend tflite runs only its own model"
    with pytest.raises(ModelLoadError, match=only_own):
        load_upscale_model("realesr-animevideov3", backend="tflite")
    with pytest.raises(ModelLoadError, match=r"missing\.tflite: model file not found"):
        load_upscale_model(str(tmp_path / "missing.tflite"))
    with pytest.raises(ModelLoadError, match=r"x\.tflite: --backend tensorflow does not open \.tflite"):
        load_upscale_model(str(tmp_path / "x.tflite"), backend="tensorflow")


def test_export_table_errors(monkeypatch):
    with pytest.raises(ExportError, match="unknown export format 'gif'"):
        export_generator(None, "gif", ExportOptions(output="x"))
    rows = dict(FORMATS)
    rows["fake"] = ExportFormat("fake", "no_such_module_pkg.writer", "a file", "needs one", extra="fake")
    monkeypatch.setattr("real_esrgan_tf.export.formats.FORMATS", rows)
    with pytest.raises(ExportError, match=r"--format fake needs no_such_module_pkg .*real-esrgan-tf\[fake\]"):
        export_generator(None, "fake", ExportOptions(output="x"))


def test_the_saved_model_row_writes_what_export_saved_model_writes(tmp_path):
    import tensorflow as tf

    from real_esrgan_tf.models import SRVGGNetCompact

    model = SRVGGNetCompact(num_conv=1, num_feat=4)
    options = dataclasses.replace(ExportOptions(output=str(tmp_path / "m")), tile=0, version=3)
    path = export_generator(model, "saved_model", options)
    assert path == str(tmp_path / "m" / "3")
    lq = np.random.default_rng(1).random((1, 9, 7, 3), dtype=np.float32)
    sr = tf.saved_model.load(path).signatures["serving_default"](lq=tf.constant(lq))["sr"].numpy()
    np.testing.assert_allclose(sr, model(lq).numpy(), atol=1e-5)
