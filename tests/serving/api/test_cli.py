"""The API command line and the demo launcher (model server + API subprocesses)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.serving.api.setup import api_serving_dir, api_shop  # noqa: F401

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(args, timeout=120):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


@pytest.mark.parametrize("args, message", [
    (["--tfserving-grpc", "h:1"], "shop_dir"),
    (["--shop", "x", "--tfserving-grpc", "nohost"], "tfserving_grpc"),
    (["--shop", "/no/such/shop", "--tfserving-grpc", "h:1"], "does not exist"),
    (["--shop", "x", "--tfserving-grpc", "h:1", "--max-category-share", "2"],
     "max_category_share"),
])
def test_api_cli_rejects_bad_options_before_starting(args, message):
    env_free = {k: v for k, v in ENV.items() if not k.startswith("SHOPREC_")}
    result = subprocess.run([sys.executable, "-m", "serving.api", *args], capture_output=True,
                            text=True, timeout=60, env=env_free)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_demo_without_models_says_what_to_do(tmp_path):
    result = _run(["serving.demo.demo_requests", "--serving-dir", str(tmp_path), "--shop", "x"])
    assert result.returncode == 2 and "no retrieval model" in result.stderr


@pytest.mark.slow
def test_demo_starts_both_services_answers_and_stops_them(api_serving_dir, api_shop):
    result = _run(["serving.demo.demo_requests", "--serving-dir", str(api_serving_dir),
                   "--shop", str(api_shop), "-k", "3"], timeout=600)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for line in ("GET /readyz -> 200", "GET /v1/recommend?user_id=reader&k=3 -> 200",
                 "GET /v1/search?q=building blocks toy&k=3 -> 200",
                 "POST /v1/events -> 200", "POST /v1/events -> 422",
                 "stopped: api exit 0, model_server exit 0"):
        assert line in out, out
    assert "http://127.0.0.1:" in out and '"strategy": "personalized"' in out
    before, after = out.split("POST /v1/events -> 200")
    assert "Toys > Building" not in before.split("/v1/recommend?user_id=reader")[1].split(
        "GET /v1/recommend?user_id=demo-new-shopper")[0]
    assert "Toys > Building" in after.split("POST /v1/events -> 422")[0], out
