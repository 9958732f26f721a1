"""Offline retrieval evaluation: recall@K and NDCG@K over the full catalog, model vs. popularity.

Queries are the eval split's clicked units; a query is a hit at K when its clicked item is
among the K best-scored catalog items. "history_filtered" variants drop the items of the
query's own history from the ranking first (DESIGN §6: report both).
"""
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer import data
from trainer import features as F

_CHUNK = 512  # queries scored at once against the whole catalog


def embed_catalog(candidate_tower: Callable, catalog_patterns: Sequence[str],
                  spec: Dict) -> Tuple[np.ndarray, np.ndarray]:
    """Catalog item ids [N] (bytes, first occurrence kept) and their embeddings [N, D]."""
    ids, embeddings = [], []
    for batch in data.make_dataset(catalog_patterns, spec, 1024):
        ids.append(batch[F.ITEM_ID].numpy())
        embeddings.append(candidate_tower(batch, training=False).numpy())
    ids, embeddings = np.concatenate(ids), np.concatenate(embeddings)
    _, first = np.unique(ids, return_index=True)
    keep = np.sort(first)
    return ids[keep], embeddings[keep]


def evaluate(query_tower: Callable, catalog_ids: np.ndarray,
             catalog_embeddings: np.ndarray, eval_patterns: Sequence[str],
             train_patterns: Sequence[str], spec: Dict, ks: Sequence[int]) -> Dict:
    """Recall@K and NDCG@K (also history-filtered) of the model and of train-click
    popularity. The towers are called as `tower(batch, training=False)` on transformed
    batches."""
    queries, targets, histories = [], [], []
    for batch in data.make_dataset(eval_patterns, spec, 1024,
                                   predicate=data.is_positive(F.CLICKED)):
        queries.append(query_tower(batch, training=False).numpy())
        targets.append(batch[F.ITEM_ID].numpy())
        histories.append(batch[F.HISTORY_ITEM_IDS].numpy())
    if not queries:
        raise ValueError("the eval split has no clicked units to evaluate retrieval on")
    queries, targets = np.concatenate(queries), np.concatenate(targets)
    histories = np.concatenate(histories)

    position = {item: i for i, item in enumerate(catalog_ids.tolist())}
    target_pos = np.array([position.get(t, -1) for t in targets.tolist()], np.int64)
    history_pos = np.vectorize(lambda h: position.get(h, -1), otypes=[np.int64])(histories)

    clicked = data.load_columns(train_patterns, spec, [F.ITEM_ID],
                                predicate=data.is_positive(F.CLICKED))[F.ITEM_ID]
    counts = np.zeros(len(catalog_ids), np.float32)
    for item, count in zip(*np.unique(clicked, return_counts=True)):
        if item in position:
            counts[position[item]] = count
    # Ties (equal counts) broken by catalog order, deterministically.
    popularity = counts - np.arange(len(counts), dtype=np.float32) * 1e-6

    candidates_t = tf.constant(catalog_embeddings.T)
    model_scores = lambda rows: tf.matmul(tf.constant(queries[rows]), candidates_t).numpy()
    popularity_scores = lambda rows: np.broadcast_to(popularity, (len(rows), len(popularity)))
    return {
        "model": _recalls(model_scores, target_pos, history_pos, ks),
        "popularity": _recalls(popularity_scores, target_pos, history_pos, ks),
        "num_eval_queries": int(len(targets)),
        "num_catalog_items": int(len(catalog_ids)),
        "eval_targets_in_catalog": float(np.mean(target_pos >= 0)),
    }


def _recalls(score_fn: Callable[[np.ndarray], np.ndarray], target_pos: np.ndarray,
             history_pos: np.ndarray, ks: Sequence[int]) -> Dict[str, float]:
    """recall@k and NDCG@k (one relevant item: 1 / log2(rank + 1) when ranked within k) for
    each k, unfiltered and with each query's history items removed."""
    hits = {(k, filtered): 0 for k in ks for filtered in (False, True)}
    gains = {key: 0.0 for key in hits}
    for start in range(0, len(target_pos), _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, len(target_pos)))
        scores = np.array(score_fn(rows), np.float32)
        k_max = min(max(ks), scores.shape[1])
        targets = target_pos[rows]
        discount = 1.0 / np.log2(np.arange(k_max) + 2.0)                   # [k_max]
        for filtered in (False, True):
            if filtered:
                r, c = np.nonzero(history_pos[rows] >= 0)
                scores[r, history_pos[rows][r, c]] = -np.inf
            top = tf.math.top_k(scores, k=k_max).indices.numpy()             # [b, k_max]
            # A target removed by the filter (-inf) is a miss even if top-k reaches it.
            kept = np.isfinite(scores[np.arange(len(rows)), np.maximum(targets, 0)])
            found = (top == targets[:, None]) & kept[:, None]                # [b, k_max]
            for k in ks:
                hits[(k, filtered)] += int(found[:, :k].any(axis=1).sum())
                gains[(k, filtered)] += float((found[:, :k] * discount[:k]).sum())
    total = max(len(target_pos), 1)
    out = {}
    for (k, filtered) in sorted(hits):
        suffix = "_history_filtered" if filtered else ""
        out[f"recall@{k}{suffix}"] = hits[(k, filtered)] / total
        out[f"ndcg@{k}{suffix}"] = gains[(k, filtered)] / total
    return out
