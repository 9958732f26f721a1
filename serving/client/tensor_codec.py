"""JSON <-> tensor conversion for TF Serving's REST predict API.

Server side it follows TF Serving's ``json_tensor.cc``: the signature's input dtypes decide
how JSON values convert; ``instances`` (row format: a list, one element per batch item)
and ``inputs`` (columnar: a value or an object of named values); binary strings as
``{"b64": ...}``; responses as ``predictions`` (row) or ``outputs`` (columnar), with
outputs named ``*_bytes`` written as b64 objects. Error messages match TF Serving's.
Client side it encodes numpy inputs and decodes responses back to numpy.
"""
from __future__ import annotations

import base64
import binascii
import json
import math

import numpy as np
from tensorflow.core.framework import types_pb2 as T

from serving.client.errors import InvalidArgument
from serving.client.tensor_proto import as_string_array, numpy_dtype

_TYPE_NAMES = {  # DataTypeString() as TF Serving prints it
    T.DT_FLOAT: "float", T.DT_DOUBLE: "double", T.DT_INT32: "int32", T.DT_INT16: "int16",
    T.DT_INT8: "int8", T.DT_UINT8: "uint8", T.DT_UINT16: "uint16", T.DT_INT64: "int64",
    T.DT_UINT32: "uint32", T.DT_UINT64: "uint64", T.DT_BOOL: "bool", T.DT_STRING: "string",
    T.DT_HALF: "half",
}
_INT_RANGES = {
    T.DT_INT32: (-2**31, 2**31 - 1), T.DT_INT16: (-2**15, 2**15 - 1),
    T.DT_INT8: (-2**7, 2**7 - 1), T.DT_UINT8: (0, 2**8 - 1), T.DT_UINT16: (0, 2**16 - 1),
    T.DT_INT64: (-2**63, 2**63 - 1), T.DT_UINT32: (0, 2**32 - 1), T.DT_UINT64: (0, 2**64 - 1),
}
_FLOAT_LIMITS = {  # (largest exactly representable integer, largest finite value)
    T.DT_FLOAT: (2**24 - 1, float(np.finfo(np.float32).max)),
    T.DT_HALF: (2**11 - 1, float(np.finfo(np.float16).max)),
    T.DT_DOUBLE: (2**53 - 1, float(np.finfo(np.float64).max)),
}
_MAX_ERROR_VALUE = 256  # characters of a JSON value quoted in an error message


def _json_str(value) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= _MAX_ERROR_VALUE else text[:_MAX_ERROR_VALUE] + "..."


def _json_type(value) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _type_error(value, datatype: int) -> InvalidArgument:
    return InvalidArgument(f"JSON Value: {_json_str(value)} Type: {_json_type(value)} "
                           f"is not of expected type: {_TYPE_NAMES.get(datatype, datatype)}")


def parse_json_object(body: bytes) -> dict:
    """Parse a request body that must be a JSON object (NaN/Infinity allowed)."""
    if not body.strip():
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InvalidArgument(f"JSON Parse error: Invalid encoding in string. "
                              f"at offset: {e.start}") from None
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"JSON Parse error: {e.msg} at offset: {e.pos}") from None
    except RecursionError:
        raise InvalidArgument("JSON Parse error: document nested too deeply") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {_json_str(doc)} Is not object")
    return doc


