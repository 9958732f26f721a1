"""TF Serving's gRPC API over a ModelRegistry: ``PredictionService.Predict`` and
``GetModelMetadata``, ``ModelService.GetModelStatus`` (and ``HandleReloadConfigRequest``
when a config reloader is given). Status codes and messages follow TF Serving."""
from __future__ import annotations

import logging
from concurrent import futures
from typing import Callable

import grpc
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from serving.client.errors import CODE_NUMBERS, InvalidArgument, ServingError
from serving.standin.model_registry import ModelRegistry
from serving.standin.saved_model_servable import DEFAULT_SIGNATURE
from serving.client.tensor_proto import from_tensor_proto, to_tensor_proto

log = logging.getLogger(__name__)

SIGNATURE_DEF_FIELD = "signature_def"
# TF Serving lifts gRPC's message size limits; so do we.
GRPC_OPTIONS = [("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1)]


def spec_choice(model_spec) -> tuple[int | None, str | None]:
    """``(version, label)`` requested by a ModelSpec (at most one is set)."""
    choice = model_spec.WhichOneof("version_choice")
    if choice == "version":
        return model_spec.version.value, None
    if choice == "version_label":
        return None, model_spec.version_label
    return None, None


def _check_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    if not request.model_spec.name:
        raise InvalidArgument("ModelSpec has no name specified.")


_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _abort(context, error: ServingError):
    number = CODE_NUMBERS.get(error.code, CODE_NUMBERS["UNKNOWN"])
    context.abort(_GRPC_CODES[number], error.message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify/Regress/MultiInference are UNIMPLEMENTED."""

    def __init__(self, registry: ModelRegistry):
        self._registry = registry

    def Predict(self, request, context):
        try:
            return self._predict(request)
        except ServingError as e:
            _abort(context, e)

    def _predict(self, request):
        _check_spec(request)
        spec = request.model_spec
        version, label = spec_choice(spec)
        with self._registry.servable(spec.name, version, label) as (served, servable):
            inputs = {alias: from_tensor_proto(proto, alias)
                      for alias, proto in request.inputs.items()}
            outputs = servable.predict(spec.signature_name, inputs,
                                       list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = served
        response.model_spec.signature_name = spec.signature_name or DEFAULT_SIGNATURE
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(to_tensor_proto(array, as_fields=True))
        return response

    def GetModelMetadata(self, request, context):
        try:
            return model_metadata(self._registry, request)
        except ServingError as e:
            _abort(context, e)


def model_metadata(registry: ModelRegistry, request):
    """A GetModelMetadataResponse (shared by gRPC and REST)."""
    _check_spec(request)
    if not request.metadata_field:
        raise InvalidArgument("GetModelMetadataRequest must specify at least one "
                              "metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise InvalidArgument(f"Metadata field {field} is not supported")
    spec = request.model_spec
    version, label = spec_choice(spec)
    with registry.servable(spec.name, version, label) as (served, servable):
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = spec.name
    response.model_spec.version.value = served
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


def model_status(registry: ModelRegistry, request):
    """A GetModelStatusResponse (shared by gRPC and REST)."""
    _check_spec(request)
    version, label = spec_choice(request.model_spec)
    response = get_model_status_pb2.GetModelStatusResponse()
    for entry in registry.status(request.model_spec.name, version, label):
        status = response.model_version_status.add()
        status.version = entry.version
        status.state = get_model_status_pb2.ModelVersionStatus.State.Value(entry.state)
        status.status.error_code = CODE_NUMBERS.get(entry.error_code, CODE_NUMBERS["UNKNOWN"])
        status.status.error_message = entry.error_message
    return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus, and HandleReloadConfigRequest if ``reload_config`` is given."""

    def __init__(self, registry: ModelRegistry,
                 reload_config: Callable[[object], None] | None = None):
        self._registry = registry
        self._reload_config = reload_config

    def GetModelStatus(self, request, context):
        try:
            return model_status(self._registry, request)
        except ServingError as e:
            _abort(context, e)

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        if self._reload_config is None:
            _abort(context, ServingError("config reload is not enabled", "UNIMPLEMENTED"))
        try:
            self._reload_config(request.config)
        except ServingError as e:
            response.status.error_code = CODE_NUMBERS.get(e.code, CODE_NUMBERS["UNKNOWN"])
            response.status.error_message = e.message
        return response


def create_grpc_server(registry: ModelRegistry, port: int, host: str = "127.0.0.1",
                       max_workers: int = 16,
                       reload_config: Callable[[object], None] | None = None):
    """A started gRPC server on ``host:port``; returns ``(server, bound_port)``."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                    thread_name_prefix="grpc"),
                         options=GRPC_OPTIONS)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(registry), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(registry, reload_config), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {host}:{port}")
    server.start()
    return server, bound
