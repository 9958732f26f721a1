"""The REST wire format, byte for byte where TF Serving defines it: status and metadata
JSON, predict request/response forms, and the ``{"error": ...}`` shape with TF Serving's
HTTP status for each client mistake (never 5xx)."""
import base64
import json

import httpx
import pytest


@pytest.fixture(scope="module")
def http(rest_url):
    with httpx.Client(base_url=rest_url, timeout=30) as c:
        yield c


def post(http, path, body):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return http.post(path, content=data, headers={"Content-Type": "application/json"})


def assert_error(response, status, *fragments):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    for fragment in fragments:
        assert fragment in body["error"], body["error"]


def test_status_json_shape(http):
    response = http.get("/v1/models/tiny/versions/1")
    assert response.status_code == 200
    assert response.json() == {"model_version_status": [{
        "version": "1", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}]}
    labelled = http.get("/v1/models/tiny/labels/canary").json()
    assert [s["version"] for s in labelled["model_version_status"]] == ["2"]


def test_metadata_json_shape(http):
    body = http.get("/v1/models/tiny/versions/2/metadata").json()
    assert body["model_spec"] == {"name": "tiny", "signature_name": "", "version": "2"}
    embed = body["metadata"]["signature_def"]["signature_def"]["embed"]
    assert embed["method_name"] == "tensorflow/serving/predict"
    ids = embed["inputs"]["ids"]
    assert ids["dtype"] == "DT_INT64"
    assert ids["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}


def test_row_format_response(http):
    response = post(http, "/v1/models/tiny:predict",
                    {"instances": [{"query": "ab", "x": [1.0, 2.0, 3.0]},
                                   {"query": "c", "x": [0.5, 0.25, 0.125]}]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [
        {"label": "AB", "score": 14.0, "version": 2},
        {"label": "C", "score": 2.75, "version": 2}]}


def test_columnar_response_and_single_output_name_omitted(http):
    response = post(http, "/v1/models/tiny/versions/1:predict",
                    {"signature_name": "embed", "inputs": [1, 2]})
    assert response.json() == {"outputs": [[1.0, -1.0], [2.0, -2.0]]}
    response = post(http, "/v1/models/tiny/versions/1:predict",
                    {"signature_name": "embed", "instances": [3]})
    assert response.json() == {"predictions": [[3.0, -3.0]]}


def test_float32_written_in_shortest_form(http):
    response = post(http, "/v1/models/tiny/versions/1:predict",
                    {"inputs": {"query": [""], "x": [[0.1, 0.0, 0.0]]}, "signature_name": ""})
    assert '"score": [0.1]' in response.text.replace("\n", "").replace("  ", " ")


def test_binary_values_use_b64(http):
    sent = base64.b64encode(b"\xff\x00").decode()
    response = post(http, "/v1/models/tiny:predict",
                    {"signature_name": "echo_bytes", "instances": [{"b64": sent}]})
    assert response.status_code == 200, response.text
    (value,) = response.json()["predictions"]
    assert base64.b64decode(value["b64"]) == b"\xff\x00!"


@pytest.mark.parametrize("body,fragment", [
    (b"", "JSON Parse error"),
    (b"{\"instances\": [1, 2]", "JSON Parse error"),
    (b"[1, 2]", "Is not object"),
    ({"signature_name": 7, "instances": [1]}, "'signature_name' key must be a string value."),
    ({"signature_name": "embed"}, "Missing 'inputs' or 'instances' key"),
    ({"signature_name": "embed", "instances": [1], "inputs": [1]}, "only one of"),
    ({"signature_name": "embed", "instances": []}, "No values in 'instances' array"),
    ({"signature_name": "embed", "instances": 1}, "to be an list/array"),
    ({"signature_name": "embed", "instances": [1.5]}, "is not of expected type: int64"),
    ({"signature_name": "embed", "instances": ["1"]}, "is not of expected type: int64"),
    ({"signature_name": "embed", "instances": [[1, 2], [3]]}, "Expecting"),
    ({"signature_name": "embed", "instances": [{"ids": 1, "extra": 2}]},
     "does not have named input: extra"),
    ({"inputs": {"query": ["a"]}}, "Missing named input: x in 'inputs' object."),
    ({"instances": [{"query": "a"}]}, "keys must be equal to: query,x"),
    ({"instances": ["a"]}, "expecting list of objects"),
    ({"instances": [{"query": "a", "x": [1, 2, 3e40]}]}, "without loss of precision"),
    ({"signature_name": "echo_bytes", "instances": [{"b64": "!!"}]}, "base64"),
    ({"signature_name": "nope", "instances": [1]}, "\"nope\" not found"),
])
def test_bad_requests_are_400(http, body, fragment):
    assert_error(post(http, "/v1/models/tiny:predict", body), 400, fragment)


def test_wrong_shape_is_400(http):
    assert_error(post(http, "/v1/models/tiny:predict",
                      {"instances": [{"query": "a", "x": [1.0, 2.0]}]}), 400)


def test_unknown_model_and_version_are_404(http):
    assert_error(post(http, "/v1/models/nope:predict", {"instances": [1]}), 404,
                 "Servable not found for request: Latest(nope)")
    assert_error(post(http, "/v1/models/tiny/versions/9:predict", {"instances": [1]}), 404,
                 "Specific(tiny, 9)")
    assert_error(http.get("/v1/models/nope"), 404, "Could not find any versions of model nope")
    assert_error(http.get("/v1/models/nope/metadata"), 404)


@pytest.mark.parametrize("method,path,fragment", [
    ("GET", "/v1/models", "Missing model name"),
    ("GET", "/v1/models/tiny:predict", "Malformed request"),
    ("POST", "/v1/models/tiny", "Malformed request"),
    ("GET", "/v1/models/tiny/versions/abc", "Malformed request"),
    ("POST", "/v1/models/tiny/version/1:predict", "Malformed request"),
    ("GET", "/v1/models/tiny/versions/99999999999999999999", "Failed to convert version"),
    ("GET", "/v1/models/tiny/labels/nope", "Unrecognized servable version label: nope"),
])
def test_malformed_urls_are_400(http, method, path, fragment):
    assert_error(http.request(method, path, content=b"{}"), 400, fragment)


def test_paths_outside_the_api_are_404(http, real_tfserving):
    if real_tfserving:
        pytest.skip("TF Serving's 404 page for non-API paths has no JSON body")
    assert_error(http.get("/nope"), 404)
