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


def test_api_cli_needs_a_usable_keys_file_unless_auth_is_off(tmp_path):
    env_free = {k: v for k, v in ENV.items() if not k.startswith("SHOPREC_")}

    def api(*args):
        return subprocess.run([sys.executable, "-m", "serving.api", "--shop", str(tmp_path),
                               "--tfserving-grpc", "h:1", *args], capture_output=True,
                              text=True, timeout=60, env=env_free)

    missing = api()
    assert missing.returncode == 2 and "setting api_keys_file: auth=required needs a keys " \
        "file" in missing.stderr and "auth=off" in missing.stderr, missing.stderr
    (tmp_path / "keys").write_text("shopfront public shoprec_pasted-the-secret\n")
    malformed = api("--api-keys-file", str(tmp_path / "keys"))
    assert malformed.returncode == 2 and f"{tmp_path / 'keys'} line 1: hash" in \
        malformed.stderr and "that looks like a secret" in malformed.stderr, malformed.stderr
    assert "TensorFlow" not in malformed.stderr and "tensorflow" not in malformed.stderr


def test_keys_cli_makes_a_key_appends_its_hash_and_checks_the_file(tmp_path):
    from serving.api.keys import KeyRing

    keys = tmp_path / "api_keys"
    made = _run(["serving.api.keys", "new", "--name", "shopfront", "--roles", "public",
                 "--append", str(keys)])
    assert made.returncode == 0, made.stderr
    secret = made.stdout.splitlines()[1].strip()
    assert secret.startswith("shoprec_") and secret not in keys.read_text()
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    assert KeyRing(str(keys)).authenticate(secret).name == "shopfront"
    printed = _run(["serving.api.keys", "new", "--name", "ops", "--roles", "operator,public",
                    "--rate", "5/10"])
    line = printed.stdout.splitlines()[-1].strip()
    assert line.startswith("ops public,operator sha256:") and line.endswith(" rate=5/10")
    taken = _run(["serving.api.keys", "new", "--name", "shopfront", "--roles", "events",
                  "--append", str(keys)])
    assert taken.returncode == 2 and "name 'shopfront' already used" in taken.stderr
    bad_role = _run(["serving.api.keys", "new", "--name", "x", "--roles", "admin"])
    assert bad_role.returncode == 2 and "unknown role 'admin'" in bad_role.stderr
    checked = _run(["serving.api.keys", "check", str(keys)])
    assert checked.returncode == 0 and checked.stdout.strip() == "shopfront: public"
    keys.write_text(keys.read_text() + "oops\n")
    broken = _run(["serving.api.keys", "check", str(keys)])
    assert broken.returncode == 1 and "line 3: expected NAME ROLES" in broken.stderr


def test_demo_without_models_says_what_to_do(tmp_path):
    result = _run(["serving.demo.demo_requests", "--serving-dir", str(tmp_path), "--shop", "x"])
    assert result.returncode == 2 and "no retrieval model" in result.stderr


@pytest.mark.slow
def test_demo_starts_both_services_answers_and_stops_them(api_serving_dir, api_shop):
    result = _run(["serving.demo.demo_requests", "--serving-dir", str(api_serving_dir),
                   "--shop", str(api_shop), "-k", "3"], timeout=600)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for line in ("GET /readyz -> 200  (no key)",
                 "GET /v1/recommend?user_id=reader&k=3 -> 200  (key shopfront)",
                 "GET /v1/recommend?user_id=reader&k=3 -> 401  (no key)",
                 "GET /v1/search?q=building blocks toy&k=3 -> 200",
                 "POST /v1/events -> 200  (key ingest)", "POST /v1/events -> 422",
                 "GET /v1/recommend?user_id=reader&k=3 -> 200  (key operator)",
                 "refused: unauthenticated: 1", "stopped: api exit 0, model_server exit 0"):
        assert line in out, out
    assert "http://127.0.0.1:" in out and '"strategy": "personalized"' in out
    before, after = out.split("POST /v1/events -> 200")
    assert "Toys > Building" not in before.split("/v1/recommend?user_id=reader")[1].split(
        "GET /v1/recommend?user_id=demo-new-shopper")[0]
    assert "Toys > Building" in after.split("POST /v1/events -> 422")[0], out
    assert '"context"' not in before and '"context": {"history": ["toy' in after, \
        "only the operator's answer shows the history"
