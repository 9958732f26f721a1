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


def test_text_index_finds_stemmed_words_by_bm25_only_among_allowed_rows(catalog):
    index = TextIndex(catalog, background=False)
    assert words("The Red-Velvet LIPSTICK, for lips") == ["red", "velvet", "lipstick", "lips"]
    allowed = np.ones(len(catalog), dtype=bool)
    found = index.search("the red lipsticks", allowed, 3)      # stemmed, stop word dropped
    assert catalog.ids[found[0][0]] == "beauty0" and found[0][1] > 0
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert all("lipstick" in catalog.titles[r].lower() or "red" in catalog.titles[r].lower()
               for r, _ in found)
    allowed[catalog.row("beauty0")] = False
    assert catalog.row("beauty0") not in [r for r, _ in index.search("red lipstick", allowed, 3)]
    assert index.search("", allowed, 3) == [] and index.search("zzzz qqqq", allowed, 3) == []
    assert index.search("red lipstick", allowed, 0) == []
    assert "lipstick" in index.words_of(catalog.row("beauty4"))


def test_typo_tolerance_reads_unknown_words_as_the_nearest_catalog_words():
    from serving.api.lexical import Bm25, did_you_mean, max_edits

    texts = ["Toilet Seat Round", "Elongated Toilet Seat", "Brass Hinge 2x4", "Angle Bracket",
             "Building Blocks Toy", "Seats (2-Pack)"]
    strict, tolerant = Bm25(texts), Bm25(texts, typo_tolerance=True)
    assert not strict.scores("toliet").any() and not strict.spelling("toliet")
    scores = tolerant.scores("toliet")                           # a swap: one edit
    assert scores[:2].min() > 0 and not scores[2:].any()
    assert tolerant.spelling("Toliet SEATZ hinge buildng") == {
        "toliet": "toilet", "seatz": "seat", "buildng": "building"}  # seat 2x, seats 1x
    assert did_you_mean("Toliet SEATZ hinge", tolerant.spelling("Toliet SEATZ hinge")) == \
        "toilet seat hinge"
    assert did_you_mean("toilet", {}) is None
    # short words, model numbers and words too far from any catalog word stay as they are
    assert [max_edits(w) for w in ("hng", "2x6", "hinges", "elongatted")] == [0, 0, 1, 2]
    assert tolerant.spelling("2x6 hng qwertyuiop seat") == {}
    assert tolerant.with_params(0.9, 0.5).spelling("toliet") == {"toliet": "toilet"}


def test_character_ngrams_match_split_joined_and_misspelled_words(catalog):
    from serving.api.lexical import CharNgramBm25, char_ngrams

    assert char_ngrams("Tile 2 in.") == ["#ti", "til", "ile", "le#", "#2#", "#in", "in#"]
    assert char_ngrams("Tile", 4) == ["#til", "tile", "ile#"] and char_ngrams("") == []
    texts = ["Fiberglass Ladder", "Wood Ladder", "Toilet Seat", "", "Sheetrock Screws"]
    index = CharNgramBm25(texts)
    for query, row in (("fiber glass", 0), ("sheet rock", 4), ("toliet", 2),
                       ("woodladder", 1)):
        scores = index.scores(query)
        assert scores.argmax() == row and scores[3] == 0.0, (query, scores)
    assert not index.scores("").any() and not index.scores("qqq zzz").any()
    with pytest.raises(ValueError, match="n >= 2"):
        CharNgramBm25(texts, n=1)
    text_index = TextIndex(catalog, background=False)
    scores = text_index.scores("velvetlipstik", len(catalog) + 2, "ngrams")
    assert scores.shape == (len(catalog) + 2,) and scores[-2:].tolist() == [0.0, 0.0]
    assert catalog.ids[scores.argmax()].startswith("beauty")
    assert not text_index.scores("velvetlipstik", len(catalog)).any(), "no word matches"
    with pytest.raises(ValueError, match="expected words or ngrams"):
        text_index.scores("lipstick", len(catalog), "chars")


