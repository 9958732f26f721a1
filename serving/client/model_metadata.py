"""What the clients return for ``metadata`` and ``status``: plain dataclasses built from
TF Serving's gRPC protos or from its REST JSON (same content either way)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tensorflow.core.framework import types_pb2

from serving.client.tensor_proto import numpy_dtype


@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output: ``dtype`` like ``DT_FLOAT``, ``shape`` with -1 for
    unknown dimensions, or ``None`` for unknown rank; ``name`` is the graph tensor."""

    dtype: str
    shape: tuple[int, ...] | None
    name: str = ""

    @property
    def numpy_dtype(self) -> np.dtype:
        return numpy_dtype(types_pb2.DataType.Value(self.dtype))


@dataclass(frozen=True)
class SignatureSpec:
    """A SignatureDef: named inputs and outputs and its method name."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str = ""


@dataclass(frozen=True)
class ModelMetadata:
    """GetModelMetadata: the model version that answered and its signature defs."""

    name: str
    version: int
    signatures: dict[str, SignatureSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionStatus:
    """One entry of GetModelStatus: version, state (``AVAILABLE``, ``LOADING``, ``END``,
    ...), and the load status (``error_code`` ``OK`` or the failure)."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


def _tensor_spec_from_dict(info: dict) -> TensorSpec:
    shape_info = info.get("tensor_shape", {})
    if shape_info.get("unknown_rank"):
        shape = None
    else:
        shape = tuple(int(d.get("size", 0)) for d in shape_info.get("dim", []))
    return TensorSpec(dtype=info.get("dtype", "DT_INVALID"), shape=shape,
                      name=info.get("name", ""))


def signatures_from_dict(signature_defs: dict) -> dict[str, SignatureSpec]:
    """Parse the JSON form of a SignatureDef map (field names as in the proto)."""
    return {
        name: SignatureSpec(
            inputs={k: _tensor_spec_from_dict(v) for k, v in sig.get("inputs", {}).items()},
            outputs={k: _tensor_spec_from_dict(v) for k, v in sig.get("outputs", {}).items()},
            method_name=sig.get("method_name", ""))
        for name, sig in signature_defs.items()
    }


def signatures_from_proto(signature_defs) -> dict[str, SignatureSpec]:
    """Build SignatureSpecs from a ``map<string, SignatureDef>`` proto field."""
    def spec(info) -> TensorSpec:
        shape = (None if info.tensor_shape.unknown_rank
                 else tuple(d.size for d in info.tensor_shape.dim))
        return TensorSpec(dtype=types_pb2.DataType.Name(info.dtype), shape=shape,
                          name=info.name)

    return {
        name: SignatureSpec(inputs={k: spec(v) for k, v in sig.inputs.items()},
                            outputs={k: spec(v) for k, v in sig.outputs.items()},
                            method_name=sig.method_name)
        for name, sig in signature_defs.items()
    }
