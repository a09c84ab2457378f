"""The face weight files: given, found in the folder, downloaded (from a local HTTP server: the real
urllib code path, atomic), and the one-line errors when they are missing offline; CLI exit codes."""

from __future__ import annotations

import http.server
import os
import threading

import numpy as np
import pytest

from real_esrgan_tf.cli.main import main
from real_esrgan_tf.faces import weights
from real_esrgan_tf.images import encode_image


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b"weights" * 1000
    claim = None  # Content-Length to announce (a larger one: the connection ends early)

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.endswith("missing.pth"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(self.claim or len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    _Handler.claim = None


def _file(url, name="detection_Resnet50_Final.pth"):
    return weights.FaceWeightFile(name, url, "test detector", "face_detector_path")


def test_official_names_and_urls():
    assert weights.GFPGAN_FILES["v1.3"].url.endswith("/v1.3.0/GFPGANv1.3.pth")
    assert weights.GFPGAN_FILES["v1.4"].url.endswith("/v1.3.0/GFPGANv1.4.pth")  # released under v1.3.0
    # the URLs facexlib itself downloads from (its init functions), read without importing torch
    import importlib.util

    spec = importlib.util.find_spec("facexlib")
    if spec is None:
        pytest.skip("facexlib (test extra) is not installed")
    root = os.path.dirname(spec.origin)
    with open(os.path.join(root, "detection", "__init__.py"), encoding="utf-8") as f:
        assert f"model_url = '{weights.DETECTION_FILE.url}'" in f.read()
    with open(os.path.join(root, "parsing", "__init__.py"), encoding="utf-8") as f:
        assert f"model_url = '{weights.PARSING_FILE.url}'" in f.read()


def test_given_file_and_folder(tmp_path):
    given = tmp_path / "mine.pth"
    given.write_bytes(b"x")
    assert weights.find_weight_file(weights.DETECTION_FILE, str(given)) == given
    with pytest.raises(weights.MissingFaceWeightsError, match=r"nope.pth: no such file .*--face_detector_pa"):
        weights.find_weight_file(weights.DETECTION_FILE, str(tmp_path / "nope.pth"))
    (tmp_path / "detection_Resnet50_Final.pth").write_bytes(b"y")
    found = weights.find_weight_file(weights.DETECTION_FILE, None, tmp_path, allow_download=False)
    assert found == tmp_path / "detection_Resnet50_Final.pth"


def test_default_folder_is_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REAL_ESRGAN_TF_CACHE", str(tmp_path))
    assert weights.default_face_weights_dir() == tmp_path / "faces"
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "parsing_parsenet.pth").write_bytes(b"z")
    assert weights.find_weight_file(weights.PARSING_FILE, allow_download=False).read_bytes() == b"z"


def test_download_is_atomic(server, tmp_path):
    path = weights.find_weight_file(_file(f"{server}/detection_Resnet50_Final.pth"), None, tmp_path / "new")
    assert path == tmp_path / "new" / "detection_Resnet50_Final.pth"
    assert path.read_bytes() == _Handler.body
    assert os.listdir(tmp_path / "new") == ["detection_Resnet50_Final.pth"]


def test_failed_downloads_leave_nothing_and_say_where_to_put_the_file(server, tmp_path):
    _Handler.claim = 2 * len(_Handler.body)  # the connection ends before the announced length
    with pytest.raises(weights.MissingFaceWeightsError) as truncated:
        weights.find_weight_file(_file(f"{server}/detection_Resnet50_Final.pth"), None, tmp_path)
    assert os.listdir(tmp_path) == []
    with pytest.raises(weights.MissingFaceWeightsError, match="HTTP Error 404"):
        weights.find_weight_file(_file(f"{server}/missing.pth"), None, tmp_path)
    assert os.listdir(tmp_path) == []
    closed = f"http://127.0.0.1:{_free_port()}/detection_Resnet50_Final.pth"
    with pytest.raises(weights.MissingFaceWeightsError) as refused:
        weights.find_weight_file(_file(closed), None, tmp_path)
    for error in (truncated.value, refused.value):
        message = str(error)
        assert "\n" not in message
        target = tmp_path / "detection_Resnet50_Final.pth"
        assert message.startswith(f"{target}: missing and the download failed")
        assert message.endswith(f"into {tmp_path}/ or pass --face_detector_path")
    with pytest.raises(weights.MissingFaceWeightsError, match=r"missing \(the test detector\); download"):
        weights.find_weight_file(_file(closed), None, tmp_path, allow_download=False)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(encode_image(np.full((12, 16, 3), 120, np.uint8), "png"))
    return path


def test_cli_missing_face_weights_offline(photo, tmp_path, capsys):
    """Offline (no download): exit 1, one line naming the first missing file and where it goes."""
    code = main(["real-esrgan-tf", "upscale", "--input", str(photo), "--output", str(tmp_path / "out"),
                 "--model", "realesr-animevideov3", "--face_enhance", "--face_weights_dir",
                 str(tmp_path / "faces"), "--noface_download"])
    assert code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0] == (
        f"real-esrgan-tf upscale: error: {tmp_path / 'faces' / 'GFPGANv1.3.pth'}: missing (the GFPGAN v1.3 "
        f"face restorer); download {weights.GFPGAN_FILES['v1.3'].url} into {tmp_path / 'faces'}/ or pass "
        "--face_model_path")
    assert not (tmp_path / "out" / "photo_out.png").exists()


def test_cli_download_fails_without_network(photo, tmp_path, capsys, monkeypatch):
    """The shipped default (download on) where the release host cannot be reached: one line, exit 1."""
    port = _free_port()
    for key, file in [("v1.3", weights.GFPGAN_FILES["v1.3"])]:
        monkeypatch.setitem(weights.GFPGAN_FILES, key, weights.FaceWeightFile(
            file.name, f"http://127.0.0.1:{port}/{file.name}", file.what, file.flag))
    code = main(["real-esrgan-tf", "upscale", "--input", str(photo), "--output", str(tmp_path / "out"),
                 "--model", "realesr-animevideov3", "--face_enhance", "--face_weights_dir",
                 str(tmp_path / "faces")])
    assert code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "GFPGANv1.3.pth: missing and the download failed" in lines[0], lines
    assert os.listdir(tmp_path / "faces") == []


@pytest.mark.parametrize("args,message", [
    (["--face_model", "v2"], "face_model"),
    (["--face_model_path", "/no/such/GFPGANv1.4.pth"], "/no/such/GFPGANv1.4.pth: no such file"),
])
def test_cli_bad_face_flags(photo, tmp_path, capsys, args, message):
    code = main(["real-esrgan-tf", "upscale", "--input", str(photo), "--output", str(tmp_path / "out"),
                 "--model", "realesr-animevideov3", "--face_enhance", *args])
    assert code == (2 if args[0] == "--face_model" else 1)
    assert message in capsys.readouterr().err


def test_video_has_the_face_flags(capsys):
    assert main(["real-esrgan-tf", "video", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--[no]face_enhance", "--face_model", "--face_weights_dir", "--face_model_path"):
        assert flag in text
