"""Features of each candidate for its user, computed outside the ranking model (the
``external_features`` of trainer/features.py): transforms of the sources' scores, and
user-candidate statistics the ranker cannot derive from item ids (brand affinity).

Every function takes or returns arrays [users, candidates] aligned with the candidate stage's
``Candidates.items``.
"""
import numpy as np

from trainer import features as F


def log_count(scores):
    """The feature of count-like scores (transitions, co-occurrence): log1p, >= 0 (the
    popularity tie-break stays a tiny positive value)."""
    return np.log1p(np.maximum(scores, 0.0))


def relative_to_first(picked):
    """Each candidate's score minus that of the user's first candidate (column 0, the first
    source's best choice), so 0 = that choice. Absolute score levels differ between users
    (they depend on the history); the gap to the best candidate says how sure the source is.
    This is the ``retrieval_score`` feature."""
    return picked - picked[:, :1]


def brand_codes(brands):
    """Integer code of each item's brand, -1 for none (an empty brand matches nothing)."""
    names = np.asarray(brands, dtype=object).astype(str)
    codes = np.unique(names, return_inverse=True)[1].astype(np.int64)
    return np.where(names == "", -1, codes)


def brand_affinity(histories, candidates, brands):
    """(share of each history's items with the candidate's brand, 1.0 if the most recent
    history item has it): float32 [U, C] each; ``brands``: ``brand_codes`` of every item."""
    share = np.zeros(candidates.shape, np.float32)
    last = np.zeros(candidates.shape, np.float32)
    for u, history in enumerate(histories):
        if not len(history):
            continue
        mine, theirs = brands[candidates[u]], brands[np.asarray(history)]
        known = mine >= 0
        share[u] = (mine[:, None] == theirs[None, :]).sum(axis=1) * known / len(history)
        last[u] = known & (mine == theirs[-1])
    return share, last


def brand_features(histories, candidates, brands):
    """``history_brand_share`` and ``last_item_same_brand`` of the candidates
    (``brand_affinity``), by feature name."""
    share, last = brand_affinity(histories, candidates, brands)
    return {F.HISTORY_BRAND_SHARE: share, F.LAST_ITEM_SAME_BRAND: last}
