"""TF Serving's JSON <-> tensor rules (json_tensor.cc), tested without a server."""
import json

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2 as T

from serving.client.errors import InvalidArgument
from serving.client.tensor_codec import (array_to_json, json_to_array, json_to_output,
                                  parse_json_object, predict_response_json, request_tensors,
                                  signature_name_of)

TYPES = {"query": T.DT_STRING, "x": T.DT_FLOAT}


def test_parse_accepts_nan_and_infinity():
    doc = parse_json_object(b'{"inputs": [NaN, Infinity, -Infinity]}')
    array = json_to_array(doc["inputs"], T.DT_FLOAT)
    assert np.isnan(array[0]) and array[1] == np.inf and array[2] == -np.inf


@pytest.mark.parametrize("body,message", [
    (b"   ", "The document is empty"),
    (b"{", "JSON Parse error"),
    (b"\xff\xfe", "JSON Parse error"),
    (b"[" * 100000, "JSON Parse error"),
    (b'"text"', "Is not object"),
])
def test_parse_errors(body, message):
    with pytest.raises(InvalidArgument, match=message):
        parse_json_object(body)


def test_signature_name_must_be_a_string():
    assert signature_name_of({}) == ""
    assert signature_name_of({"signature_name": "embed"}) == "embed"
    with pytest.raises(InvalidArgument, match="must be a string"):
        signature_name_of({"signature_name": ["embed"]})


@pytest.mark.parametrize("value,datatype,expected", [
    ([1, 2.5], T.DT_FLOAT, np.array([1, 2.5], np.float32)),
    ([[1], [2]], T.DT_INT64, np.array([[1], [2]], np.int64)),
    ([True, False], T.DT_BOOL, np.array([True, False])),
    (7, T.DT_INT32, np.array(7, np.int32)),
    ([[]], T.DT_FLOAT, np.zeros((1, 0), np.float32)),
])
def test_json_to_array(value, datatype, expected):
    array = json_to_array(value, datatype)
    assert array.dtype == expected.dtype and array.shape == expected.shape
    np.testing.assert_array_equal(array, expected)


def test_strings_and_b64():
    array = json_to_array(["é", {"b64": "/wA="}, {"b64": "/wA"}], T.DT_STRING)
    assert array.tolist() == ["é".encode(), b"\xff\x00", b"\xff\x00"]


@pytest.mark.parametrize("value,datatype,message", [
    ([1, "2"], T.DT_FLOAT, 'JSON Value: "2" Type: String is not of expected type: float'),
    ([True], T.DT_INT64, "Type: True is not of expected type: int64"),
    ([1.0], T.DT_INT32, "Type: Number is not of expected type: int32"),
    ([2**31], T.DT_INT32, "is not of expected type: int32"),
    ([300], T.DT_UINT8, "is not of expected type: uint8"),
    ([1], T.DT_BOOL, "is not of expected type: bool"),
    ([None], T.DT_FLOAT, "Type: Null"),
    ([16777217], T.DT_FLOAT, "without loss of precision"),
    ([1e39], T.DT_FLOAT, "without loss of precision"),
    ([{"b64": "a"}], T.DT_FLOAT, "Type: Object is not of expected type: float"),
    ([{"b64": "a", "x": 1}], T.DT_STRING, "not formatted correctly for base64 data"),
    ([{"b64": "*"}], T.DT_STRING, "Unable to base64 decode"),
    ([[1], 2], T.DT_FLOAT, "found at incorrect level"),
    ([1, [2]], T.DT_FLOAT, "Encountered list at unexpected level"),
    ([[1, 2], [3]], T.DT_FLOAT, "Encountered list at unexpected size: 1"),
])
def test_json_to_array_errors(value, datatype, message):
    with pytest.raises(InvalidArgument) as e:
        json_to_array(value, datatype)
    assert message in e.value.message


def test_instances_objects_batch_named_inputs():
    inputs, row = request_tensors(
        {"instances": [{"query": "a", "x": [1, 2, 3]}, {"query": "b", "x": [4, 5, 6]}]},
        TYPES, "")
    assert row is True
    assert inputs["query"].tolist() == [b"a", b"b"]
    assert inputs["x"].shape == (2, 3) and inputs["x"].dtype == np.float32


