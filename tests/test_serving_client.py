"""Serving client: its gRPC PredictRequest and REST JSON, decoded and run through the SavedModel.

TensorFlow Serving cannot be installed here, so two small in-process servers on 127.0.0.1 stand in
for it: a real gRPC PredictionService and a REST endpoint that do what TF Serving does with a
request (decode the TensorProtos / JSON with b64, fill omitted inputs from the SignatureDef's
defaults, run the signature, answer with a PredictResponse / {"outputs": ...}, or an error status).
"""

import base64
import http.server
import io
import json
import os
import socket
import threading
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from real_esrgan_tf.cli import main as cli
from real_esrgan_tf.export import ServingConfig, export_saved_model
from real_esrgan_tf.models import SRVGGNetCompact
from real_esrgan_tf.serve import client as serving_client
from real_esrgan_tf.serve.client import ServingError, ServingTarget

MODEL = "compact"


class SavedModelPredictor:
    """Runs a request's decoded inputs through a signature, as TF Serving's Predict does."""

    def __init__(self, path):
        self.loaded = tf.saved_model.load(path)
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        self.signature_defs = proto.meta_graphs[0].signature_def
        self.requests = []

    def predict(self, signature_name, inputs: dict) -> dict:
        self.requests.append((signature_name, dict(inputs)))
        sig = self.signature_defs[signature_name]
        unknown = set(inputs) - set(sig.inputs)
        if unknown:
            raise ValueError(f"unknown inputs {sorted(unknown)}")
        for name, default in sig.defaults.items():  # omitted inputs take the SignatureDef default
            inputs.setdefault(name, tf.make_ndarray(default))
        outputs = self.loaded.signatures[signature_name](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in outputs.items()}


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, predictor):
        self.predictor = predictor

    def Predict(self, request, context):
        if request.model_spec.name != MODEL:
            name = request.model_spec.name
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            outputs = self.predictor.predict(request.model_spec.signature_name or "serving_default", inputs)
        except (tf.errors.OpError, ValueError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e).splitlines()[0])
        response = predict_pb2.PredictResponse()
        for k, v in outputs.items():
            response.outputs[k].CopyFrom(tf.make_tensor_proto(v))
        return response


def _rest_handler(predictor):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            if self.path != f"/v1/models/{MODEL}:predict":
                return self._reply(404, {"error": f"Servable not found for request: {self.path}"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            inputs = {
                k: base64.b64decode(v["b64"]) if isinstance(v, dict) else np.float32(v)
                for k, v in body["inputs"].items()
            }
            try:
                outputs = predictor.predict(body.get("signature_name", "serving_default"), inputs)
            except (tf.errors.OpError, ValueError) as e:
                return self._reply(400, {"error": str(e).splitlines()[0]})
            # TF Serving base64-encodes string outputs whose alias ends in "_bytes"; a single output
            # is given directly as the value of "outputs".
            (name, value), = outputs.items()
            assert name.endswith("_bytes")
            self._reply(200, {"outputs": {"b64": base64.b64encode(value).decode()}})

    return Handler


@pytest.fixture(scope="module")
def model():
    return SRVGGNetCompact(num_conv=2, num_feat=8)


@pytest.fixture(scope="module")
def predictor(model, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("savedmodels") / MODEL)
    return SavedModelPredictor(export_saved_model(model, base, config=ServingConfig(tile=32, tile_pad=4)))


@pytest.fixture(scope="module")
def grpc_server(predictor):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(predictor), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture(scope="module")
def rest_server(predictor):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(predictor))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="module")
def photo_jpeg(photos):
    buf = io.BytesIO()
    Image.fromarray(photos["chelsea"][40:90, 100:170]).save(buf, "JPEG", quality=90)  # 50 x 70
    return buf.getvalue()


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"  # nothing listens there any more


def served_directly(predictor, image, outscale=None):
    inputs = {"image": np.array(image, dtype=object)}
    if outscale is not None:
        inputs["outscale"] = np.float32(outscale)
    outputs = predictor.loaded.upscale_image(**{k: tf.constant(v) for k, v in inputs.items()})
    return outputs["png_bytes"].numpy()


def expected_pixels(model, jpeg):
    lr = np.asarray(Image.open(io.BytesIO(jpeg)), np.float32)[None] / 255.0
    return np.rint(np.clip(model(lr).numpy()[0], 0, 1) * 255).astype(np.uint8)


def test_predict_request_fields():
    target = ServingTarget("h:1", "m", version=7)
    request = serving_client.predict_request(target, b"\x89PNG...", outscale=2.5)
    assert request.model_spec.name == "m" and request.model_spec.signature_name == "upscale_image"
    assert request.model_spec.version.value == 7
    assert tf.make_ndarray(request.inputs["image"]) == b"\x89PNG..."
    assert request.inputs["image"].dtype == tf.string.as_datatype_enum
    assert tf.make_ndarray(request.inputs["outscale"]) == np.float32(2.5)
    assert "outscale" not in serving_client.predict_request(target, b"x").inputs
    # Round trip through the wire format.
    assert predict_pb2.PredictRequest.FromString(request.SerializeToString()) == request


def test_rest_body_is_tf_serving_columnar_json():
    body = json.loads(json.dumps(serving_client.rest_request_body(b"\x00\xffimage", outscale=3)))
    inputs = {"image": {"b64": base64.b64encode(b"\x00\xffimage").decode()}, "outscale": 3.0}
    assert body == {"signature_name": "upscale_image", "inputs": inputs}
    assert serving_client.rest_url(ServingTarget("h:8501", "m")) == "http://h:8501/v1/models/m:predict"
    assert serving_client.rest_url(ServingTarget("h:8501", "m", 2)).endswith("/m/versions/2:predict")


