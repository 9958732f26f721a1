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


class _RecordingClient(_PinnedClient):
    """``_PinnedClient`` that keeps every request's inputs."""

    def __init__(self):
        super().__init__(loaded=set())
        self.inputs = []

    def predict(self, model, inputs, signature, output_filter=None, version=None):
        self.inputs.append((signature, inputs))
        return super().predict(model, inputs, signature, output_filter, None)


def test_histories_are_sent_at_max_history_width_most_recent_first():
    """Settings.max_history: every history goes out with that width (one shape for TF
    Serving's batching), the most recent items first, cut or padded; the models keep their
    own width's most recent items (trainer/signatures.py)."""
    from serving.api.model_backend import ModelBackend

    client = _RecordingClient()
    backend = ModelBackend(client, max_history=50)
    long, short = [f"i{k}" for k in range(60)], ["a", "b", "c"]
    backend.top_k("u", long, "")
    sent = client.inputs[-1][1]["history_item_ids"]
    assert sent.shape == (1, 50) and list(sent[0]) == long[:50]
    backend.top_k("u", short, "")
    assert list(client.inputs[-1][1]["history_item_ids"][0]) == short + [""] * 47
    items = {"item_id": np.array(["a", "b"], dtype=object)}
    backend.rank_candidates("u", long, "", items)
    sent = client.inputs[-1][1]["history_item_ids"]
    assert sent.shape == (50,) and list(sent) == long[:50]
    backend.score("u", short, items)
    assert client.inputs[-1][1]["history_item_ids"].shape == (2, 50)
    assert ModelBackend(client).max_history == 10              # the old fixed width
    for bad in (0, 201):
        with pytest.raises(ValueError, match=f"max_history={bad}"):
            ModelBackend(client, max_history=bad)


def test_the_served_history_length_is_read_from_the_retrieval_metadata():
    from serving.api.model_backend import served_history_length
    from serving.client.model_metadata import ModelMetadata, SignatureSpec, TensorSpec

    def metadata(outputs):
        return ModelMetadata("retrieval", 1, {"top_k": SignatureSpec(
            inputs={}, outputs=dict({"scores": TensorSpec("DT_FLOAT", (-1, 100))}, **outputs))})

    assert served_history_length(metadata(
        {"history_used": TensorSpec("DT_STRING", (-1, 20))})) == 20
    assert served_history_length(metadata({})) == 10          # exports from before the output
    assert served_history_length(ModelMetadata("retrieval", 1, {})) == 10
    assert served_history_length(metadata(
        {"history_used": TensorSpec("DT_STRING", (-1, -1))})) == 10


def test_the_candidate_pool_reads_the_served_width_and_retrieval_gets_max_history(monkeypatch):
    """The store's 30-item history goes to retrieval and ranking whole (each model keeps its
    width's most recent items); the candidate pool reads the served models' 10 most recent,
    the histories the pipeline built the ranker's two-stage rows from."""
    from serving.api import recommender as recommender_module
    from serving.api.model_backend import ModelBackend
    from serving.api.recommender import Recommender
    from serving.api.settings import Settings
    from serving.events.store import UserContext

    items = pd.DataFrame(items_rows())
    items["price"] = items["price"].astype(float)
    items["in_stock"] = items["in_stock"] == "true"
    catalog = Catalog(items)
    history = list(catalog.ids[::-1][:30])
    sent, pooled = [], []

    class Models(ModelBackend):
        def top_k(self, user_id, history, query, version=None):
            sent.append(("top_k", list(history)))
            return list(catalog.ids[:5]), np.linspace(1, 0, 5)

        def rank_candidates(self, user_id, history, query, item_inputs, features=None,
                            version=None):
            sent.append(("rank_candidates", list(history)))
            return np.linspace(0, 1, len(item_inputs["item_id"]))

    real_build_pool = recommender_module.build_pool

    def build_pool(history_rows, *args, **kwargs):
        pooled.append(list(catalog.ids[history_rows]))
        return real_build_pool(history_rows, *args, **kwargs)

    monkeypatch.setattr(recommender_module, "build_pool", build_pool)
    store = SimpleNamespace(user_context=lambda user: UserContext(
        history, {h: "click" for h in history}))
    recommender = Recommender(catalog, store, Models(_Client({}), max_history=50),
                              Settings(shop_dir="unused"))
    assert catalog.history_length == 10             # until the watcher reads the metadata
    recommender.recommend("u", k=3)
    assert sent == [("top_k", history), ("rank_candidates", history)]
    assert pooled == [history[:10][::-1]]          # oldest first, as build_pool takes it
    catalog.set_history_length(20)
    recommender.recommend("u", k=3)
    assert pooled[-1] == history[:20][::-1]
