"""numpy <-> ``tensorflow.TensorProto`` conversion for the gRPC API.

Responses are written the way TF Serving writes them (``Tensor::AsProtoField``: values in
the typed ``*_val`` fields), so clients that read ``outputs["y"].float_val`` work against
the stand-in as they do against TF Serving. Requests may use either encoding.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.client.errors import InvalidArgument

# DataType enum -> (numpy dtype, TensorProto field used by AsProtoField)
_BY_DATATYPE = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_UINT16: (np.uint16, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
    types_pb2.DT_STRING: (np.object_, "string_val"),
    types_pb2.DT_HALF: (np.float16, "half_val"),
}
_DATATYPE_BY_NUMPY = {np.dtype(np_type): dt for dt, (np_type, _) in _BY_DATATYPE.items()
                      if np_type is not np.object_}


def dtype_name(datatype: int) -> str:
    """``DT_FLOAT`` for ``types_pb2.DT_FLOAT``."""
    return types_pb2.DataType.Name(datatype)


def numpy_dtype(datatype: int) -> np.dtype:
    """The numpy dtype for a DataType (``object`` holding bytes for DT_STRING)."""
    if datatype not in _BY_DATATYPE:
        raise InvalidArgument(f"Unsupported tensor type: {dtype_name(datatype)}")
    return np.dtype(_BY_DATATYPE[datatype][0])


def datatype_of(array: np.ndarray) -> int:
    """The DataType for a numpy array; str/bytes/object arrays are DT_STRING."""
    if array.dtype.kind in "OSU":
        return types_pb2.DT_STRING
    if array.dtype not in _DATATYPE_BY_NUMPY:
        raise InvalidArgument(f"numpy dtype {array.dtype} has no TensorFlow equivalent")
    return _DATATYPE_BY_NUMPY[array.dtype]


def as_string_array(array: np.ndarray) -> np.ndarray:
    """An object array of bytes (str elements are UTF-8 encoded)."""
    flat = [v.encode("utf-8") if isinstance(v, str) else v for v in array.ravel().tolist()]
    for value in flat:
        if not isinstance(value, bytes):
            raise InvalidArgument(
                f"string tensor holds a {type(value).__name__} ({value!r}); "
                "use str or bytes elements")
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)


def to_tensor_proto(array: np.ndarray, as_fields: bool = True) -> tensor_pb2.TensorProto:
    """Encode an array; ``as_fields`` writes ``*_val`` fields, else ``tensor_content``."""
    array = np.asarray(array)
    datatype = datatype_of(array)
    proto = tensor_pb2.TensorProto(dtype=datatype, tensor_shape=shape_proto(array.shape))
    if datatype == types_pb2.DT_STRING:
        proto.string_val.extend(as_string_array(array).ravel().tolist())
    elif datatype == types_pb2.DT_HALF:
        proto.half_val.extend(array.ravel().view(np.uint16).tolist())
    elif as_fields:
        getattr(proto, _BY_DATATYPE[datatype][1]).extend(array.ravel().tolist())
    else:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto


def shape_proto(shape) -> tensor_shape_pb2.TensorShapeProto:
    """A TensorShapeProto for a tuple of ints (``None`` -> -1)."""
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=-1 if d is None else int(d))
             for d in shape])


def from_tensor_proto(proto: tensor_pb2.TensorProto, name: str = "") -> np.ndarray:
    """Decode a TensorProto; a malformed one is INVALID_ARGUMENT, as in TF Serving."""
    if proto.dtype not in _BY_DATATYPE:
        raise InvalidArgument(f"tensor parsing error: {name}")
    if any(d.size < 0 for d in proto.tensor_shape.dim) or proto.tensor_shape.unknown_rank:
        raise InvalidArgument(f"tensor parsing error: {name}")
    try:
        array = tf.make_ndarray(proto)
    except (ValueError, TypeError, IndexError):
        raise InvalidArgument(f"tensor parsing error: {name}") from None
    expected = int(np.prod([d.size for d in proto.tensor_shape.dim]))
    if array.size != expected:
        raise InvalidArgument(f"tensor parsing error: {name}")
    return array
