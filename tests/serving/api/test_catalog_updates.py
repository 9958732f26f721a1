"""Live catalog changes (POST /v1/catalog/updates and its command line) on the API over the
stand-in serving synthetic models of the tiny shop: prices, stock, new items, changed texts
and deletions apply without a restart, are kept across one, and are refused whole."""
from __future__ import annotations

import time

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
     "body.1.title"),
    ({"item_id": "nope", "deleted": True}, "body.item_id"),
    ({"item_id": "toy0", "deleted": True, "price": 3}, "body.deleted"),
    ({"item_id": "toy0", "deleted": False}, "body.deleted"),
    ({"item_id": "toy0", "title": "  "}, "body.title"),
    ({"item_id": "toy0", "title": 7}, "body.title"),
    ({"item_id": "toy0", "brand": "x" * 300}, "body.brand"),
    ({"item_id": "new", "brand": "Acme"}, "body.title"),
    ([{"item_id": "toy0", "price": 1}, {"item_id": "toy0", "in_stock": False}],
     "body.1.item_id"),
    ({"item_id": "toy0", "price": -1}, "body.price"),
    ({"item_id": "toy0", "price": "cheap"}, "body.price"),
    ({"item_id": "toy0", "in_stock": "yes"}, "body.in_stock"),
    ({"item_id": "toy0"}, "body.price"),
    ({"item_id": "toy0", "in_stock": True, "colour": "x"}, "body.colour"),
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


def _search_ids(client, q, **params) -> list[str]:
    return _ids(client.get("/v1/search", params={"q": q, "k": 30, **params}))


def test_a_new_item_is_found_within_a_second_and_kept_across_a_restart(
        api_shop, api_model_server, tmp_path):
    client, _ = _client(api_shop, api_model_server, tmp_path)
    with client:
        started = time.monotonic()
        answer = client.post("/v1/catalog/updates", json={
            "item_id": "toy-rocket", "title": "Wooden rocket toy", "brand": "ToyCo",
            "categories": "Toys > Building", "price": 12.5})
        assert answer.status_code == 200, answer.text
        assert answer.json()["items"][0] == {
            "item_id": "toy-rocket", "title": "Wooden rocket toy", "brand": "ToyCo",
            "category": "Toys > Building", "price": 12.5, "in_stock": True}
        while "toy-rocket" not in _search_ids(client, "rocket"):
            assert time.monotonic() - started < 1.0, "not found within a second"
            time.sleep(0.02)
        # the dense path scores it too, by its category: among the toys for a toy query,
        # after the lipsticks for a lipstick query
        services = client.app.state.services
        toys, _ = services.recommender._top_k("", [], "toy", _Pinned())
        assert "toy-rocket" in toys[:11], toys
        lipsticks, _ = services.recommender._top_k("", [], "velvet lipstick", _Pinned())
        assert "toy-rocket" not in lipsticks[:10], lipsticks
        similar = _ids(client.get("/v1/items/toy-rocket/similar", params={"k": 5}))
        assert similar and all(i.startswith("toy") for i in similar), similar
        assert services.catalog.row("toy-rocket") is not None
        events = client.post("/v1/events", json=[{
            "user_id": "rocketeer", "item_id": "toy-rocket", "event_type": "click",
            "timestamp": 1_735_700_000}])
        assert events.status_code == 200, events.text
    client, _ = _client(api_shop, api_model_server, tmp_path)   # same event store
    with client:
        assert "toy-rocket" in _search_ids(client, "rocket"), "kept across a restart"
        assert client.app.state.services.catalog.live_rows.size == 1


class _Pinned:
    model_versions: dict = {}