def signature_name_of(doc: dict) -> str:
    """The optional ``signature_name`` ("" when absent)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidArgument(f"JSON Value: {_json_str(doc)} not formatted correctly. "
                              "'signature_name' key must be a string value.")
    return name


def _convert(value, datatype: int):
    if isinstance(value, dict):
        if datatype != T.DT_STRING:
            raise _type_error(value, datatype)
        if not _is_b64(value):
            raise InvalidArgument(f"JSON Value: {_json_str(value)} not formatted correctly "
                                  "for base64 data")
        encoded = value["b64"]
        try:
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument("Unable to base64 decode") from None
    if datatype == T.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, datatype)
        return value.encode("utf-8")
    if datatype == T.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, datatype)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(value, datatype)
    if datatype in _FLOAT_LIMITS:
        max_int, max_value = _FLOAT_LIMITS[datatype]
        lossy = (abs(value) > max_int if isinstance(value, int)
                 else math.isfinite(value) and abs(value) > max_value)
        if lossy:
            raise InvalidArgument(f"Cannot convert JSON value: {_json_str(value)} to "
                                  f"{_TYPE_NAMES[datatype]} without loss of precision.")
        return value
    if datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        if not isinstance(value, int) or not low <= value <= high:
            raise _type_error(value, datatype)
        return value
    raise InvalidArgument(f"Conversion of JSON Value: {_json_str(value)} to type: "
                          f"{_TYPE_NAMES.get(datatype, datatype)}")


def _dense_shape(value) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level: int, shape: list[int], datatype: int, out: list) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise InvalidArgument(
                f"JSON Value: {_json_str(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {len(shape)}")
        out.append(_convert(value, datatype))
        return
    if level >= len(shape):
        raise InvalidArgument(f"Encountered list at unexpected level: {level} "
                              f"expected < {len(shape)}")
    if len(value) != shape[level]:
        raise InvalidArgument(f"Encountered list at unexpected size: {len(value)} at level: "
                              f"{level} expected size: {shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, datatype, out)


def _to_array(values: list, shape: list[int], datatype: int) -> np.ndarray:
    dtype = numpy_dtype(datatype)
    if dtype == object:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


def json_to_array(value, datatype: int) -> np.ndarray:
    """One JSON value (scalar or nested list) to an array of the signature's dtype."""
    shape, values = _dense_shape(value), []
    try:
        _fill(value, 0, shape, datatype, values)
    except RecursionError:
        raise InvalidArgument("JSON value nested too deeply") from None
    return _to_array(values, shape, datatype)


