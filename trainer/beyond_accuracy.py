"""Beyond-accuracy metrics of recommendation lists: the one implementation used by the
trainer's offline eval (trainer/retrieval_eval.py), the Beauty benchmark (benchmarks/
protocol.py) and the product's answers on the sample shop (benchmarks/beyond_accuracy.py).

A run of lists is an int array ``[U, K]`` of catalog row indices (0 .. n_items - 1), one
list per user, best first; ``-1`` pads a list shorter than K. What the metrics need to know
about the catalog is an ``ItemFacts``. Measured (``measure``):

- ``coverage``: distinct recommended items / catalog items.
- ``diversity``: intra-list diversity, the mean pairwise cosine distance (1 - cos) of the
  items' text embeddings within a list, averaged over lists with two or more items.
- ``category_entropy``: Shannon entropy (bits) of the category labels within a list,
  averaged over lists (items without a category are left out of their list's count).
- ``novelty``: mean self-information ``-log2 p(i)`` over every recommended slot, with
  ``p(i) = min(1, (c(i) + 1) / (n_users + 1))``, ``c`` the train interaction counts (add-one
  smoothing keeps never-seen items finite).
- ``top1pct_share``: share of recommended slots held by the 1 % most popular items (by
  ``c``, ties by item index; at least one item): popularity bias.
- ``exposure_gini``: Gini coefficient of how often each catalog item is recommended
  (0 = every item equally often, 1 = one item takes every slot).
- ``brand_exposure_gini``: Gini over brands of exposure per catalog item of the brand
  (a brand with many items is not favoured just for its size); ``brands_exposed``: share
  of brands recommended at least once. Items without a brand are left out.
- ``new_item_exposure_ratio``: share of slots held by new items / share of new items in the
  catalog (1 = exposure in proportion, 0 = never shown); ``new_item_share``: that catalog
  share. What "new" is comes with the facts (``is_new``; see ``new_items``).

The formulas are short and have to fit our list/catalog layout; the Python packages that
bundle them (e.g. recmetrics) are unmaintained or pull a recommender framework with them,
so only the entropy comes from scipy. docs/DESIGN.md, "Beyond accuracy".
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
from scipy import stats

LIST_K = 10                         # the list length the trainer and benchmarks measure
NEW_ITEM_MAX_INTERACTIONS = 2       # default for ``new_items``: at most this many in train


@dataclasses.dataclass
class ItemFacts:
    """Per catalog row: train interaction counts (``popularity``, float [n]), the number of
    users they come from, and optional labels: ``categories`` / ``brands`` (int [n], -1 =
    none), ``embeddings`` (float [n, d], e.g. MiniLM text), ``is_new`` (bool [n])."""

    popularity: np.ndarray
    n_users: int
    categories: Optional[np.ndarray] = None
    brands: Optional[np.ndarray] = None
    embeddings: Optional[np.ndarray] = None
    is_new: Optional[np.ndarray] = None

    def __post_init__(self):
        self.popularity = np.asarray(self.popularity, np.float64)
        if self.popularity.ndim != 1 or np.any(self.popularity < 0):
            raise ValueError("popularity must be non-negative counts, one per item")
        if self.n_users < 1:
            raise ValueError(f"n_users must be >= 1, got {self.n_users}")
        n = len(self.popularity)
        for name in ("categories", "brands", "is_new"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (n,):
                raise ValueError(f"{name} must have one entry per item ({n}), got shape "
                                 f"{np.shape(value)}")
        if self.embeddings is not None:
            emb = np.asarray(self.embeddings, np.float32)
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValueError(f"embeddings must be [{n}, d], got shape {emb.shape}")
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            self.embeddings = emb / np.where(norms > 0, norms, 1.0)

    @property
    def n_items(self):
        return len(self.popularity)


def labels(values: Sequence[str]) -> np.ndarray:
    """String labels -> int codes (first-seen order); "" or None -> -1."""
    codes, out = {}, np.full(len(values), -1, np.int64)
    for i, value in enumerate(values):
        if value:
            out[i] = codes.setdefault(value, len(codes))
    return out


def category_level(paths: Sequence[Sequence[str]]) -> list:
    """Each item's category at the first level of the paths where the catalog's items
    differ (e.g. "Skin Care" rather than the "Beauty" every Beauty item starts with); ""
    for an item whose path is shorter."""
    depth = max((len(p) for p in paths), default=0)
    for level in range(depth):
        values = {p[level] for p in paths if len(p) > level}
        if len(values) > 1 or level == depth - 1:
            return [p[level] if len(p) > level else "" for p in paths]
    return ["" for _ in paths]


def new_items(popularity, max_interactions=NEW_ITEM_MAX_INTERACTIONS) -> np.ndarray:
    """New items: those with at most ``max_interactions`` train interactions (the ones a
    model has seen least: newly listed, or not yet discovered)."""
    return np.asarray(popularity) <= max_interactions


def top_lists(scores, k, exclude=None) -> np.ndarray:
    """The ``k`` best items of each row of ``scores`` [U, n] (ties by item index, lower
    first, as trainer/metrics.py ranks), ``exclude``: per row, item indices left out
    (negative entries ignored). Rows with fewer than k items left are padded with -1."""
    scores = np.array(scores, np.float64, copy=True)
    if exclude is not None:
        for row, items in enumerate(exclude):
            items = np.asarray(items, np.int64)
            scores[row, items[items >= 0]] = -np.inf
    k_eff = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k_eff]
    order = np.where(np.isneginf(np.take_along_axis(scores, order, axis=1)), -1, order)
    if k_eff < k:
        order = np.pad(order, ((0, 0), (0, k - k_eff)), constant_values=-1)
    return order.astype(np.int64)


def gini(values) -> float:
    """Gini coefficient of non-negative values (0 = equal; -> 1 = concentrated)."""
    x = np.sort(np.asarray(values, np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return 0.0
    return float(np.sum((2 * np.arange(1, n + 1) - n - 1) * x) / (n * total))


def measure(lists, facts: ItemFacts) -> dict:
    """The metrics of the module docstring for ``lists`` [U, K] (-1 = padding). Metrics
    whose facts are missing (no embeddings, categories, brands or new-item mask) are
    None."""
    lists = np.asarray(lists, np.int64)
    if lists.ndim != 2:
        raise ValueError(f"lists must be [users, k], got shape {lists.shape}")
    if np.any(lists >= facts.n_items):
        raise ValueError(f"item index outside 0..{facts.n_items - 1} in lists")
    valid = lists >= 0
    slots = lists[valid]
    exposure = np.bincount(slots, minlength=facts.n_items).astype(np.float64)
    out = {"lists": int(len(lists)), "k": int(lists.shape[1]) if lists.size else 0,
           "slots": int(slots.size)}
    out["coverage"] = float((exposure > 0).mean())
    p = np.minimum(1.0, (facts.popularity + 1.0) / (facts.n_users + 1.0))
    out["novelty"] = float(-np.log2(p[slots]).mean()) if slots.size else 0.0
    top_n = max(1, int(round(0.01 * facts.n_items)))
    top = np.argsort(-facts.popularity, kind="stable")[:top_n]
    out["top1pct_share"] = float(exposure[top].sum() / slots.size) if slots.size else 0.0
    out["exposure_gini"] = gini(exposure)
    out["diversity"] = (_diversity(lists, facts.embeddings)
                        if facts.embeddings is not None else None)
    out["category_entropy"] = (_entropy(lists, facts.categories)
                               if facts.categories is not None else None)
    out["brand_exposure_gini"], out["brands_exposed"] = (
        _brand_exposure(exposure, facts.brands) if facts.brands is not None else (None, None))
    if facts.is_new is not None and facts.is_new.any() and slots.size:
        new_share = float(np.mean(facts.is_new))
        out["new_item_share"] = new_share
        out["new_item_exposure_ratio"] = float(exposure[facts.is_new].sum() / slots.size
                                               / new_share)
    else:
        out["new_item_share"] = (float(np.mean(facts.is_new))
                                 if facts.is_new is not None else None)
        out["new_item_exposure_ratio"] = None
    return out


def _diversity(lists, embeddings, batch=4096):
    """Mean over lists (>= 2 items) of the mean pairwise cosine distance."""
    total, counted = 0.0, 0
    for start in range(0, len(lists), batch):
        rows = lists[start:start + batch]
        valid = rows >= 0
        emb = embeddings[np.where(valid, rows, 0)] * valid[..., None]
        sims = np.einsum("ukd,ujd->ukj", emb, emb)
        n = valid.sum(axis=1)
        pairs = n * (n - 1)
        # Sum of off-diagonal similarities of valid pairs: padding rows are zero vectors.
        off = sims.sum(axis=(1, 2)) - np.einsum("ukk->u", sims)
        keep = pairs > 0
        total += float(np.sum(1.0 - off[keep] / pairs[keep]))
        counted += int(keep.sum())
    return total / counted if counted else 0.0


def _entropy(lists, categories):
    values = []
    for row in lists:
        cats = categories[row[row >= 0]]
        cats = cats[cats >= 0]
        if cats.size:
            values.append(stats.entropy(np.unique(cats, return_counts=True)[1], base=2))
    return float(np.mean(values)) if values else 0.0


def _brand_exposure(exposure, brands):
    branded = brands >= 0
    if not branded.any():
        return None, None
    n_brands = int(brands[branded].max()) + 1
    items = np.bincount(brands[branded], minlength=n_brands).astype(np.float64)
    shown = np.bincount(brands[branded], weights=exposure[branded], minlength=n_brands)
    has_items = items > 0
    per_item = shown[has_items] / items[has_items]
    return gini(per_item), float((shown[has_items] > 0).mean())
