"""Recommender pieces without HTTP (diversity, catalog, text index, settings) and the API's
degraded answers when the model server cannot be reached."""
from __future__ import annotations

import numpy as np
import pandas as pd
import portpicker
import pytest

from serving.api.catalog import Catalog
from serving.api.recommender import diversify
from serving.api.search_text import TextIndex, words
from serving.api.settings import Settings, SettingsError
from tests.serving.api.setup import api_shop, items_rows, make_settings  # noqa: F401


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    items = pd.DataFrame(items_rows())
    items["price"] = items["price"].astype(float)
    items["in_stock"] = items["in_stock"] == "true"
    return Catalog(items)


def test_diversify_caps_each_category_then_appends_the_rest_in_order():
    cats = np.array(["A", "A", "A", "B", "A", "C", "B", "A"])
    keep = diversify(cats, k=4, max_share=0.5)
    assert keep.tolist() == [0, 1, 3, 5, 2, 4, 6, 7]
    assert diversify(cats, k=4, max_share=1.0).tolist() == list(range(8))
    assert diversify(cats, k=3, max_share=0.1).tolist()[:3] == [0, 3, 5], "cap is at least 1"


def test_catalog_popular_respects_allowed_rows_and_breaks_ties_by_catalog_order(catalog):
    catalog.set_popularity({"toy3": 5, "book1": 5, "food2": 9, "unknown": 50})
    allowed = np.ones(len(catalog), dtype=bool)
    top = [catalog.ids[r] for r in catalog.popular(4, allowed)]
    assert top == ["food2", "book1", "toy3", "book0"]
    allowed[catalog.row("food2")] = False
    catalog.add_engagements(["toy3"])
    assert [catalog.ids[r] for r in catalog.popular(2, allowed)] == ["toy3", "book1"]


def test_catalog_neighbours_are_cosine_nearest_excluding_the_item(catalog):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(catalog), 4))
    emb[catalog.row("toy2")] = emb[catalog.row("toy1")] * 3.0     # same direction
    catalog.set_embeddings(emb, version=7)
    allowed = np.ones(len(catalog), dtype=bool)
    found = catalog.neighbours(catalog.row("toy1"), 3, allowed)
    assert catalog.ids[found[0][0]] == "toy2" and found[0][1] == pytest.approx(1.0)
    assert catalog.row("toy1") not in [r for r, _ in found]
    allowed[catalog.row("toy2")] = False
    assert catalog.ids[catalog.neighbours(catalog.row("toy1"), 1, allowed)[0][0]] != "toy2"
    assert catalog.embeddings_version == 7
    with pytest.raises(ValueError, match="expected 40 embeddings"):
        catalog.set_embeddings(emb[:3], version=8)


def test_text_index_matches_words_and_ranks_by_matches(catalog):
    index = TextIndex(catalog)
    assert words("The Red-Velvet LIPSTICK, for lips") == ["red", "velvet", "lipstick", "lips"]
    allowed = np.ones(len(catalog), dtype=bool)
    found = index.search({"red", "lipstick"}, allowed, 3)
    assert catalog.ids[found[0][0]] == "beauty0" and found[0][1] == 1.0
    assert all(catalog.ids[r].startswith(("beauty", "book", "toy", "food")) for r, _ in found)
    assert index.search(set(), allowed, 3) == []
    assert "lipstick" in index.words_of(catalog.row("beauty4"))


@pytest.mark.parametrize("overrides, field", [
    ({"tfserving_grpc": "no-port"}, "tfserving_grpc"), ({"max_k": 500}, "max_k"),
    ({"default_k": 0}, "default_k"), ({"max_category_share": 0}, "max_category_share"),
    ({"on_bad_rows": "skip"}, "on_bad_rows"), ({"model_poll_s": 0}, "model_poll_s"),
    ({"shop_dir": ""}, "shop_dir")])
def test_settings_reject_bad_values_naming_them(overrides, field):
    with pytest.raises(SettingsError, match=field):
        Settings(**{"shop_dir": "shop", **overrides})


def test_settings_from_environment_with_overrides():
    env = {"SHOPREC_SHOP_DIR": "s", "SHOPREC_MAX_K": "20", "SHOPREC_FILTER_PURCHASED": "no",
           "SHOPREC_TFSERVING_GRPC": "tfserving:8500"}
    settings = Settings.from_env(env, max_k=None, default_k=5)
    assert (settings.shop_dir, settings.max_k, settings.filter_purchased,
            settings.tfserving_grpc, settings.default_k) == ("s", 20, False, "tfserving:8500", 5)
    with pytest.raises(SettingsError, match="SHOPREC_MAX_K"):
        Settings.from_env({"SHOPREC_SHOP_DIR": "s", "SHOPREC_MAX_K": "many"})
    with pytest.raises(SettingsError, match="shop_dir"):
        Settings.from_env({})


def test_without_a_model_server_answers_degrade_and_health_says_so(api_shop, tmp_path):
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    settings = make_settings(api_shop, portpicker.pick_unused_port(), tmp_path / "e.sqlite3",
                             startup_wait_s=0, tfserving_deadline_s=1, tfserving_retries=0)
    with TestClient(create_app(settings)) as client:
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "starting"
        assert health.json()["error"]
        rec = client.get("/v1/recommend", params={"user_id": "reader", "k": 3}).json()
        assert rec["degraded"] == ["retrieval"] and rec["strategy"] == "popular"
        assert [i["item_id"] for i in rec["items"]][:2] == ["beauty0", "beauty1"]
        found = client.get("/v1/search", params={"q": "red lipstick", "k": 2}).json()
        assert found["degraded"] == ["retrieval"]
        assert found["items"][0]["item_id"] == "beauty0", "lexical fallback"
        similar = client.get("/v1/items/toy1/similar")
        assert similar.status_code == 503 and "embeddings" in similar.json()["error"]
        assert client.post("/v1/events", json={"user_id": "x", "item_id": "toy1",
                                               "event_type": "click"}).status_code == 200
        metrics = client.get("/metrics").text
        assert 'shoprec_api_degraded_total{stage="retrieval"} 2.0' in metrics
