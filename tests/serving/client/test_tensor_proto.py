"""numpy <-> TensorProto, including TF Serving's typed-field encoding of responses."""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from serving.client.errors import InvalidArgument
from serving.client.tensor_proto import from_tensor_proto, to_tensor_proto


@pytest.mark.parametrize("array", [
    np.array([[1.5, 2.0]], np.float32), np.array([1, -2], np.int64), np.array([3], np.int32),
    np.array([True, False]), np.array([0.25], np.float64), np.array([1.5], np.float16),
    np.array([b"\xff", b"a"], dtype=object), np.array(["é", "b"]), np.zeros((0, 3), np.float32),
])
@pytest.mark.parametrize("as_fields", [True, False])
def test_round_trip(array, as_fields):
    back = from_tensor_proto(to_tensor_proto(array, as_fields=as_fields))
    expected = np.vectorize(lambda s: s.encode())(array) if array.dtype.kind == "U" else array
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, expected)


def test_response_encoding_uses_typed_fields_like_tf_serving():
    proto = to_tensor_proto(np.array([0.5, 1.5], np.float32), as_fields=True)
    assert proto.dtype == types_pb2.DT_FLOAT and list(proto.float_val) == [0.5, 1.5]
    assert not proto.tensor_content


def test_reads_what_tf_make_tensor_proto_writes():
    proto = tf.make_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(from_tensor_proto(proto), np.arange(6).reshape(2, 3))


def test_malformed_protos_are_invalid_argument():
    proto = to_tensor_proto(np.ones(4, np.float32), as_fields=False)
    proto.tensor_content = proto.tensor_content[:-1]
    with pytest.raises(InvalidArgument, match="tensor parsing error: x"):
        from_tensor_proto(proto, "x")
    proto = to_tensor_proto(np.ones(2, np.float32))
    proto.tensor_shape.dim[0].size = -1
    with pytest.raises(InvalidArgument, match="tensor parsing error"):
        from_tensor_proto(proto, "x")
    with pytest.raises(InvalidArgument):
        to_tensor_proto(np.array([1 + 2j]))
    with pytest.raises(InvalidArgument, match="use str or bytes"):
        to_tensor_proto(np.array([b"a", 3], dtype=object))
