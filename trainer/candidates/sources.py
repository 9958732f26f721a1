"""Candidate sources: each scores every catalog item for each history, and its best items can
join a user's candidates (``stage.CandidateStage``); its score of each candidate is a ranking
feature named after the source.

A source is one class: ``name`` (the feature name, trainer/features.py), ``reason`` (a
template for the API's explanation; ``{item}`` is the history item that explains the
candidate, found by ``because``), ``scores(histories) -> float [users, n_items]`` (higher is
better) and ``feature(picked)`` (the ranking feature from its scores of the candidates
[users, candidates]; identity by default). Histories are arrays of catalog row indices, oldest
first.

The item-to-item sources score an item-to-item table. The transitions and co-occurrences are
fitted on the shop's train sequences (``fit``) or engagement units (``fit_units``: each
engaged item with the distinct items engaged before it, as the pipeline's examples hold
them); the text neighbours (``TextNeighbourSource.fit_embeddings``) on the item text
embeddings (each item's most similar texts by cosine, the table form of
``TextSimilaritySource``). Each is saved / loaded as one .npz (``save`` / ``load``), like a
model's artifact.
"""
import json

import numpy as np
import scipy.sparse as sp

from trainer import features as F
from trainer.candidates import context_features, item_to_item


class CandidateSource:
    """The interface (see the module docstring)."""

    name = ""
    reason = ""

    def scores(self, histories):
        """Scores of every item for each history: float [len(histories), n_items]."""
        raise NotImplementedError

    def __call__(self, histories):
        return self.scores(histories)

    def feature(self, picked):
        """The ranking feature from this source's scores of the candidates [U, C]."""
        return picked

    def because(self, history, items):
        """For each of ``items``, the history item that most explains its score (the
        ``{item}`` of ``reason``), or -1: int64 [len(items)]."""
        del history
        return np.full(len(items), -1, np.int64)


def _recent(history, window):
    """The last ``window`` items of a history, most recent first."""
    return np.asarray(history[-window:])[::-1]


def _check_window(name, window, decay=1.0):
    if window < 1 or not 0 < decay <= 1:
        raise ValueError(f"{name}: window must be >= 1 and decay in (0, 1], got {window}, "
                         f"{decay}")


class RetrievalSource(CandidateSource):
    """An earlier stage's scores (e.g. the two-tower retrieval model), from any callable
    ``scores(histories)``. Its feature is the gap to the user's first candidate
    (``context_features.relative_to_first``), so it belongs first in the stage."""

    name = F.RETRIEVAL_SCORE
    reason = "Picked for you from your recent activity"

    def __init__(self, scores, name=F.RETRIEVAL_SCORE):
        self._scores, self.name = scores, name

    def scores(self, histories):
        return self._scores(histories)

    def feature(self, picked):
        return context_features.relative_to_first(picked)


class _TableSource(CandidateSource):
    """An item-to-item table [n_items, n_items] plus the popularity tie-break [n_items] (None:
    none), saved and loaded with the scoring parameters ``_params``."""

    _params = ()

    def __init__(self, table, tie_break=None):
        self.table = table.tocsr()
        self.tie_break = tie_break
        self.n_items = table.shape[0]

    def _add_tie_break(self, scores):
        return scores if self.tie_break is None else scores + self.tie_break

    def feature(self, picked):
        return context_features.log_count(picked)

    def _scored_from(self, history):
        """The history items whose table rows make the scores."""
        raise NotImplementedError

    def supported(self, history):
        """The items a history gives a table score > 0 (more than the tie-break): sorted
        int64 array."""
        rows = self._scored_from(history)
        return np.unique(self.table[rows].indices).astype(np.int64) if len(rows) else (
            np.zeros(0, np.int64))

    def save(self, path):
        """The table, tie-break and parameters as one .npz at ``path``."""
        t = self.table
        extra = {} if self.tie_break is None else {"tie_break": self.tie_break}
        np.savez(path, data=t.data, indices=t.indices, indptr=t.indptr,
                 shape=np.asarray(t.shape), **extra,
                 params=json.dumps({k: getattr(self, k) for k in self._params}))

    @classmethod
    def load(cls, path):
        """The source ``save`` wrote to ``path``."""
        with np.load(path) as f:
            table = sp.csr_matrix((f["data"], f["indices"], f["indptr"]),
                                  shape=tuple(f["shape"]))
            tie = f["tie_break"] if "tie_break" in f else None
            params = json.loads(str(f["params"]))
        return cls(table, tie, **params)


