"""The shared ranking metrics (trainer/metrics.py) on hand-computed cases: the tie rule,
history filtering, targets outside the catalog, Recall/NDCG values and popularity counts."""
import math

import numpy as np
import pytest

from trainer import metrics


def test_ties_are_broken_by_item_index():
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]])
    # Item 1 is higher; items 0, 2 and 3 tie at 0.5 and go by index; item 4 is last.
    for target, rank in ((1, 0), (0, 1), (2, 2), (3, 3), (4, 4)):
        assert metrics.target_ranks(scores, [target]).tolist() == [rank]
    # All equal: the rank is the item index.
    assert metrics.target_ranks(np.zeros((3, 6)), [0, 4, 5]).tolist() == [0, 4, 5]


def test_ranks_agree_with_a_stable_descending_sort():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(20, 9)).astype(np.float32)    # many ties
    targets = rng.integers(0, 9, size=20)
    order = np.argsort(-scores, axis=1, kind="stable")
    expected = [int(np.flatnonzero(order[u] == t)[0]) for u, t in enumerate(targets)]
    assert metrics.target_ranks(scores, targets).tolist() == expected


def test_history_filtering_keeps_or_removes_the_target():
    scores = np.array([[0.9, 0.8, 0.7, 0.6]] * 3)
    histories = [np.array([0, 1]), np.array([1, 3, -1]), np.array([-1, -1])]  # -1: padding
    targets = [2, 3, 3]
    assert metrics.target_ranks(scores, targets).tolist() == [2, 3, 3]
    # Row 0: items 0 and 1 removed -> rank 0. Row 1: item 1 removed, target 3 (in its own
    # history) stays -> rank 2. Row 2: padding only, nothing removed.
    assert metrics.target_ranks(scores, targets, histories).tolist() == [0, 2, 3]
    # keep_target=False: the target in its history is removed with it, a miss.
    assert metrics.target_ranks(scores, targets, histories, keep_target=False).tolist() == [
        0, metrics.NOT_RANKED, 3]


def test_filtering_removes_a_tied_lower_index_item():
    scores = np.array([[0.5, 0.5, 0.5]])
    assert metrics.target_ranks(scores, [2]).tolist() == [2]
    assert metrics.target_ranks(scores, [2], [np.array([0])]).tolist() == [1]


def test_target_outside_the_catalog_is_never_ranked():
    ranks = metrics.target_ranks(np.array([[1.0, 2.0], [1.0, 2.0]]), [-1, 0])
    assert ranks.tolist() == [metrics.NOT_RANKED, 1]
    m = metrics.metrics_from_ranks(ranks, ks=(1, 2, 100))
    assert m["recall@1"] == 0.0 and m["recall@2"] == 0.5 and m["recall@100"] == 0.5
    assert m["ndcg@100"] == pytest.approx(0.5 / math.log2(3))


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        metrics.target_ranks(np.array([[0.1, np.nan]]), [0])
    with pytest.raises(ValueError, match="NaN"):
        metrics.target_ranks(np.array([[0.1, -np.inf]]), [0])
    with pytest.raises(ValueError, match="shape"):
        metrics.target_ranks(np.zeros((2, 3)), [0])
    with pytest.raises(ValueError, match="outside 0..2"):
        metrics.target_ranks(np.zeros((1, 3)), [3])


def test_recall_and_ndcg_hand_computed():
    m = metrics.metrics_from_ranks([0, 4, 5, 12], ks=(5, 10))
    assert list(m) == ["recall@5", "ndcg@5", "recall@10", "ndcg@10"]
    assert m["recall@5"] == pytest.approx(2 / 4)
    assert m["recall@10"] == pytest.approx(3 / 4)
    assert m["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(6)) / 4)
    assert m["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(6) + 1 / math.log2(7)) / 4)
    assert metrics.metrics_from_ranks([1], ks=(2,), suffix="_f") == {
        "recall@2_f": 1.0, "ndcg@2_f": pytest.approx(1 / math.log2(3))}
    assert metrics.metrics_from_ranks([], ks=(5,)) == {"recall@5": 0.0, "ndcg@5": 0.0}


def test_item_counts_from_sequences_or_one_array():
    counts = metrics.item_counts([np.array([0, 2, 2]), np.array([2, 3]), np.array([])], 5)
    assert counts.dtype == np.float64 and counts.tolist() == [1, 0, 3, 1, 0]
    # Negative indices (items outside the catalog) are not counted.
    assert metrics.item_counts(np.array([1, -1, 1, -1]), 3).tolist() == [0, 2, 0]
    assert metrics.item_counts([], 2).tolist() == [0, 0]
    with pytest.raises(ValueError, match="outside"):
        metrics.item_counts(np.array([3]), 3)


def test_popularity_ranks_equal_counts_by_index():
    counts = metrics.item_counts(np.array([3, 3, 1, 2]), 4)            # [0, 1, 1, 2]
    scores = np.tile(counts, (4, 1))
    assert metrics.target_ranks(scores, [3, 1, 2, 0]).tolist() == [0, 1, 2, 3]
