"""Upscale images through TensorFlow Serving (the `client` command), over gRPC or REST.

Both talk to the `upscale_image` signature of a SavedModel written by `real_esrgan_tf.export`:
image bytes in, PNG bytes out, so no image is ever sent as a float tensor (a 1000x1000 RGB image is
~12 MB as float32 JSON text per request, ~1 MB as a JPEG).
- gRPC (port 8500): `tensorflow_serving.apis` PredictRequest with a DT_STRING scalar `image` and an
  optional DT_FLOAT scalar `outscale` (omitted: the server uses the signature's default, the model
  scale).
- REST (port 8501): POST /v1/models/NAME[/versions/V]:predict with the columnar JSON form
  `{"signature_name": ..., "inputs": {"image": {"b64": ...}, "outscale": ...}}` (the row form
  "instances" would need a batch dimension that this signature does not have).
Every failure (unreachable server, timeout, error status, unexpected reply) is a `ServingError`
with one line naming the server and the reason.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import sys
import urllib.error
import urllib.request

SIGNATURE = "upscale_image"
OUTPUT_KEY = "png_bytes"
# Upscaled PNGs are big: a 1024x1024 input at x4 gives a ~25 MB PNG, beyond gRPC's default 4 MB.
_MAX_MESSAGE_BYTES = 1 << 30


class ServingError(Exception):
    """A request that did not give an image; the message names the server and the reason."""


@dataclasses.dataclass(frozen=True)
class ServingTarget:
    """Where to send requests. server: HOST:PORT; version: None = the latest the server loaded."""

    server: str
    model: str
    version: int | None = None
    timeout: float = 60.0  # seconds, per request


# -- gRPC ---------------------------------------------------------------------------------------
def predict_request(target: ServingTarget, image: bytes, outscale: float | None = None):
    """The PredictRequest for one image."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = target.model
    request.model_spec.signature_name = SIGNATURE
    if target.version is not None:
        request.model_spec.version.value = int(target.version)
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(image, dtype=tf.string, shape=[]))
    if outscale is not None:
        request.inputs["outscale"].CopyFrom(tf.make_tensor_proto(float(outscale), dtype=tf.float32, shape=[]))
    return request


def png_from_predict_response(response, server: str = "<server>") -> bytes:
    if OUTPUT_KEY not in response.outputs:
        raise ServingError(
            f"{server}: reply has no {OUTPUT_KEY!r} output (outputs: {list(response.outputs)});"
            " is this a real-esrgan-tf SavedModel?"
        )
    values = response.outputs[OUTPUT_KEY].string_val
    if len(values) != 1:
        raise ServingError(f"{server}: expected one PNG in the reply, got {len(values)}")
    return bytes(values[0])


