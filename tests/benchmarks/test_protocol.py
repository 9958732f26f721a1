"""Leave-one-out split and ranking metrics on tiny hand-checked cases."""
import math

import numpy as np
import pytest

from benchmarks import protocol


def test_leave_one_out_split():
    split = protocol.leave_one_out([[0, 1, 2, 3], [4, 2, 1], [3, 4]], n_items=5)
    assert [s.tolist() for s in split.train] == [[0, 1], [4], [3, 4]]
    assert [h.tolist() for h in split.validation.histories] == [[0, 1], [4]]
    assert split.validation.targets.tolist() == [2, 2]
    assert [h.tolist() for h in split.test.histories] == [[0, 1, 2], [4, 2]]
    assert split.test.targets.tolist() == [3, 1]
    assert split.n_skipped_users == 1          # [3, 4]: train only, not evaluated


def test_leave_one_out_rejects_out_of_range_items():
    with pytest.raises(ValueError, match="outside 0..2"):
        protocol.leave_one_out([[0, 1, 3]], n_items=3)


def test_ranks_break_ties_by_item_index():
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]])
    # Target 2 ties with items 0 and 3: only item 0 (lower index) and item 1 go first.
    assert protocol.target_ranks(scores, [2]).tolist() == [2]
    assert protocol.target_ranks(scores, [0]).tolist() == [1]
    assert protocol.target_ranks(scores, [3]).tolist() == [3]
    # All equal: rank = item index.
    flat = np.zeros((3, 6))
    assert protocol.target_ranks(flat, [0, 4, 5]).tolist() == [0, 4, 5]


def test_filtered_ranks_drop_history_but_not_target():
    scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.7, 0.6]])
    hist = [np.array([0, 1]), np.array([1, 3])]
    assert protocol.target_ranks(scores, [2, 3]).tolist() == [2, 3]
    assert protocol.target_ranks(scores, [2, 3], hist).tolist() == [0, 2]


def test_ranks_reject_bad_scores():
    with pytest.raises(ValueError, match="NaN"):
        protocol.target_ranks(np.array([[0.1, np.nan]]), [0])
    with pytest.raises(ValueError, match="shape"):
        protocol.target_ranks(np.zeros((2, 3)), [0])


def test_metrics_from_ranks_hand_computed():
    m = protocol.metrics_from_ranks([0, 4, 5, 12], ks=(5, 10))
    assert m["recall@5"] == pytest.approx(2 / 4)
    assert m["recall@10"] == pytest.approx(3 / 4)
    assert m["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(6)) / 4)
    assert m["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(6) + 1 / math.log2(7)) / 4)


def test_evaluate_in_batches_matches_single_batch_and_both_variants():
    rng = np.random.default_rng(0)
    n_items = 30
    histories = [rng.choice(n_items, size=rng.integers(1, 6), replace=False) for _ in range(17)]
    targets = np.array([rng.integers(n_items) for _ in histories])
    table = rng.normal(size=(17, n_items)).round(1)     # rounding makes ties
    by_key = {tuple(h): table[i] for i, h in enumerate(histories)}
    eval_set = protocol.EvalSet(histories, targets)

    def scorer(hists):
        return np.stack([by_key[tuple(h)] for h in hists])

    small = protocol.evaluate(scorer, eval_set, n_items, batch_size=4)
    whole = protocol.evaluate(scorer, eval_set, n_items, batch_size=100)
    assert small == whole
    assert small["users"] == 17
    expected = protocol.metrics_from_ranks(protocol.target_ranks(table, targets, histories))
    assert small["filtered"] == expected
    assert small["unfiltered"] == protocol.metrics_from_ranks(
        protocol.target_ranks(table, targets))


def test_evaluate_one_variant_only():
    eval_set = protocol.EvalSet([np.array([0])], np.array([1]))
    result = protocol.evaluate(lambda h: np.array([[1.0, 0.5, 0.0]]), eval_set, 3,
                               variants=("unfiltered",))
    assert set(result) == {"unfiltered", "users"}
    assert result["unfiltered"]["recall@5"] == 1.0
    with pytest.raises(ValueError, match="unknown variant"):
        protocol.evaluate(lambda h: np.zeros((1, 3)), eval_set, 3, variants=("both",))


def test_evaluate_rejects_wrong_scorer_shape():
    eval_set = protocol.EvalSet([np.array([0])], np.array([1]))
    with pytest.raises(ValueError, match="expected"):
        protocol.evaluate(lambda h: np.zeros((1, 2)), eval_set, n_items=3)
