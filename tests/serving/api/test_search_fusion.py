"""Search fusion (serving/api/search_fusion.py) and the API's "linear" search path that uses it
(serving/api/recommender.py ``_search_fused``) on the tiny shop."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.api import search_fusion
from serving.api.catalog import Catalog
from serving.api.settings import Settings, SettingsError
from tests.serving.api.setup import items_rows


def test_standardize_uses_the_masked_entries_mean_and_scale_for_every_entry():
    scores = np.array([[1.0, 3.0, 5.0, 100.0], [2.0, 2.0, 2.0, 2.0]])
    mask = np.array([True, True, True, False])
    z = search_fusion.standardize(scores, mask)
    inside = np.array([1.0, 3.0, 5.0])
    assert z[0, :3] == pytest.approx((inside - inside.mean()) / inside.std())
    assert z[0, 3] == pytest.approx((100.0 - inside.mean()) / inside.std()), \
        "an entry outside the mask is scored on the same scale"
    assert (z[1] == 0.0).all(), "a constant row has no spread: all 0, no division by 0"
    assert search_fusion.standardize(scores)[0].mean() == pytest.approx(0.0)


def test_fuse_weights_pick_lexical_dense_or_a_mix():
    lexical = np.array([0.0, 0.0, 9.0, 1.0, 0.0])
    dense = np.array([0.9, 0.8, 0.1, 0.5, 0.2])
    assert np.argsort(-search_fusion.fuse(lexical, dense, 1.0), kind="stable")[0] == 2
    only_dense = search_fusion.fuse(lexical, dense, 0.0)
    assert np.argsort(-only_dense, kind="stable").tolist() == [0, 1, 3, 4, 2]
    mixed = search_fusion.fuse(lexical, dense, 0.5)
    # the strong lexical match's lead on its z-scale outweighs its weak dense score
    assert mixed.argmax() == 2 and mixed[3] > mixed[4]
    keep = np.array([1, 1, 0, 1, 1], bool)
    assert search_fusion.fuse(lexical, dense, 0.5, keep)[keep] == pytest.approx(
        search_fusion.fuse(lexical[keep], dense[keep], 0.5)), \
        "the scales come from the items a search may return"
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="lexical_weight must be between 0 and 1"):
            search_fusion.fuse(lexical, dense, bad)
    with pytest.raises(ValueError, match="ranker_weight must be between 0 and 1"):
        search_fusion.blend(lexical, dense, 2.0)


def test_fuse_adds_the_ngram_scores_with_their_own_weight():
    lexical = np.array([0.0, 0.0, 9.0, 1.0, 0.0])
    ngrams = np.array([0.0, 7.0, 0.0, 1.0, 0.0])
    dense = np.array([0.9, 0.8, 0.1, 0.5, 0.2])
    assert search_fusion.fuse(lexical, dense, 0.0, ngrams=ngrams, ngram_weight=1.0).argmax() \
        == 1, "n-grams alone"
    assert search_fusion.fuse(lexical, dense, 0.4, ngrams=ngrams, ngram_weight=0.0) == \
        pytest.approx(search_fusion.fuse(lexical, dense, 0.4)), "weight 0: as without"
    mixed = search_fusion.fuse(lexical, dense, 0.3, ngrams=ngrams, ngram_weight=0.3)
    expected = (0.3 * search_fusion.standardize(lexical) + 0.3 * search_fusion.standardize(
        ngrams) + 0.4 * search_fusion.standardize(dense))
    assert mixed == pytest.approx(expected)
    with pytest.raises(ValueError, match="lexical_weight \\+ ngram_weight must be at most 1"):
        search_fusion.fuse(lexical, dense, 0.7, ngrams=ngrams, ngram_weight=0.4)
    with pytest.raises(ValueError, match="needs the n-gram scores"):
        search_fusion.fuse(lexical, dense, 0.3, ngram_weight=0.3)


def test_feedback_query_moves_the_query_towards_the_first_items_mean():
    query = np.array([1.0, 0.0])
    items = np.array([[0.0, 1.0], [0.0, 3.0]])
    assert search_fusion.feedback_query(query, items, 0.5) == pytest.approx([1.0, 1.0])
    assert search_fusion.feedback_query(query, items, 0.0) == pytest.approx(query)
    assert search_fusion.feedback_query(query, np.zeros((0, 2)), 2.0) == pytest.approx(query)
    with pytest.raises(ValueError, match="feedback weight must be >= 0"):
        search_fusion.feedback_query(query, items, -1.0)


def test_blend_keeps_the_fused_order_at_0_and_the_rankers_at_1():
    fused, ranker = np.array([3.0, 2.0, 1.0]), np.array([0.1, 0.2, 0.9])
    assert np.argsort(-search_fusion.blend(fused, ranker, 0.0)).tolist() == [0, 1, 2]
    assert np.argsort(-search_fusion.blend(fused, ranker, 1.0)).tolist() == [2, 1, 0]


def test_top_rows_breaks_ties_by_row_and_keeps_to_allowed_rows():
    scores = np.array([1.0, 5.0, 5.0, 5.0, 0.0, 7.0])
    allowed = np.array([True, True, False, True, True, True])
    assert search_fusion.top_rows(scores, allowed, 3).tolist() == [5, 1, 3]
    assert search_fusion.top_rows(scores, allowed, 10).tolist() == [5, 1, 3, 0, 4]
    assert search_fusion.top_rows(scores, np.zeros(6, bool), 3).size == 0
    assert search_fusion.top_rows(scores, allowed, 0).size == 0


def test_settings_check_the_search_fusion_fields():
    for bad, match in ((dict(search_fusion="rrf"), "search_fusion"),
                       (dict(search_lexical_weight=1.2), "search_lexical_weight"),
                       (dict(search_ranker_weight=-0.5), "search_ranker_weight"),
                       (dict(search_ngram_weight=-0.1), "search_ngram_weight"),
                       (dict(search_lexical_weight=0.7, search_ngram_weight=0.4),
                        "search_lexical_weight \\+ search_ngram_weight must be at most 1"),
                       (dict(search_feedback_items=0), "search_feedback_items"),
                       (dict(search_feedback_weight=-1.0), "search_feedback_weight"),
                       (dict(search_candidates=0), "search_candidates")):
        with pytest.raises(SettingsError, match=match):
            Settings(shop_dir="unused", **bad)


# ---- the API's linear search path ----

@pytest.fixture()
def catalog() -> Catalog:
    items = pd.DataFrame(items_rows())
    items["price"] = items["price"].astype(float)
    items["in_stock"] = items["in_stock"] == "true"
    catalog = Catalog(items)
    # candidate embeddings: the food items point one way, everything else another
    emb = np.tile(np.array([[0.0, 1.0]]), (len(catalog), 1))
    for row, item in enumerate(catalog.ids):
        if item.startswith("food"):
            emb[row] = [1.0, 0.05 * int(item[-1])]
    catalog.set_embeddings(emb, version=3)
    return catalog


class _Models:
    """Retrieval's query embedding points at the food items; ranking puts toys first (or
    fails with ``rank_error``); the query embedding call fails with ``embed_error``."""

    retrieval_model, ranking_model = "retrieval", "ranking"

    def __init__(self, rank_error=None, embed_error=None):
        self.rank_error, self.embed_error, self.features = rank_error, embed_error, []

    def query_embedding(self, user_id, history, query, version=None):
        if self.embed_error is not None:
            raise self.embed_error
        assert version == 3, "the embeddings' version is asked"
        return np.array([1.0, 0.0])

    def rank_candidates(self, user_id, history, query, item_inputs, features=None,
                        version=None):
        self.features.append((list(item_inputs["item_id"]), dict(features or {})))
        if self.rank_error is not None:
            raise self.rank_error
        return np.array([1.0 if i.startswith("toy") else 0.0 for i in item_inputs["item_id"]])


class _Store:
    def user_context(self, user_id):
        from serving.events.store import UserContext
        return UserContext([], {})


def _search(catalog, models, query="velvet lipstick", k=10, **settings):
    """The answer with ``settings``; the n-grams and feedback off unless set."""
    from serving.api.recommender import Recommender
    from serving.api.search_text import TextIndex
    settings = {"search_ngram_weight": 0.0, "search_feedback_weight": 0.0, **settings}
    recommender = Recommender(catalog, _Store(), models,
                              Settings(shop_dir="unused", **settings),
                              text_index=TextIndex(catalog, background=False))
    found = recommender.search(query, None, k)
    return found, [catalog.ids[r.row] for r in found.items]


def test_linear_search_mixes_bm25_and_retrieval_then_blends_the_ranker(catalog):
    models = _Models()
    found, ids = _search(catalog, models, search_lexical_weight=1.0, search_ranker_weight=0.0)
    assert found.degraded == [] and ids == [f"beauty{i}" for i in range(10)], \
        "BM25 alone: the lipsticks, ties in catalog order"
    _, ids = _search(catalog, models, search_lexical_weight=0.0, search_ranker_weight=0.0)
    assert ids[:10] == [f"food{i}" for i in range(10)], "retrieval alone (cosine)"
    _, ids = _search(catalog, models, search_lexical_weight=0.6, search_ranker_weight=0.0)
    assert set(ids) == {f"beauty{i}" for i in range(10)}, \
        "a query-word match outweighs a lukewarm retrieval score"
    found, ids = _search(catalog, models, search_lexical_weight=0.5, search_ranker_weight=1.0)
    assert ids[:9] == [f"toy{i}" for i in range(9)], "the ranking model's order (toy9 is out " \
        "of stock)"
    scores = [item.score for item in found.items]
    assert scores == sorted(scores, reverse=True) and all(0.0 < s < 1.0 for s in scores)
    pool_ids, features = models.features[-1]
    assert len(pool_ids) == len(catalog) - 2, "the pool: every in-stock item (fewer than " \
        "search_candidates)"
    _, ids = _search(catalog, _Models(), search_candidates=5, search_lexical_weight=1.0)
    assert len(ids) == 10, "the pool grows to the page asked for"


def test_linear_search_finds_joined_words_through_the_ngrams(catalog):
    query = "velvetlipstick"        # no word of the catalog: BM25 over words finds nothing
    found, ids = _search(catalog, _Models(), query, search_lexical_weight=0.0,
                         search_ngram_weight=0.6, search_ranker_weight=0.0)
    assert found.degraded == [] and set(ids) == {f"beauty{i}" for i in range(10)}
    _, ids = _search(catalog, _Models(), query, search_lexical_weight=0.6,
                     search_ngram_weight=0.0, search_ranker_weight=0.0)
    assert ids == [f"food{i}" for i in range(10)], "without the n-grams: retrieval's order"


def test_linear_search_feedback_moves_the_query_towards_its_first_matches(catalog):
    """Retrieval's query points at the food items; the lipsticks lead the fused list on
    their words. Feedback from the first 3 (lipsticks, pointing elsewhere) turns the dense
    scores away from the food: the next places go to the other non-food items."""
    common = dict(k=30, search_lexical_weight=0.6, search_ranker_weight=0.0)
    _, plain = _search(catalog, _Models(), **common)
    assert set(plain[:10]) == {f"beauty{i}" for i in range(10)}
    assert plain[10:20] == [f"food{i}" for i in range(10)]
    _, moved = _search(catalog, _Models(), search_feedback_items=3,
                       search_feedback_weight=10.0, **common)
    assert set(moved[:10]) == set(plain[:10])
    assert not any(i.startswith("food") for i in moved[10:28]), moved


def test_linear_search_degrades_to_the_fused_order_or_to_bm25(catalog):
    from serving.client.errors import InvalidArgument
    error = InvalidArgument("rank_candidates not found", code="FAILED_PRECONDITION")
    found, ids = _search(catalog, _Models(rank_error=error), search_lexical_weight=0.6,
                         search_ranker_weight=1.0)
    assert found.degraded == ["ranking"] and set(ids) == {f"beauty{i}" for i in range(10)}, \
        "ranking failed: the fused order, not the ranker's"
    found, ids = _search(catalog, _Models(embed_error=error), search_lexical_weight=0.0)
    assert found.degraded == ["retrieval"] and ids == [f"beauty{i}" for i in range(10)], \
        "retrieval failed: BM25's matches alone"
    found, ids = _search(catalog, _Models(embed_error=error), query="zzz unknown")
    assert found.degraded == ["retrieval"] and ids == []


def test_union_search_is_still_there(catalog):
    """``search_fusion=union`` answers as before: needs the model's top K, not the
    catalog's embeddings."""
    class TopK(_Models):
        def top_k(self, user_id, history, query, version=None):
            return list(catalog.ids[::-1]), np.linspace(1.0, 0.0, len(catalog))
    found, ids = _search(catalog, TopK(), search_fusion="union")
    assert found.degraded == [] and ids[:9] == [f"toy{i}" for i in range(8, -1, -1)], \
        "toys first, ties in retrieval's order"
