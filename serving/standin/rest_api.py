"""TF Serving's REST API over a ModelRegistry, as a small ASGI app served by uvicorn.

Routes and messages follow TF Serving's ``http_rest_api_handler``:
``GET /v1/models/<name>[/versions/<v>|/labels/<l>]`` (status),
``GET .../metadata`` and ``POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict``.
Errors are ``{"error": "<message>"}`` with TF Serving's HTTP status for the code.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
from concurrent import futures
from urllib.parse import unquote

import uvicorn
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from serving.client.errors import HTTP_STATUS, InvalidArgument, NotFound, ServingError
from serving.standin.grpc_service import SIGNATURE_DEF_FIELD, model_metadata, model_status
from serving.standin.model_registry import ModelRegistry
from serving.client.tensor_codec import (parse_json_object, predict_response_json,
                                  request_tensors, signature_name_of)

log = logging.getLogger(__name__)

_PREDICT_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)")
_STATUS_PATH = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r"(?:/(metadata))?")
_API_PATH = re.compile(r"(?i)/v1/.*")
_INT64_MAX = 2**63 - 1


def _version(text: str | None) -> int | None:
    if not text:
        return None
    if int(text) > _INT64_MAX:
        raise InvalidArgument(f"Failed to convert version: {text} to numeric.")
    return int(text)


def _proto_json(message) -> str:
    return json_format.MessageToJson(message, including_default_value_fields=True,
                                     preserving_proto_field_name=True, indent=1)


class RestApi:
    """The ASGI application; blocking work runs on a bounded thread pool."""

    def __init__(self, registry: ModelRegistry, num_threads: int = 16):
        self._registry = registry
        self._pool = futures.ThreadPoolExecutor(max_workers=num_threads,
                                                thread_name_prefix="rest")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        # Match on the raw path, then decode the names, as TF Serving does.
        path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        loop = asyncio.get_running_loop()
        status, payload = await loop.run_in_executor(
            self._pool, self.handle, scope["method"], path, body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload.encode("utf-8")})

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, str]:
        """``(http_status, json_body)`` for one request."""
        try:
            return 200, self._dispatch(method, path, body)
        except ServingError as e:
            return HTTP_STATUS.get(e.code, 500), json.dumps({"error": e.message})
        except Exception as e:  # a server bug, never a client mistake: say so
            log.exception("REST request failed: %s %s", method, path)
            return 500, json.dumps({"error": f"Internal error: {type(e).__name__}: {e}"})

    def _dispatch(self, method: str, path: str, body: bytes) -> str:
        if not _API_PATH.fullmatch(path):
            raise NotFound(f"Not found: {path}")
        if method == "POST" and (m := _PREDICT_PATH.fullmatch(path)):
            name, version, label, verb = m.groups()
            if verb.lower() != "predict":
                raise ServingError(f"{verb} is not supported by the development model "
                                   "server; use :predict", code="UNIMPLEMENTED")
            return self._predict(unquote(name), _version(version),
                                 unquote(label) if label else None, body)
        if method == "GET" and (m := _STATUS_PATH.fullmatch(path)):
            name, version, label, metadata = m.groups()
            if not name:
                raise InvalidArgument("Missing model name in request.")
            spec = (unquote(name), _version(version), unquote(label) if label else None)
            return self._metadata(*spec) if metadata else self._status(*spec)
        raise InvalidArgument(f"Malformed request: {method} {path}")

    @staticmethod
    def _fill_spec(model_spec, name: str, version: int | None, label: str | None):
        model_spec.name = name
        if version is not None:
            model_spec.version.value = version
        elif label is not None:
            model_spec.version_label = label

    def _status(self, name, version, label) -> str:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._fill_spec(request.model_spec, name, version, label)
        return _proto_json(model_status(self._registry, request))

    def _metadata(self, name, version, label) -> str:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=[SIGNATURE_DEF_FIELD])
        self._fill_spec(request.model_spec, name, version, label)
        response = model_metadata(self._registry, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
        return json.dumps({"model_spec": json.loads(_proto_json(response.model_spec)),
                           "metadata": {"signature_def": json.loads(_proto_json(signature_map))}},
                          indent=1)

    def _predict(self, name, version, label, body: bytes) -> str:
        doc = parse_json_object(body)
        signature = signature_name_of(doc)
        with self._registry.servable(name, version, label) as (_, servable):
            key = signature or "serving_default"
            if key not in servable.signature_defs:
                raise InvalidArgument(f'Serving signature name: "{key}" not found in '
                                      "signature def")
            input_types = {alias: info.dtype
                           for alias, info in servable.signature_defs[key].inputs.items()}
            inputs, row_format = request_tensors(doc, input_types, signature)
            outputs = servable.predict(signature, inputs)
        return predict_response_json(outputs, row_format)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class RestServer:
    """Runs a RestApi under uvicorn on a background thread."""

    def __init__(self, registry: ModelRegistry, port: int, host: str = "127.0.0.1",
                 num_threads: int = 16):
        self.api = RestApi(registry, num_threads)
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on such sockets, and
        # without it Nagle + delayed ACK add ~40 ms to every response.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))  # fails here, loudly, if the port is taken
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(self.api, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=10)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]},
                                        name="rest-server", daemon=True)

    def start(self, timeout_s: float = 30.0) -> "RestServer":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"REST server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop accepting connections and finish the running requests."""
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self.api.close()
        self._socket.close()
