"""Full-catalog ranking metrics with one relevant item per query (the rank of the target,
Recall@K, NDCG@K) and item popularity counts: the one implementation used by the trainer's
offline eval (trainer/retrieval_eval.py) and by the benchmarks (benchmarks/protocol.py,
benchmarks/baselines.py), so that both count hits and break ties the same way.

Items are catalog row indices 0 .. n_items - 1.

Tie rule: the rank of a target is the number of items ranked before it, i.e. the items with
a higher score plus the items with an equal score and a lower index. Ties are broken by item
index, lower first: what a stable sort by descending score and ``tf.math.top_k`` (the served
top-K) produce, so offline metrics agree with what is served and do not depend on sort
stability. The published benchmark results (benchmarks/results/) were computed with it.
"""
import numpy as np

# The rank of a target that is not ranked at all (outside the catalog, or removed with its
# history): a miss at every K.
NOT_RANKED = np.iinfo(np.int64).max


def target_ranks(scores, targets, histories=None, keep_target=True):
    """0-based rank of each query's target among all items (ties by item index, see the
    module docstring).

    scores: finite float [U, n_items], higher is better.
    targets: int [U], the target item of each query; a negative index marks a target outside
      the catalog, which gets ``NOT_RANKED``.
    histories: if given, one int array of item indices per query (negative entries are
      padding and ignored), removed from the ranking: the history-filtered variant.
    keep_target: what filtering does with a target that is in its own history. True: it
      stays ranked, only the other history items are removed (the benchmark convention:
      filtering removes items that cannot be the answer). False: it is removed with them and
      gets ``NOT_RANKED``, a miss (the served lists never show history items, so a repeat
      click on one cannot be reached).
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"scores must be [U, n_items] with U = {targets.shape[0]}, "
                         f"got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    n_items = scores.shape[1]
    if np.any(targets >= n_items):
        raise ValueError(f"target item index outside 0..{n_items - 1}")
    in_catalog = targets >= 0
    safe = np.where(in_catalog, targets, 0)
    target_scores = scores[np.arange(len(targets)), safe][:, None]
    before = scores > target_scores
    before |= (scores == target_scores) & (np.arange(n_items)[None, :] < safe[:, None])
    removed = np.zeros(len(targets), dtype=bool)
    if histories is not None:
        for u, hist in enumerate(histories):
            hist = np.asarray(hist, dtype=np.int64)
            hist = hist[hist >= 0]
            is_target = hist == targets[u]
            removed[u] = not keep_target and bool(is_target.any())
            before[u, hist[~is_target]] = False
    ranks = before.sum(axis=1).astype(np.int64)
    ranks[~in_catalog | removed] = NOT_RANKED
    return ranks


def metrics_from_ranks(ranks, ks, suffix=""):
    """Mean Recall@K and NDCG@K over queries from 0-based target ranks, for each k in ``ks``:
    ``{f"recall@{k}{suffix}", f"ndcg@{k}{suffix}"}``. With one relevant item, Recall@K = 1 if
    rank < K and NDCG@K = 1 / log2(rank + 2) if rank < K (the ideal DCG is 1); 0 otherwise.
    No queries: 0.0."""
    ranks = np.asarray(ranks)
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}{suffix}"] = float(hit.mean()) if ranks.size else 0.0
        gains = np.zeros(ranks.shape)
        gains[hit] = 1.0 / np.log2(ranks[hit] + 2.0)
        out[f"ndcg@{k}{suffix}"] = float(gains.mean()) if ranks.size else 0.0
    return out


def item_counts(items, n_items):
    """How often each item occurs: float64 [n_items]. ``items``: one int array of item indices
    or a list of them (e.g. sequences); negative indices (items outside the catalog) are not
    counted. Popularity is these counts, as scores (ties by item index like any score)."""
    if isinstance(items, (list, tuple)):
        items = (np.concatenate([np.asarray(i, dtype=np.int64).ravel() for i in items])
                 if len(items) else np.zeros(0, dtype=np.int64))
    flat = np.asarray(items, dtype=np.int64).ravel()
    if np.any(flat >= n_items):
        raise ValueError(f"item index outside 0..{n_items - 1}")
    return np.bincount(flat[flat >= 0], minlength=n_items).astype(np.float64)