@pytest.mark.slow
@pytest.mark.parametrize("rest", [False, True], ids=["grpc", "rest"])
def test_round_trip_gives_the_upscaled_image(rest, grpc_server, rest_server, predictor, model, photo_jpeg):
    target = ServingTarget(rest_server if rest else grpc_server, MODEL, timeout=30)
    png = serving_client.upscale_bytes(target, photo_jpeg, rest=rest)
    assert png == served_directly(predictor, photo_jpeg)
    sr = np.asarray(Image.open(io.BytesIO(png)))
    assert sr.shape == (200, 280, 3)
    assert np.abs(sr.astype(int) - expected_pixels(model, photo_jpeg)).max() <= 1
    signature, inputs = predictor.requests[-1]
    assert signature == "upscale_image" and set(inputs) == {"image"}  # outscale: the server's default


@pytest.mark.slow
@pytest.mark.parametrize("rest", [False, True], ids=["grpc", "rest"])
def test_outscale_travels(rest, grpc_server, rest_server, predictor, photo_jpeg):
    target = ServingTarget(rest_server if rest else grpc_server, MODEL, timeout=30)
    png = serving_client.upscale_bytes(target, photo_jpeg, outscale=1.5, rest=rest)
    assert Image.open(io.BytesIO(png)).size == (105, 75)
    assert png == served_directly(predictor, photo_jpeg, 1.5)


@pytest.mark.parametrize("rest", [False, True], ids=["grpc", "rest"])
def test_unreachable_server_is_a_clear_error(rest, closed_port):
    target = ServingTarget(closed_port, MODEL, timeout=10)
    api = "REST" if rest else "gRPC"
    with pytest.raises(ServingError, match=f"^{closed_port}: server unreachable over {api}"):
        serving_client.upscale_bytes(target, b"x", rest=rest)


@pytest.mark.slow
@pytest.mark.parametrize("rest", [False, True], ids=["grpc", "rest"])
def test_error_status_is_a_clear_error(rest, grpc_server, rest_server):
    server = rest_server if rest else grpc_server
    with pytest.raises(ServingError, match=f"^{server}: server error (HTTP 400|INVALID_ARGUMENT)"):
        serving_client.upscale_bytes(ServingTarget(server, MODEL, timeout=30), b"not an image", rest=rest)
    with pytest.raises(ServingError, match="(HTTP 404|NOT_FOUND).*Servable not found"):
        serving_client.upscale_bytes(ServingTarget(server, "other", timeout=30), b"x", rest=rest)


def test_timeout_is_a_clear_error():
    with socket.socket() as listener:  # accepts connections but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        server = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ServingError, match="no reply within 0.5 s"):
            serving_client.upscale_bytes(ServingTarget(server, MODEL, timeout=0.5), b"x", rest=True)


@pytest.mark.slow
def test_client_command(grpc_server, rest_server, predictor, photo_jpeg, tmp_path, closed_port, capsys):
    src = tmp_path / "cat.jpg"
    src.write_bytes(photo_jpeg)
    out = tmp_path / "cat_x4.png"
    assert cli.main(["real-esrgan-tf", "client", f"--server={grpc_server}", f"--model={MODEL}",
                     f"--input={src}", f"--output={out}"]) == 0
    assert out.read_bytes() == served_directly(predictor, photo_jpeg)
    folder = tmp_path / "results"
    assert cli.main(["real-esrgan-tf", "client", f"--server={rest_server}", f"--model={MODEL}", "--rest",
                     f"--input={src}", f"--output={folder}", "--outscale=2"]) == 0
    assert Image.open(folder / "cat_out.png").size == (140, 100)
    capsys.readouterr()
    assert cli.main(["real-esrgan-tf", "client", f"--server={closed_port}", f"--model={MODEL}",
                     f"--input={src}", f"--output={out}", "--timeout=5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "server unreachable" in err[0] and str(src) in err[0]


def test_models_config_example_parses_as_model_server_config():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    readme = os.path.join(os.path.dirname(__file__), "..", "savedmodels", "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    example = text.split("## models.config")[1].split("```")[1]
    config = text_format.Parse(example, model_server_config_pb2.ModelServerConfig())
    names = [c.name for c in config.model_config_list.config]
    assert names == ["realesr-animevideov3", "realesrgan-x4plus"]
    assert all(c.model_platform == "tensorflow" and c.base_path == f"/models/{c.name}"
               for c in config.model_config_list.config)


@pytest.mark.slow
def test_client_never_overwrites_an_input_or_an_earlier_result(grpc_server, photo_jpeg, tmp_path, closed_port,
                                                               capsys):
    src = tmp_path / "cat.png"
    Image.open(io.BytesIO(photo_jpeg)).save(src)
    original = src.read_bytes()
    assert cli.main(["real-esrgan-tf", "client", f"--server={closed_port}", f"--model={MODEL}",
                     f"--input={src}", f"--output={src}"]) == 1
    assert src.read_bytes() == original
    assert "would overwrite an input" in capsys.readouterr().err
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(photo_jpeg)
    (folder / "cat.png").write_bytes(original)  # both map to cat_out.png
    out = tmp_path / "out"
    assert cli.main(["real-esrgan-tf", "client", f"--server={grpc_server}", f"--model={MODEL}",
                     f"--input={folder}", f"--output={out}"]) == 1
    first = (out / "cat_out.png").read_bytes()
    assert first == serving_client.upscale_bytes(ServingTarget(grpc_server, MODEL), photo_jpeg)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cat.png" in err[0] and "already written from" in err[0]