class _RecentTableSource(_TableSource):
    """A table source scored from the user's most recent items: the sum over the last
    ``window`` history items of ``decay ** age`` (last item: age 0) times the item's table
    row, plus the tie-break. ``because``: the recent item with the largest weighted part."""

    _params = ("window", "decay")

    def __init__(self, table, tie_break, window, decay):
        _check_window(self.name, window, decay)
        super().__init__(table, tie_break)
        self.window, self.decay = int(window), float(decay)

    def _weights(self, recent):
        """``decay ** age`` of the recent items (most recent first)."""
        return self.decay ** np.arange(len(recent))

    def scores(self, histories):
        # Weighted one-hot of the last `window` items (most recent weight 1), times the table.
        rows, cols, vals = [], [], []
        for u, hist in enumerate(histories):
            recent = _recent(hist, self.window)
            rows.extend([u] * len(recent))
            cols.extend(recent.tolist())
            vals.extend(self._weights(recent).tolist())
        w = sp.csr_matrix((np.asarray(vals, dtype=np.float32), (rows, cols)),
                          shape=(len(histories), self.n_items))
        return self._add_tie_break(np.asarray((w @ self.table).todense(), dtype=np.float32))

    def _scored_from(self, history):
        return _recent(history, self.window)

    def because(self, history, items):
        recent = _recent(history, self.window)
        parts = self._weights(recent)[:, None] * (
            self.table[recent][:, np.asarray(items)].toarray())
        return _best_contributor(recent, parts)


class TransitionSource(_RecentTableSource):
    """Items that followed the user's most recent items in the train sequences: the sum over
    the last ``window`` history items of ``decay ** age`` (last item: age 0) times the
    transition table's weight item -> candidate (``item_to_item.transition_matrix``), plus
    the popularity tie-break. Its feature is the log count (``log_count``)."""

    name = F.TRANSITION_SCORE
    reason = "Often chosen next after {item}"

    def __init__(self, table, tie_break=None, window=3, decay=0.1):
        super().__init__(table, tie_break, window, decay)

    @classmethod
    def fit(cls, sequences, n_items, window=3, decay=0.1, normalize=False, tie_break=True):
        """Counts (rows normalised to 1 with ``normalize``) from the train ``sequences``."""
        return cls(item_to_item.transition_matrix(sequences, n_items, normalize),
                   item_to_item.popularity_tie_break(sequences, n_items) if tie_break else None,
                   window, decay)

    @classmethod
    def fit_units(cls, histories, items, n_items, window=3, decay=0.1, tie_break=True):
        """Counts of (last item before, engaged item) over engagement units: ``histories[u]``
        the distinct items engaged before ``items[u]``, oldest first."""
        pairs = item_to_item.unit_pairs(histories, items, 1)
        return cls(item_to_item.transition_matrix((), n_items, False, pairs),
                   item_to_item.popularity_tie_break([np.asarray(items, np.int64)], n_items)
                   if tie_break else None, window, decay)


class CooccurrenceSource(_TableSource):
    """Items that occurred near the user's history items in the train sequences, in either
    order: the sum over the history items of the co-occurrence counts
    (``item_to_item.cooccurrence_matrix``), plus the popularity tie-break. Its feature is the
    log count (``log_count``)."""

    name = F.COOCCURRENCE_SCORE
    reason = "Often chosen together with {item}"

    @classmethod
    def fit(cls, sequences, n_items, window=3, tie_break=True):
        """Counts within ``window`` positions in the train ``sequences``."""
        _check_window(cls.name, window)
        return cls(item_to_item.cooccurrence_matrix(sequences, n_items, window),
                   item_to_item.popularity_tie_break(sequences, n_items) if tie_break else None)

    @classmethod
    def fit_units(cls, histories, items, n_items, window=3, tie_break=True):
        """Counts of the engaged item with each of the last ``window`` items engaged before
        it, both orders, over engagement units (``TransitionSource.fit_units``)."""
        _check_window(cls.name, window)
        pairs = item_to_item.unit_pairs(histories, items, window)
        return cls(item_to_item.cooccurrence_matrix((), n_items, window, pairs),
                   item_to_item.popularity_tie_break([np.asarray(items, np.int64)], n_items)
                   if tie_break else None)

    def scores(self, histories):
        return self._add_tie_break(np.asarray(
            (item_to_item.history_matrix(histories, self.n_items) @ self.table).todense(),
            dtype=np.float32))

    def _scored_from(self, history):
        return np.asarray(history, np.int64)

    def because(self, history, items):
        recent = np.asarray(history)[::-1]
        return _best_contributor(recent, self.table[recent][:, np.asarray(items)].toarray())


