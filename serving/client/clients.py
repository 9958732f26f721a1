"""Clients for TF Serving (or the development stand-in): gRPC and REST, same methods.

    client = GrpcPredictClient("localhost:8500")  # or RestPredictClient("http://localhost:8501")
    out = client.predict("ranking", {"query": ["red lipstick"], "x": np.zeros((1, 3), np.float32)})
    client.metadata("ranking").signatures["serving_default"].inputs
    client.status("ranking")  # [VersionStatus(version=3, state="AVAILABLE", ...)]

numpy arrays are sent with their own dtype; plain lists are converted to the dtype the
signature declares (read once from the model's metadata and cached). Strings come back as
``bytes`` in object arrays. Failures raise ``ServingError`` subclasses (``NotFound``,
``InvalidArgument``, ``Unavailable``, ``DeadlineExceeded``) carrying the server's message.
Only UNAVAILABLE (gRPC) and connection errors / HTTP 503 (REST) are retried, with bounded
exponential backoff; each attempt has its own deadline.
"""
from __future__ import annotations

import json
import random
import socket
import threading
import time
from urllib.parse import quote

import grpc
import httpx
import numpy as np
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from serving.client.errors import (CODE_NAMES, DeadlineExceeded, InvalidArgument, NotFound,
                            ServingError, Unavailable, error_for_code, error_for_http)
from serving.client.model_metadata import (ModelMetadata, SignatureSpec, VersionStatus,
                                    signatures_from_dict, signatures_from_proto)
from serving.client.tensor_codec import array_to_json, json_to_output
from serving.client.tensor_proto import as_string_array, from_tensor_proto, to_tensor_proto

__all__ = ["GrpcPredictClient", "RestPredictClient", "ServingError", "NotFound",
           "InvalidArgument", "Unavailable", "DeadlineExceeded"]

DEFAULT_SIGNATURE = "serving_default"


class _ClientBase:
    """Retry timing and the cached signature metadata both clients use."""

    def __init__(self, retries: int, backoff: float, max_backoff: float, metadata_ttl_s: float):
        if retries < 0 or backoff < 0 or max_backoff < 0:
            raise ValueError("retries, backoff and max_backoff must be >= 0")
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        self._metadata_ttl_s = metadata_ttl_s
        self._metadata_cache: dict[tuple, tuple[float, ModelMetadata]] = {}
        self._lock = threading.Lock()

    def _sleep_before_retry(self, attempt: int) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** attempt)
        time.sleep(delay * random.uniform(0.5, 1.0))

    def metadata(self, model: str, version: int | None = None,
                 version_label: str | None = None) -> ModelMetadata:
        raise NotImplementedError

    def signature(self, model: str, signature: str, version: int | None = None,
                  version_label: str | None = None) -> SignatureSpec | None:
        """The signature def (inputs, outputs) of what serves this spec, None if the model has
        no such signature; from metadata cached for a short time."""
        return self._signature(model, version, version_label, signature)

    def _signature(self, model, version, label, signature) -> SignatureSpec | None:
        key, now = (model, version, label), time.monotonic()
        with self._lock:
            cached = self._metadata_cache.get(key)
        if cached is None or now - cached[0] > self._metadata_ttl_s:
            cached = (now, self.metadata(model, version, label))
            with self._lock:
                self._metadata_cache[key] = cached
        return cached[1].signatures.get(signature)

    def _arrays(self, model, inputs, signature, version, label) -> dict[str, np.ndarray]:
        """Inputs as arrays: lists take the signature's dtype, arrays keep theirs."""
        if not isinstance(inputs, dict) or not inputs:
            raise TypeError("inputs must be a non-empty dict of input name -> array/list")
        spec = None
        if any(not isinstance(v, np.ndarray) for v in inputs.values()):
            spec = self._signature(model, version, label, signature)
        arrays = {}
        for name, value in inputs.items():
            if isinstance(value, np.ndarray):
                arrays[name] = value
                continue
            tensor = spec.inputs.get(name) if spec else None
            if tensor is not None and tensor.dtype == "DT_STRING":
                arrays[name] = as_string_array(np.asarray(value, dtype=object))
            elif tensor is not None:
                try:
                    arrays[name] = np.asarray(value, dtype=tensor.numpy_dtype)
                except (ValueError, TypeError) as e:
                    raise InvalidArgument(f"input {name!r} cannot be converted to "
                                          f"{tensor.dtype}: {e}") from None
            else:  # unknown input: let the server report it
                arrays[name] = np.asarray(value)
        return arrays