def upscale_grpc(target: ServingTarget, image: bytes, outscale: float | None = None) -> bytes:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    options = [("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES)]
    with grpc.insecure_channel(target.server, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(predict_request(target, image, outscale), timeout=target.timeout)
        except grpc.RpcError as e:
            code = e.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ServingError(f"{target.server}: server unreachable over gRPC ({e.details()})") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingError(f"{target.server}: no reply within {target.timeout:g} s") from None
            raise ServingError(f"{target.server}: server error {code.name}: {e.details()}") from None
    return png_from_predict_response(response, target.server)


# -- REST ---------------------------------------------------------------------------------------
def rest_url(target: ServingTarget) -> str:
    version = f"/versions/{int(target.version)}" if target.version is not None else ""
    return f"http://{target.server}/v1/models/{target.model}{version}:predict"


def rest_request_body(image: bytes, outscale: float | None = None) -> dict:
    """The JSON body (as a dict) for one image; binary values travel as {"b64": ...}."""
    inputs: dict = {"image": {"b64": base64.b64encode(image).decode("ascii")}}
    if outscale is not None:
        inputs["outscale"] = float(outscale)
    return {"signature_name": SIGNATURE, "inputs": inputs}


def png_from_rest_response(body: dict, server: str = "<server>") -> bytes:
    """TF Serving answers {"outputs": value} for one output, {"outputs": {name: value}} for several."""
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if isinstance(outputs, dict) and OUTPUT_KEY in outputs:
        outputs = outputs[OUTPUT_KEY]
    if isinstance(outputs, list) and len(outputs) == 1:
        outputs = outputs[0]
    if not (isinstance(outputs, dict) and isinstance(outputs.get("b64"), str)):
        raise ServingError(f"{server}: reply has no base64 {OUTPUT_KEY!r} output: {str(body)[:200]}")
    try:
        return base64.b64decode(outputs["b64"], validate=True)
    except ValueError:
        raise ServingError(f"{server}: reply's {OUTPUT_KEY!r} is not valid base64") from None


def upscale_rest(target: ServingTarget, image: bytes, outscale: float | None = None) -> bytes:
    data = json.dumps(rest_request_body(image, outscale)).encode()
    request = urllib.request.Request(
        rest_url(target), data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=target.timeout) as reply:
            raw = reply.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except (ValueError, AttributeError):
            pass
        raise ServingError(f"{target.server}: server error HTTP {e.code}: {str(detail)[:300]}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, (TimeoutError, socket.timeout)):
            raise ServingError(f"{target.server}: no reply within {target.timeout:g} s") from None
        raise ServingError(f"{target.server}: server unreachable over REST ({e.reason})") from None
    except TimeoutError:
        raise ServingError(f"{target.server}: no reply within {target.timeout:g} s") from None
    except (ConnectionError, OSError) as e:  # reset or closed mid-reply
        raise ServingError(f"{target.server}: connection failed ({e})") from None
    try:
        body = json.loads(raw)
    except ValueError:
        raise ServingError(f"{target.server}: reply is not JSON: {raw[:200]!r}") from None
    return png_from_rest_response(body, target.server)


def upscale_bytes(target: ServingTarget, image: bytes, *, outscale: float | None = None,
                  rest: bool = False) -> bytes:
    """Encoded image -> upscaled PNG bytes, through the server."""
    return (upscale_rest if rest else upscale_grpc)(target, image, outscale)


# -- command line -------------------------------------------------------------------------------
def define_flags(fv) -> None:
    from absl import flags

    flags.DEFINE_string("server", None, "TensorFlow Serving HOST:PORT (gRPC 8500, REST 8501).",
                        flag_values=fv)
    flags.DEFINE_string("model", None, "Model name in the server's models.config.", flag_values=fv)
    flags.DEFINE_integer("version", None, "Model version (default: the latest served).", flag_values=fv)
    flags.DEFINE_string("input", None, "An image file or a folder of images.", flag_values=fv)
    flags.DEFINE_string("output", None, "Output file (input is a file) or folder.", flag_values=fv)
    flags.DEFINE_float("outscale", None, "Final scale (Lanczos after the net); default: the model's.",
                       flag_values=fv)
    flags.DEFINE_boolean("rest", False, "Use the REST API instead of gRPC.", flag_values=fv)
    flags.DEFINE_float("timeout", 60.0, "Seconds to wait for each reply.", flag_values=fv)
    flags.mark_flags_as_required(["server", "model", "input", "output"], flag_values=fv)


def _write_result(png: bytes, path: str) -> None:
    from real_esrgan_tf import images

    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext in ("", "png"):
        images.write_bytes_atomic(path, png)
    else:  # another format asked for: re-encode the served PNG locally
        images.write_image(path, images.decode_image(png, path).pixels, ext)


def _jobs(input_path: str, output: str) -> list[tuple[str, str]]:
    if os.path.isdir(input_path):
        os.makedirs(output, exist_ok=True)
        names = sorted(n for n in os.listdir(input_path)
                       if not n.startswith(".") and os.path.isfile(os.path.join(input_path, n)))
        return [(os.path.join(input_path, n), os.path.join(output, os.path.splitext(n)[0] + "_out.png"))
                for n in names]
    if not os.path.isfile(input_path):
        raise ServingError(f"{input_path}: no such file or folder")
    if os.path.isdir(output) or not os.path.splitext(output)[1]:  # a folder, existing or to be
        os.makedirs(output, exist_ok=True)
        stem = os.path.splitext(os.path.basename(input_path))[0]
        return [(input_path, os.path.join(output, stem + "_out.png"))]
    return [(input_path, output)]


def run(fv) -> int:
    from real_esrgan_tf.images import ImageError

    if fv.outscale is not None and not fv.outscale > 0:
        print(f"real-esrgan-tf client: --outscale must be > 0, got {fv.outscale}", file=sys.stderr)
        return 2
    target = ServingTarget(fv.server, fv.model, fv.version, fv.timeout)
    failures = 0
    try:
        jobs = _jobs(fv.input, fv.output)
    except (ServingError, OSError) as e:
        print(f"real-esrgan-tf client: {e}", file=sys.stderr)
        return 1
    inputs = {os.path.realpath(src) for src, _ in jobs}
    written: dict[str, str] = {}
    for src, dst in jobs:
        try:
            real_dst = os.path.realpath(dst)
            if real_dst in inputs:
                raise ServingError(f"output {dst} would overwrite an input; change --output")
            if real_dst in written:  # photo.jpg and photo.png both give photo_out.png
                raise ServingError(f"output {dst} already written from {written[real_dst]}")
            with open(src, "rb") as f:
                data = f.read()
            png = upscale_bytes(target, data, outscale=fv.outscale, rest=fv.rest)
            _write_result(png, dst)
            written[real_dst] = src
            print(dst)
        except ServingError as e:
            print(f"real-esrgan-tf client: {src}: {e}", file=sys.stderr)
            if "unreachable" in str(e):
                return 1  # every other file would fail the same way
            failures += 1
        except (ImageError, OSError) as e:
            print(f"real-esrgan-tf client: {src}: {e}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0
