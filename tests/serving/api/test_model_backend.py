"""serving/api/model_backend.py: model outputs the API cannot use (NaN, inf, wrong shape)
are serving errors, so the answer degrades and says so instead of failing."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from serving.api.catalog import Catalog
from tests.serving.api.setup import items_rows


class _Client:
    """A Predict client stub answering every call with ``outputs``."""

    def __init__(self, outputs):
        self.outputs = outputs

    def predict(self, model, inputs, signature, output_filter=None, version=None):
        return self.outputs

    def signature(self, model, signature, version=None):
        return None


@pytest.mark.parametrize("outputs, match", [
    ({"item_ids": np.array([[b"a", b"b"]]), "scores": np.array([[1.0, np.nan]])}, "NaN"),
    ({"item_ids": np.array([[b"a", b"b"]]), "scores": np.array([[1.0]])}, "shape"),
])
def test_unusable_retrieval_scores_are_a_serving_error(outputs, match):
    from serving.api.model_backend import BadModelOutput, ModelBackend
    from serving.client.clients import ServingError

    backend = ModelBackend(_Client(outputs))
    with pytest.raises(BadModelOutput, match=match) as raised:
        backend.top_k("u", ["a"], "")
    assert isinstance(raised.value, ServingError) and raised.value.code == "INTERNAL"


def test_unusable_ranking_scores_degrade_the_answer_and_are_logged(caplog):
    from serving.api.model_backend import ModelBackend
    from serving.api.recommender import Recommender
    from serving.api.settings import Settings
    from serving.events.store import UserContext

    items = pd.DataFrame(items_rows())
    items["price"] = items["price"].astype(float)
    items["in_stock"] = items["in_stock"] == "true"
    catalog = Catalog(items)

    class Models(ModelBackend):
        def top_k(self, user_id, history, query, version=None):
            return list(catalog.ids[:5]), np.linspace(1, 0, 5)

    models = Models(_Client({"score": np.array([0.5, np.inf, 0.1, 0.2, 0.3])}))
    store = SimpleNamespace(user_context=lambda user: UserContext(["book1"], {"book1": "click"}))
    recommender = Recommender(catalog, store, models, Settings(shop_dir="unused"))
    with caplog.at_level(logging.WARNING, logger="serving.api.recommender"):
        rec = recommender.recommend("u", k=3)
    assert rec.degraded == ["ranking"]
    assert [catalog.ids[r.row] for r in rec.items] == ["book0", "book1", "book2"], \
        "candidate order"
    assert "1 of 5 values are NaN or infinite" in caplog.text
    assert "lacks the rank_candidates" not in caplog.text


class _PinnedClient:
    """Serves versions ``loaded`` of every model; records (signature, version) per call."""

    def __init__(self, loaded):
        self.loaded, self.calls = set(loaded), []

    def _check(self, model, version):
        from serving.client.errors import NotFound
        if version is not None and version not in self.loaded:
            raise NotFound(f"Servable not found for request: Specific({model}, {version})")

    def predict(self, model, inputs, signature, output_filter=None, version=None):
        self.calls.append((signature, version))
        self._check(model, version)
        n = len(inputs["item_id"]) if "item_id" in inputs else 2
        if signature == "top_k":
            return {"item_ids": np.array([[b"a", b"b"]]), "scores": np.array([[0.9, 0.1]])}
        return {"score": np.linspace(1, 0, n)}

    def signature(self, model, signature, version=None):
        self._check(model, version)
        return None


def test_calls_are_pinned_and_an_unloaded_version_is_asked_unpinned(caplog):
    from serving.api.model_backend import ModelBackend

    client = _PinnedClient(loaded={7})
    backend = ModelBackend(client)
    assert backend.top_k("u", ["a"], "", version=7)[0] == ["a", "b"]
    assert client.calls[-1] == ("top_k", 7) and backend.unpinned_retries == 0
    with caplog.at_level(logging.INFO, logger="serving.api.models"):
        backend.top_k("u", ["a"], "", version=6)                  # unloaded meanwhile
    assert client.calls[-2:] == [("top_k", 6), ("top_k", None)]
    assert backend.unpinned_retries == 1 and "version 6 is not served" in caplog.text
    items = {"item_id": np.array(["a", "b", "c"], dtype=object)}
    assert backend.rank_candidates("u", [], "", items, version=7).shape == (3,)
    assert client.calls[-1] == ("rank_candidates", 7)
    backend.rank_candidates("u", [], "", items, version=5)
    assert client.calls[-1] == ("rank_candidates", None) and backend.unpinned_retries == 2


def test_recommender_pins_each_request_to_the_published_bundle():
    from serving.api.model_backend import ModelBackend
    from serving.api.recommender import Recommender
    from serving.api.settings import Settings
    from serving.events.store import UserContext

    items = pd.DataFrame(items_rows())
    items["price"] = items["price"].astype(float)
    items["in_stock"] = items["in_stock"] == "true"
    catalog = Catalog(items)
    seen = []

    class Models(ModelBackend):
        def top_k(self, user_id, history, query, version=None):
            seen.append(("top_k", version))
            return list(catalog.ids[:5]), np.linspace(1, 0, 5)

        def rank_candidates(self, user_id, history, query, item_inputs, features=None,
                            version=None):
            seen.append(("rank_candidates", version))
            return np.linspace(0, 1, len(item_inputs["item_id"]))

    bundle = {"retrieval": 3, "ranking": 8}
    store = SimpleNamespace(user_context=lambda user: UserContext(["book1"], {"book1": "click"}))
    recommender = Recommender(catalog, store, Models(_Client({})), Settings(shop_dir="unused"),
                              versions=lambda: bundle)
    rec = recommender.recommend("u", k=3)
    assert seen == [("top_k", 3), ("rank_candidates", 8)] and rec.degraded == []
    assert rec.model_versions == {"retrieval": 3, "ranking": 8}
    found = recommender.search("lipstick", None, k=2)
    assert seen[-2:] == [("top_k", 3), ("rank_candidates", 8)]
    assert found.model_versions == bundle