def test_lexical_rows_join_the_pool_below_retrievals_lowest_score():
    from serving.api.recommender import with_lexical

    rows, scores = np.array([4, 2, 7]), np.array([0.9, 0.5, 0.25])
    merged, merged_scores = with_lexical(rows, scores, [7, 11, 3, 4])
    assert merged.tolist() == [4, 2, 7, 11, 3]          # lexical order, no repeats
    assert merged_scores[:3].tolist() == scores.tolist()
    assert (merged_scores[3:] < 0.25).all() and merged_scores[3] == merged_scores[4]
    same_rows, same_scores = with_lexical(rows, scores, [2])
    assert same_rows is rows and same_scores is scores
    only, only_scores = with_lexical(np.zeros(0, np.int64), np.zeros(0), [5, 1])
    assert only.tolist() == [5, 1] and only_scores.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("overrides, field", [
    ({"tfserving_grpc": "no-port"}, "tfserving_grpc"), ({"max_k": 500}, "max_k"),
    ({"default_k": 0}, "default_k"), ({"max_category_share": 0}, "max_category_share"),
    ({"on_bad_rows": "skip"}, "on_bad_rows"), ({"model_poll_s": 0}, "model_poll_s"),
    ({"shop_dir": ""}, "shop_dir"), ({"max_history": 0}, "max_history=0: must be a whole"),
    ({"max_history": 201}, "max_history=201"), ({"max_history": True}, "max_history=True")])
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
    assert settings.max_history == 50
    assert Settings.from_env({"SHOPREC_SHOP_DIR": "s", "SHOPREC_MAX_HISTORY": "20"}
                             ).max_history == 20
    with pytest.raises(SettingsError, match="shop_dir"):
        Settings.from_env({})


def test_without_a_model_server_answers_degrade_and_health_says_so(api_shop, tmp_path):
    import time

    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    settings = make_settings(api_shop, portpicker.pick_unused_port(), tmp_path / "e.sqlite3",
                             startup_wait_s=0, tfserving_deadline_s=1, tfserving_retries=0)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}, "alive all the same"
        started = time.perf_counter()
        ready = client.get("/readyz")
        assert time.perf_counter() - started < 1.0, "within the readiness budget"
        body = ready.json()
        assert ready.status_code == 503 and set(body) == {"error", "detail"}, body
        checks = {d["loc"][1]: d for d in body["detail"]}
        assert list(checks) == ["model_server", "models_available", "embeddings",
                                "event_store", "watcher"], "every check is listed"
        assert [n for n, d in checks.items() if d["type"] == "failed"] == [
            "model_server", "models_available", "embeddings"], body
        assert "UNAVAILABLE" in checks["model_server"]["msg"]
        assert checks["embeddings"]["msg"].startswith("catalog embeddings not loaded yet")
        assert body["error"].startswith("not ready: model_server (retrieval: UNAVAILABLE")
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
        assert "shoprec_api_ready 0.0" in metrics
        assert 'shoprec_api_readiness_check{check="model_server"} 0.0' in metrics
        failures = metrics.split("\nshoprec_api_model_watcher_poll_failures_total ")[1]
        assert float(failures.split()[0]) >= 1, "the startup poll failed"


class _Store:
    """An event store stub: every user has the same context."""

    def __init__(self, ctx):
        self.ctx = ctx

    def user_context(self, user_id):
        return self.ctx


class _Models:
    """A model backend stub: retrieval returns the catalog in reverse order; ranking is
    ``rank`` (a function of the call's arguments) or raises ``rank_error``."""

    retrieval_model, ranking_model = "retrieval", "ranking"

    def __init__(self, catalog, rank=None, rank_error=None, k=None):
        self.ids = list(catalog.ids[::-1])[:k]
        self.rank, self.rank_error, self.calls = rank, rank_error, []
        self.features = []

    def top_k(self, user_id, history, query, version=None):
        return self.ids, np.linspace(1.0, 0.0, len(self.ids))

    def rank_candidates(self, user_id, history, query, item_inputs, features=None,
                        version=None):
        self.calls.append((user_id, list(history), query, dict(item_inputs)))
        self.features.append(dict(features or {}))
        if self.rank_error is not None:
            raise self.rank_error
        return self.rank(item_inputs)


def _recommender(catalog, models, ctx, **settings):
    from serving.api.recommender import Recommender

    return Recommender(catalog, _Store(ctx), models, Settings(shop_dir="unused", **settings))


def test_ranking_gets_the_query_titles_and_reorders_recommend_and_search(catalog):
    from serving.events.store import UserContext

    def toys_first(inputs):
        return np.array([1.0 if i.startswith("toy") else 0.0 for i in inputs["item_id"]])

    models = _Models(catalog, rank=toys_first)
    ctx = UserContext(["book1"], {"book1": "click"}, query="blocks")
    rec = _recommender(catalog, models, ctx).recommend("u1", k=4)
    assert rec.degraded == [] and [catalog.ids[r.row] for r in rec.items][:2] == ["toy8",
                                                                                  "toy7"]
    user_id, history, query, inputs = models.calls[-1]
    assert (user_id, history, query) == ("u1", ["book1"], "blocks")
    assert set(inputs) == {"item_id", "title", "brand", "category", "price", "in_stock"}
    assert inputs["title"][0] == catalog.titles[catalog.row(inputs["item_id"][0])]
    found = _recommender(catalog, models, ctx, search_fusion="union").search(
        "red lipstick", None, k=3)
    assert models.calls[-1][:3] == ("", [], "red lipstick")
    assert found.degraded == [] and all(catalog.ids[r.row].startswith("toy")
                                        for r in found.items)


