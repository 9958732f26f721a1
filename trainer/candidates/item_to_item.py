"""Item-to-item tables fitted on a shop's train sequences, like a model: which items directly
follow which (transitions) and which occur near each other (co-occurrence).

Sequences and histories are arrays of catalog row indices (0 .. n_items - 1), oldest first.
The tables are scipy CSR matrices [n_items, n_items] of float32 counts (or, for normalised
transitions, row-stochastic weights); ``sources.TransitionSource`` and
``sources.CooccurrenceSource`` score candidates with them.

Two ways to fit them: from whole sequences (``transition_matrix``, ``cooccurrence_matrix``),
or from engagement units, each an engaged item with the user's distinct engaged items before
it (``unit_pairs``): what the shop pipeline's examples hold (pipeline/examples.py). For a
user's distinct engagements a, b, c both give the same counts.

For serving, a table travels as each item's best ``m`` neighbours (``top_neighbours``;
``from_neighbours`` rebuilds the table from them): the retrieval export's ``related_items``
signature (trainer/related_items.py), which the API reads like the catalog embeddings.
"""
import numpy as np
import scipy.sparse as sp

# Added to every item-to-item score, times the item's popularity normalised to [0, 1]: orders
# the items a table cannot tell apart (e.g. no transition observed) by popularity instead of
# by index. Far below any real score gap (a count of 1).
TIE_BREAK = 1e-6


def history_matrix(histories, n_items):
    """Binary user x item CSR matrix (float32) of the histories (repeated items count once)."""
    indptr = np.zeros(len(histories) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(h) for h in histories])
    indices = (np.concatenate(histories).astype(np.int64) if len(histories)
               else np.zeros(0, dtype=np.int64))
    x = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                      shape=(len(histories), n_items))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def _counts(src, dst, n_items):
    """CSR [n_items, n_items] float32: how often each (src[i], dst[i]) pair occurs."""
    t = sp.csr_matrix((np.ones(len(src), dtype=np.float32),
                       (np.asarray(src, np.int64), np.asarray(dst, np.int64))),
                      shape=(n_items, n_items))
    t.sum_duplicates()
    return t


def transition_matrix(sequences, n_items, normalize=True, pairs=None):
    """Sparse T[i, j] = how often j directly follows i; rows sum to 1 if ``normalize``.
    ``pairs``: (src, dst) arrays to count instead of the sequences' (``unit_pairs`` with
    window 1)."""
    if pairs is None:
        pairs = (np.concatenate([s[:-1] for s in sequences if len(s) > 1] or [np.zeros(0, int)]),
                 np.concatenate([s[1:] for s in sequences if len(s) > 1] or [np.zeros(0, int)]))
    t = _counts(*pairs, n_items)
    if normalize:
        rows = np.asarray(t.sum(axis=1)).ravel()
        t = sp.diags(1.0 / np.maximum(rows, 1.0)).astype(np.float32) @ t
    return t.tocsr()


def cooccurrence_matrix(sequences, n_items, window, pairs=None):
    """Sparse symmetric C[i, j] = how often i and j occur within ``window`` positions of each
    other (either order) in the sequences. ``pairs``: (earlier, later) arrays to count in
    both orders instead (``unit_pairs`` with the same window)."""
    if pairs is None:
        earlier, later = [], []
        for seq in sequences:
            for gap in range(1, min(window, len(seq) - 1) + 1):
                earlier.append(seq[:-gap])
                later.append(seq[gap:])
        pairs = (np.concatenate(earlier) if earlier else np.zeros(0, int),
                 np.concatenate(later) if later else np.zeros(0, int))
    earlier, later = pairs
    return _counts(np.concatenate([earlier, later]), np.concatenate([later, earlier]), n_items)


def unit_pairs(histories, items, window):
    """(earlier, later) int64 arrays: for each unit u, the last ``window`` items of
    ``histories[u]`` (the distinct items engaged before, oldest first) paired with
    ``items[u]``. Window 1 gives the transitions, a wider one the co-occurrences."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    earlier, later = [], []
    for history, item in zip(histories, items):
        recent = np.asarray(history, np.int64)[-window:]
        earlier.append(recent)
        later.append(np.full(len(recent), item, np.int64))
    return (np.concatenate(earlier) if earlier else np.zeros(0, np.int64),
            np.concatenate(later) if later else np.zeros(0, np.int64))


def top_neighbours(table, m):
    """Each row's ``m`` largest entries, best first (ties: lower column): (columns int64
    [n, m], -1 where a row has fewer; weights float32 [n, m], 0 there)."""
    table = table.tocsr()
    cols = np.full((table.shape[0], m), -1, np.int64)
    weights = np.zeros((table.shape[0], m), np.float32)
    for row in range(table.shape[0]):
        start, end = table.indptr[row], table.indptr[row + 1]
        idx, val = table.indices[start:end], table.data[start:end]
        order = np.lexsort((idx, -val))[:m]
        cols[row, :len(order)], weights[row, :len(order)] = idx[order], val[order]
    return cols, weights


def from_neighbours(cols, weights, n_items):
    """The CSR table [n_items, n_items] of ``top_neighbours`` output (rows = items; -1
    columns are padding)."""
    cols, weights = np.asarray(cols, np.int64), np.asarray(weights, np.float32)
    if cols.shape != weights.shape or cols.ndim != 2 or len(cols) != n_items:
        raise ValueError(f"neighbour columns {cols.shape} and weights {weights.shape} must "
                         f"both be [{n_items}, m]")
    keep = cols >= 0
    if (cols >= n_items).any() or not np.isfinite(weights).all() or (weights[keep] < 0).any():
        raise ValueError("neighbours must be item rows < n_items with finite weights >= 0")
    rows = np.broadcast_to(np.arange(n_items)[:, None], cols.shape)
    t = sp.csr_matrix((weights[keep], (rows[keep], cols[keep])), shape=(n_items, n_items))
    t.sum_duplicates()
    return t


def popularity_tie_break(sequences, n_items):
    """``TIE_BREAK`` times each item's count in the sequences over the largest count:
    float32 [n_items], in [0, TIE_BREAK]."""
    flat = np.concatenate(sequences) if len(sequences) else np.zeros(0, dtype=np.int64)
    return tie_break_of_counts(np.bincount(flat, minlength=n_items))


def tie_break_of_counts(counts):
    """``TIE_BREAK`` times each item's count over the largest count: float32, in [0,
    TIE_BREAK]."""
    counts = np.asarray(counts, np.float64)
    return (TIE_BREAK * counts / max(counts.max(initial=0.0), 1.0)).astype(np.float32)
