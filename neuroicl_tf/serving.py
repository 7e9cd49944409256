"""Client helpers for a TensorFlow Serving instance serving an export of :mod:`neuroicl_tf.export`.

Builds requests for the ``serving_default`` signature (inputs ``target`` ``(B, *S, Cin)``,
``context_in`` ``(B, L, *S, Cin)``, ``context_out`` ``(B, L, *S, Cout)``, output ``output``
``(B, *S, Cout)``, float32) and reads the responses:

* REST (port 8501, ``POST /v1/models/<name>[/versions/<v>]:predict``): :func:`rest_payload` in the
  columnar ``inputs`` form or the row ``instances`` form, :func:`parse_rest_response`, and
  :func:`predict_rest` (standard library ``urllib``). JSON carries every voxel as decimal text
  (about 20 bytes per float32 intensity, 5 per binary label value), so prefer gRPC for 3D.
* gRPC (port 8500, ``tensorflow.serving.PredictionService/Predict``): :func:`grpc_request`
  (a ``PredictRequest`` with binary tensor protos), :func:`parse_grpc_response` and
  :func:`predict_grpc`. Needs ``tensorflow-serving-api`` (``pip install
  'tensorflow-serving-api==2.21.*'``); the rest of this module does not.

See docs/deployment.md for the server command lines.
"""

import json
import urllib.error
import urllib.request

import numpy as np

import neuroicl_tf._compat as _compat

tf = _compat.import_tensorflow()

__all__ = [
    "check_inputs",
    "rest_payload",
    "rest_url",
    "parse_rest_response",
    "predict_rest",
    "grpc_request",
    "metadata_grpc_request",
    "parse_grpc_response",
    "predict_grpc",
    "DEFAULT_SIGNATURE",
    "OUTPUT_KEY",
]

