"""Item-to-item tables fitted on a shop's train sequences, like a model: which items directly
follow which (transitions) and which occur near each other (co-occurrence).

Sequences and histories are arrays of catalog row indices (0 .. n_items - 1), oldest first.
The tables are scipy CSR matrices [n_items, n_items] of float32 counts (or, for normalised
transitions, row-stochastic weights); ``sources.TransitionSource`` and
``sources.CooccurrenceSource`` score candidates with them.
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


def transition_matrix(sequences, n_items, normalize=True):
    """Sparse T[i, j] = how often j directly follows i; rows sum to 1 if ``normalize``."""
    src = np.concatenate([s[:-1] for s in sequences if len(s) > 1] or [np.zeros(0, int)])
    dst = np.concatenate([s[1:] for s in sequences if len(s) > 1] or [np.zeros(0, int)])
    t = sp.csr_matrix((np.ones(len(src), dtype=np.float32), (src, dst)),
                      shape=(n_items, n_items))
    t.sum_duplicates()
    if normalize:
        rows = np.asarray(t.sum(axis=1)).ravel()
        t = sp.diags(1.0 / np.maximum(rows, 1.0)).astype(np.float32) @ t
    return t.tocsr()


def cooccurrence_matrix(sequences, n_items, window):
    """Sparse symmetric C[i, j] = how often i and j occur within ``window`` positions of each
    other (either order) in the sequences."""
    src, dst = [], []
    for seq in sequences:
        for gap in range(1, min(window, len(seq) - 1) + 1):
            src += [seq[:-gap], seq[gap:]]
            dst += [seq[gap:], seq[:-gap]]
    src = np.concatenate(src) if src else np.zeros(0, int)
    dst = np.concatenate(dst) if dst else np.zeros(0, int)
    c = sp.csr_matrix((np.ones(len(src), dtype=np.float32), (src, dst)),
                      shape=(n_items, n_items))
    c.sum_duplicates()
    return c


def popularity_tie_break(sequences, n_items):
    """``TIE_BREAK`` times each item's count in the sequences over the largest count:
    float32 [n_items], in [0, TIE_BREAK]."""
    flat = np.concatenate(sequences) if len(sequences) else np.zeros(0, dtype=np.int64)
    counts = np.bincount(flat, minlength=n_items).astype(np.float64)
    return (TIE_BREAK * counts / max(counts.max(), 1.0)).astype(np.float32)
