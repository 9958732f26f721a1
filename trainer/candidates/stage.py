"""The candidate stage: the union of several sources' best items per user, then each
candidate's context features, all that the ranking model needs besides the items' own
features.

The union: the first source's top ``count`` items (ties by lower item index), then, for each
further source in turn, its best ``count`` items that are not candidates yet. A source with
count 0 adds no items but still gives its feature. Exclusion rules (``exclude``) keep items out
of the selection: "none", "purchased" (the user's purchases, passed per call) or "history"
(every history item); ``allowed`` (a mask over the catalog, e.g. in stock) holds for every
user. Excluded items rank after every other item of a source, so they are chosen only when a
source runs out of allowed items; ``Candidates.valid`` marks them.
"""
import dataclasses

import numpy as np

from trainer.candidates import context_features

EXCLUDE_RULES = ("none", "purchased", "history")


def top_candidates(scores, top_n):
    """Indices of the ``top_n`` highest scores per row, best first, ties by lower item
    index: int64 [U, top_n]. The same as a stable argsort of the negated scores, but in
    O(n) per row plus the sort of the few items at or above the ``top_n``-th score
    (a full sort of 100k items per request cost more than the rest of the stage)."""
    scores = np.asarray(scores)
    users, n = scores.shape
    if not 1 <= top_n <= n:
        raise ValueError(f"top_n must be in [1, {n}], got {top_n}")
    if np.isnan(scores).any():
        raise ValueError("candidate scores contain NaN")
    if 4 * top_n >= n:
        return np.argsort(-scores, axis=1, kind="stable")[:, :top_n]
    kth = np.partition(scores, n - top_n, axis=1)[:, n - top_n]      # the top_n-th largest
    out = np.empty((users, top_n), np.int64)
    for u in range(users):
        head = np.flatnonzero(scores[u] >= kth[u])      # >= top_n items (ties at kth too)
        out[u] = head[np.argsort(-scores[u, head], kind="stable")[:top_n]]
    return out


def union_candidates(top, ranking, extra):
    """``top`` [U, N] followed by the first ``extra`` items of each ``ranking`` row [U, >= N +
    extra] (best first) that are not in ``top``: int64 [U, N + extra]."""
    if extra == 0:
        return top
    if ranking.shape[1] < top.shape[1] + extra:
        raise ValueError(f"ranking has {ranking.shape[1]} items per row; {top.shape[1]} + "
                         f"{extra} are needed")
    head = ranking[:, :top.shape[1] + extra]
    fresh = ~(head[:, :, None] == top[:, None, :]).any(axis=2)
    # Stable: the fresh items keep their ranking order; at least `extra` are fresh per row.
    order = np.argsort(~fresh, axis=1, kind="stable")[:, :extra]
    return np.concatenate([top, np.take_along_axis(head, order, axis=1)], axis=1)


@dataclasses.dataclass
class Candidates:
    """A candidate stage's answer for a batch of users (U users, C candidates each)."""

    items: np.ndarray      # int64 [U, C]: catalog rows, in union order
    origin: np.ndarray     # int64 [U, C]: index of the source that added each candidate
    valid: np.ndarray      # bool [U, C]: False for an excluded item (a source ran out)
    scores: np.ndarray     # float64 [U, n_items]: the first source's scores of every item
    features: dict         # {feature name: float32 [U, C]}


class CandidateStage:
    """``quotas``: (source, count) pairs, the first source's count >= 1 (module docstring);
    ``brands``: ``context_features.brand_codes`` of every item (None: no brand features);
    ``exclude``: one of ``EXCLUDE_RULES``; ``allowed``: bool [n_items] or None (all)."""

    def __init__(self, quotas, brands=None, exclude="none", allowed=None):
        self.sources = [source for source, _ in quotas]
        self.counts = [int(count) for _, count in quotas]
        if not self.sources:
            raise ValueError("the candidate stage needs at least one source")
        for source, count in zip(self.sources, self.counts):
            if count < 0:
                raise ValueError(f"{source.name}: the number of candidates must be >= 0, got "
                                 f"{count}")
        if self.counts[0] < 1:
            raise ValueError(f"{self.sources[0].name}: the first source's number of "
                             f"candidates must be >= 1, got {self.counts[0]}")
        if exclude not in EXCLUDE_RULES:
            raise ValueError(f"exclude must be one of {EXCLUDE_RULES}, got {exclude!r}")
        self.brands = None if brands is None else np.asarray(brands)
        self.exclude = exclude
        self.allowed = None if allowed is None else np.asarray(allowed, bool)

    @property
    def size(self):
        """Candidates per user: the sum of the counts."""
        return sum(self.counts)

    def blocked(self, histories, n_items, purchased=None):
        """bool [U, n_items] of the items the rules keep out, or None when none are."""
        if self.exclude == "purchased" and purchased is None:
            raise ValueError('exclude="purchased" needs the purchased items of each user')
        per_user = {"none": None, "history": histories, "purchased": purchased}[self.exclude]
        if per_user is None and self.allowed is None:
            return None
        blocked = np.zeros((len(histories), n_items), bool)
        if self.allowed is not None:
            if len(self.allowed) != n_items:
                raise ValueError(f"allowed has {len(self.allowed)} items, the sources score "
                                 f"{n_items}")
            blocked |= ~self.allowed[None, :]
        for u, items in enumerate(() if per_user is None else per_user):
            blocked[u, np.asarray(items, np.int64)] = True
        return blocked

    def __call__(self, histories, purchased=None):
        """The ``Candidates`` of each history (catalog rows, oldest first); ``purchased``:
        per user, the items the "purchased" rule excludes."""
        scores = [np.asarray(source.scores(histories), np.float64) for source in self.sources]
        blocked = self.blocked(histories, scores[0].shape[1], purchased)
        select = (lambda s: s) if blocked is None else (lambda s: np.where(blocked, -np.inf, s))
        top = top_candidates(select(scores[0]), self.counts[0])
        origin = [np.zeros(top.shape, np.int64)]
        for index, (ranking, count) in enumerate(zip(scores[1:], self.counts[1:]), 1):
            if count:
                top = union_candidates(top, top_candidates(select(ranking),
                                                           top.shape[1] + count), count)
                origin.append(np.full((len(top), count), index, np.int64))
        # The first source's feature, the user-candidate statistics, the further sources'.
        picked = [source.feature(np.take_along_axis(ranking, top, axis=1))
                  for source, ranking in zip(self.sources, scores)]
        features = {self.sources[0].name: picked[0]}
        if self.brands is not None:
            features.update(context_features.brand_features(histories, top, self.brands))
        features.update((source.name, p) for source, p in zip(self.sources[1:], picked[1:]))
        valid = (np.ones(top.shape, bool) if blocked is None
                 else ~np.take_along_axis(blocked, top, axis=1))
        return Candidates(items=top, origin=np.concatenate(origin, axis=1), valid=valid,
                          scores=scores[0],
                          features={k: np.asarray(v, np.float32) for k, v in features.items()})
