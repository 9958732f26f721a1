"""Retrieval's index in the API (Settings.retrieval_index, serving/api/ann.py) on the tiny
shop's synthetic models: the exact index answers as the model's own top_k does, ScaNN is
used from ann_min_items on, and live items join either."""
from __future__ import annotations

import pytest

from tests.serving.api.setup import (api_model_server, api_serving_dir,  # noqa: F401
                                     api_shop, make_settings)

USERS = ("reader", "searcher", "fan0", "nobody-new")
QUERIES = ("toy", "velvet lipstick", "mystery novel", "organic pasta sauce")


def _answers(api_shop, api_model_server, folder, **settings):
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    app = create_app(make_settings(api_shop, api_model_server.grpc_port,
                                   folder / "events.sqlite3", **settings))
    with TestClient(app) as client:
        services = client.app.state.services
        out = {"index": getattr(services.catalog.ann, "method", None)}
        for user in USERS:
            body = client.get("/v1/recommend", params={"user_id": user, "k": 10}).json()
            assert body["degraded"] == [], body
            out[user] = [i["item_id"] for i in body["items"]]
        for q in QUERIES:
            body = client.get("/v1/search", params={"q": q, "k": 10}).json()
            assert body["degraded"] == [], body
            out[q] = [i["item_id"] for i in body["items"]]
        added = client.post("/v1/catalog/updates", json={
            "item_id": "toy-kite", "title": "Red kite toy", "categories": "Toys > Building"})
        assert added.status_code == 200, added.text
        body = client.get("/v1/search", params={"q": "kite", "k": 10}).json()
        out["kite"] = [i["item_id"] for i in body["items"]]
        metrics = client.get("/metrics").text
        out["index_stage"] = 'stage="index"' in metrics
    return out


def test_the_exact_index_in_the_api_answers_as_the_models_top_k(api_shop, api_model_server,
                                                                tmp_path):
    model = _answers(api_shop, api_model_server, tmp_path / "model", retrieval_index="model")
    exact = _answers(api_shop, api_model_server, tmp_path / "exact",
                     retrieval_index="brute_force", ann_top_k=40)
    assert model.pop("index") is None and exact.pop("index") == "brute_force"
    assert not model.pop("index_stage") and exact.pop("index_stage")
    assert exact == model
    assert model["kite"][0] == "toy-kite"


def test_auto_uses_scann_from_ann_min_items_on(api_shop, api_model_server, tmp_path):
    small = _answers(api_shop, api_model_server, tmp_path / "small", retrieval_index="auto")
    assert small["index"] is None, "40 items: below ann_min_items, the model answers"
    large = _answers(api_shop, api_model_server, tmp_path / "large", retrieval_index="auto",
                     ann_min_items=10, ann_top_k=40)
    assert large["index"] == "scann" and large["kite"][0] == "toy-kite"
    for key in USERS + QUERIES:
        shared = set(large[key][:5]) & set(small[key][:5])
        assert len(shared) >= 4, (key, large[key], small[key])


@pytest.mark.parametrize("name, value", [("retrieval_index", "faiss"), ("ann_top_k", 0),
                                         ("ann_min_items", 0)])
def test_bad_index_settings_are_named(name, value):
    from serving.api.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match=name):
        Settings(shop_dir="x", **{name: value})
