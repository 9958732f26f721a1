"""One loaded SavedModel version: its signature defs (read from ``saved_model.pb``, as TF
Serving reports them) and Predict with TF Serving's request validation. Loading replays the
version's warm-up requests (``assets.extra/tf_serving_warmup_requests``, see warmup.py)."""
from __future__ import annotations

import os
from typing import Container

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  TF Serving links these ops; BERT towers tokenise in-graph
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.client.errors import InvalidArgument, ServingError, CODE_NAMES
from serving.client.tensor_proto import dtype_name, numpy_dtype
from serving.standin.warmup import WarmupError, run_warmup

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"


class ModelLoadError(Exception):
    """A version directory that cannot be served; ``code`` is the status code name."""

    def __init__(self, message: str, code: str = "UNKNOWN"):
        super().__init__(message)
        self.code = code


def read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The signature defs of the ``serve`` meta graph in ``path/saved_model.pb``."""
    pb_path = os.path.join(path, "saved_model.pb")
    if not os.path.isfile(pb_path):
        raise ModelLoadError("Could not find SavedModel .pb or .pbtxt at supplied export "
                             f"directory path: {path}", code="NOT_FOUND")
    saved_model = saved_model_pb2.SavedModel()
    try:
        with open(pb_path, "rb") as f:
            saved_model.ParseFromString(f.read())
    except Exception as e:  # protobuf raises DecodeError or RuntimeWarning-like errors
        raise ModelLoadError(f"Could not parse {pb_path}: {e}", code="DATA_LOSS") from None
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ModelLoadError(f"Could not find meta graph def matching supplied tags: "
                         f"{{ {SERVE_TAG} }} in {path}", code="NOT_FOUND")


class SavedModelServable:
    """A SavedModel loaded for serving; thread-safe ``predict``.

    With ``warmup`` (TF Serving's ``--enable_model_warmup``, default on) the constructor
    replays the version's warm-up requests before returning, so the registry keeps the
    version LOADING until they ran; ``self.warmup`` is the WarmupResult (None without a
    warm-up file). A failing warm-up is a ModelLoadError, as TF Serving fails the load.
    """

    def __init__(self, path: str, warmup: bool = True):
        self.path = path
        self.signature_defs = read_signature_defs(path)
        try:
            self._model = tf.saved_model.load(path, tags=[SERVE_TAG])
        except Exception as e:
            raise ModelLoadError(f"Failed to load SavedModel from {path}: {e}") from None
        self._functions = dict(self._model.signatures)
        self.warmup = None
        if warmup:
            try:
                self.warmup = run_warmup(self, path)
            except WarmupError as e:
                raise ModelLoadError(str(e), code=e.code) from None

    @property
    def signature_names(self) -> frozenset[str]:
        """The signatures the loaded model has functions for."""
        return frozenset(self._functions)

    def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
        """The SignatureDef, or FAILED_PRECONDITION as TF Serving's Predict reports it."""
        return find_signature(self.signature_defs, self._functions, name)

    def predict(self, signature_name: str, inputs: dict[str, np.ndarray],
                output_filter: list[str] | tuple = ()) -> dict[str, np.ndarray]:
        """Run a signature; inputs are checked against its names, dtypes and shapes."""
        name = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(name)
        _check_input_names(signature, inputs)
        feeds = {alias: _checked_input(alias, signature.inputs[alias], value)
                 for alias, value in inputs.items()}
        outputs = _checked_output_filter(signature, output_filter)
        try:
            result = self._functions[name](**feeds)
        except tf.errors.OpError as e:
            raise ServingError(e.message, code=CODE_NAMES.get(e.error_code, "UNKNOWN")) from None
        return {alias: result[alias].numpy() for alias in outputs}


def find_signature(signature_defs: dict, loaded: Container[str],
                   name: str) -> meta_graph_pb2.SignatureDef:
    """The SignatureDef called ``name`` (default: serving_default) that is both in
    ``saved_model.pb`` and among the ``loaded`` signature functions, or FAILED_PRECONDITION
    as TF Serving's Predict reports an unknown signature."""
    name = name or DEFAULT_SIGNATURE
    if name not in signature_defs or name not in loaded:
        raise ServingError(f'Serving signature key "{name}" not found.',
                           code="FAILED_PRECONDITION")
    return signature_defs[name]


def _check_input_names(signature, inputs) -> None:
    expected, sent = set(signature.inputs), set(inputs)
    if expected != sent:
        raise InvalidArgument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")


def _checked_input(alias: str, info, value: np.ndarray) -> tf.Tensor:
    want = numpy_dtype(info.dtype)
    got_string = value.dtype == object or value.dtype.kind in "SU"
    if (want == object) != got_string or (want != object and value.dtype != want):
        got = "DT_STRING" if got_string else str(value.dtype)
        raise InvalidArgument(f"Expects arg '{alias}' to be {dtype_name(info.dtype)} but "
                              f"{got} is provided")
    if not info.tensor_shape.unknown_rank:
        dims = [d.size for d in info.tensor_shape.dim]
        if len(dims) != value.ndim or any(d >= 0 and d != s for d, s in zip(dims, value.shape)):
            spec = ",".join("?" if d < 0 else str(d) for d in dims)
            raise InvalidArgument(f"Input '{alias}' has shape [{','.join(map(str, value.shape))}]"
                                  f" but the signature expects [{spec}]")
    if want == object:
        return tf.constant(value.tolist() if value.ndim else value.item(), dtype=tf.string)
    return tf.convert_to_tensor(value)


def _checked_output_filter(signature, output_filter) -> list[str]:
    seen = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {alias} Outputs expected to "
                f"be in the set {{{','.join(sorted(signature.outputs))}}}.")
        if alias in seen:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen or sorted(signature.outputs)
