"""Nearest-neighbour index over the catalog's candidate embeddings, in the API process.

The API holds ``Catalog.embeddings`` ([N, D] float32, from the served retrieval model's
``candidate_embedding`` signature). This module answers "the k rows with the highest dot
product with these query embeddings" over them, two ways behind one interface:

* ``BruteForceIndex``: exact. One float32 matmul per query block and ``argpartition``;
  costs N·D multiply-adds per query (1M items × 64 dims: tens of ms on one core).
* ``ScannIndex``: approximate, ScaNN (``scann.scann_ops_pybind``, the pinned scann==1.3.2):
  a k-means tree (``num_leaves`` partitions, ``leaves_to_search`` of them scored per query),
  anisotropic asymmetric hashing (4-bit codes of 2-dim blocks) to score their items, and an
  exact float32 re-scoring (``reorder``) of the best approximate candidates. Recall is
  measured against the exact index by ``benchmarks/ann.py`` (benchmarks/results/ann.md).

``build_index(embeddings, method="auto")`` picks ScaNN at ``min_items_for_scann`` items and
more (default 100,000: below it exact search costs a few ms, and ScaNN's own guidance is
brute force for small sets) and brute force below, or when ``scann`` cannot be imported.

Why here and not in the SavedModel: TFRS can put a ScaNN layer into the retrieval model, but
its graph then holds the ``Scann>...`` custom ops, which the stock TensorFlow Serving binary
does not have: loading such a model fails with "Op type not registered
'Scann>ScannSearchBatched'" (tensorflow/recommenders issues #182 and #216; the TFRS
maintainer's answer: TF Serving has to be compiled with the ScaNN custom ops, per the
"Serving TensorFlow models with custom ops" guide, or a special ``google/tf-serving-scann``
image used). We serve with the stock binary, so the model server keeps the exact ``top_k``
signature (brute force in the graph, any catalog size, the reference the index is measured
against) and the API, which already holds the embeddings, builds this index for large
catalogs and for items added after the model was exported.

Costs to know: the scann wheel imports TensorFlow (its C++ code links TF; see
``scann_ops_pybind.py``: "needed because of C++ dependency on TF headers"). The API process
has TensorFlow loaded already (the tensorflow-serving-api protos of serving/client import
it), so importing scann there adds ~9 MB and 0.1 s (measured); it is still imported lazily,
only when a ScaNN index is built. ScaNN keeps its own float32 copy of the vectors for
re-scoring, plus the codes and the tree. Builds are seeded (``seed``: the
k-means and hashing seeds of ScaNN's config, which its builder does not expose) and use one
training thread by default (a rebuild in the background leaves the other core to requests),
but ScaNN 1.3.2's tree training is still not bit-reproducible: two builds of the same data
can put a few items in other leaves and so differ in a few results (tested: ≥ 97 % of the
top 20 shared). An index is immutable: a changed catalog gets a new one.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np

log = logging.getLogger("serving.api.ann")

METHODS = ("auto", "brute_force", "scann")
DEFAULT_MIN_ITEMS_FOR_SCANN = 100_000
_BLOCK_BYTES = 64 << 20         # brute force: scores of one block of queries, at most


# ---------------------------------------------------------------- input checks
def _check_matrix(name: str, values, dim: int | None = None) -> np.ndarray:
    """[n, D] finite float32 (C order) from ``values``; ValueError naming ``name``."""
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric array: {e}") from None
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, dim], got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the index's dimension), "
                         f"got shape {array.shape}")
    if array.shape[1] == 0:
        raise ValueError(f"{name} has dimension 0")
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise ValueError(f"{name} has a non-finite value (NaN or inf) in row {bad}")
    return np.ascontiguousarray(array)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns of the k highest scores per row of [B, M] scores, best first (ties: lower
    column first), and those scores."""
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    picked = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -picked), axis=1)
    cols = np.take_along_axis(part, order, axis=1)
    return cols.astype(np.int64), np.take_along_axis(picked, order, axis=1)