def test_instances_plain_list_for_single_input():
    inputs, row = request_tensors({"instances": [[1, 2], [3, 4]]}, {"v": T.DT_INT64}, "")
    assert row and inputs["v"].shape == (2, 2)


@pytest.mark.parametrize("instances,message", [
    ([{"query": "a", "x": [1, 2, 3]}, {"query": "b", "x": [1, 2]}],
     "Failed to process element: 1 key: x of 'instances' list. Error: INVALID_ARGUMENT: "
     "Expecting tensor size: 3 but got: 2"),
    ([{"query": "a", "x": [1, 2, 3]}, {"query": "b", "x": [[1, 2, 3]]}],
     "Expecting shape [3] but got: [1,3]"),
    ([{"query": "a", "x": [1, 2, 3]}, ["b"]], "Expecting object but got list at item 1"),
    ([{"query": "a", "x": [1, 2, 3], "z": 1}], "does not have named input: z"),
    ([{"query": "a"}], "keys must be equal to: query,x"),
    (["a"], "instances is a plain list, but expecting list of objects"),
])
def test_instances_errors(instances, message):
    with pytest.raises(InvalidArgument) as e:
        request_tensors({"instances": instances}, TYPES, "")
    assert message in e.value.message


def test_inputs_columnar_ignores_unknown_keys_like_tf_serving():
    inputs, row = request_tensors(
        {"inputs": {"query": ["a"], "x": [[1, 2, 3]], "unused": 1}}, TYPES, "")
    assert row is False and set(inputs) == {"query", "x"}


def test_inputs_plain_value_needs_single_input():
    with pytest.raises(InvalidArgument, match="inputs is a plain value/list"):
        request_tensors({"inputs": [1]}, TYPES, "")
    inputs, _ = request_tensors({"inputs": {"b64": "YQ=="}}, {"s": T.DT_STRING}, "")
    assert inputs["s"].tolist() == b"a"


def test_empty_signature_inputs():
    with pytest.raises(InvalidArgument, match="Failed to get input map for signature: DEFAULT"):
        request_tensors({"inputs": [1]}, {}, "")


def test_response_formats():
    outputs = {"score": np.array([0.1, 2.0], np.float32), "id": np.array([1, 2], np.int64),
               "tag_bytes": np.array([b"\xff", b"a"], dtype=object)}
    row = json.loads(predict_response_json(outputs, row_format=True))
    assert row == {"predictions": [{"id": 1, "score": 0.1, "tag_bytes": {"b64": "/w=="}},
                                   {"id": 2, "score": 2.0, "tag_bytes": {"b64": "YQ=="}}]}
    col = json.loads(predict_response_json(outputs, row_format=False))
    assert col["outputs"]["score"] == [0.1, 2.0]
    single = json.loads(predict_response_json({"s": np.array(["é"], dtype=object)}, True))
    assert single == {"predictions": ["é"]}


def test_response_special_floats_and_batch_checks():
    text = predict_response_json({"v": np.array([np.nan, np.inf], np.float32)}, False)
    assert text == '{"outputs": [NaN, Infinity]}'
    with pytest.raises(InvalidArgument, match="has no shape information"):
        predict_response_json({"v": np.array(1.0)}, True)
    with pytest.raises(InvalidArgument, match="inconsistent batch size"):
        predict_response_json({"a": np.zeros(2), "b": np.zeros(3)}, True)


def test_client_side_encoding_round_trip():
    assert array_to_json(np.array([b"\xff", "é"], dtype=object)) == [{"b64": "/w=="}, "é"]
    assert array_to_json(np.array([[1.5]], np.float32)) == [[1.5]]
    back = json_to_output([{"b64": "/w=="}, "é"], np.dtype(object))
    assert back.tolist() == [b"\xff", "é".encode()]
    assert json_to_output([[1, 2]], np.dtype(np.float32)).dtype == np.float32
