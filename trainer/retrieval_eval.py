"""Offline retrieval evaluation: recall@K and NDCG@K over the full catalog, model vs. popularity.

Queries are the eval split's clicked units; a query is a hit at K when its clicked item is
among the K best-scored catalog items. "history_filtered" variants drop the items of the
query's own history from the ranking first (DESIGN §6: report both). Ranks, ties and the
metrics are those of trainer/metrics.py, shared with the benchmarks.
"""
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer import data
from trainer import features as F
from trainer import metrics

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
    clicked_pos = np.array([position.get(c, -1) for c in clicked.ravel().tolist()], np.int64)
    popularity = metrics.item_counts(clicked_pos, len(catalog_ids)).astype(np.float32)

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
    """recall@k and NDCG@k (trainer/metrics.py) for each k, unfiltered and with each query's
    history items removed. Catalog positions: -1 = not in the catalog (a target there is a
    miss; a history entry there is ignored). A target in its own history is removed with it,
    a miss: the served lists never show history items."""
    ranks = {False: [], True: []}
    for start in range(0, len(target_pos), _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, len(target_pos)))
        scores = np.asarray(score_fn(rows), np.float32)
        for filtered, chunks in ranks.items():
            chunks.append(metrics.target_ranks(scores, target_pos[rows],
                                               history_pos[rows] if filtered else None,
                                               keep_target=False))
    unfiltered, filtered = (np.concatenate(ranks[f]) if ranks[f] else np.zeros(0, np.int64)
                            for f in (False, True))
    out = {}
    for k in sorted(ks):
        out.update(metrics.metrics_from_ranks(unfiltered, [k]))
        out.update(metrics.metrics_from_ranks(filtered, [k], "_history_filtered"))
    return out
