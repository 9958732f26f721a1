"""Beyond-accuracy metrics (trainer/beyond_accuracy.py) on lists small enough to work out by
hand."""
import math

import numpy as np
import pytest

from trainer import beyond_accuracy as B


def _facts(**kw):
    base = dict(popularity=np.array([100, 50, 10, 0, 0, 1, 2, 3, 4, 5], float), n_users=200)
    base.update(kw)
    return B.ItemFacts(**base)


def test_coverage_novelty_and_popularity_bias_by_hand():
    facts = _facts()
    lists = np.array([[0, 1], [0, 3]])
    out = B.measure(lists, facts)
    assert out["coverage"] == pytest.approx(3 / 10)
    p = lambda c: (c + 1) / 201
    expected = -np.mean([math.log2(p(100)), math.log2(p(50)), math.log2(p(100)),
                         math.log2(p(0))])
    assert out["novelty"] == pytest.approx(expected)
    # 1 % of 10 items rounds to 0: at least one item, the most popular (item 0), 2 of 4 slots.
    assert out["top1pct_share"] == pytest.approx(0.5)
    # Exposure [2, 1, 0, 1, 0...]: Gini of 10 values.
    assert out["exposure_gini"] == pytest.approx(B.gini([2, 1, 0, 1, 0, 0, 0, 0, 0, 0]))
    assert out["diversity"] is None and out["category_entropy"] is None
    assert out["brand_exposure_gini"] is None and out["new_item_exposure_ratio"] is None


def test_gini_extremes():
    assert B.gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert B.gini([0, 0, 0, 8]) == pytest.approx(0.75)      # (n - 1) / n for one holder
    assert B.gini([]) == 0.0 and B.gini([0, 0]) == 0.0


def test_diversity_uses_pairwise_cosine_distance_and_ignores_padding():
    emb = np.zeros((10, 2), np.float32)
    emb[0] = [1, 0]
    emb[1] = [0, 3]            # orthogonal to 0 (normalised by the facts)
    emb[2] = [2, 0]            # same direction as 0
    facts = _facts(embeddings=emb)
    out = B.measure(np.array([[0, 1, -1], [0, 2, -1], [4, -1, -1]]), facts)
    # list 1: distance 1; list 2: distance 0; list 3 has one item: not counted.
    assert out["diversity"] == pytest.approx(0.5)
    assert out["slots"] == 5


def test_category_entropy_in_bits():
    cats = np.array([0, 0, 1, 1, 2, 2, 3, 3, -1, -1])
    facts = _facts(categories=cats)
    out = B.measure(np.array([[0, 1], [0, 2], [0, 8]]), facts)
    # [0, 0] -> 0 bits; [0, 1] -> 1 bit; [0, unknown] -> 0 bits.
    assert out["category_entropy"] == pytest.approx(1 / 3)


def test_brand_exposure_is_per_catalog_item_of_the_brand():
    # Brand 0 has 8 items, brand 1 has 2; equal exposure per item = fair (Gini 0).
    brands = np.array([0] * 8 + [1] * 2)
    facts = _facts(brands=brands)
    even = np.arange(10).reshape(5, 2)
    out = B.measure(even, facts)
    assert out["brand_exposure_gini"] == pytest.approx(0.0)
    assert out["brands_exposed"] == 1.0
    only_big = np.array([[0, 1], [2, 3]])
    out = B.measure(only_big, facts)
    assert out["brands_exposed"] == 0.5
    assert out["brand_exposure_gini"] == pytest.approx(0.5)


def test_new_item_exposure_ratio():
    facts = _facts()
    facts.is_new = B.new_items(facts.popularity)        # counts <= 2: items 3, 4, 5, 6
    assert facts.is_new.tolist() == [False] * 3 + [True] * 4 + [False] * 3
    out = B.measure(np.array([[3, 0], [1, 2]]), facts)
    assert out["new_item_share"] == pytest.approx(0.4)
    assert out["new_item_exposure_ratio"] == pytest.approx((1 / 4) / 0.4)


def test_top_lists_tie_rule_exclusion_and_padding():
    scores = np.array([[1.0, 3.0, 3.0, 0.5], [2.0, 2.0, 2.0, 2.0]])
    assert B.top_lists(scores, 2).tolist() == [[1, 2], [0, 1]]
    assert B.top_lists(scores, 2, exclude=[[1, -1], [0, 1]]).tolist() == [[2, 0], [2, 3]]
    assert B.top_lists(scores[:, :2], 3, exclude=[[1], []]).tolist() == [[0, -1, -1],
                                                                         [0, 1, -1]]


def test_category_level_skips_a_level_every_item_shares():
    paths = [["Beauty", "Skin Care", "Face"], ["Beauty", "Makeup"], ["Beauty"]]
    assert B.category_level(paths) == ["Skin Care", "Makeup", ""]
    assert B.category_level([["A"], ["A"]]) == ["A", "A"]
    assert B.labels(["x", "", "y", "x"]).tolist() == [0, -1, 1, 0]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="item index"):
        B.measure(np.array([[0, 10]]), _facts())
    with pytest.raises(ValueError, match="brands"):
        _facts(brands=np.zeros(3))
    with pytest.raises(ValueError, match="embeddings"):
        _facts(embeddings=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="n_users"):
        _facts(n_users=0)
