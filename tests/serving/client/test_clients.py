"""Client round trips and error paths, gRPC and REST, against the server under test.

Runs against a real TF Serving when SHOPREC_TFSERVING_GRPC / SHOPREC_TFSERVING_REST are
set (serving ``python -m tests.serving.tiny_models``), otherwise against the stand-in.
Only behaviour TF Serving itself has is asserted here.
"""
import numpy as np
import pytest

from serving.client.clients import (GrpcPredictClient, InvalidArgument, NotFound, RestPredictClient,
                            ServingError, Unavailable)

QUERY = ["ab", "héllo"]
X = np.array([[1, 2, 3], [0, 0, 1]], dtype=np.float32)


def expected_score(version, query=QUERY, x=X):
    return version * x.sum(axis=1) + np.array([len(q.encode()) for q in query])


@pytest.mark.parametrize("form", ["inputs", "instances"])
def test_predict_strings_and_floats_batch(client, form):
    kwargs = {"form": form} if isinstance(client, RestPredictClient) else {}
    out = client.predict("tiny", {"query": QUERY, "x": X}, **kwargs)
    assert sorted(out) == ["label", "score", "version"]
    np.testing.assert_allclose(out["score"], expected_score(2))
    assert out["score"].dtype == np.float32
    assert out["label"].tolist() == [b"AB", "HéLLO".encode()]
    assert out["version"].tolist() == [2, 2] and out["version"].dtype == np.int64


def test_predict_numpy_string_array_and_single_row(client):
    out = client.predict("tiny", {"query": np.array([b"xyz"], dtype=object),
                                  "x": np.ones((1, 3), np.float32)})
    np.testing.assert_allclose(out["score"], [2 * 3 + 3])


def test_signature_selection_single_input_and_output(client):
    out = client.predict("tiny", {"ids": [1, 2, 3]}, signature="embed")
    assert list(out) == ["embedding"]
    np.testing.assert_allclose(out["embedding"], [[2, -1], [4, -2], [6, -3]])
    assert out["embedding"].dtype == np.float32


def test_binary_strings_round_trip(client):
    payload = [b"\xff\x00\xfe", b"plain"]
    out = client.predict("tiny", {"payload_bytes": payload}, signature="echo_bytes")
    assert out["payload_bytes"].tolist() == [b"\xff\x00\xfe!", b"plain!"]


def test_version_pinning_and_labels(client):
    inputs = {"query": QUERY, "x": X}
    assert client.predict("tiny", inputs, version=1)["version"].tolist() == [1, 1]
    assert client.predict("tiny", inputs, version=2)["version"].tolist() == [2, 2]
    assert client.predict("tiny", inputs, version_label="stable")["version"].tolist() == [1, 1]
    assert client.predict("tiny", inputs, version_label="canary")["version"].tolist() == [2, 2]
    np.testing.assert_allclose(client.predict("tiny", inputs, version=1)["score"],
                               expected_score(1))


def test_output_filter(client):
    out = client.predict("tiny", {"query": QUERY, "x": X}, output_filter=["version"])
    assert list(out) == ["version"]
    with pytest.raises(InvalidArgument, match="output tensor alias not found"):
        client.predict("tiny", {"query": QUERY, "x": X}, output_filter=["nope"])


