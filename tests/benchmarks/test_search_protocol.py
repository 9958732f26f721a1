"""Search metrics on hand-computed cases: condensed NDCG@10, top-grade Recall@K, rerank."""
import math

import numpy as np
import pytest

from benchmarks import search_protocol as protocol
from benchmarks.search_data import Query

# Six products; 0..3 judged (grades 2, 0, 1, 2), 4 and 5 unjudged.
QUERY = Query("q1", "angle bracket", "test", np.array([0, 1, 2, 3]), np.array([2, 0, 1, 2]))
# Full ranking: 1 (.9), 4 (.8), 2 (.5), 3 (.5: tie, higher index after 2), 5 (.2), 0 (.1).
SCORES = np.array([0.1, 0.9, 0.5, 0.5, 0.8, 0.2])
# Condensed list: 1, 2, 3, 0 -> grades 0, 1, 2, 2; ideal order 2, 2, 1, 0.
DCG = 0 / math.log2(2) + 1 / math.log2(3) + 3 / math.log2(4) + 3 / math.log2(5)
IDEAL = 3 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4) + 0 / math.log2(5)


def test_condensed_ndcg_removes_unjudged_products_and_keeps_the_order():
    got = protocol.query_metrics(SCORES, QUERY)
    assert got[protocol.CONDENSED] == pytest.approx(DCG / IDEAL)
    assert DCG / IDEAL == pytest.approx(0.63473, abs=1e-5)
    # Unjudged products anywhere in the ranking do not change it.
    moved = SCORES.copy()
    moved[[4, 5]] = [5.0, -5.0]
    assert protocol.query_metrics(moved, QUERY)[protocol.CONDENSED] == pytest.approx(
        DCG / IDEAL)


def test_ndcg_cuts_at_k_and_is_one_for_the_ideal_order():
    assert protocol.ndcg([2, 2, 1, 0], [0, 1, 2, 2]) == 1.0
    assert protocol.ndcg([0, 2], [2, 0], k=1) == 0.0
    grades = [1] * 12
    assert protocol.ndcg(grades, grades) == 1.0          # 12 relevant, only 10 count
    assert protocol.ndcg([0, 0], [0, 0]) == 0.0          # nothing relevant: no ideal


def test_recall_counts_top_grade_products_in_the_full_ranking():
    # Top grade 2: products 0 (full rank 5) and 3 (rank 3, after 2 by the tie rule).
    assert protocol.recall_top_grade(SCORES, QUERY.products, QUERY.grades, k=3) == 0.0
    assert protocol.recall_top_grade(SCORES, QUERY.products, QUERY.grades, k=4) == 0.5
    assert protocol.recall_top_grade(SCORES, QUERY.products, QUERY.grades, k=6) == 1.0
    # Top grade 1 when no product has grade 2: product 2 only.
    q = Query("q2", "x", "test", np.array([1, 2]), np.array([0, 1]))
    assert protocol.recall_top_grade(SCORES, q.products, q.grades, k=3) == 1.0
    assert protocol.recall_top_grade(SCORES, q.products, q.grades, k=2) == 0.0


def test_rerank_uses_the_candidate_scores_when_given():
    same = protocol.query_metrics(SCORES, QUERY)
    assert same[protocol.RERANK] == same[protocol.CONDENSED]
    ideal = protocol.query_metrics(SCORES, QUERY, rerank_scores=np.array([4, 1, 2, 3]))
    assert ideal[protocol.RERANK] == 1.0
    assert ideal[protocol.CONDENSED] == same[protocol.CONDENSED]


def test_evaluate_batches_methods_and_checks_rows():
    queries = [QUERY, Query("q2", "x", "test", np.array([4]), np.array([1]))]
    got = protocol.evaluate(lambda qs: {"a": np.tile(SCORES, (len(qs), 1))}, queries,
                            batch_size=1)
    assert got["a"][protocol.CONDENSED].tolist() == pytest.approx([DCG / IDEAL, 1.0])
    assert got["a"][protocol.RECALL].tolist() == [1.0, 1.0]      # K = 100 > 6 products
    with pytest.raises(ValueError, match="1 score rows for 2 queries"):
        protocol.evaluate(lambda qs: {"a": SCORES[None]}, queries, batch_size=2)


def test_summary_and_paired_difference():
    s = protocol.summary([1.0, 2.0, 3.0, 4.0])
    assert s["mean"] == 2.5 and s["n"] == 4
    assert s["se"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    d = protocol.paired_difference([1.0, 2.0, 4.0], [0.0, 1.0, 2.0])
    assert d["mean"] == pytest.approx(4 / 3)
    assert d["se"] == pytest.approx(np.std([1, 1, 2], ddof=1) / math.sqrt(3))
    assert protocol.summary([0.7])["se"] == 0.0
    with pytest.raises(ValueError, match="same queries"):
        protocol.paired_difference([1.0], [1.0, 2.0])


def test_returned_lists_rank_first_and_unreturned_products_never_count_for_recall():
    # 8 products; the method returned [5, 3] only. Top grade 2: products 3 and 0.
    scores = protocol.list_scores([[5, 3]], 8)[0]
    assert scores[5] > scores[3] > -np.inf and np.isinf(scores[[0, 1, 2, 4, 6, 7]]).all()
    # Product 0 is unreturned: by the tie rule it would come third (rank 2 < k = 4), yet
    # a product the method did not return is never in its first k.
    assert protocol.recall_top_grade(scores, QUERY.products, QUERY.grades, k=4) == 0.5
    condensed = protocol.query_metrics(scores, QUERY)[protocol.CONDENSED]
    # judged order: 3 (returned), then the unreturned 0, 1, 2 in row order
    expected = protocol.ndcg([2, 2, 0, 1], QUERY.grades)
    assert condensed == pytest.approx(expected)
    with pytest.raises(ValueError, match="repeats a product"):
        protocol.list_scores([[1, 1]], 8)
