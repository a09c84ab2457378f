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
import socket
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


