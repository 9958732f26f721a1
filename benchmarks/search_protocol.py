"""Graded full-catalog search metrics: the protocol of the search folder's PROVENANCE.md.

For every counted query (at least one judgment of grade > 0) a method scores every product.
The ranking is by score, descending; ties are broken by product index, lower first (row
order of products.tsv), the tie rule of trainer/metrics.py.

- ``ndcg@10_condensed``: unjudged products are removed from the full ranking and the judged
  ones keep their order (Sakai's condensed list); NDCG@10 with gain ``2**grade - 1``,
  discount ``1 / log2(rank + 1)`` (rank from 1) and the ideal DCG of the query's own
  judgments sorted by grade.
- ``recall@100``: over the full ranking, the share of the query's top-grade products
  (grade = the highest grade among its judgments) ranked in the first 100.
- ``ndcg@10_rerank``: the method ranks only the query's judged products; the same NDCG@10.
  Equal to the condensed value for a method whose product scores do not depend on the
  candidate set; different for methods that normalise or fuse per candidate set.

Aggregates: the mean over queries and its standard error (sample standard deviation /
sqrt(n)); paired differences between two methods are per-query differences, summarised the
same way.
"""
import math

import numpy as np

from trainer.metrics import target_ranks

K_NDCG = 10
K_RECALL = 100
CONDENSED, RECALL, RERANK = "ndcg@10_condensed", "recall@100", "ndcg@10_rerank"
METRICS = (CONDENSED, RECALL, RERANK)


def ranked_grades(scores, products, grades):
    """Grades of the judged ``products`` in ranking order: by ``scores`` (of those products,
    same length) descending, ties by product index."""
    order = np.lexsort((products, -np.asarray(scores, np.float64)))
    return np.asarray(grades)[order]


def ndcg(grades_in_order, all_grades, k=K_NDCG):
    """NDCG@k of a ranked list of grades against the ideal order of ``all_grades``."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    top = np.asarray(grades_in_order, np.float64)[:k]
    ideal = np.sort(np.asarray(all_grades, np.float64))[::-1][:k]
    ideal_dcg = float(((2.0 ** ideal - 1.0) * discounts[:ideal.size]).sum())
    if ideal_dcg == 0.0:
        return 0.0
    return float(((2.0 ** top - 1.0) * discounts[:top.size]).sum()) / ideal_dcg


def recall_top_grade(scores, products, grades, k=K_RECALL):
    """Share of the top-grade judged products ranked in the first ``k`` of the full
    ranking by ``scores`` [n_products]. A product scored -inf is one the method did not
    return (``list_scores``): never in the first ``k``, whatever the tie order."""
    scores = np.asarray(scores, np.float64)
    top = np.asarray(products)[np.asarray(grades) == np.max(grades)]
    returned = ~np.isneginf(scores)
    if not returned.all():      # target_ranks takes finite scores: -inf below every other
        floor = scores[returned].min() - 1.0 if returned.any() else 0.0
        scores = np.where(returned, scores, floor)
    ranks = target_ranks(np.broadcast_to(scores, (top.size, scores.shape[-1])), top)
    return float(np.mean((ranks < k) & returned[top]))


def list_scores(lists, n_products):
    """Full-catalog scores [len(lists), n_products] of methods that return a ranked list of
    product indices (e.g. the product's ``/v1/search``): the list's order as descending
    scores, -inf for every product not returned (ranked after the list, in row order, and
    never counted by ``recall_top_grade``)."""
    out = np.full((len(lists), n_products), -np.inf)
    for i, found in enumerate(lists):
        found = np.asarray(found, np.int64)
        if np.unique(found).size != found.size:
            raise ValueError(f"list {i} repeats a product: {found.tolist()[:20]}")
        out[i, found] = np.arange(found.size, 0, -1, dtype=np.float64)
    return out


def query_metrics(full_scores, query, rerank_scores=None):
    """The three metrics of one query (``data.Query``) from its full-catalog scores
    [n_products]; ``rerank_scores``: the scores of ``query.products`` when the method ranks
    only those (default: the full-catalog scores of those products)."""
    full_scores = np.asarray(full_scores)
    condensed = ranked_grades(full_scores[query.products], query.products, query.grades)
    if rerank_scores is None:
        rerank_scores = full_scores[query.products]
    reranked = ranked_grades(rerank_scores, query.products, query.grades)
    return {CONDENSED: ndcg(condensed, query.grades),
            RECALL: recall_top_grade(full_scores, query.products, query.grades),
            RERANK: ndcg(reranked, query.grades)}


def evaluate(score_fn, queries, batch_size=256, rerank_fn=None, progress=None):
    """Per-query metrics of one or more methods.

    score_fn(queries) -> {name: float [len(queries), n_products]} full-catalog scores;
    rerank_fn(queries) -> {name: [scores of q.products for q in queries]} (optional, per
    name; a name it lacks gets its full-catalog scores). ``progress`` wraps the batch
    iterator (tqdm). Returns {name: {metric: float64 [len(queries)]}}.
    """
    out = {}
    starts = range(0, len(queries), batch_size)
    for start in (progress(starts) if progress else starts):
        batch = queries[start:start + batch_size]
        full = score_fn(batch)
        rerank = rerank_fn(batch) if rerank_fn else {}
        for name, scores in full.items():
            if np.shape(scores)[0] != len(batch):
                raise ValueError(f"{name}: {np.shape(scores)[0]} score rows for "
                                 f"{len(batch)} queries")
            rows = out.setdefault(name, {m: [] for m in METRICS})
            for i, query in enumerate(batch):
                values = query_metrics(scores[i], query,
                                       rerank[name][i] if name in rerank else None)
                for metric, value in values.items():
                    rows[metric].append(value)
    return {name: {m: np.asarray(v, np.float64) for m, v in rows.items()}
            for name, rows in out.items()}


def summary(values):
    """{"mean", "se", "n"} of per-query values (se: sample std / sqrt(n); 0 for n < 2)."""
    values = np.asarray(values, np.float64)
    n = int(values.size)
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return {"mean": float(values.mean()) if n else 0.0, "se": se, "n": n}


def paired_difference(values, baseline):
    """summary() of per-query differences ``values - baseline`` (same queries, same order)."""
    values, baseline = np.asarray(values), np.asarray(baseline)
    if values.shape != baseline.shape:
        raise ValueError(f"paired difference needs the same queries: {values.shape} vs "
                         f"{baseline.shape}")
    return summary(values - baseline)


def selection_score(per_query):
    """What tuning maximises on train queries: the mean of NDCG@10 condensed and
    Recall@100 (both count; condensed NDCG alone has a high floor)."""
    return float((per_query[CONDENSED].mean() + per_query[RECALL].mean()) / 2.0)
