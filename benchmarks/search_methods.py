"""The search benchmark's baselines: random order, BM25 (bm25s), zero-shot MiniLM, RRF, and
the product's linear fusion (serving/api/search_fusion.py) of BM25 and zero-shot MiniLM.

A method has ``scores(queries) -> float [len(queries), n_products]`` (every product scored
for each ``search_data.Query``); a method whose scores depend on the candidate set also has
``rerank(queries) -> [scores of q.products for q in queries]`` (the products it is asked to
order being only the judged ones). Tuning (``tune_bm25``, ``tune_rrf``, ``tune_linear``)
sees train queries only.
"""
import itertools
import time
import zlib

import numpy as np

from benchmarks import search_protocol as protocol
from serving.api import lexical, search_fusion

K1_GRID = (0.3, 0.6, 0.9, 1.2, 1.5, 2.0)
B_GRID = (0.3, 0.5, 0.75, 0.9, 1.0)
RRF_K_GRID = (0, 1, 5, 10, 20, 40, 60, 100, 200)
LEXICAL_WEIGHT_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


class RandomOrder:
    """A seeded random permutation per query (the floor): the same scores for a query
    whatever the batch, from (seed, crc32 of its query_id)."""

    def __init__(self, n_products, seed):
        self.n_products, self.seed = n_products, seed

    def scores(self, queries):
        return np.stack([np.random.default_rng(
            [self.seed, zlib.crc32(q.query_id.encode("utf-8"))]).random(self.n_products)
            for q in queries])


class BM25:
    """The product's lexical stage (``serving.api.lexical.Bm25``: bm25s, Lucene scoring,
    English stop words, Snowball stemmer) over product texts, scoring batches of queries;
    each query text is tokenized once and kept across the tuning grid."""

    def __init__(self, texts, k1=lexical.K1, b=lexical.B, stopwords=lexical.STOPWORDS,
                 stemmer=lexical.STEMMER, index=None, query_tokens=None):
        self.index = index or lexical.Bm25(texts, k1, b, stopwords, stemmer)
        self.k1, self.b = self.index.k1, self.index.b
        self.stopwords, self.stemmer_name = self.index.stopwords, self.index.stemmer_name
        self.tokens, self.n_products = self.index.tokens, self.index.size
        self.query_tokens = {} if query_tokens is None else query_tokens   # text -> tokens

    def with_params(self, k1, b):
        """The same tokens indexed with other k1 and b."""
        return BM25(None, index=self.index.with_params(k1, b), query_tokens=self.query_tokens)

    def scores(self, queries):
        new = sorted({q.text for q in queries} - set(self.query_tokens))
        self.query_tokens.update(zip(new, self.index.tokenize(new)) if new else ())
        return np.stack([self.index.scores_of_tokens(self.query_tokens[q.text])
                         for q in queries]) if queries else np.zeros((0, self.n_products))


def encoder_paths():
    """The product's frozen MiniLM export at the retrieval trainer's default text length
    (``trainer.config.RetrievalConfig``), exported once into the encoder cache."""
    # pylint: disable=import-outside-toplevel
    from trainer.config import RetrievalConfig
    from trainer.text import encoder as text_encoder
    config = RetrievalConfig()
    return text_encoder.ensure_text_encoder(config.encoder_cache_dir(), config.text_seq_len)


def encode(texts, paths, chunk=16384, progress=None):
    """Frozen MiniLM embeddings (mean-pooled, L2-normalised) of ``texts``, float32 [N, H],
    with the encoding the retrieval trainer caches (``trainer.text.cache.encode_tables``:
    batches by length, padding trimmed); in chunks so ``progress`` can show them (each
    chunk loads the encoder again: a few seconds)."""
    from trainer.text.cache import encode_tables  # pylint: disable=import-outside-toplevel
    texts = np.asarray(list(texts), dtype=object)
    starts = range(0, len(texts), chunk)
    parts = [encode_tables(texts[s:s + chunk], paths, "frozen").embeddings
             for s in (progress(starts) if progress else starts)]
    return np.concatenate(parts) if parts else np.zeros((0, paths.info()["hidden_dim"]))


class Dense:
    """Cosine of the query's and each product's frozen MiniLM embeddings."""

    def __init__(self, product_embeddings, query_embeddings):
        self.products = product_embeddings            # [n_products, H]
        self.queries = query_embeddings               # {query text: [H]}

    def scores(self, queries):
        return np.stack([self.queries[q.text] for q in queries]) @ self.products.T