def _from_instances(instances, doc: dict, input_types: dict[str, int]) -> dict:
    if not isinstance(instances, list):
        raise InvalidArgument(f"JSON Value: {_json_str(doc)} Excepting 'instances' to be "
                              "an list/array")
    if not instances:
        raise InvalidArgument(f"JSON Value: {_json_str(doc)} No values in 'instances' array")
    if not isinstance(instances[0], dict) and len(input_types) > 1:
        raise InvalidArgument("instances is a plain list, but expecting list of objects as "
                              "multiple input tensors required as per tensorinfo_map")
    objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
    names = sorted(input_types)
    rows: dict[str, list] = {name: [] for name in names}
    shapes: dict[str, list[int]] = {}
    for index, element in enumerate(instances):
        is_object = isinstance(element, dict) and not _is_b64(element)
        if objects != is_object:
            raise InvalidArgument(
                f"Expecting {'object' if objects else 'value/list'} but got "
                f"{'list' if objects else 'object'} at item {index} of input list")
        items = element.items() if objects else [(names[0], element)]
        for name, value in items:
            where = f"element: {index} key: {name}" if objects else f"element: {index}"
            try:
                if name not in input_types:
                    raise InvalidArgument(f"JSON object: does not have named input: {name}")
                array = json_to_array(value, input_types[name])
                first = shapes.setdefault(name, list(array.shape))
                if int(np.prod(first)) != array.size:
                    raise InvalidArgument(f"Expecting tensor size: {int(np.prod(first))} "
                                          f"but got: {array.size}")
                if first != list(array.shape):
                    raise InvalidArgument(f"Expecting shape [{','.join(map(str, first))}] "
                                          f"but got: [{','.join(map(str, array.shape))}]")
            except InvalidArgument as e:
                raise InvalidArgument(f"Failed to process {where} of 'instances' list. "
                                      f"Error: {e}") from None
            rows[name].append(array)
        if objects and set(element) != set(names):
            raise InvalidArgument(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{_json_str(element)} keys must be equal to: {','.join(names)}")
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def _from_inputs(value, input_types: dict[str, int]) -> dict:
    if not isinstance(value, dict) or _is_b64(value):
        if len(input_types) > 1:
            raise InvalidArgument("inputs is a plain value/list, but expecting an object as "
                                  "multiple input tensors required as per tensorinfo_map")
        (name, datatype), = input_types.items()
        return {name: json_to_array(value, datatype)}
    tensors = {}
    for name in sorted(input_types):  # keys not in the signature are ignored, as in TF Serving
        if name not in value:
            raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = json_to_array(value[name], input_types[name])
    return tensors


def request_tensors(doc: dict, input_types: dict[str, int], signature: str):
    """Inputs of a parsed predict request as arrays, and whether it used row format.

    ``input_types`` maps the signature's input names to their DataType.
    """
    if not input_types:
        raise InvalidArgument(f"Failed to get input map for signature: {signature or 'DEFAULT'}")
    if "instances" in doc and "inputs" in doc:
        raise InvalidArgument(f"JSON Value: {_json_str(doc)} Not formatted correctly expecting "
                              "only one of 'inputs' or 'instances' keys to exist ")
    if "instances" in doc:
        return _from_instances(doc["instances"], doc, input_types), True
    if "inputs" in doc:
        return _from_inputs(doc["inputs"], input_types), False
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def _jsonable(array: np.ndarray, binary: bool):
    """Nested lists for JSON; float32 keeps its shortest decimal form, as in TF Serving."""
    if array.dtype == object or array.dtype.kind in "SU":
        flat = as_string_array(array).ravel().tolist()
        if binary:
            flat = [{"b64": base64.b64encode(v).decode("ascii")} for v in flat]
        else:
            flat = [v.decode("utf-8", errors="replace") for v in flat]
        return np.array(flat + [None], dtype=object)[:-1].reshape(array.shape).tolist()
    if array.dtype in (np.float32, np.float16):
        return array.astype(str).astype(np.float64).tolist()
    return array.tolist()


def predict_response_json(outputs: dict[str, np.ndarray], row_format: bool) -> str:
    """The predict response body: ``{"predictions": ...}`` or ``{"outputs": ...}``."""
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    values = {n: _jsonable(outputs[n], n.endswith("_bytes")) for n in names}
    if not row_format:
        body = values[names[0]] if len(names) == 1 else values
        return json.dumps({"outputs": body})
    batch = None
    for name in names:
        if outputs[name].ndim == 0:
            raise InvalidArgument(f"Tensor name: {name} has no shape information ")
        if batch is not None and outputs[name].shape[0] != batch:
            raise InvalidArgument(f"Tensor name: {name} has inconsistent batch size: "
                                  f"{outputs[name].shape[0]} expecting: {batch}")
        batch = outputs[name].shape[0]
    if len(names) == 1:
        predictions = values[names[0]]
    else:
        predictions = [{n: values[n][i] for n in names} for i in range(batch)]
    return json.dumps({"predictions": predictions})


def array_to_json(value) -> list | float | int | str | bool | dict:
    """Client side: an input (array, list or scalar) as JSON; bytes go as b64 objects."""
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        flat = [{"b64": base64.b64encode(v).decode("ascii")} if isinstance(v, bytes) else v
                for v in array.ravel().tolist()]
        return np.array(flat + [None], dtype=object)[:-1].reshape(array.shape).tolist()
    if array.dtype.kind not in "biuf":
        raise TypeError(f"cannot send numpy dtype {array.dtype} over REST")
    return array.tolist()


def json_to_output(value, dtype: np.dtype | None) -> np.ndarray:
    """Client side: a JSON output value back to numpy; strings and b64 become bytes."""
    def leaf(v):
        if _is_b64(v):
            return base64.b64decode(v["b64"])
        return v.encode("utf-8") if isinstance(v, str) else v

    def walk(v):
        return [walk(x) for x in v] if isinstance(v, list) else leaf(v)

    converted = walk(value)
    shape = _dense_shape(converted)
    if dtype is not None and dtype != object:
        return np.array(converted, dtype=dtype)
    if dtype == object or any(isinstance(x, bytes) for x in _leaves(converted)):
        flat = list(_leaves(converted))
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    return np.array(converted)


def _leaves(value):
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value
