"""API keys and roles (issue #19): who may call what, key rotation without a restart, the
keys file's errors, what a public caller sees, what the API logs per request."""
from __future__ import annotations

import logging
import os

import pytest

from serving.api.keys import (KeysFileError, KeyRing, hash_secret, new_secret, parse_keys,
                              parse_line)
from serving.api.settings import SettingsError
from tests.serving.api.setup import (api_model_server, api_serving_dir, api_shop,  # noqa: F401
                                     bearer, make_settings, write_keys)

KEYS = {"shopfront": "public", "ingest": "events", "ops": "operator",
        "support": "public,operator", "all": "public,events,operator"}
EVENT = {"user_id": "auth-user", "item_id": "toy1", "event_type": "click"}
# route -> (method, path, params or body, the role it needs)
ROUTES = {
    "recommend": ("GET", "/v1/recommend", {"user_id": "reader", "k": 3}, "public"),
    "search": ("GET", "/v1/search", {"q": "toy", "k": 3}, "public"),
    "similar": ("GET", "/v1/items/toy0/similar", {"k": 3}, "public"),
    "events": ("POST", "/v1/events", EVENT, "events"),
    "metrics": ("GET", "/metrics", None, "operator"),
}


@pytest.fixture(scope="module")
def keyed(api_shop, api_model_server, tmp_path_factory):  # noqa: F811
    """(client without a default key, keys file path, name -> secret)."""
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    folder = tmp_path_factory.mktemp("auth")
    path = folder / "api_keys"
    secrets = write_keys(path, {name: f"{roles} rate=unlimited" for name, roles in KEYS.items()})
    settings = make_settings(api_shop, api_model_server.grpc_port, folder / "events.sqlite3",
                             auth="required", api_keys_file=str(path))
    with TestClient(create_app(settings)) as client:
        yield client, path, secrets


def _call(client, route: str, headers: dict | None = None):
    method, path, data, _ = ROUTES[route]
    if method == "POST":
        return client.post(path, json=data, headers=headers)
    return client.get(path, params=data, headers=headers)