def competition_ranks(scores):
    """1 + the number of strictly higher scores, per row of [B, n] (ties share a rank, so
    a fused order never depends on the row order of tied products)."""
    scores = np.asarray(scores)
    ascending = np.sort(scores, axis=-1)
    n = scores.shape[-1]
    return np.stack([n - np.searchsorted(row_sorted, row, side="right") + 1
                     for row_sorted, row in zip(ascending.reshape(-1, n),
                                                scores.reshape(-1, n))]).reshape(scores.shape)


def rrf(rank_lists, k):
    """Reciprocal-rank fusion (Cormack et al., SIGIR 2009): sum of 1 / (k + rank), k >= 0
    (ranks start at 1)."""
    if k < 0:
        raise ValueError(f"the RRF constant k must be >= 0, got {k}")
    return sum(1.0 / (k + np.asarray(r, np.float64)) for r in rank_lists)


class Fusion:
    """RRF of ``components`` over the full catalog (each one's competition ranks of every
    product); ``rerank`` fuses their ranks among the query's judged products only."""

    def __init__(self, components, k):
        self.components, self.k = list(components), k

    def scores(self, queries):
        return rrf([competition_ranks(c.scores(queries)) for c in self.components], self.k)

    def rerank(self, queries):
        full = [c.scores(queries) for c in self.components]
        return [rrf([competition_ranks(s[i, q.products][None])[0] for s in full], self.k)
                for i, q in enumerate(queries)]


def _grid_row(per_query, **params):
    return {**params, **{m: float(per_query[m].mean()) for m in
                         (protocol.CONDENSED, protocol.RECALL)},
            "selection": protocol.selection_score(per_query)}


def tune_bm25(base, train_queries, k1_grid=K1_GRID, b_grid=B_GRID, batch_size=256,
              progress=None):
    """(k1, b) of the grid with the best ``protocol.selection_score`` on ``train_queries``.
    Returns (the BM25 with them, {"k1", "b", "grid": [one row per setting]})."""
    grid, best = [], None
    settings = list(itertools.product(k1_grid, b_grid))
    for k1, b in (progress(settings) if progress else settings):
        start = time.time()
        model = base.with_params(k1, b)
        per_query = protocol.evaluate(lambda qs, m=model: {"bm25": m.scores(qs)},
                                      train_queries, batch_size)["bm25"]
        grid.append({**_grid_row(per_query, k1=k1, b=b),
                     "seconds": round(time.time() - start, 1)})
        if best is None or grid[-1]["selection"] > best[0]:
            best = (grid[-1]["selection"], model)
    return best[1], {"k1": best[1].k1, "b": best[1].b, "grid": grid}


def tune_rrf(components, train_queries, k_grid=RRF_K_GRID, batch_size=256, progress=None):
    """RRF constant k of the grid with the best ``protocol.selection_score`` on
    ``train_queries`` (each batch ranked once, fused with every k). Returns (the Fusion,
    {"k", "grid"})."""
    def score_fn(queries):
        ranks = [competition_ranks(c.scores(queries)) for c in components]
        return {k: rrf(ranks, k) for k in k_grid}
    per_k = protocol.evaluate(score_fn, train_queries, batch_size, progress=progress)
    grid = [_grid_row(per_k[k], k=k) for k in k_grid]
    best = max(grid, key=lambda row: row["selection"])     # first of equals: the smaller k
    return Fusion(components, best["k"]), {"k": best["k"], "grid": grid}


class LinearFusion:
    """The API's linear search fusion (``search_fusion.fuse``: z-scored BM25 and dense
    scores over the catalog, mixed with ``lexical_weight``) of two components, without the
    product's trained models: the zero-shot baseline of the product's first stage."""

    def __init__(self, lexical, dense, lexical_weight):
        self.lexical, self.dense, self.lexical_weight = lexical, dense, lexical_weight

    def scores(self, queries):
        return search_fusion.fuse(self.lexical.scores(queries), self.dense.scores(queries),
                                  self.lexical_weight)


def tune_linear(lexical, dense, train_queries, weight_grid=LEXICAL_WEIGHT_GRID,
                batch_size=256, progress=None):
    """The lexical weight of the grid with the best ``protocol.selection_score`` on
    ``train_queries`` (each batch scored once). Returns (the LinearFusion,
    {"lexical_weight", "grid"})."""
    def score_fn(queries):
        lex, den = lexical.scores(queries), dense.scores(queries)
        return {w: search_fusion.fuse(lex, den, w) for w in weight_grid}
    per_w = protocol.evaluate(score_fn, train_queries, batch_size, progress=progress)
    grid = [_grid_row(per_w[w], lexical_weight=w) for w in weight_grid]
    best = max(grid, key=lambda row: row["selection"])
    return (LinearFusion(lexical, dense, best["lexical_weight"]),
            {"lexical_weight": best["lexical_weight"], "grid": grid})