# ---------------------------------------------------------------- indexes
class _Index:
    """What every index answers. ``rows`` are positions in the embeddings it was built on."""

    method = ""

    def __init__(self, embeddings: np.ndarray):
        self.embeddings = embeddings            # [N, D] float32, C order; not copied
        self.build_seconds = 0.0

    @property
    def size(self) -> int:
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def memory_bytes(self) -> int:
        """Approximate bytes the search needs: the embeddings (brute force) or what ScaNN
        adds to them."""
        return int(self.embeddings.nbytes)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k rows with the highest dot product with each query, best first.

        ``queries``: [B, D] (or [D], treated as B = 1). Returns (rows [B, min(k, size)]
        int64, scores [B, min(k, size)] float32)."""
        queries = _check_matrix("queries", np.atleast_2d(queries), self.dim)
        k = min(_check_k(k), self.size)
        return self._search(queries, k)

    def search_allowed(self, query, k: int, allowed) -> tuple[np.ndarray, np.ndarray]:
        """The k best rows among ``allowed`` (bool [N]) for one query ([D] or [1, D]), best
        first: exactly min(k, allowed.sum()) rows, never a disallowed one. Returns (rows [n]
        int64, scores [n] float32)."""
        query = np.asarray(query)
        if query.ndim == 2 and query.shape[0] != 1:
            raise ValueError(f"query must be one vector [D] or [1, D], got shape {query.shape}")
        query = _check_matrix("query", query.reshape(1, -1) if query.ndim else query, self.dim)
        k = _check_k(k)
        allowed = np.asarray(allowed)
        if allowed.dtype != np.bool_ or allowed.shape != (self.size,):
            raise ValueError(f"allowed must be a bool mask of shape ({self.size},), got "
                             f"{allowed.dtype} {allowed.shape}")
        want = min(k, int(allowed.sum()))
        if want == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return self._search_allowed(query, want, allowed)

    def _search(self, queries, k):
        raise NotImplementedError

    def _search_allowed(self, query, want, allowed):
        return _exact_allowed(self.embeddings, query, want, allowed)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.size} x {self.dim}>"


def _exact_allowed(embeddings, query, want, allowed):
    """Exact top ``want`` over the allowed rows only (scores of the others never computed)."""
    rows = np.flatnonzero(allowed)
    cols, scores = _top((embeddings[rows] @ query[0])[np.newaxis], want)
    return rows[cols[0]], scores[0]


class BruteForceIndex(_Index):
    """Exact search: queries @ embeddings.T in blocks, argpartition, sort."""

    method = "brute_force"

    def _search(self, queries, k):
        # One matmul per block of queries (reads the embeddings once per block), then the
        # top k row by row (a row's scores stay in cache; a block-wide argpartition does not).
        block = max(1, _BLOCK_BYTES // (4 * self.size))
        rows = np.empty((len(queries), k), np.int64)
        scores = np.empty((len(queries), k), np.float32)
        for start in range(0, len(queries), block):
            for i, row in enumerate(queries[start:start + block] @ self.embeddings.T, start):
                r, s = _top(row[np.newaxis], k)
                rows[i], scores[i] = r[0], s[0]
        return rows, scores

    def _search_allowed(self, query, want, allowed):
        if allowed.mean() < 0.5:            # score only the allowed rows
            return _exact_allowed(self.embeddings, query, want, allowed)
        scores = np.where(allowed, self.embeddings @ query[0], -np.inf)
        cols, top = _top(scores[np.newaxis], want)
        return cols[0], top[0]


@dataclasses.dataclass(frozen=True)
class ScannParams:
    """ScaNN settings. ``for_size(n)`` applies the documented rule; any field can be
    overridden (``build_index(..., scann_params={"leaves_to_search": 80})``).

    Rule (ScaNN's docs/algorithms.md "Rules-of-thumb": num_leaves ≈ sqrt(n), AH with 2
    dimensions per block, rescoring "highly recommended"; the search depth and re-scoring
    count were tuned on benchmarks/ann.py's clustered sets, 1M items, 64-d and 448-d:
    searching 10 % of the leaves and re-scoring 1,000 gave recall@100 0.96 (64-d) and 0.93
    (448-d); 15 % and 1,500 give 0.989 and 0.978 (benchmarks/results/ann.md). Beyond that the
    approximate codes, not the leaves, limit recall: searching 4× the leaves adds < 0.01,
    re-scoring more candidates is what raises it further):

    * ``num_leaves`` = round(sqrt(n)) (1,000 at 1M, 316 at 100k);
    * ``leaves_to_search`` = max(8, ceil(num_leaves · search_fraction)), ``search_fraction``
      0.15 (15 % of the catalog is scored approximately per query) for k up to 100, and
      proportionally more beyond (``leaves_for``);
    * ``reorder`` = max(reorder_min, reorder_per_result · k) candidates re-scored exactly
      per query (k = 100: 1,500);
    * ``training_sample_size`` = min(n, 100,000) vectors train the tree and the codebooks;
    * ``anisotropic_quantization_threshold`` 0.2 (ScaNN's example for unit-length data);
    * ``spherical`` k-means when every vector has unit length (the catalog's do).
    """

    num_leaves: int
    leaves_to_search: int
    reorder_per_result: int = 15
    reorder_min: int = 200
    training_sample_size: int = 100_000
    dimensions_per_block: int = 2
    anisotropic_quantization_threshold: float = 0.2
    training_iterations: int = 12
    spherical: bool | None = None          # None: decided from the vectors' norms
    training_threads: int = 1              # 1: reproducible builds; 0: all cores

    search_fraction = 0.15                # class constants of the rule
    min_leaves_to_search = 8

    @classmethod
    def for_size(cls, n: int, **overrides) -> "ScannParams":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"scann_params has unknown setting(s) {sorted(unknown)}; known: "
                             f"{[f.name for f in dataclasses.fields(cls)]}")
        leaves = int(overrides.pop("num_leaves", max(1, round(math.sqrt(n)))))
        search = min(leaves, max(cls.min_leaves_to_search,
                                 math.ceil(leaves * cls.search_fraction)))
        settings = {"num_leaves": leaves, "leaves_to_search": search,
                    "training_sample_size": min(n, 100_000), **overrides}
        params = cls(**settings)
        for name in ("num_leaves", "leaves_to_search", "reorder_per_result", "reorder_min",
                     "training_sample_size", "dimensions_per_block"):
            if getattr(params, name) < 1:
                raise ValueError(f"scann_params.{name} must be >= 1, got {getattr(params, name)}")
        if params.leaves_to_search > params.num_leaves:
            raise ValueError(f"scann_params.leaves_to_search ({params.leaves_to_search}) must "
                             f"not exceed num_leaves ({params.num_leaves})")
        return params

    def reorder_for(self, k: int) -> int:
        """Candidates re-scored exactly when k results are asked for."""
        return max(self.reorder_min, self.reorder_per_result * k)

    def leaves_for(self, k: int) -> int:
        """Leaves searched for k results: ``leaves_to_search`` up to k = 100 (the k it was
        tuned for), proportionally more beyond (a deeper top k spans more leaves)."""
        return min(self.num_leaves, math.ceil(self.leaves_to_search * max(1.0, k / 100)))


class ScannIndex(_Index):
    """ScaNN tree + asymmetric hashing + exact re-scoring, dot product."""

    method = "scann"
    OVERFETCH = 4            # search_allowed: fetch this many more than the allowed share needs
    MAX_FETCH = 2_000        # ... but never more; beyond, exact search over the allowed rows

    def __init__(self, embeddings: np.ndarray, params: ScannParams, seed: int):
        super().__init__(embeddings)
        from scann.scann_ops.py import scann_ops_pybind    # imports TensorFlow: lazily

        self.params, self.seed = params, seed
        spherical = params.spherical
        if spherical is None:
            norms = np.linalg.norm(embeddings, axis=1)
            spherical = bool(np.allclose(norms, 1.0, atol=1e-3))
        builder = (scann_ops_pybind.builder(embeddings, 10, "dot_product")
                   .tree(num_leaves=min(params.num_leaves, self.size),
                         num_leaves_to_search=params.leaves_to_search,
                         training_sample_size=params.training_sample_size,
                         training_iterations=params.training_iterations,
                         spherical=spherical)
                   .score_ah(params.dimensions_per_block,
                             anisotropic_quantization_threshold=(
                                 params.anisotropic_quantization_threshold),
                             training_sample_size=params.training_sample_size)
                   .reorder(params.reorder_for(10)))
        config = _seeded(builder.create_config(), seed)
        self.searcher = scann_ops_pybind.create_searcher(embeddings, config,
                                                         params.training_threads)

    @property
    def memory_bytes(self) -> int:
        """ScaNN's own structures, approximately: float32 copy for re-scoring, 4-bit codes
        (one per block of ``dimensions_per_block`` dims), leaf membership, leaf centres,
        codebooks (16 centres per block)."""
        p, n, d = self.params, self.size, self.dim
        blocks = math.ceil(d / p.dimensions_per_block)
        return int(n * d * 4 + n * math.ceil(blocks / 2) + n * 4
                   + p.num_leaves * d * 4 + blocks * 16 * p.dimensions_per_block * 4)

    def _scann(self, queries, k, leaves_to_search=None):
        """ScaNN's rows and scores ([B, k] each). When the searched leaves hold fewer than
        k items, ScaNN answers one query with fewer columns and a batch with row 0 and NaN
        scores in the missing places: both come back as row -1, score NaN."""
        leaves = leaves_to_search or self.params.leaves_for(k)
        reorder = max(k, self.params.reorder_for(k))
        if len(queries) == 1:
            found, values = self.searcher.search(queries[0], k, reorder, leaves)
            found, values = np.asarray(found)[np.newaxis], np.asarray(values)[np.newaxis]
        else:
            found, values = self.searcher.search_batched_parallel(queries, k, reorder, leaves)
        rows = np.full((len(queries), k), -1, np.int64)
        scores = np.full((len(queries), k), np.nan, np.float32)
        found, values = np.asarray(found), np.asarray(values)
        rows[:, :found.shape[1]], scores[:, :found.shape[1]] = found, values
        rows[np.isnan(scores)] = -1
        return rows, scores

    def _search(self, queries, k, leaves_to_search=None):
        rows, scores = self._scann(queries, k, leaves_to_search)
        short = np.isnan(scores).any(axis=1)  # searched leaves held fewer than k items
        if short.any():
            rows[short], scores[short] = BruteForceIndex(self.embeddings)._search(
                queries[short], k)
        return rows, scores

    def search_at(self, queries, k: int, leaves_to_search: int):
        """``search`` with another search depth (benchmarks' recall/latency curve)."""
        queries = _check_matrix("queries", np.atleast_2d(queries), self.dim)
        if not 1 <= leaves_to_search <= self.params.num_leaves:
            raise ValueError(f"leaves_to_search must be in 1..{self.params.num_leaves}, "
                             f"got {leaves_to_search}")
        return self._search(queries, min(_check_k(k), self.size), leaves_to_search)

    def _search_allowed(self, query, want, allowed):
        share = allowed.mean()
        fetch = math.ceil(want / share * self.OVERFETCH)
        if fetch <= min(self.MAX_FETCH, self.size):
            rows, scores = self._scann(query, fetch)
            rows, scores = rows[0], scores[0]
            keep = (rows >= 0) & allowed[rows]
            if keep.sum() >= want:
                return rows[keep][:want], scores[keep][:want]
        return _exact_allowed(self.embeddings, query, want, allowed)


def _seeded(config: str, seed: int) -> str:
    """ScaNN's text config with the k-means and hashing seeds fixed (the builder has no
    argument for them; the fields are PartitioningConfig.clustering_seed and
    AsymmetricHasherConfig.clustering_seed / sampling_seed)."""
    seed = int(seed) & 0x7FFFFFFF
    config = config.replace("partitioning {", f"partitioning {{\n clustering_seed: {seed}", 1)
    return config.replace("asymmetric_hash {", f"asymmetric_hash {{\n clustering_seed: {seed}"
                          f"\n sampling_seed: {seed}", 1)


def scann_available() -> bool:
    try:
        from scann.scann_ops.py import scann_ops_pybind  # noqa: F401
    except ImportError:
        return False
    return True


def build_index(embeddings, method: str = "auto", *, seed: int = 0,
                min_items_for_scann: int = DEFAULT_MIN_ITEMS_FOR_SCANN,
                scann_params: dict | None = None) -> _Index:
    """An index over ``embeddings`` ([N, D], finite; rows = catalog rows).

    ``method``: "brute_force" (exact), "scann", or "auto": ScaNN when N >=
    ``min_items_for_scann`` and scann imports, else brute force. ``scann_params`` overrides
    fields of ``ScannParams.for_size(N)``. The result has ``search``, ``search_allowed``,
    ``method``, ``size``, ``dim``, ``memory_bytes`` and ``build_seconds``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    embeddings = _check_matrix("embeddings", embeddings)
    if embeddings.shape[0] == 0:
        raise ValueError("embeddings is empty: an index needs at least one row")
    if isinstance(min_items_for_scann, bool) or not isinstance(min_items_for_scann, int) \
            or min_items_for_scann < 1:
        raise ValueError(f"min_items_for_scann must be a positive integer, "
                         f"got {min_items_for_scann!r}")
    n = embeddings.shape[0]
    if method == "auto":
        method = "scann" if n >= min_items_for_scann else "brute_force"
        if method == "scann" and not scann_available():
            log.warning("scann cannot be imported: exact search over %d items", n)
            method = "brute_force"
    started = time.perf_counter()
    if method == "scann":
        index = ScannIndex(embeddings, ScannParams.for_size(n, **(scann_params or {})), seed)
    else:
        index = BruteForceIndex(embeddings)
    index.build_seconds = time.perf_counter() - started
    return index