def test_metadata(client):
    meta = client.metadata("tiny")
    assert (meta.name, meta.version) == ("tiny", 2)
    assert {"serving_default", "embed", "echo_bytes"} <= set(meta.signatures)
    default = meta.signatures["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert default.inputs["x"].dtype == "DT_FLOAT" and default.inputs["x"].shape == (-1, 3)
    assert default.inputs["query"].dtype == "DT_STRING"
    assert default.outputs["version"].dtype == "DT_INT64"
    assert client.metadata("tiny", version=1).version == 1
    assert client.metadata("tiny", version_label="stable").version == 1


def test_metadata_is_the_same_over_grpc_and_rest(grpc_address, rest_url):
    with GrpcPredictClient(grpc_address) as g, RestPredictClient(rest_url) as r:
        assert g.metadata("tiny") == r.metadata("tiny")


def test_status(client):
    states = client.status("tiny")
    assert [(s.version, s.state, s.error_code) for s in states] == [
        (2, "AVAILABLE", "OK"), (1, "AVAILABLE", "OK")]
    assert [s.version for s in client.status("tiny", version=1)] == [1]


def test_unknown_model_is_not_found(client):
    with pytest.raises(NotFound) as e:
        client.predict("no_such_model", {"ids": np.array([1])}, signature="embed")
    assert "no_such_model" in e.value.message and e.value.code == "NOT_FOUND"
    with pytest.raises(NotFound):
        client.status("no_such_model")
    with pytest.raises(NotFound):
        client.metadata("no_such_model")


def test_unknown_version_is_not_found(client):
    with pytest.raises(NotFound, match="tiny"):
        client.predict("tiny", {"ids": np.array([1])}, signature="embed", version=99)
    with pytest.raises(NotFound, match="Could not find version 99 of model tiny"):
        client.status("tiny", version=99)


def test_unknown_label_is_invalid(client):
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: nope"):
        client.predict("tiny", {"ids": np.array([1])}, signature="embed",
                       version_label="nope")


def test_unknown_signature_is_a_client_error(client):
    with pytest.raises(InvalidArgument, match='"nope" not found') as e:
        client.predict("tiny", {"ids": np.array([1])}, signature="nope")
    assert e.value.http_status == 400  # gRPC says FAILED_PRECONDITION, REST 400


def test_missing_input_is_invalid(client):
    with pytest.raises(InvalidArgument, match="x"):
        client.predict("tiny", {"query": np.array([b"a"], dtype=object)})


def test_extra_input_is_invalid(grpc_address, rest_url):
    inputs = {"ids": np.array([1]), "extra": np.array([2])}
    with GrpcPredictClient(grpc_address) as g:
        with pytest.raises(InvalidArgument, match="extra"):
            g.predict("tiny", inputs, signature="embed")
    with RestPredictClient(rest_url) as r:  # the row form names every input
        with pytest.raises(InvalidArgument, match="extra"):
            r.predict("tiny", inputs, signature="embed", form="instances")


def test_wrong_dtype_is_invalid(client):
    with pytest.raises(InvalidArgument):
        client.predict("tiny", {"ids": np.array([b"one"], dtype=object)}, signature="embed")
    with pytest.raises(InvalidArgument):
        client.predict("tiny", {"ids": ["one"]}, signature="embed")


def test_wrong_shape_is_invalid(client):
    with pytest.raises(InvalidArgument):
        client.predict("tiny", {"query": np.array([b"a"], dtype=object),
                                "x": np.ones((1, 2), np.float32)})


def test_unreachable_server_is_unavailable_after_retries():
    import portpicker

    port = portpicker.pick_unused_port()
    for c in (GrpcPredictClient(f"127.0.0.1:{port}", deadline_s=2, retries=2, backoff=0.01),
              RestPredictClient(f"http://127.0.0.1:{port}", timeout_s=2, retries=2,
                                backoff=0.01)):
        with c, pytest.raises(Unavailable):
            c.status("tiny")


def test_error_carries_server_message(client):
    with pytest.raises(ServingError) as e:
        client.status("no_such_model")
    assert str(e.value).startswith("NOT_FOUND: ") and e.value.http_status == 404


class FlakyModelService:
    """A gRPC ModelService answering ``codes`` (then OK) to successive GetModelStatus."""

    def __init__(self, codes):
        from concurrent import futures

        import grpc
        from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc)

        self.calls, codes = 0, list(codes)
        outer = self

        class Servicer(model_service_pb2_grpc.ModelServiceServicer):
            def GetModelStatus(self, request, context):
                outer.calls += 1
                if codes:
                    context.abort(codes.pop(0), "try again")
                response = get_model_status_pb2.GetModelStatusResponse()
                response.model_version_status.add(version=1, state=30)
                return response

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


class FlakyHttp:
    """An HTTP server answering ``statuses`` (then a status JSON) to successive GETs."""

    def __init__(self, statuses):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.calls, statuses = 0, list(statuses)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.calls += 1
                status = statuses.pop(0) if statuses else 200
                body = json.dumps({"error": "busy"} if status != 200 else {
                    "model_version_status": [{"version": "1", "state": "AVAILABLE",
                                              "status": {"error_code": "OK",
                                                         "error_message": ""}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_grpc_retries_only_unavailable():
    import grpc

    flaky = FlakyModelService([grpc.StatusCode.UNAVAILABLE] * 2)
    with GrpcPredictClient(f"127.0.0.1:{flaky.port}", retries=2, backoff=0.01) as c:
        assert c.status("m")[0].state == "AVAILABLE" and flaky.calls == 3
    flaky = FlakyModelService([grpc.StatusCode.UNAVAILABLE] * 2)
    with GrpcPredictClient(f"127.0.0.1:{flaky.port}", retries=1, backoff=0.01) as c:
        with pytest.raises(Unavailable, match="try again"):
            c.status("m")
        assert flaky.calls == 2
    flaky = FlakyModelService([grpc.StatusCode.NOT_FOUND])
    with GrpcPredictClient(f"127.0.0.1:{flaky.port}", retries=3, backoff=0.01) as c:
        with pytest.raises(NotFound):
            c.status("m")
        assert flaky.calls == 1
    flaky.server.stop(0)


def test_rest_retries_only_503_and_connection_errors():
    flaky = FlakyHttp([503, 503])
    with RestPredictClient(f"http://127.0.0.1:{flaky.port}", retries=2, backoff=0.01) as c:
        assert c.status("m")[0].version == 1 and flaky.calls == 3
    flaky = FlakyHttp([503, 503])
    with RestPredictClient(f"http://127.0.0.1:{flaky.port}", retries=1, backoff=0.01) as c:
        with pytest.raises(Unavailable, match="busy"):
            c.status("m")
        assert flaky.calls == 2
    flaky = FlakyHttp([404])
    with RestPredictClient(f"http://127.0.0.1:{flaky.port}", retries=3, backoff=0.01) as c:
        with pytest.raises(NotFound, match="busy"):
            c.status("m")
        assert flaky.calls == 1
    flaky.server.shutdown()


def test_backoff_is_exponential_and_bounded(monkeypatch):
    import serving.client.clients as client_module

    sleeps = []
    monkeypatch.setattr(client_module.time, "sleep", sleeps.append)
    monkeypatch.setattr(client_module.random, "uniform", lambda a, b: 1.0)
    c = RestPredictClient("http://127.0.0.1:1", retries=5, backoff=0.1, max_backoff=0.5)
    for attempt in range(5):
        c._sleep_before_retry(attempt)
    assert sleeps == [0.1, 0.2, 0.4, 0.5, 0.5]
    c.close()