class TextNeighbourSource(_RecentTableSource):
    """Items whose text is like the user's recent items', from a table: the sum over the
    last ``window`` history items of ``decay ** age`` (last item: age 0) times the cosine of
    the item's and the candidate's text embeddings, kept for each item's best ``neighbours``
    only (``fit_embeddings``; 0 elsewhere). The table form of ``TextSimilaritySource``: it
    travels in the retrieval export's ``related_items`` signature (trainer/related_items.py)
    like the transitions. No tie-break; its feature is the score itself (cosines are no
    counts)."""

    name = F.TEXT_SCORE
    reason = "Similar to {item}"

    def __init__(self, table, tie_break=None, window=10, decay=0.5):
        super().__init__(table, tie_break, window, decay)

    def feature(self, picked):
        return picked

    @classmethod
    def fit_embeddings(cls, embeddings, neighbours=50, window=10, decay=0.5, block=1024):
        """The table of each item's ``neighbours`` most similar other items (cosine > 0,
        never itself; ties: the lower index) from the item text ``embeddings`` [n_items, H]
        (L2-normalised here; a row of zeros is an item without text: it has no neighbours
        and is nobody's). ``block`` rows at a time, so memory stays O(block * n_items)."""
        _check_window(cls.name, window, decay)
        return cls(_cosine_neighbours(embeddings, neighbours, block), None, window, decay)


def _cosine_neighbours(embeddings, neighbours, block):
    """CSR float32 [n, n]: row i holds the cosines (at most 1) of item i's ``neighbours`` most
    similar other items with a cosine > 0 (ties: the lower index), from ``embeddings``
    [n, H] (``TextNeighbourSource.fit_embeddings``)."""
    emb = np.asarray(embeddings, np.float32)
    if emb.ndim != 2 or not np.isfinite(emb).all():
        raise ValueError(f"{F.TEXT_SCORE}: embeddings must be a finite [n_items, H] matrix, "
                         f"got shape {emb.shape}")
    if neighbours < 1 or block < 1:
        raise ValueError(f"{F.TEXT_SCORE}: neighbours and block must be >= 1, got "
                         f"{neighbours}, {block}")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(norms > 0, norms, 1.0)                 # rows of zeros stay zeros
    n = len(emb)
    k = min(int(neighbours), n - 1)
    if k < 1:
        return sp.csr_matrix((n, n), dtype=np.float32)
    rows, cols, vals = (np.concatenate(part) for part in zip(*(
        _block_neighbours(emb, start, min(start + block, n), k)
        for start in range(0, n, block))))
    return sp.csr_matrix((np.minimum(vals, 1.0).astype(np.float32), (rows, cols)),
                         shape=(n, n))


def _block_neighbours(emb, start, end, k):
    """(rows, cols, cosines) of the best ``k`` neighbours (cosine > 0, not itself; ties: the
    lower column) of the items ``start`` .. ``end - 1``."""
    sims = emb[start:end] @ emb.T                                   # [b, n]
    local = np.arange(end - start)
    sims[local, start + local] = -np.inf                            # never itself
    kth = np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k]
    rows, cols = np.nonzero((sims >= kth[:, None]) & (sims > 0))    # ties at the k-th: extra
    vals = sims[rows, cols]
    order = np.lexsort((cols, -vals, rows))                         # per row best, lower col
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)       # place within its row
    keep = rank < k
    return rows[keep] + start, cols[keep], vals[keep]


class TextSimilaritySource(CandidateSource):
    """Items whose text is like the user's recent items': cosine(sum_k ``decay ** k`` *
    emb[history[-1-k]] over the last ``window`` history items, emb[item]). ``embeddings``:
    L2-normalised item text embeddings [n_items, H] (e.g. the frozen MiniLM of the titles).
    An empty history scores 0 everywhere. Its feature is the cosine itself."""

    name = F.TEXT_SCORE
    reason = "Similar to {item}"

    def __init__(self, embeddings, window=10, decay=0.5):
        _check_window(self.name, window, decay)
        self.embeddings, self.window, self.decay = embeddings, window, decay

    def scores(self, histories):
        emb = self.embeddings
        q = np.zeros((len(histories), emb.shape[1]), np.float32)
        for u, hist in enumerate(histories):
            recent = _recent(hist, self.window)
            q[u] = (self.decay ** np.arange(len(recent)))[:, None].T @ emb[recent]
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        return q @ emb.T

    def because(self, history, items):
        recent = _recent(history, self.window)
        parts = (self.decay ** np.arange(len(recent)))[:, None] * (
            self.embeddings[recent] @ self.embeddings[np.asarray(items)].T)
        return _best_contributor(recent, parts, positive=False)


def _best_contributor(recent, parts, positive=True):
    """Per column of ``parts`` [len(recent), n]: the ``recent`` item with the largest part
    (ties: the earlier row, i.e. the more recent item), -1 when there is none or (with
    ``positive``) its part is not > 0."""
    if not len(recent):
        return np.full(parts.shape[1], -1, np.int64)
    best = parts.argmax(axis=0)
    found = parts.max(axis=0) > 0 if positive else np.ones(parts.shape[1], bool)
    return np.where(found, np.asarray(recent, np.int64)[best], -1)
