"""The gRPC API with the raw tensorflow-serving-api stubs, as any TF Serving client uses it."""
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)


@pytest.fixture(scope="module")
def channel(grpc_address):
    with grpc.insecure_channel(grpc_address) as ch:
        yield ch


@pytest.fixture(scope="module")
def predict_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


def embed_request(**spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", "tiny")
    request.model_spec.signature_name = spec.pop("signature", "embed")
    request.inputs["ids"].CopyFrom(tf.make_tensor_proto(np.array([4], np.int64)))
    return request


def assert_rpc_error(call, code, fragment=""):
    with pytest.raises(grpc.RpcError) as e:
        call()
    assert e.value.code() == code, e.value.details()
    assert fragment in e.value.details()


def test_predict_response_like_tf_serving(predict_stub):
    response = predict_stub.Predict(embed_request(), timeout=30)
    assert response.model_spec.name == "tiny"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "embed"
    embedding = response.outputs["embedding"]
    assert list(embedding.float_val) == [8.0, -4.0]  # typed fields, as AsProtoField writes
    assert [d.size for d in embedding.tensor_shape.dim] == [1, 2]
    np.testing.assert_array_equal(tf.make_ndarray(embedding), [[8.0, -4.0]])


def test_default_signature_when_name_is_empty(predict_stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.inputs["query"].CopyFrom(tf.make_tensor_proto(["ab"]))
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 3), np.float32)))
    request.output_filter.append("score")
    response = predict_stub.Predict(request, timeout=30)
    assert list(response.outputs) == ["score"]
    assert response.model_spec.signature_name == "serving_default"


def test_predict_errors(predict_stub):
    assert_rpc_error(lambda: predict_stub.Predict(predict_pb2.PredictRequest(), timeout=30),
                     grpc.StatusCode.INVALID_ARGUMENT)
    assert_rpc_error(lambda: predict_stub.Predict(embed_request(name="nope"), timeout=30),
                     grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
    assert_rpc_error(lambda: predict_stub.Predict(embed_request(signature="nope"), timeout=30),
                     grpc.StatusCode.FAILED_PRECONDITION,
                     'Serving signature key "nope" not found.')
    request = embed_request()
    request.inputs["extra"].CopyFrom(tf.make_tensor_proto([1.0]))
    assert_rpc_error(lambda: predict_stub.Predict(request, timeout=30),
                     grpc.StatusCode.INVALID_ARGUMENT,
                     "input size does not match signature: 2!=1 len({extra,ids}) != "
                     "len({ids}). Sent extra: {extra}. Missing but required: {}.")
    request = embed_request()
    request.output_filter.extend(["embedding", "embedding"])
    assert_rpc_error(lambda: predict_stub.Predict(request, timeout=30),
                     grpc.StatusCode.INVALID_ARGUMENT, "duplicate output tensor alias")
    request = embed_request()
    request.inputs["ids"].tensor_content = b"\x00"
    assert_rpc_error(lambda: predict_stub.Predict(request, timeout=30),
                     grpc.StatusCode.INVALID_ARGUMENT)


def test_metadata_response(predict_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    request.model_spec.version.value = 1
    response = predict_stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    embedding = signatures.signature_def["embed"].outputs["embedding"]
    assert embedding.dtype == tf.float32.as_datatype_enum


def test_metadata_field_is_validated(predict_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "tiny"
    assert_rpc_error(lambda: predict_stub.GetModelMetadata(request, timeout=30),
                     grpc.StatusCode.INVALID_ARGUMENT, "at least one metadata_field")
    request.metadata_field.append("graph")
    assert_rpc_error(lambda: predict_stub.GetModelMetadata(request, timeout=30),
                     grpc.StatusCode.INVALID_ARGUMENT, "graph")


def test_model_status(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    response = model_stub.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    request.model_spec.name = "nope"
    assert_rpc_error(lambda: model_stub.GetModelStatus(request, timeout=30),
                     grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope")


def test_reload_config_rejects_invalid_config(model_stub, real_tfserving):
    if real_tfserving:
        pytest.skip("would change the real server's configuration")
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.config.add(name="x")  # no base_path
    response = model_stub.HandleReloadConfigRequest(request, timeout=30)
    assert response.status.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "'base_path' is required" in response.status.error_message