def test_changed_texts_and_deletions_apply_at_once(api_shop, api_model_server, tmp_path):
    client, _ = _client(api_shop, api_model_server, tmp_path)
    with client:
        assert "book1" in _everywhere(client)
        answer = client.post("/v1/catalog/updates", json=[
            {"item_id": "book1", "deleted": True},
            {"item_id": "food2", "title": "Green organic pesto sauce"},
            {"item_id": "toy3", "price": 1.0}])
        assert answer.status_code == 200, answer.text
        assert answer.json()["items"][0] == {"item_id": "book1", "deleted": True}
        for _ in range(3):
            assert "book1" not in _everywhere(client), "deleted: never again"
            assert "book1" not in _search_ids(client, "mystery novel",
                                              include_out_of_stock=True)
        assert client.get("/v1/items/book1/similar").status_code == 404
        assert "food2" in _search_ids(client, "pesto")
        listed = client.get("/v1/search", params={"q": "blocks", "k": 30}).json()["items"]
        assert {i["item_id"]: i["price"] for i in listed}["toy3"] == 1.0
        # the deleted item's past events still count: the reader's answer stays personal
        reader = client.get("/v1/recommend", params={"user_id": "reader", "k": 5}).json()
        assert reader["strategy"] == "personalized", reader
        readded = client.post("/v1/catalog/updates", json={
            "item_id": "book1", "title": "Blue mystery novel", "categories": "Books > Fiction"})
        assert readded.status_code == 200, readded.text
        assert "book1" in _search_ids(client, "mystery novel")
    client, _ = _client(api_shop, api_model_server, tmp_path)
    with client:
        assert "food2" in _search_ids(client, "pesto"), "kept across a restart"
        assert "book1" in _search_ids(client, "mystery novel"), "re-added: kept too"


def test_an_item_set_out_of_stock_never_appears_again(api_shop, api_model_server, tmp_path):
    client, _ = _client(api_shop, api_model_server, tmp_path)
    with client:
        gone = client.post("/v1/catalog/updates", json=[
            {"item_id": "beauty1", "in_stock": False},
            {"item_id": "toy-new", "title": "Silver building blocks toy",
             "categories": "Toys > Building", "in_stock": False}])
        assert gone.status_code == 200, gone.text
        for _ in range(5):
            seen = _everywhere(client)
            assert not {"beauty1", "toy-new"} & seen


def test_the_command_line_posts_a_file_in_batches(api_shop, api_model_server, tmp_path):
    from serving.api.catalog_updates import post_updates, read_updates_file

    client, _ = _client(api_shop, api_model_server, tmp_path)
    lines = tmp_path / "updates.jsonl"
    lines.write_text('{"item_id": "toy1", "price": 2.0}\n\n'
                     '{"item_id": "toy2", "in_stock": false}\n'
                     '{"item_id": "toy-kite", "title": "Red kite toy"}\n')
    with client:
        assert post_updates(read_updates_file(str(lines)), client, batch=2) == 3
        assert "toy-kite" in _search_ids(client, "kite")
        assert "toy2" not in _search_ids(client, "blocks")
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"item_id": "toy1", "price": 3.0}\n{"item_id": "toy1", "price": -3}\n')
        with pytest.raises(RuntimeError, match=r"updates 2\.\.2 refused \(HTTP 422\).*price"):
            post_updates(read_updates_file(str(bad)), client, batch=1)
        listed = client.get("/v1/search", params={"q": "blocks", "k": 30}).json()["items"]
        assert {i["item_id"]: i["price"] for i in listed}["toy1"] == 3.0, "batch 1 applied"
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"item_id": "toy1", "price": 2.0}\n{"item_id": \n')
    with pytest.raises(ValueError, match="line 2"):
        read_updates_file(str(broken))


def test_a_new_item_the_model_cannot_encode_is_refused_and_not_kept(
        api_shop, api_model_server, tmp_path, monkeypatch):
    from serving.client.clients import ServingError

    client, _ = _client(api_shop, api_model_server, tmp_path)
    with client:
        services = client.app.state.services

        def down(*args, **kwargs):
            raise ServingError("model server unreachable", code="UNAVAILABLE")

        monkeypatch.setattr(services.backend, "embed_rows", down)
        answer = client.post("/v1/catalog/updates", json=[
            {"item_id": "toy0", "in_stock": False},
            {"item_id": "toy-drone", "title": "Drone toy"}])
        assert answer.status_code == 503, answer.text
        assert services.catalog_updates.kept() == {}, "nothing kept"
        assert services.catalog.row("toy-drone") is None
        assert "toy0" in _search_ids(client, "blocks"), "nothing of the request applied"
