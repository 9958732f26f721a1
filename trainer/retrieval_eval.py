"""Offline retrieval evaluation: recall@K and NDCG@K over the full catalog, model vs. popularity.

Queries are the eval split's clicked units; a query is a hit at K when its clicked item is
among the K best-scored catalog items. "history_filtered" variants drop the items of the
query's own history from the ranking first (DESIGN §6: report both). Ranks, ties and the
metrics are those of trainer/metrics.py, shared with the benchmarks.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainer import beyond_accuracy, data
from trainer import features as F
from trainer import metrics

_CHUNK = 512  # queries scored at once against the whole catalog
LIST_K = beyond_accuracy.LIST_K


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
             train_patterns: Sequence[str], spec: Dict, ks: Sequence[int],
             catalog_patterns: Sequence[str] = (), item_embeddings=None,
             eval_set: Optional["EvalSet"] = None) -> Dict:
    """Recall@K and NDCG@K (also history-filtered) of the model and of train-click
    popularity, and their beyond-accuracy metrics. The towers are called as
    `tower(batch, training=False)` on transformed batches. ``catalog_patterns``: the
    catalog split (categories and brands for the beyond-accuracy metrics);
    ``item_embeddings``: [N, d] aligned with ``catalog_ids`` for the lists' diversity (the
    frozen text embeddings; default: the model's own item embeddings). ``eval_set``: the
    split already read (early stopping's), else it is read from ``eval_patterns``."""
    if eval_set is None:
        eval_set = EvalSet.load(eval_patterns, spec)
    queries = eval_set.queries(query_tower)
    target_pos, history_pos = eval_set.positions(catalog_ids)
    targets = eval_set.targets

    train_keys = [F.ITEM_ID] + ([F.USER_ID] if F.USER_ID in spec else [])
    train = data.load_columns(train_patterns, spec, train_keys,
                              predicate=data.is_positive(F.CLICKED))
    clicked_pos = _positions_of(catalog_ids, train[F.ITEM_ID].ravel())
    popularity = metrics.item_counts(clicked_pos, len(catalog_ids)).astype(np.float32)
    facts = _facts(catalog_ids, popularity, train, catalog_patterns, spec,
                   catalog_embeddings if item_embeddings is None else item_embeddings)

    model_scores = _dot_scores(queries, catalog_embeddings)
    popularity_scores = lambda rows: np.broadcast_to(popularity, (len(rows), len(popularity)))
    model, model_lists = _recalls(model_scores, target_pos, history_pos, ks)
    pop, pop_lists = _recalls(popularity_scores, target_pos, history_pos, ks)
    return {
        "model": model,
        "popularity": pop,
        "beyond_accuracy": {
            "model": beyond_accuracy.measure(model_lists, facts),
            "popularity": beyond_accuracy.measure(pop_lists, facts),
            "diversity_embeddings": ("text" if item_embeddings is not None
                                     else "item_tower")},
        "num_eval_queries": int(len(targets)),
        "num_catalog_items": int(len(catalog_ids)),
        "eval_targets_in_catalog": float(np.mean(target_pos >= 0)),
    }


class EvalSet:
    """The eval split's clicked units, read once (transformed batches, targets, histories),
    scored as often as needed: after training, and at every early-stopping check."""

    def __init__(self, batches, targets: np.ndarray, histories: np.ndarray):
        self.batches, self.targets, self.histories = batches, targets, histories

    @classmethod
    def load(cls, eval_patterns: Sequence[str], spec: Dict) -> "EvalSet":
        batches = list(data.make_dataset(eval_patterns, spec, 1024,
                                         predicate=data.is_positive(F.CLICKED)))
        if not batches:
            raise ValueError("the eval split has no clicked units to evaluate retrieval on")
        return cls(batches, np.concatenate([b[F.ITEM_ID].numpy() for b in batches]),
                   np.concatenate([b[F.HISTORY_ITEM_IDS].numpy() for b in batches]))

    def queries(self, query_tower: Callable) -> np.ndarray:
        """[Q, D] query embeddings, `query_tower(batch, training=False)` per batch."""
        return np.concatenate([query_tower(b, training=False).numpy() for b in self.batches])

    def positions(self, catalog_ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Catalog rows of the targets [Q] and of the history items [Q, H]; -1 = not there."""
        return (_positions_of(catalog_ids, self.targets),
                _positions_of(catalog_ids, self.histories))

    def model_metrics(self, query_tower: Callable, catalog_ids: np.ndarray,
                      catalog_embeddings: np.ndarray, ks: Sequence[int]) -> Dict[str, float]:
        """Recall@K and NDCG@K (also history-filtered) of the model alone: what early
        stopping watches, without the popularity and beyond-accuracy parts of `evaluate`."""
        queries = self.queries(query_tower)
        target_pos, history_pos = self.positions(catalog_ids)
        return _recalls(_dot_scores(queries, catalog_embeddings), target_pos, history_pos,
                        ks, with_lists=False)[0]


def _dot_scores(queries: np.ndarray, catalog_embeddings: np.ndarray) -> Callable:
    """rows -> [len(rows), N] dot products of those queries with every catalog item."""
    candidates_t = tf.constant(catalog_embeddings.T)
    return lambda rows: tf.matmul(tf.constant(queries[rows]), candidates_t).numpy()


def _positions_of(catalog_ids: np.ndarray, items: np.ndarray) -> np.ndarray:
    position = {item: i for i, item in enumerate(catalog_ids.tolist())}
    flat = np.array([position.get(i, -1) for i in np.asarray(items).ravel().tolist()], np.int64)
    return flat.reshape(np.shape(items))


def _facts(catalog_ids, popularity, train, catalog_patterns, spec, embeddings):
    """beyond_accuracy.ItemFacts of the catalog: train clicks per item, distinct train
    users, top categories and brands of the catalog split (when given), new = at most 2
    train clicks."""
    n_users = (len(np.unique(train[F.USER_ID])) if F.USER_ID in train
               else int(popularity.sum()))
    categories = brands = None
    keys = [k for k in (F.CATEGORY, F.BRAND) if k in spec]
    if catalog_patterns and keys:
        cols = data.load_columns(catalog_patterns, spec, [F.ITEM_ID] + keys)
        row = {item: i for i, item in enumerate(cols[F.ITEM_ID].ravel().tolist())}
        order = [row.get(i, -1) for i in catalog_ids.tolist()]
        value = lambda key: [(cols[key].ravel()[r] if r >= 0 else b"").decode("utf-8")
                             for r in order]
        if F.CATEGORY in cols:
            categories = beyond_accuracy.labels(beyond_accuracy.category_level(
                [c.split(" > ") if c else [] for c in value(F.CATEGORY)]))
        if F.BRAND in cols:
            brands = beyond_accuracy.labels(value(F.BRAND))
    return beyond_accuracy.ItemFacts(
        popularity=popularity, n_users=max(1, n_users), categories=categories, brands=brands,
        embeddings=embeddings, is_new=beyond_accuracy.new_items(popularity))


def _recalls(score_fn: Callable[[np.ndarray], np.ndarray], target_pos: np.ndarray,
             history_pos: np.ndarray, ks: Sequence[int], with_lists: bool = True):
    """recall@k and NDCG@k (trainer/metrics.py) for each k, unfiltered and with each query's
    history items removed, and each query's history-filtered top ``LIST_K`` [Q, LIST_K]
    (``with_lists`` false: [Q, 0], not computed).
    Catalog positions: -1 = not in the catalog (a target there is a miss; a history entry
    there is ignored). A target in its own history is removed with it, a miss: the served
    lists never show history items."""
    ranks = {False: [], True: []}
    lists = []
    for start in range(0, len(target_pos), _CHUNK):
        rows = np.arange(start, min(start + _CHUNK, len(target_pos)))
        scores = np.asarray(score_fn(rows), np.float32)
        for filtered, chunks in ranks.items():
            chunks.append(metrics.target_ranks(scores, target_pos[rows],
                                               history_pos[rows] if filtered else None,
                                               keep_target=False))
        if with_lists:
            lists.append(beyond_accuracy.top_lists(scores, LIST_K, exclude=history_pos[rows]))
    unfiltered, filtered = (np.concatenate(ranks[f]) if ranks[f] else np.zeros(0, np.int64)
                            for f in (False, True))
    out = {}
    for k in sorted(ks):
        out.update(metrics.metrics_from_ranks(unfiltered, [k]))
        out.update(metrics.metrics_from_ranks(filtered, [k], "_history_filtered"))
    if not with_lists:
        return out, np.zeros((len(target_pos), 0), np.int64)
    return out, (np.concatenate(lists) if lists else np.zeros((0, LIST_K), np.int64))
