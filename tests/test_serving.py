"""TF Serving request payloads decode to the right tensors and give the Keras output.

No model server can be installed here. Besides decoding the payloads, two in-process stand-ins
answer the requests from the exported SavedModel: a gRPC server registered with the real
``PredictionService`` definition of tensorflow-serving-api, and an HTTP server implementing the
``:predict`` REST route. They exercise the client's transport code, not TF Serving itself.
"""

import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tensorflow as tf

from neuroicl_tf import export as ex
from neuroicl_tf import serving as sv
from neuroicl_tf.models import Neuralizer


def _grpc_apis():
    """grpc and the TF Serving protos (the extra ``tensorflow-serving-api``), or skip."""
    grpc = pytest.importorskip("grpc")
    apis = pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc")
    predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")
    return grpc, apis, predict_pb2

RNG = np.random.default_rng(1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(Keras model, loaded SavedModel, inputs, Keras output) for a tiny Neuralizer."""
    model = Neuralizer(ndims=2, stages=2, channels=2, spatial_shape=(8, 8))
    version_dir = ex.export_saved_model(model, tmp_path_factory.mktemp("export"))
    loaded = tf.saved_model.load(version_dir)
    inputs = {
        "target": RNG.random((2, 8, 8, 3), dtype=np.float32),
        "context_in": RNG.random((2, 3, 8, 8, 3), dtype=np.float32),
        "context_out": (RNG.random((2, 3, 8, 8, 3)) > 0.5).astype(np.float32),
    }
    want = model({k: tf.constant(v) for k, v in inputs.items()}, training=False).numpy()
    return model, loaded, inputs, want


def _run_signature(loaded, arrays, signature=sv.DEFAULT_SIGNATURE):
    fn = loaded.signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(a) for k, a in arrays.items()}).items()}


def test_rest_columnar_payload_decodes_and_runs(served):
    _, loaded, inputs, want = served
    body = json.loads(json.dumps(sv.rest_payload(**inputs, form="inputs")))
    assert body["signature_name"] == "serving_default"
    decoded = {k: np.asarray(v, np.float32) for k, v in body["inputs"].items()}
    assert {k: v.shape for k, v in decoded.items()} == {k: v.shape for k, v in inputs.items()}
    for key in inputs:  # float32 -> JSON decimal -> float32 is exact
        np.testing.assert_array_equal(decoded[key], inputs[key])
    np.testing.assert_allclose(_run_signature(loaded, decoded)["output"], want, rtol=1e-5,
                               atol=1e-6)


def test_rest_row_payload_decodes_and_runs(served):
    _, loaded, inputs, want = served
    body = json.loads(json.dumps(sv.rest_payload(**inputs, form="instances")))
    rows = body["instances"]
    assert len(rows) == 2 and sorted(rows[0]) == ["context_in", "context_out", "target"]
    assert np.asarray(rows[0]["context_in"]).shape == (3, 8, 8, 3)  # one batch element
    decoded = {k: np.stack([np.asarray(r[k], np.float32) for r in rows]) for k in rows[0]}
    for key in inputs:
        np.testing.assert_array_equal(decoded[key], inputs[key])
    np.testing.assert_allclose(_run_signature(loaded, decoded)["output"], want, rtol=1e-5,
                               atol=1e-6)


def test_parse_rest_response_both_forms():
    out = RNG.random((2, 4, 4, 1), dtype=np.float32)
    np.testing.assert_array_equal(sv.parse_rest_response(json.dumps({"outputs": out.tolist()})),
                                  out)
    np.testing.assert_array_equal(
        sv.parse_rest_response({"outputs": {"output": out.tolist(), "other": 1}}), out)
    np.testing.assert_array_equal(
        sv.parse_rest_response({"predictions": [o.tolist() for o in out]}), out)
    np.testing.assert_array_equal(
        sv.parse_rest_response({"predictions": [{"output": o.tolist()} for o in out]}), out)
    with pytest.raises(ValueError, match="TF Serving returned an error: bad input"):
        sv.parse_rest_response('{"error": "bad input"}')
    assert sv.rest_url("h", "nv3d") == "http://h:8501/v1/models/nv3d:predict"
    assert sv.rest_url("h", "nv3d", 3) == "http://h:8501/v1/models/nv3d/versions/3:predict"


def test_grpc_request_decodes_to_the_inputs(served):
    _, _, predict_pb2 = _grpc_apis()
    _, loaded, inputs, want = served
    request = sv.grpc_request(**inputs, model_name="neuroicl", version=4)
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())  # on the wire
    assert request.model_spec.name == "neuroicl"
    assert request.model_spec.signature_name == "serving_default"
    assert request.model_spec.version.value == 4
    assert list(request.output_filter) == ["output"]
    decoded = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    for key in inputs:
        assert decoded[key].dtype == np.float32
        np.testing.assert_array_equal(decoded[key], inputs[key])
    np.testing.assert_allclose(_run_signature(loaded, decoded)["output"], want, rtol=1e-5,
                               atol=1e-6)
    assert not sv.grpc_request(**inputs, model_name="m").model_spec.HasField("version")


def test_input_checks():
    t = np.zeros((1, 8, 8, 3), np.float32)
    c = np.zeros((1, 2, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match=r"context_in must be \(B, L, \*S, Cin\)"):
        sv.check_inputs(t, c[:, :, :4], c)
    with pytest.raises(ValueError, match=r"context_out must be"):
        sv.check_inputs(t, c, c[:, :1])
    with pytest.raises(ValueError, match="at least one pair"):
        sv.check_inputs(t, c[:, :0], c[:, :0])
    bad = c.copy()
    bad[0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="context_out holds NaN"):
        sv.rest_payload(t, c, bad)
    with pytest.raises(ValueError, match="form must be"):
        sv.rest_payload(t, c, c, form="rows")
    # Cout may differ from Cin.
    assert sv.check_inputs(t, c, c[..., :1])["context_out"].shape == (1, 2, 8, 8, 1)


def test_predict_grpc_against_in_process_prediction_service(served):
    _, loaded, inputs, want = served
    grpc, apis, predict_pb2 = _grpc_apis()

    class FakePredictionService(apis.PredictionServiceServicer):
        """Answers Predict from the SavedModel, as TF Serving would."""

        def __init__(self):
            self.requests = []

        def Predict(self, request, context):  # noqa: N802 - gRPC method name
            self.requests.append(request)
            arrays = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            outputs = _run_signature(loaded, arrays, request.model_spec.signature_name)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(request.model_spec)
            for key, value in outputs.items():
                if not request.output_filter or key in request.output_filter:
                    response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

    servicer = FakePredictionService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=sv.GRPC_OPTIONS)
    apis.add_PredictionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        got = sv.predict_grpc(f"127.0.0.1:{port}", "neuroicl", **inputs, timeout=60)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert servicer.requests[0].model_spec.name == "neuroicl"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = apis.PredictionServiceStub(channel)
            meta = sv.parse_grpc_response(stub.Predict(sv.metadata_grpc_request("neuroicl")),
                                          output_key="metadata")
        assert json.loads(meta)["signatures"]["serving_default"]["outputs"]["output"]
    finally:
        server.stop(None)


def test_predict_rest_against_in_process_http_server(served):
    _, loaded, inputs, want = served
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server method name
            seen.append(self.path)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if "inputs" in body:
                arrays = {k: np.asarray(v, np.float32) for k, v in body["inputs"].items()}
            else:
                rows = body["instances"]
                arrays = {k: np.stack([np.asarray(r[k], np.float32) for r in rows])
                          for k in rows[0]}
            out = _run_signature(loaded, arrays, body["signature_name"])["output"]
            answer = ({"outputs": out.tolist()} if "inputs" in body
                      else {"predictions": [o.tolist() for o in out]})
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = sv.rest_url("127.0.0.1", "neuroicl", port=server.server_address[1])
        for form in ("inputs", "instances"):
            got = sv.predict_rest(url, **inputs, form=form, timeout=60)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert seen == ["/v1/models/neuroicl:predict"] * 2
    finally:
        server.shutdown()
        server.server_close()