def test_missing_rank_candidates_degrades_to_retrieval_order_with_a_clear_log(catalog, caplog):
    from serving.client.errors import InvalidArgument
    from serving.events.store import UserContext

    error = InvalidArgument('Serving signature key "rank_candidates" not found.',
                            code="FAILED_PRECONDITION")
    models = _Models(catalog, rank_error=error)
    recommender = _recommender(catalog, models, UserContext(["book1"], {"book1": "click"}),
                               search_fusion="union")
    with caplog.at_level("WARNING", logger="serving.api.recommender"):
        rec = recommender.recommend("u1", k=3)
        found = recommender.search("blocks", "u1", k=3)
        recommender.recommend("u1", k=3)
    assert rec.degraded == ["ranking"] and found.degraded == ["ranking"]
    assert [catalog.ids[r.row] for r in found.items] == ["food9", "food8", "food7"], \
        "retrieval order"
    warnings = [r.getMessage() for r in caplog.records if r.name == "serving.api.recommender"]
    assert len(warnings) == 1, "each distinct failure is logged once"
    assert "ranking stage degraded" in warnings[0] and "lacks the rank_candidates" in \
        warnings[0]


def _with_tables(transitions, cooccurrences, texts=None):
    """A fresh catalog whose item-to-item sources hold the given {item: [(partner, count)]}
    (as the served related_items signature would give them; ``texts``: text neighbours)."""
    from trainer.candidates import served_tables

    items = pd.DataFrame(items_rows())
    items["price"] = items["price"].astype(float)
    items["in_stock"] = items["in_stock"] == "true"
    catalog = Catalog(items)
    n = len(catalog)
    answers = {"engagements": np.ones(n, np.float32)}
    tables = (("transition", transitions), ("cooccurrence", cooccurrences)) + (
        (("text", texts),) if texts is not None else ())
    for name, table in tables:
        ids, weights = np.full((n, 3), b"", dtype=object), np.zeros((n, 3), np.float32)
        for item, partners in table.items():
            for j, (partner, count) in enumerate(partners):
                ids[catalog.row(item), j], weights[catalog.row(item), j] = partner.encode(), count
        answers[f"{name}_ids"], answers[f"{name}_weights"] = ids, weights
    catalog.set_item_to_item(served_tables.build(catalog.ids, answers, version=1))
    return catalog


def test_text_neighbours_add_similar_items_with_their_similarity():
    from serving.events.store import UserContext

    catalog = _with_tables({}, {}, texts={"book1": [("toy3", 0.8), ("toy9", 0.9)]})
    models = _Models(catalog, rank=lambda inputs: np.zeros(len(inputs["item_id"])), k=5)
    ctx = UserContext(["book1"], {"book1": "click"})
    rec = _recommender(catalog, models, ctx).recommend("u1", k=10)
    ranked = [catalog.ids[row] for row in catalog.rows(models.calls[-1][3]["item_id"])]
    assert ranked[-1] == "toy3" and "toy9" not in ranked          # toy9 is out of stock
    features = models.features[-1]
    assert features["text_score"][-1] == pytest.approx(0.8, rel=1e-3)
    reason = {catalog.ids[r.row]: r.reason for r in rec.items}["toy3"]
    assert reason.type == "similar_to_history" and reason.item_id == "book1"
    assert reason.text == "Similar to “Blue mystery novel”"


def test_item_to_item_sources_add_explained_allowed_candidates_with_their_features():
    from serving.events.store import UserContext

    # book1 was followed by toy3 and (out of stock) toy9; beauty2 occurs near book2.
    catalog = _with_tables({"book1": [("toy3", 4.0), ("toy9", 9.0)]},
                           {"book2": [("beauty2", 2.0)], "beauty2": [("book2", 2.0)]})
    models = _Models(catalog, rank=lambda inputs: np.zeros(len(inputs["item_id"])), k=5)
    ctx = UserContext(["book1", "book2"], {"book1": "click", "book2": "purchase"},
                      purchased={"book2"})
    rec = _recommender(catalog, models, ctx).recommend("u1", k=10)
    assert rec.degraded == [] and rec.strategy == "personalized"
    ranked = [catalog.ids[row] for row in catalog.rows(models.calls[-1][3]["item_id"])]
    # Retrieval's five (food9..food5), then only the explained, allowed partners.
    assert ranked == ["food9", "food8", "food7", "food6", "food5", "toy3", "beauty2"]
    reasons = {catalog.ids[r.row]: r.reason for r in rec.items}
    assert reasons["toy3"].type == "chosen_after" and reasons["toy3"].item_id == "book1"
    assert reasons["toy3"].text == "Often chosen next after “Blue mystery novel”"
    assert reasons["beauty2"].type == "chosen_together" and reasons["beauty2"].item_id == "book2"
    features = models.features[-1]
    assert set(features) == {"retrieval_score", "transition_score", "cooccurrence_score",
                             "history_brand_share", "last_item_same_brand"}
    assert features["transition_score"][5] == pytest.approx(np.log1p(4.0), rel=1e-3)
    assert features["cooccurrence_score"][6] == pytest.approx(np.log1p(2.0), rel=1e-3)
    assert features["retrieval_score"][0] == 0 and (features["retrieval_score"][1:] < 0).all()
    # Search ranks retrieval's items and BM25's matches ("blocks": the in-stock toys, after
    # retrieval's in the pool), not the item-to-item partners, with the same features.
    found = _recommender(catalog, models, ctx).search("blocks", "u1", k=10)
    assert [catalog.ids[r.row] for r in found.items] == [
        "food9", "food8", "food7", "food6", "food5", "toy0", "toy1", "toy2", "toy3", "toy4"]
    pool = [catalog.ids[row] for row in catalog.rows(models.calls[-1][3]["item_id"])]
    assert pool[5:] == [f"toy{i}" for i in range(9)] and "beauty2" not in pool  # toy9: no stock
    assert found.items[5].reason.text == "Matches “blocks”"
    assert set(models.features[-1]) == set(features)


