"""How search combines its signals over the whole catalog (issue #17).

Lexical (BM25) and dense (the retrieval model's query-item cosine) scores live on different
scales, and a query's BM25 scores have a scale of their own (rare words score higher). Each
is standardised over the items a search may return (z-score: minus the mean, over the
standard deviation) and they are mixed linearly: BM25 over words, optionally BM25 over
character n-grams (typos, split and joined words), and the dense score. On the Home Depot
train queries this fusion finds more of the top-grade products in its first 100 than
reciprocal-rank fusion (ranks throw away how far ahead a strong match is; docs/DESIGN.md,
"Search fusion").

Pseudo-relevance feedback (``feedback_query``): the query vector moved towards the mean
vector of the fused list's first few items, the dense scores taken again with it, and the
signals fused again; it finds items described in other words than the query's.

The same functions fuse the ranking model's order with that fused score in the API
(``blend``), and build the benchmark's zero-shot baseline of the same fusion
(``benchmarks/search_methods.py``): one definition, so baseline and product cannot drift.
"""
from __future__ import annotations

import numpy as np


def standardize(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """float64 z-scores of ``scores`` along the last axis, the mean and standard deviation
    taken over ``mask`` (bool, same shape; default: every entry). Entries outside the mask
    get z-scores too (same mean and scale). A constant row scores 0 everywhere."""
    scores = np.asarray(scores, np.float64)
    if mask is None:
        mask = np.ones(scores.shape, bool)
    mask = np.broadcast_to(np.asarray(mask, bool), scores.shape)
    count = np.maximum(mask.sum(axis=-1, keepdims=True), 1)
    mean = np.where(mask, scores, 0.0).sum(axis=-1, keepdims=True) / count
    var = np.where(mask, (scores - mean) ** 2, 0.0).sum(axis=-1, keepdims=True) / count
    std = np.sqrt(var)
    return np.where(std > 0, (scores - mean) / np.where(std > 0, std, 1.0), 0.0)


def check_weight(name: str, weight: float) -> float:
    """``weight`` as a float in [0, 1], else a ValueError naming ``name``."""
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {weight}")
    return weight


def lexical_mix(lexical: np.ndarray, lexical_weight: float, mask: np.ndarray | None = None,
                ngrams: np.ndarray | None = None, ngram_weight: float = 0.0):
    """(``lexical_weight`` * z(lexical) + ``ngram_weight`` * z(ngrams), the dense score's
    weight: the rest of 1): the part of ``fuse`` that does not depend on the query vector,
    computed once when the dense scores are taken twice (feedback; ``with_dense``
    completes it)."""
    weight = check_weight("lexical_weight", lexical_weight)
    ngram_weight = check_weight("ngram_weight", ngram_weight)
    if weight + ngram_weight > 1.0 + 1e-9:
        raise ValueError(f"lexical_weight + ngram_weight must be at most 1, got {weight} + "
                         f"{ngram_weight}")
    part = weight * standardize(lexical, mask)
    if ngram_weight:
        if ngrams is None:
            raise ValueError("ngram_weight > 0 needs the n-gram scores")
        part = part + ngram_weight * standardize(ngrams, mask)
    return part, max(1.0 - weight - ngram_weight, 0.0)


def with_dense(mixed: tuple, dense: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The fused score from a ``lexical_mix`` (its part and the dense weight) and the dense
    scores, z-scored over ``mask``; [..., N] float64."""
    part, dense_weight = mixed
    return part + dense_weight * standardize(dense, mask)


def fuse(lexical: np.ndarray, dense: np.ndarray, lexical_weight: float,
         mask: np.ndarray | None = None, ngrams: np.ndarray | None = None,
         ngram_weight: float = 0.0) -> np.ndarray:
    """``lexical_weight`` * z(lexical) + ``ngram_weight`` * z(ngrams) + the rest of 1 *
    z(dense), z-scores over ``mask`` (the items a search may return); [..., N] float64.
    Lexical weight 1 orders by BM25 alone, both weights 0 by the dense score alone."""
    return with_dense(lexical_mix(lexical, lexical_weight, mask, ngrams, ngram_weight),
                      dense, mask)


def feedback_query(query_vector: np.ndarray, item_vectors: np.ndarray,
                   weight: float) -> np.ndarray:
    """Pseudo-relevance feedback (Rocchio): ``query_vector`` + ``weight`` * the mean of
    ``item_vectors`` [M, D] (the first items of a fused list); the query itself when there
    are none or ``weight`` is 0."""
    if weight < 0:
        raise ValueError(f"feedback weight must be >= 0, got {weight}")
    query_vector = np.asarray(query_vector, np.float64)
    if not weight or not len(item_vectors):
        return query_vector
    return query_vector + weight * np.asarray(item_vectors, np.float64).mean(axis=0)


def blend(fused: np.ndarray, ranker: np.ndarray, ranker_weight: float) -> np.ndarray:
    """The final order's score of a candidate pool: (1 - ``ranker_weight``) * z(fused) +
    ``ranker_weight`` * z(ranker), z-scores over the pool. Weight 0 keeps the fused order,
    1 is the ranking model's order."""
    weight = check_weight("ranker_weight", ranker_weight)
    return (1.0 - weight) * standardize(fused) + weight * standardize(ranker)


def top_rows(scores: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """int64 rows of the ``k`` best ``allowed`` entries of ``scores`` [N], best first, ties
    by row (the catalog order), as every ranking of the API breaks them."""
    candidates = np.flatnonzero(np.asarray(allowed, bool))
    if k <= 0 or not candidates.size:
        return np.zeros(0, np.int64)
    values = np.asarray(scores, np.float64)[candidates]
    if candidates.size > k:
        # everything scoring at least the k-th best value (ties at the border kept), then
        # the exact order
        kth = np.partition(-values, k - 1)[k - 1]
        keep = -values <= kth
        candidates, values = candidates[keep], values[keep]
    order = np.lexsort((candidates, -values))[:k]
    return candidates[order].astype(np.int64)
