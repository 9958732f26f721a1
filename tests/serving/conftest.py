"""Serving test fixtures: tiny SavedModels and a model server to talk to.

Client tests talk to a real TF Serving when ``SHOPREC_TFSERVING_GRPC`` (host:port) and/or
``SHOPREC_TFSERVING_REST`` (http://host:port) are set -- serving the models written by
``python -m tests.serving.tiny_models`` -- and otherwise to the development stand-in,
started in-process on 127.0.0.1.
"""
from __future__ import annotations

import os

import portpicker
import pytest

from tests.serving import tiny_models

GRPC_ENV, REST_ENV = "SHOPREC_TFSERVING_GRPC", "SHOPREC_TFSERVING_REST"


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> str:
    """Path of a models.config serving ``tiny`` versions 1 and 2 (labels stable/canary)."""
    return tiny_models.write_models(str(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="session")
def standin_server(tiny_config):
    """The stand-in serving ``tiny_config`` on free 127.0.0.1 ports (gRPC and REST)."""
    from serving.standin.model_config import load_model_config
    from serving.standin.model_server import ModelServer

    server = ModelServer(load_model_config(tiny_config), port=portpicker.pick_unused_port(),
                         rest_api_port=portpicker.pick_unused_port(), host="127.0.0.1",
                         file_system_poll_wait_seconds=0,
                         load_in_process=True).start()  # protocol tests: loading is tested in standin/
    yield server
    server.stop(grace_s=2)


@pytest.fixture(scope="session")
def real_tfserving() -> bool:
    """True when the tests run against a real TF Serving given by the env vars."""
    return bool(os.environ.get(GRPC_ENV) or os.environ.get(REST_ENV))


@pytest.fixture(scope="session")
def grpc_address(request) -> str:
    if os.environ.get(GRPC_ENV):
        return os.environ[GRPC_ENV]
    return f"127.0.0.1:{request.getfixturevalue('standin_server').grpc_port}"


@pytest.fixture(scope="session")
def rest_url(request) -> str:
    if os.environ.get(REST_ENV):
        return os.environ[REST_ENV].rstrip("/")
    return f"http://127.0.0.1:{request.getfixturevalue('standin_server').rest_port}"


@pytest.fixture(params=["grpc", "rest"])
def client(request):
    """A GrpcPredictClient or RestPredictClient against the server under test."""
    from serving.client.clients import GrpcPredictClient, RestPredictClient

    if request.param == "grpc":
        c = GrpcPredictClient(request.getfixturevalue("grpc_address"), deadline_s=30)
    else:
        c = RestPredictClient(request.getfixturevalue("rest_url"), timeout_s=30)
    yield c
    c.close()
