"""Live price and stock changes (POST /v1/catalog/updates) on the API over the stand-in
serving synthetic models of the tiny shop: no restart, kept across one, refused whole."""
from __future__ import annotations

import pytest

from tests.serving.api.setup import (ALL_ROLES, api_model_server,  # noqa: F401
                                     api_serving_dir, api_shop, bearer, make_settings,
                                     write_keys)


def _client(api_shop, api_model_server, folder):
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    keys = write_keys(folder / "api_keys", {"ops": ALL_ROLES,
                                            "front": "public rate=unlimited"})
    settings = make_settings(api_shop, api_model_server.grpc_port, folder / "events.sqlite3",
                             auth="required", api_keys_file=str(folder / "api_keys"))
    return TestClient(create_app(settings), headers=bearer(keys["ops"])), keys


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["item_id"] for item in response.json()["items"]]


def _everywhere(client) -> set[str]:
    """Every item id recommend (several users), search and similar items answer."""
    seen = set()
    for user in ("reader", "searcher", "fan0", "nobody-new"):
        seen |= set(_ids(client.get("/v1/recommend", params={"user_id": user, "k": 30})))
    for q in ("toy", "velvet lipstick", "mystery novel"):
        seen |= set(_ids(client.get("/v1/search", params={"q": q, "k": 30})))
    for item in ("toy1", "beauty2", "book3"):
        seen |= set(_ids(client.get(f"/v1/items/{item}/similar", params={"k": 30})))
    return seen


def test_stock_and_price_changes_apply_at_once_and_survive_a_restart(
        api_shop, api_model_server, tmp_path):
    client, _ = _client(api_shop, api_model_server, tmp_path)
    with client:
        assert {"toy0", "beauty0"} <= _everywhere(client)
        answer = client.post("/v1/catalog/updates", json=[
            {"item_id": "toy0", "in_stock": False},
            {"item_id": "beauty0", "in_stock": False, "price": 99.5},
            {"item_id": "toy9", "in_stock": True, "price": None}])
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["updated"] == 3 and body["items"][1]["price"] == 99.5
        seen = _everywhere(client)
        assert "toy0" not in seen and "beauty0" not in seen, "out of stock: never again"
        assert "toy9" in set(_ids(client.get("/v1/search", params={"q": "toy", "k": 30})))
        cheap = _ids(client.get("/v1/search", params={"q": "toy", "max_price": 6,
                                                      "category": "Toys",
                                                      "include_out_of_stock": True}))
        assert cheap == ["toy0"], "toy9 has no price now: no price filter matches it"
        listed = client.get("/v1/search", params={"q": "toy", "k": 30}).json()["items"]
        assert {i["item_id"]: i["price"] for i in listed}["toy9"] is None
    client, _ = _client(api_shop, api_model_server, tmp_path)   # same event store
    with client:
        assert "toy0" not in _everywhere(client)
        lipstick = client.get("/v1/search", params={"q": "velvet lipstick", "k": 30,
                                                    "include_out_of_stock": True}).json()
        assert {i["item_id"]: i["price"] for i in lipstick["items"]}["beauty0"] == 99.5


@pytest.mark.parametrize("body, field", [
    ([{"item_id": "toy0", "in_stock": False}, {"item_id": "nope", "in_stock": False}],
     "body.1.item_id"),
    ({"item_id": "toy0", "price": -1}, "body.price"),
    ({"item_id": "toy0", "price": "cheap"}, "body.price"),
    ({"item_id": "toy0", "in_stock": "yes"}, "body.in_stock"),
    ({"item_id": "toy0"}, "body.price"),
    ({"item_id": "toy0", "in_stock": True, "title": "x"}, "body.title"),
    ([], "body"), ("toy0", "body")])
def test_bad_updates_are_refused_whole_naming_line_and_field(api_shop, api_model_server,
                                                             tmp_path, body, field):
    client, keys = _client(api_shop, api_model_server, tmp_path)
    with client:
        answer = client.post("/v1/catalog/updates", json=body)
        assert answer.status_code == 422, answer.text
        assert f"'{field}'" in answer.json()["error"], answer.json()
        assert "toy0" in _ids(client.get("/v1/search", params={"q": "toy", "k": 30})), \
            "nothing of a refused request applies"
        public = client.post("/v1/catalog/updates", headers=bearer(keys["front"]),
                             json={"item_id": "toy0", "in_stock": False})
        assert public.status_code == 403
