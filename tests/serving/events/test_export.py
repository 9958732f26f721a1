"""The feedback export: a store filled through the API becomes a shop folder the contract
loader accepts, with impressions as views that turn into label-0 ranking units."""
from __future__ import annotations

import json

import pytest

from pipeline.contract import spec
from pipeline.contract.load import load_shop
from pipeline.examples import build_units
from serving.events.export import export_feedback, main
from serving.events.store import open_event_store
from tests.serving.api.setup import *  # noqa: F401,F403
from tests.serving.api.setup import make_settings


@pytest.fixture(scope="module")
def filled_store(api_shop, api_model_server, tmp_path_factory):  # noqa: F811
    """The store of an API that answered, took a click and a purchase, a price change and
    an erasure: (store URL, the answer the click came from, the clicked item)."""
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    db = tmp_path_factory.mktemp("export") / "events.sqlite3"
    settings = make_settings(api_shop, api_model_server.grpc_port, db)
    with TestClient(create_app(settings)) as client:
        answer = client.get("/v1/recommend", params={"user_id": "shopper", "k": 4}).json()
        clicked = answer["items"][0]["item_id"]
        assert client.post("/v1/events", json=[
            {"user_id": "shopper", "item_id": clicked, "event_type": "click"},
            {"user_id": "shopper", "item_id": clicked, "event_type": "purchase"}]
        ).status_code == 200
        assert client.post("/v1/catalog/updates", json=[
            {"item_id": "toy3", "price": 99.0, "in_stock": False},
            {"item_id": "new1", "title": "Deluxe red velvet lipstick", "price": 12.5,
             "categories": "Beauty > Makeup", "brand": "BeautyCo"},
            {"item_id": "food9", "deleted": True}]).status_code == 200
        client.get("/v1/recommend", params={"user_id": "gone", "k": 3})
        assert client.delete("/v1/users/gone").status_code == 200
    return f"sqlite:///{db}", answer, clicked


def test_the_export_is_a_shop_folder_the_contract_accepts(filled_store, api_shop, tmp_path):
    url, answer, clicked = filled_store
    store = open_event_store(url)
    summary = export_feedback(store, api_shop, tmp_path / "out")
    store.close()
    shop = load_shop(tmp_path / "out")                      # on_bad_rows="fail": all valid
    assert summary["impressions_as_views"] == len(answer["items"])
    assert len(shop.events) == summary["events"]
    original = load_shop(api_shop)
    assert len(shop.events) == len(original.events) + 2 + len(answer["items"])
    toy3 = shop.items[shop.items[spec.ITEM_ID] == "toy3"].iloc[0]
    assert toy3[spec.PRICE] == 99.0 and not toy3[spec.IN_STOCK], "live updates applied"
    assert summary["item_changes"] == {"changed": 3, "added_or_retexted": 1, "deleted": 1}
    added = shop.items[shop.items[spec.ITEM_ID] == "new1"].iloc[0]
    assert added[spec.TITLE] == "Deluxe red velvet lipstick" and added[spec.PRICE] == 12.5
    deleted = shop.items[shop.items[spec.ITEM_ID] == "food9"].iloc[0]
    assert not deleted[spec.IN_STOCK], "a deleted item stays a row (its events), out of stock"
    mine = shop.events[shop.events[spec.USER_ID] == "shopper"]
    views = mine[mine[spec.EVENT_TYPE] == spec.VIEW]
    assert sorted(views[spec.ITEM_ID]) == sorted(i["item_id"] for i in answer["items"])
    assert "gone" not in set(shop.events[spec.USER_ID]), "erased users stay erased"


def test_impressions_become_label_0_ranking_units(filled_store, api_shop, tmp_path):
    url, answer, clicked = filled_store
    store = open_event_store(url)
    export_feedback(store, api_shop, tmp_path / "out")
    store.close()
    events = load_shop(tmp_path / "out").events
    mine = events[events[spec.USER_ID] == "shopper"].to_dict("records")
    units = {u["item_id"]: u for u in build_units("shopper", mine, spec.SESSION_GAP_SECONDS)}
    shown = [i["item_id"] for i in answer["items"]]
    assert set(units) == set(shown)
    assert units[clicked]["clicked"] == 1 and units[clicked]["purchased"] == 1
    assert all(units[i]["clicked"] == 0 and units[i]["purchased"] == 0
               for i in shown if i != clicked), "shown, not chosen: real negatives"


def test_the_command_line_writes_the_folder_and_its_summary(filled_store, api_shop, tmp_path,
                                                             capsys):
    url, _, _ = filled_store
    assert main(["--store", url, "--shop", str(api_shop), "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "export.json").read_text())
    assert summary == json.loads(capsys.readouterr().out)
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"items.jsonl", "events.jsonl",
                                                            "export.json"}
