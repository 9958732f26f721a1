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

    def predict(self, model, inputs, signature, output_filter=None):
        return self.outputs

    def signature(self, model, signature):
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
        def top_k(self, user_id, history, query):
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