DEFAULT_SIGNATURE = "serving_default"
OUTPUT_KEY = "output"
INPUT_NAMES = ("target", "context_in", "context_out")
# A 128^3 float32 volume is 8 MiB; gRPC's default 4 MiB receive limit would reject the output.
GRPC_OPTIONS = (("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))


def check_inputs(target, context_in, context_out):
    """Convert the three inputs to float32 arrays and check their shapes agree.

    Args:
        target: (B, *S, Cin), 2 or 3 spatial axes.
        context_in: (B, L, *S, Cin).
        context_out: (B, L, *S, Cout).

    Returns:
        A dict ``name -> float32 ndarray`` in signature order.

    Raises:
        ValueError: shapes that do not fit together, or NaN/Inf values (JSON cannot carry them
            and the model would return garbage).
    """
    arrays = {name: np.ascontiguousarray(a, dtype=np.float32)
              for name, a in zip(INPUT_NAMES, (target, context_in, context_out))}
    t, ci, co = arrays["target"], arrays["context_in"], arrays["context_out"]
    if t.ndim not in (4, 5):
        raise ValueError(f"target must be (B, *S, Cin) with 2 or 3 spatial axes; got shape "
                         f"{t.shape}")
    want_ci = (t.shape[0], None, *t.shape[1:])
    if ci.ndim != t.ndim + 1 or ci.shape[0] != t.shape[0] or ci.shape[2:] != t.shape[1:]:
        raise ValueError(f"context_in must be (B, L, *S, Cin) = {want_ci} with L free; got "
                         f"{ci.shape}")
    if co.shape[:-1] != ci.shape[:-1]:
        raise ValueError(f"context_out must be (B, L, *S, Cout) = {(*ci.shape[:-1], None)}; "
                         f"got {co.shape}")
    if ci.shape[1] < 1:
        raise ValueError(f"the context needs at least one pair; got L = {ci.shape[1]}")
    for name, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} holds NaN or Inf values")
    return arrays


def rest_payload(target, context_in, context_out, form="inputs",
                 signature_name=DEFAULT_SIGNATURE):
    """The JSON body of a REST ``:predict`` request.

    Args:
        target: (B, *S, Cin).
        context_in: (B, L, *S, Cin).
        context_out: (B, L, *S, Cout).
        form: ``"inputs"`` (columnar: one nested list per input, batch included) or
            ``"instances"`` (row: one object per batch element with the three inputs).
        signature_name: the signature to run.

    Returns:
        A dict ready for ``json.dumps``.
    """
    arrays = check_inputs(target, context_in, context_out)
    if form == "inputs":
        body = {name: a.tolist() for name, a in arrays.items()}
    elif form == "instances":
        batch = arrays["target"].shape[0]
        body = [{name: a[b].tolist() for name, a in arrays.items()} for b in range(batch)]
    else:
        raise ValueError(f"form must be 'inputs' or 'instances'; got {form!r}")
    return {"signature_name": signature_name, form: body}


def rest_url(host, model_name, version=None, port=8501, scheme="http"):
    """``<scheme>://<host>:<port>/v1/models/<model_name>[/versions/<version>]:predict``."""
    path = f"/v1/models/{model_name}" + (f"/versions/{int(version)}" if version else "")
    return f"{scheme}://{host}:{port}{path}:predict"


def parse_rest_response(body, output_key=OUTPUT_KEY):
    """The output array of a REST ``:predict`` response, in either response form.

    Args:
        body: the response (str, bytes or an already decoded dict): ``{"outputs": ...}`` for a
            columnar request, ``{"predictions": [...]}`` for a row request.
        output_key: the output's name, used when the response holds several outputs.

    Returns:
        float32 ndarray (B, *S, Cout).

    Raises:
        ValueError: an ``error`` response or an unknown layout.
    """
    if isinstance(body, (str, bytes, bytearray)):
        body = json.loads(body)
    if "error" in body:
        raise ValueError(f"TF Serving returned an error: {body['error']}")
    if "outputs" in body:
        out = body["outputs"]
        if isinstance(out, dict):
            out = out[output_key]
        return np.asarray(out, dtype=np.float32)
    if "predictions" in body:
        rows = body["predictions"]
        rows = [r[output_key] if isinstance(r, dict) else r for r in rows]
        return np.asarray(rows, dtype=np.float32)
    raise ValueError(f"response has neither 'outputs' nor 'predictions': keys {sorted(body)}")


def predict_rest(url, target, context_in, context_out, form="inputs", timeout=600.0):
    """POST a request to TF Serving's REST API and return the output.

    Args:
        url: see :func:`rest_url`.
        target, context_in, context_out: the inputs (see :func:`check_inputs`).
        form: ``"inputs"`` or ``"instances"``.
        timeout: seconds.

    Returns:
        float32 ndarray (B, *S, Cout).
    """
    data = json.dumps(rest_payload(target, context_in, context_out, form=form)).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return parse_rest_response(response.read())
    except urllib.error.HTTPError as err:  # TF Serving puts the reason in a JSON body
        detail = err.read().decode(errors="replace")
        raise ValueError(f"TF Serving answered HTTP {err.code}: {detail}") from err


def _apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as err:
        raise ImportError(
            "gRPC requests need tensorflow-serving-api: pip install "
            "'tensorflow-serving-api==2.21.*'"
        ) from err
    return predict_pb2, prediction_service_pb2_grpc


def _base_request(model_name, signature_name, version):
    predict_pb2, _ = _apis()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    return request


def grpc_request(target, context_in, context_out, model_name,
                 signature_name=DEFAULT_SIGNATURE, version=None):
    """A ``PredictRequest`` with the three inputs as binary float32 tensor protos.

    Args:
        target, context_in, context_out: the inputs (see :func:`check_inputs`).
        model_name: the ``--model_name`` the server was started with.
        signature_name: the signature to run.
        version: a model version, or ``None`` for the server's latest.

    Returns:
        ``tensorflow_serving.apis.predict_pb2.PredictRequest``.
    """
    arrays = check_inputs(target, context_in, context_out)
    request = _base_request(model_name, signature_name, version)
    for name, array in arrays.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array, dtype=tf.float32))
    request.output_filter.append(OUTPUT_KEY)
    return request


def metadata_grpc_request(model_name, version=None):
    """A ``PredictRequest`` for the export's ``metadata`` signature (no inputs)."""
    return _base_request(model_name, "metadata", version)


def parse_grpc_response(response, output_key=OUTPUT_KEY):
    """The output of a ``PredictResponse``: float32 ndarray (or a str for ``metadata``)."""
    if output_key not in response.outputs:
        raise ValueError(f"response has no output {output_key!r}; it has "
                         f"{sorted(response.outputs)}")
    value = tf.make_ndarray(response.outputs[output_key])
    if value.dtype == object:
        return value.item().decode()
    return value.astype(np.float32, copy=False)


def predict_grpc(address, model_name, target, context_in, context_out, version=None,
                 timeout=600.0, channel=None):
    """Send a ``Predict`` call to TF Serving's gRPC API and return the output.

    Args:
        address: ``host:port`` (TF Serving's ``--port``, 8500 by default).
        model_name: the served model's name.
        target, context_in, context_out: the inputs (see :func:`check_inputs`).
        version: a model version, or ``None`` for the latest.
        timeout: seconds.
        channel: an existing ``grpc.Channel`` to reuse (``address`` is then ignored).

    Returns:
        float32 ndarray (B, *S, Cout).
    """
    import grpc

    _, service = _apis()
    request = grpc_request(target, context_in, context_out, model_name, version=version)
    own = channel is None
    if own:
        channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
    try:
        stub = service.PredictionServiceStub(channel)
        return parse_grpc_response(stub.Predict(request, timeout=timeout))
    finally:
        if own:
            channel.close()