def test_stages_show_retrievals_raw_list_and_the_pool_the_ranker_gets():
    from serving.events.store import UserContext

    catalog = _with_tables({"book1": [("toy3", 4.0), ("toy9", 9.0)]}, {})
    models = _Models(catalog, rank=lambda inputs: np.zeros(len(inputs["item_id"])), k=5)
    ctx = UserContext(["book1", "food8"], {"book1": "click", "food8": "purchase"},
                      purchased={"food8"})
    retrieved, pool = _recommender(catalog, models, ctx).stages("u1")
    assert retrieved == ["food9", "food8", "food7", "food6", "food5"]   # nothing filtered
    assert pool == ["food9", "food7", "food6", "food5", "toy3"]          # as recommend's
    _recommender(catalog, models, ctx).recommend("u1", k=10)
    assert [catalog.ids[r] for r in catalog.rows(models.calls[-1][3]["item_id"])] == pool
    assert _recommender(catalog, models, UserContext([], {})).stages("u2") == ([], [])


def test_ranking_with_external_features_reorders_the_two_stage_pool():
    from serving.events.store import UserContext

    catalog = _with_tables({"book1": [("toy3", 4.0)]}, {})
    models = _Models(catalog, k=3)
    ctx = UserContext(["book1"], {"book1": "click"})

    def rank(inputs):
        return np.asarray(models.features[-1]["transition_score"], np.float64)
    models.rank = rank
    rec = _recommender(catalog, models, ctx).recommend("u1", k=4)
    assert catalog.ids[rec.items[0].row] == "toy3"
    assert rec.items[0].score == pytest.approx(np.log1p(4.0), rel=1e-3)


def test_tables_swapped_during_a_request_do_not_break_its_reasons():
    from serving.events.store import UserContext

    catalog = _with_tables({"book1": [("toy3", 4.0)]}, {})
    models = _Models(catalog, k=3)

    def swap_then_rank(inputs):
        catalog.set_item_to_item(None)          # the watcher installs another version's
        return np.arange(len(inputs["item_id"]), dtype=np.float64)
    models.rank = swap_then_rank
    rec = _recommender(catalog, models, UserContext(["book1"], {"book1": "click"})).recommend(
        "u1", k=4)
    assert rec.degraded == [] and catalog.ids[rec.items[0].row] == "toy3"
    assert rec.items[0].reason.type == "chosen_after"


def test_an_item_of_the_history_is_never_explained_as_similar_to_itself(catalog):
    from serving.events.store import UserContext

    # every item points the same way except the books: book1's nearest item is book1
    emb = np.tile([1.0, 0.0], (len(catalog), 1)).astype(np.float32)
    books = [catalog.row(f"book{i}") for i in range(10)]
    emb[books] = [0.0, 1.0]
    emb[catalog.row("book2")] = [0.2, 1.0]
    catalog.set_embeddings(emb, 1)
    models = _Models(catalog, rank=lambda inputs: np.array(
        [{"book1": 3.0, "book2": 2.0}.get(i, 0.0) for i in inputs["item_id"]]))
    ctx = UserContext(["book1"], {"book1": "click"})
    rec = _recommender(catalog, models, ctx).recommend("u1", k=10)
    reasons = {catalog.ids[r.row]: r.reason for r in rec.items}
    assert "book1" in reasons, "the stub retrieval offers the history item back"
    assert reasons["book1"].item_id != "book1", reasons["book1"]
    assert reasons["book2"].type == "similar_to_history" and \
        reasons["book2"].item_id == "book1", "other items still name it"
