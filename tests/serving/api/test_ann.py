"""serving/api/ann.py: the exact index against a naive sort, ScaNN's recall and
reproducibility, filtered search (never a disallowed row, always enough rows), the choice of
method and the errors for bad input."""
from __future__ import annotations

import numpy as np
import pytest

from serving.api import ann

N, DIM = 6000, 32


def clustered(n: int, dim: int, seed: int, clusters: int = 60):
    """Unit vectors around ``clusters`` random centres (noise norm 0.7) and 40 queries
    near items."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, n)
    items = centres[labels] + rng.standard_normal((n, dim)) * 0.7 / np.sqrt(dim)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    queries = items[rng.integers(0, n, 40)] + rng.standard_normal((40, dim)) * 0.3 / np.sqrt(dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return items.astype(np.float32), queries.astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return clustered(N, DIM, seed=1)


@pytest.fixture(scope="module")
def scann_index(data):
    return ann.build_index(data[0], "scann", seed=0)


def naive(items, query, k, allowed=None):
    scores = items.astype(np.float64) @ query.astype(np.float64)
    if allowed is not None:
        scores[~allowed] = -np.inf
    order = np.argsort(-scores, kind="stable")
    return order[:k] if allowed is None else order[:min(k, int(allowed.sum()))]


def recall(found, exact):
    return np.mean([len(np.intersect1d(f, e)) / len(e) for f, e in zip(found, exact)])


def test_brute_force_equals_a_naive_argsort():
    rng = np.random.default_rng(0)
    items = rng.standard_normal((700, 12)).astype(np.float32)
    queries = rng.standard_normal((5, 12)).astype(np.float32)
    index = ann.build_index(items, "brute_force")
    rows, scores = index.search(queries, 25)
    assert rows.shape == (5, 25) and rows.dtype == np.int64 and scores.dtype == np.float32
    for q, r, s in zip(queries, rows, scores):
        np.testing.assert_array_equal(r, naive(items, q, 25))
        np.testing.assert_allclose(s, items[r] @ q, rtol=1e-5)
    one, _ = index.search(queries[0], 3)                 # [D] is one query
    np.testing.assert_array_equal(one[0], rows[0, :3])
    everything, _ = index.search(queries[:1], 10_000)    # k > size: the whole catalog, sorted
    np.testing.assert_array_equal(everything[0], naive(items, queries[0], 700))
    assert index.method == "brute_force" and index.size == 700 and index.dim == 12
    assert index.memory_bytes == 700 * 12 * 4 and index.build_seconds >= 0


def test_scann_recall_at_10_on_a_clustered_set(data, scann_index):
    items, queries = data
    rows, scores = scann_index.search(queries, 10)
    exact = [naive(items, q, 10) for q in queries]
    # measured 0.985-1.00 over seeds 0-5 (77 leaves, 12 searched, reorder 200); a broken
    # index (wrong sign, rows out of order) is far below
    assert recall(rows, exact) >= 0.95
    assert scann_index.method == "scann" and scann_index.size == N
    assert scann_index.params.num_leaves == round(np.sqrt(N))
    assert (np.diff(scores, axis=1) <= 1e-6).all()                     # best first
    np.testing.assert_allclose(scores, np.take_along_axis(
        queries @ items.T, rows, axis=1), rtol=1e-4, atol=1e-5)       # exact re-scored
    assert scann_index.memory_bytes > items.nbytes                   # keeps its own copy


def test_scann_answers_in_full_when_the_searched_leaves_hold_fewer_than_k(data):
    items, queries = data
    shallow = ann.build_index(items, "scann", scann_params={"leaves_to_search": 1})
    # k = N: the rule searches 60 of the 77 leaves, and the other 17 are not empty (ScaNN's
    # minimum leaf size is 50), so ScaNN finds fewer than k
    assert shallow.params.leaves_for(N) < shallow.params.num_leaves
    for batch in (queries[:1], queries[:6]):       # one query, and a batch (ScaNN pads it)
        rows, scores = shallow.search(batch, N)
        assert np.isfinite(scores).all()
        for q, r, s in zip(batch, rows, scores):        # answered by the exact search
            assert len(set(r)) == N
            np.testing.assert_allclose(s, items[naive(items, q, N)] @ q, atol=1e-5)


def test_scann_builds_with_the_same_seed_agree(data, scann_index):
    """ScaNN 1.3.2's tree training is not bit-reproducible even with its seeds fixed and one
    training thread (the first build in a process can differ from later ones): two builds
    must still give nearly the same answers, each nearly the exact one. Measured: 1.0 in
    fresh processes; .9625 once in a two-worker CI run (builds differing in the tree), which
    failed the .97 this asserted before."""
    items, queries = data
    again = ann.build_index(items, "scann", seed=0)
    first, second = scann_index.search(queries, 20)[0], again.search(queries, 20)[0]
    exact = [naive(items, q, 20) for q in queries]
    assert recall(first, exact) >= 0.95 and recall(second, exact) >= 0.95
    assert recall(second, first) >= 0.93


@pytest.mark.parametrize("method", ["brute_force", "scann"])
def test_search_allowed_returns_only_allowed_rows_and_enough_of_them(data, scann_index,
                                                                     method):
    items, queries = data
    index = scann_index if method == "scann" else ann.build_index(items, method)
    rng = np.random.default_rng(5)
    query = queries[3]
    for share in (0.9, 0.3, 0.01):
        allowed = rng.random(N) < share
        rows, scores = index.search_allowed(query, 50, allowed)
        assert len(rows) == 50 and allowed[rows].all() and len(set(rows)) == 50
        assert recall([rows], [naive(items, query, 50, allowed)]) >= 0.9
    tiny = np.zeros(N, bool)
    tiny[[5, 17, 4000]] = True                            # fewer allowed than k
    rows, scores = index.search_allowed(query, 50, tiny)
    assert sorted(rows) == [5, 17, 4000] and len(scores) == 3
    np.testing.assert_array_equal(rows, naive(items, query, 50, tiny))
    rows, scores = index.search_allowed(query, 10, np.zeros(N, bool))
    assert rows.shape == (0,) and scores.shape == (0,)


def test_scann_search_allowed_falls_back_to_exact_when_the_allowed_rows_are_far(data,
                                                                              scann_index):
    items, queries = data
    query = queries[0]
    allowed = np.zeros(N, bool)
    allowed[naive(items, -query, 300)] = True     # the 300 rows least like the query
    rows, _ = scann_index.search_allowed(query, 20, allowed)
    np.testing.assert_array_equal(rows, naive(items, query, 20, allowed))


def test_auto_picks_brute_force_below_the_threshold(data):
    items, _ = data
    assert ann.build_index(items[:999], min_items_for_scann=1000).method == "brute_force"
    assert ann.build_index(items[:1000], min_items_for_scann=1000).method == "scann"
    assert ann.build_index(items).method == "brute_force"         # default threshold 100k
    assert ann.DEFAULT_MIN_ITEMS_FOR_SCANN == 100_000


def test_scann_params_follow_the_rule_and_take_overrides():
    p = ann.ScannParams.for_size(1_000_000)
    assert (p.num_leaves, p.leaves_to_search, p.reorder_for(100)) == (1000, 150, 1500)
    assert p.leaves_for(10) == 150 and p.leaves_for(400) == 600 and p.leaves_for(10**6) == 1000
    assert ann.ScannParams.for_size(100_000).num_leaves == 316
    assert ann.ScannParams.for_size(100_000, leaves_to_search=7).leaves_to_search == 7


@pytest.mark.parametrize("call, name", [
    (lambda i, q: ann.build_index(np.zeros(5, np.float32)), "embeddings"),
    (lambda i, q: ann.build_index(np.zeros((0, 4), np.float32)), "embeddings"),
    (lambda i, q: ann.build_index(np.full((3, 4), np.nan, np.float32)), "embeddings"),
    (lambda i, q: ann.build_index(np.array([["a", "b"]])), "embeddings"),
    (lambda i, q: ann.build_index(np.ones((3, 4)), method="faiss"), "method"),
    (lambda i, q: ann.build_index(np.ones((3, 4)), min_items_for_scann=0), "min_items_for_scann"),
    (lambda i, q: ann.build_index(np.ones((3, 4)), "scann", scann_params={"leaves": 3}),
     "scann_params"),
    (lambda i, q: i.search(q[:, :5], 3), "queries"),
    (lambda i, q: i.search(np.where(q > 0, np.inf, q), 3), "queries"),
    (lambda i, q: i.search(q, 0), "k"),
    (lambda i, q: i.search(q, 2.5), "k"),
    (lambda i, q: i.search_allowed(q, 3, np.ones(40, bool)), "query"),
    (lambda i, q: i.search_allowed(q[0], -1, np.ones(40, bool)), "k"),
    (lambda i, q: i.search_allowed(q[0], 3, np.ones(39, bool)), "allowed"),
    (lambda i, q: i.search_allowed(q[0], 3, np.ones(40, int)), "allowed"),
])
def test_bad_input_raises_naming_the_argument(call, name):
    rng = np.random.default_rng(2)
    index = ann.build_index(rng.standard_normal((40, 8)), "brute_force")
    queries = rng.standard_normal((2, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call(index, queries)