def _check_version_choice(version, version_label) -> None:
    if version is not None and version_label is not None:
        raise ValueError("give version or version_label, not both")


def _filter(outputs: dict, output_filter, spec: SignatureSpec | None) -> dict:
    if not output_filter:
        return outputs
    for alias in output_filter:
        if alias not in outputs:
            names = sorted(spec.outputs) if spec else sorted(outputs)
            raise InvalidArgument(f"output tensor alias not found in signature: {alias} "
                                  f"Outputs expected to be in the set {{{','.join(names)}}}.")
    return {alias: outputs[alias] for alias in output_filter}


class GrpcPredictClient(_ClientBase):
    """TF Serving's gRPC API (``PredictionService``, ``ModelService``) at ``host:port``."""

    def __init__(self, address: str, deadline_s: float = 10.0, retries: int = 3,
                 backoff: float = 0.1, max_backoff: float = 2.0, metadata_ttl_s: float = 30.0):
        super().__init__(retries, backoff, max_backoff, metadata_ttl_s)
        self.address, self.deadline_s = address, deadline_s
        self._channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", -1),
                              ("grpc.max_send_message_length", -1)])
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def _call(self, method, request):
        attempt = 0
        while True:
            try:
                return method(request, timeout=self.deadline_s)
            except grpc.RpcError as e:
                code = e.code()
                if code == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    self._sleep_before_retry(attempt)
                    attempt += 1
                    continue
                raise error_for_code(code.name, e.details() or code.name) from None

    @staticmethod
    def _fill_spec(spec, model, version, label, signature=None) -> None:
        _check_version_choice(version, label)
        spec.name = model
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label
        if signature is not None:
            spec.signature_name = signature

    def predict(self, model: str, inputs: dict, signature: str = DEFAULT_SIGNATURE,
                version: int | None = None, version_label: str | None = None,
                output_filter: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run ``signature`` of ``model``; returns output name -> array."""
        request = predict_pb2.PredictRequest()
        self._fill_spec(request.model_spec, model, version, version_label, signature)
        for name, array in self._arrays(model, inputs, signature, version,
                                        version_label).items():
            request.inputs[name].CopyFrom(to_tensor_proto(array, as_fields=False))
        request.output_filter.extend(output_filter or [])
        response = self._call(self._prediction.Predict, request)
        return {name: from_tensor_proto(proto, name) for name, proto in response.outputs.items()}

    def metadata(self, model: str, version: int | None = None,
                 version_label: str | None = None) -> ModelMetadata:
        """The signature defs of the model version that serves this spec."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=["signature_def"])
        self._fill_spec(request.model_spec, model, version, version_label)
        response = self._call(self._prediction.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return ModelMetadata(name=response.model_spec.name,
                             version=response.model_spec.version.value,
                             signatures=signatures_from_proto(signature_map.signature_def))

    def status(self, model: str, version: int | None = None,
               version_label: str | None = None) -> list[VersionStatus]:
        """The state of every version of ``model`` (or of one version)."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(request.model_spec, model, version, version_label)
        response = self._call(self._models.GetModelStatus, request)
        return [VersionStatus(
            version=s.version,
            state=get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
            error_code=CODE_NAMES.get(s.status.error_code, str(s.status.error_code)),
            error_message=s.status.error_message) for s in response.model_version_status]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RestPredictClient(_ClientBase):
    """TF Serving's REST API at ``base_url`` (e.g. ``http://localhost:8501``)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0, retries: int = 3,
                 backoff: float = 0.1, max_backoff: float = 2.0, metadata_ttl_s: float = 30.0):
        super().__init__(retries, backoff, max_backoff, metadata_ttl_s)
        self.base_url, self.timeout_s = base_url.rstrip("/"), timeout_s
        # TCP_NODELAY: httpx writes headers and body separately; without it Nagle's
        # algorithm and delayed ACKs add ~40 ms to every POST.
        transport = httpx.HTTPTransport(
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s,
                                  transport=transport)

    @staticmethod
    def _model_path(model, version, label) -> str:
        _check_version_choice(version, label)
        path = f"/v1/models/{quote(model, safe='')}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += f"/labels/{quote(label, safe='')}"
        return path

    def _request(self, method: str, path: str, body: bytes | None = None):
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method, path, content=body,
                    headers={"Content-Type": "application/json"} if body else None)
            except httpx.TimeoutException as e:
                if isinstance(e, httpx.ConnectTimeout) and attempt < self.retries:
                    self._sleep_before_retry(attempt)
                    attempt += 1
                    continue
                raise DeadlineExceeded(f"{method} {path}: no answer within "
                                       f"{self.timeout_s}s ({type(e).__name__})") from None
            except httpx.TransportError as e:
                if attempt < self.retries:
                    self._sleep_before_retry(attempt)
                    attempt += 1
                    continue
                raise Unavailable(f"{method} {self.base_url}{path}: {e}") from None
            if response.status_code == 503 and attempt < self.retries:
                self._sleep_before_retry(attempt)
                attempt += 1
                continue
            return self._decode(response)

    @staticmethod
    def _decode(response: httpx.Response):
        try:
            body = json.loads(response.content) if response.content else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if response.status_code != 200:
            message = body.get("error") if isinstance(body, dict) else None
            raise error_for_http(response.status_code,
                                 message or response.text or response.reason_phrase)
        if not isinstance(body, dict):
            raise ServingError(f"server sent a non-JSON-object body: {response.text[:200]}")
        return body

    def predict(self, model: str, inputs: dict, signature: str = DEFAULT_SIGNATURE,
                version: int | None = None, version_label: str | None = None,
                output_filter: list[str] | None = None,
                form: str = "inputs") -> dict[str, np.ndarray]:
        """Run ``signature``; ``form`` is ``inputs`` (columnar) or ``instances`` (row).

        REST has no output filter: all outputs are fetched and ``output_filter`` is
        applied here.
        """
        if form not in ("inputs", "instances"):
            raise ValueError("form must be 'inputs' or 'instances'")
        arrays = self._arrays(model, inputs, signature, version, version_label)
        payload = {"signature_name": signature}
        if form == "inputs":
            payload["inputs"] = {name: array_to_json(a) for name, a in arrays.items()}
        else:
            sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
            if len(sizes) != 1 or None in sizes:
                raise ValueError("the 'instances' form needs every input to have the same "
                                 f"first (batch) dimension; got {sorted(map(str, sizes))}")
            columns = {name: array_to_json(a) for name, a in arrays.items()}
            payload["instances"] = [{name: column[i] for name, column in columns.items()}
                                    for i in range(sizes.pop())]
        body = self._request("POST", self._model_path(model, version, version_label)
                             + ":predict", json.dumps(payload).encode("utf-8"))
        spec = self._signature(model, version, version_label, signature)
        return _filter(self._outputs(body, form, spec), output_filter, spec)

    @staticmethod
    def _outputs(body: dict, form: str, spec: SignatureSpec | None) -> dict[str, np.ndarray]:
        key = "outputs" if form == "inputs" else "predictions"
        if key not in body:
            raise ServingError(f"response has no {key!r}: {str(body)[:200]}")
        names = sorted(spec.outputs) if spec else []
        dtypes = {n: spec.outputs[n].numpy_dtype for n in names} if spec else {}
        value = body[key]
        if len(names) == 1:
            return {names[0]: json_to_output(value, dtypes[names[0]])}
        if form == "inputs":
            return {n: json_to_output(v, dtypes.get(n)) for n, v in value.items()}
        columns = sorted(value[0]) if value else names
        return {n: json_to_output([row[n] for row in value], dtypes.get(n)) for n in columns}

    def metadata(self, model: str, version: int | None = None,
                 version_label: str | None = None) -> ModelMetadata:
        body = self._request("GET", self._model_path(model, version, version_label)
                             + "/metadata")
        spec = body.get("model_spec", {})
        signature_defs = body.get("metadata", {}).get("signature_def", {})
        return ModelMetadata(name=spec.get("name", model), version=int(spec.get("version", 0)),
                             signatures=signatures_from_dict(
                                 signature_defs.get("signature_def", {})))

    def status(self, model: str, version: int | None = None,
               version_label: str | None = None) -> list[VersionStatus]:
        body = self._request("GET", self._model_path(model, version, version_label))
        return [VersionStatus(version=int(s["version"]), state=s.get("state", ""),
                              error_code=s.get("status", {}).get("error_code", "OK"),
                              error_message=s.get("status", {}).get("error_message", ""))
                for s in body.get("model_version_status", [])]

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