def _metric(client, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = client.app.state.metrics.exposition().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@pytest.mark.parametrize("key", sorted(KEYS))
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_each_key_reaches_the_routes_of_its_roles_and_no_other(keyed, key, route):
    client, _, secrets = keyed
    response = _call(client, route, bearer(secrets[key]))
    allowed = ROUTES[route][3] in KEYS[key].split(",")
    if allowed:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json() == {"error": f"API key {key!r} lacks the role "
                                            f"{ROUTES[route][3]!r} that {ROUTES[route][0]} "
                                            f"{_template(route)} needs"}


def _template(route: str) -> str:
    path = ROUTES[route][1]
    return "/v1/items/{item_id:path}/similar" if route == "similar" else path


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_without_a_valid_key_every_guarded_route_is_401(keyed, route):
    client, _, secrets = keyed
    missing = _call(client, route)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="shoprec"'
    assert missing.json()["error"].startswith("authentication required: send Authorization")
    for headers in (bearer("shoprec_not-a-key"), {"X-API-Key": "wrong"},
                    {"Authorization": f"Basic {secrets['all']}"},
                    bearer(secrets["all"] + "x"), bearer("x" * 10_000)):
        response = _call(client, route, headers)
        assert response.status_code == 401, headers
        assert response.json() == {"error": "invalid API key"} or \
            response.json()["error"].startswith("authentication required")
    invalid = _call(client, route, bearer("shoprec_not-a-key"))
    assert invalid.headers["www-authenticate"] == 'Bearer realm="shoprec", error="invalid_token"'
    assert "shoprec_not-a-key" not in invalid.text


def test_a_key_goes_in_either_header_and_the_scheme_is_case_insensitive(keyed):
    client, _, secrets = keyed
    for headers in ({"X-API-Key": secrets["shopfront"]},
                    {"Authorization": f"bearer {secrets['shopfront']}"},
                    {"Authorization": f"BEARER   {secrets['shopfront']} "}):
        assert _call(client, "similar", headers).status_code == 200, headers


def test_a_refused_request_reads_nothing_and_names_no_field(keyed):
    """401/403 come before validation: an unauthenticated caller learns nothing of the
    parameters, and a forbidden body is never parsed."""
    client, _, secrets = keyed
    bad = client.get("/v1/recommend", params={"k": "many"})
    assert bad.status_code == 401 and set(bad.json()) == {"error"}
    assert bad.json()["error"].startswith("authentication required")
    forbidden = client.post("/v1/events", content=b"{not json", headers={
        **bearer(secrets["shopfront"]), "content-type": "application/json"})
    assert forbidden.status_code == 403


def test_healthz_is_open_and_readyz_shows_detail_only_to_operators(keyed):
    client, _, secrets = keyed
    assert client.get("/healthz").json() == {"status": "ok"}
    for headers in (None, bearer(secrets["shopfront"]), bearer("wrong")):
        ready = client.get("/readyz", headers=headers)
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    detail = client.get("/readyz", headers=bearer(secrets["ops"])).json()
    assert detail["status"] == "ready" and set(detail["checks"]) >= {"model_server", "watcher"}
    assert detail["models"] == {"retrieval": 1, "ranking": 1}


def test_recommend_shows_the_users_history_and_query_only_to_operators(keyed):
    client, _, secrets = keyed
    for key, shown in (("shopfront", False), ("support", True)):
        for user in ("reader", "searcher"):
            response = client.get("/v1/recommend", params={"user_id": user, "k": 3},
                                  headers=bearer(secrets[key]))
            body = response.json()
            assert response.status_code == 200 and body["items"], body
            assert ("context" in body) is shown, (key, body)
            if not shown:
                before_items = response.text.split('"items"')[0]
                assert "book" not in before_items and "building" not in before_items, body
    support = client.get("/v1/recommend", params={"user_id": "reader", "k": 3},
                         headers=bearer(secrets["support"])).json()
    assert support["context"]["history"] == ["book0", "book3", "book2", "book1"]


def test_refusals_are_counted_by_route_reason_and_role(keyed):
    client, _, secrets = keyed

    def count(endpoint, reason, role):
        return _metric(client, "shoprec_api_rejected_requests_total", endpoint=endpoint,
                       reason=reason, role=role)

    before = (count("/v1/events", "forbidden", "public"),
              count("/v1/search", "unauthenticated", "none"))
    _call(client, "events", bearer(secrets["shopfront"]))
    _call(client, "search")
    assert count("/v1/events", "forbidden", "public") == before[0] + 1
    assert count("/v1/search", "unauthenticated", "none") == before[1] + 1
    text = client.get("/metrics", headers=bearer(secrets["ops"])).text
    assert 'reason="forbidden",role="public"' in text


def test_keys_rotate_without_a_restart_and_a_malformed_file_keeps_the_old_keys(keyed, caplog):
    client, path, secrets = keyed
    old = secrets["shopfront"]
    loaded = _metric(client, "shoprec_api_keys_reloads_total", result="loaded")
    refused = _metric(client, "shoprec_api_keys_reloads_total", result="refused")
    try:
        rotated = write_keys(path, {**{n: f"{r} rate=unlimited" for n, r in KEYS.items()}})
        assert _call(client, "similar", bearer(rotated["shopfront"])).status_code == 200
        assert _call(client, "similar", bearer(old)).status_code == 401, "revoked"
        assert _metric(client, "shoprec_api_keys_reloads_total", result="loaded") == loaded + 1

        good = path.read_text()
        caplog.set_level(logging.INFO, logger="serving.api.keys")
        path.write_text(good + "newkey public sha256:1234\n")    # edited in place, bad line
        assert _call(client, "similar", bearer(rotated["shopfront"])).status_code == 200
        assert _call(client, "similar", bearer(rotated["shopfront"])).status_code == 200
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, "a refused version is logged once"
        assert f"{path} line {good.count(chr(10)) + 1}: hash: expected sha256:" in errors[0]
        assert "keys read before stay in use" in errors[0]
        assert _metric(client, "shoprec_api_keys_reloads_total", result="refused") == refused + 1

        for broken in ("", "# nothing but comments\n", good.replace("public", "publik", 1)):
            path.write_text(broken)
            assert _call(client, "similar", bearer(rotated["shopfront"])).status_code == 200
        os.unlink(path)
        assert _call(client, "similar", bearer(rotated["shopfront"])).status_code == 200
        assert _metric(client, "shoprec_api_keys_reloads_total", result="refused") == refused + 5
    finally:
        secrets.update(write_keys(path, {n: f"{r} rate=unlimited" for n, r in KEYS.items()}))
    assert _call(client, "similar", bearer(secrets["shopfront"])).status_code == 200
    assert _call(client, "similar", bearer(rotated["shopfront"])).status_code == 401


def test_access_log_has_route_status_and_key_but_no_ids_or_queries(keyed, caplog):
    client, _, secrets = keyed
    caplog.set_level(logging.DEBUG)
    user, query, item = "private-user-4711", "secret gift for anna", "toy3"
    client.post("/v1/events", json={"user_id": user, "item_id": item, "event_type": "click"},
                headers=bearer(secrets["ingest"]))
    client.post("/v1/events", json={"user_id": user, "event_type": "search", "query": query},
                headers=bearer(secrets["ingest"]))
    client.get("/v1/recommend", params={"user_id": user}, headers=bearer(secrets["shopfront"]))
    client.get("/v1/search", params={"q": query, "user_id": user},
               headers=bearer(secrets["shopfront"]))
    client.get(f"/v1/items/{item}/similar", headers=bearer(secrets["shopfront"]))
    client.get("/v1/recommend", params={"user_id": user})       # 401
    client.get(f"/no/such/{user}")                               # 404
    lines = [r.getMessage() for r in caplog.records if r.name == "serving.api.access"]
    assert "GET /v1/recommend 200" in lines[2] and lines[2].endswith("key=shopfront"), lines
    assert lines[1].startswith("POST /v1/events 200 ") and lines[1].endswith(" key=ingest")
    assert lines[4].startswith("GET /v1/items/{item_id:path}/similar 200 ")
    assert lines[5].startswith("GET /v1/recommend 401 ") and lines[5].endswith("key=-")
    assert lines[6].startswith("GET unmatched 404 ")
    ours = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    everything = "\n".join(f"{r.name} {r.getMessage()}" for r in ours)   # (not the client's)
    for secret in (user, query, "gift", "anna", item, secrets["shopfront"]):
        assert secret not in everything, secret


def test_the_command_line_turns_uvicorns_access_log_off(api_shop, tmp_path,  # noqa: F811
                                                        monkeypatch):
    import uvicorn

    from serving.api.__main__ import main

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    secret = write_keys(tmp_path / "keys", {"k": "public"})
    assert secret
    assert main(["--shop", str(api_shop), "--tfserving-grpc", "127.0.0.1:1",
                 "--api-keys-file", str(tmp_path / "keys")]) == 0
    assert calls and calls[0]["access_log"] is False


def test_openapi_declares_401_403_429_and_the_key_schemes_on_guarded_routes(keyed):
    client, _, _ = keyed
    document = client.get("/openapi.json").json()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKeyHeader"}
    for route, (method, _, _, role) in ROUTES.items():
        operation = document["paths"][_template(route).replace(":path", "")][method.lower()]
        assert {"401", "403", "429"} <= set(operation["responses"]), route
        assert operation["security"] == [{"bearer": []}, {"apiKeyHeader": []}]
        assert operation["x-shoprec-role"] == role
    assert "security" not in document["paths"]["/healthz"]["get"]


# ---------------------------------------------------------------- the keys file

def test_keys_file_lines_parse_with_roles_hash_and_rate():
    secret = new_secret()
    assert secret.startswith("shoprec_") and len(secret) == 51
    key = parse_line(f"  shop-1 public,operator {hash_secret(secret)} rate=5/10  # comment")
    assert (key.name, sorted(key.roles), str(key.rate)) == ("shop-1", ["operator", "public"],
                                                           "5/10")
    assert parse_line("# only a comment") is None and parse_line("   ") is None
    assert parse_line(f"k events {hash_secret('x')} rate=unlimited").unlimited
    assert parse_line(key.line()) == key


@pytest.mark.parametrize("line, message", [
    ("shopfront public", "expected NAME ROLES sha256:HEX"),
    ("shop front public sha256:" + "0" * 64, "hash: expected sha256:"),
    ("-x public sha256:" + "0" * 64, "name '-x'"),
    ("x publik sha256:" + "0" * 64, "unknown role 'publik'"),
    ("x public, sha256:" + "0" * 64, "unknown role ''"),
    ("x public sha256:" + "0" * 63, "hash: expected sha256:"),
    ("x public sha256:" + "A" * 64, "hash: expected sha256:"),
    ("x public shoprec_abcdef", "that looks like a secret"),
    ("x public sha256:" + "0" * 64 + " burst=3", "unknown option 'burst=3'"),
    ("x public sha256:" + "0" * 64 + " rate=fast", "expected RATE/BURST"),
    ("x public sha256:" + "0" * 64 + " rate=0/3", "RATE must be > 0"),
])
def test_a_malformed_line_is_refused_naming_the_line(line, message):
    with pytest.raises(KeysFileError) as error:
        parse_keys(f"# keys\nok public sha256:{'1' * 64}\n{line}\n", "keys.txt")
    assert str(error.value).startswith("keys.txt line 3: ") and message in str(error.value)


def test_duplicate_names_and_empty_files_are_refused():
    line = f"a public sha256:{'1' * 64}"
    with pytest.raises(KeysFileError, match="line 2: name 'a' already used on line 1"):
        parse_keys(f"{line}\n{line}\n", "f")
    with pytest.raises(KeysFileError, match="no key"):
        parse_keys("# none\n\n", "f")


def test_authentication_compares_hashes(tmp_path):
    secrets = write_keys(tmp_path / "keys", {"a": "public", "b": "events"})
    ring = KeyRing(str(tmp_path / "keys"))
    assert ring.authenticate(secrets["a"]).name == "a"
    assert ring.authenticate(secrets["b"]).roles == {"events"}
    for wrong in ("", secrets["a"][:-1], hash_secret(secrets["a"]), "x" * 300):
        assert ring.authenticate(wrong) is None
    assert secrets["a"] not in (tmp_path / "keys").read_text(), "only hashes are stored"


def test_startup_refuses_a_missing_or_malformed_keys_file(api_shop, tmp_path):  # noqa: F811
    from serving.api.app import create_app

    with pytest.raises(SettingsError, match="setting api_keys_file: auth=required needs a "
                                            "keys file"):
        create_app(make_settings(api_shop, 1, tmp_path / "e", auth="required"))
    with pytest.raises(KeysFileError, match="cannot read it"):
        create_app(make_settings(api_shop, 1, tmp_path / "e", auth="required",
                                 api_keys_file=str(tmp_path / "absent")))
    (tmp_path / "keys").write_text(f"a public sha256:{'1' * 64}\nb public\n")
    with pytest.raises(KeysFileError, match=f"{tmp_path / 'keys'} line 2: expected NAME"):
        create_app(make_settings(api_shop, 1, tmp_path / "e", auth="required",
                                 api_keys_file=str(tmp_path / "keys")))
    (tmp_path / "bin").write_bytes(b"a public sha256:" + b"1" * 64 + b"\n\xff\n")
    with pytest.raises(KeysFileError, match="line 2: not UTF-8"):
        create_app(make_settings(api_shop, 1, tmp_path / "e", auth="required",
                                 api_keys_file=str(tmp_path / "bin")))


def test_cors_headers_only_for_allowed_origins(api_shop, tmp_path):  # noqa: F811
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    shop = "https://shop.example.com"
    closed = TestClient(create_app(make_settings(api_shop, 1, tmp_path / "e")))
    assert "access-control-allow-origin" not in closed.get(
        "/healthz", headers={"Origin": shop}).headers
    app = create_app(make_settings(api_shop, 1, tmp_path / "e",
                                   cors_origins=f"{shop}, http://localhost:3000"))
    client = TestClient(app)
    assert client.get("/healthz", headers={"Origin": shop}).headers[
        "access-control-allow-origin"] == shop
    assert "access-control-allow-origin" not in client.get(
        "/healthz", headers={"Origin": "https://evil.example"}).headers
    preflight = client.options("/v1/recommend", headers={
        "Origin": shop, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    with pytest.raises(SettingsError, match="cors_origins"):
        make_settings(api_shop, 1, tmp_path / "e", cors_origins="shop.example.com/path")


def test_a_route_the_middleware_cannot_guard_is_named():
    """An included router (no path template: its requests would look unmatched and pass as
    open) or a path given neither a role nor declared open stops create_app."""
    from fastapi import APIRouter, FastAPI

    from serving.api.access import unguarded_routes

    app, router = FastAPI(), APIRouter()
    router.get("/admin")(lambda: {})
    app.get("/v1/secret")(lambda: {})
    app.get("/healthz")(lambda: {})
    app.include_router(router, prefix="/internal")
    open_paths = {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    problems = unguarded_routes(app.router.routes, {}, open_paths)
    assert any("/v1/secret: neither a role nor declared open" in p for p in problems), problems
    assert any("without a path template" in p for p in problems), problems
    assert unguarded_routes(app.router.routes[:4], {}, open_paths) == []
    assert unguarded_routes([r for r in app.router.routes if getattr(r, "path", None)],
                            {"/v1/secret": "operator"}, open_paths) == []
