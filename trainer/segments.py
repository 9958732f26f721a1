"""User segments: user vectors -> reduced -> k-means, k chosen by silhouette -> profiles.

Pure (numpy, pandas, scikit-learn, matplotlib): the pipeline's UserSegments component
(pipeline/components/user_segments.py) gives it the users' query-tower vectors and their
engagements of the train split; the benchmark (benchmarks/segments.py) and the tests call
it directly. docs/DESIGN.md, "User segments", has the decisions and the numbers.

- ``features``: each user's vector, L2-normalised, optionally next to the shares of the
  top categories of the items they engaged with (``category_weight`` > 0; the shares are
  L2-normalised too and scaled by the weight). Both are behaviour of the user; no attribute
  of the users table (age band, country) is used.
- ``segment``: PCA to ``pca_components`` dimensions, k-means (``n_init`` seeded restarts)
  for every k of ``k_range``; the k with the highest silhouette (on a seeded sample of at
  most ``silhouette_sample`` users) wins. Then every segment smaller than
  ``min_segment_size`` users is dissolved into the nearest remaining centroid, smallest
  first, so no segment describes fewer than that many people (docs/privacy.md). Fewer users
  than ``min_segment_size`` in all: no segments at all.
- ``profiles``: per segment aggregates only (size, top categories and brands with their
  shares, price band, activity, searches typed by at least ``min_query_users`` members,
  most engaged items): ``report`` holds no user id.
"""
from __future__ import annotations

import collections
import dataclasses
import re

import numpy as np
import pandas as pd

from pipeline.contract.spec import top_category

REPORT_VERSION = 1
PRICE_BANDS = ("low", "mid", "high")     # terciles of the engaged items' prices


@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    """Knobs of the segmentation (PipelineConfig.segments_* pass them through)."""

    k_min: int = 2
    k_max: int = 16
    min_segment_size: int = 20          # k-anonymity of the report: no smaller segment
    seed: int = 0
    pca_components: int = 16
    category_weight: float = 2.0        # 0 = the query-tower vectors alone
    silhouette_sample: int = 3000
    n_init: int = 4
    min_query_users: int = 5            # a search is named when this many members typed it
    top_n: int = 5                      # categories, brands, searches listed per segment
    popular_items: int = 50             # most engaged items kept per segment (the fallback)

    def validate(self) -> "SegmentConfig":
        problems = []
        if not 2 <= self.k_min <= self.k_max:
            problems.append(f"k range {self.k_min}..{self.k_max}: need 2 <= k_min <= k_max")
        if self.min_segment_size < 1:
            problems.append(f"min_segment_size={self.min_segment_size}: must be >= 1")
        if self.pca_components < 2:
            problems.append(f"pca_components={self.pca_components}: must be >= 2")
        if self.category_weight < 0:
            problems.append(f"category_weight={self.category_weight}: must be >= 0")
        if self.min_query_users < 2:
            problems.append(f"min_query_users={self.min_query_users}: must be >= 2 (a "
                            "search typed by one member names that member's search)")
        if problems:
            raise ValueError("invalid segment config: " + "; ".join(problems))
        return self


@dataclasses.dataclass
class Segmentation:
    """``labels[i]``: segment of user ``i`` (0 = largest), or -1 for all when there are
    no segments. ``coords``: 2-D PCA of the clustered space (for the map)."""

    labels: np.ndarray
    k_scores: dict            # k -> silhouette
    k_chosen: int | None
    dissolved: int            # segments dissolved for being smaller than min_segment_size
    coords: np.ndarray

    @property
    def count(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def category_shares(users: list, engagements: pd.DataFrame, tops: list | None = None):
    """(users, top categories) share of each user's engagements per top category, and the
    top category names. ``engagements``: user_id, category (one row per engagement)."""
    tops = tops or sorted({top_category(c) for c in engagements["category"]} - {""})
    index = {u: i for i, u in enumerate(users)}
    column = {t: j for j, t in enumerate(tops)}
    shares = np.zeros((len(users), len(tops)))
    for user, category in zip(engagements["user_id"], engagements["category"]):
        i, j = index.get(user), column.get(top_category(category))
        if i is not None and j is not None:
            shares[i, j] += 1
    total = shares.sum(axis=1, keepdims=True)
    return shares / np.where(total > 0, total, 1.0), tops


def features(vectors: np.ndarray, shares: np.ndarray | None, category_weight: float):
    """The clustered space before PCA: unit vectors, next to weighted unit shares."""
    parts = [_unit(vectors)]
    if shares is not None and category_weight > 0:
        parts.append(category_weight * _unit(shares))
    return np.concatenate(parts, axis=1)


def _dissolve_small(x: np.ndarray, labels: np.ndarray, min_size: int) -> tuple:
    """Members of segments below ``min_size`` move to the nearest remaining centroid,
    smallest segment first; labels renumbered by size (0 = largest). Returns (labels,
    how many segments were dissolved)."""
    labels = labels.copy()
    dissolved = 0
    while True:
        ids, sizes = np.unique(labels, return_counts=True)
        if len(ids) <= 1 or sizes.min() >= min_size:
            break
        small = ids[np.argmin(sizes)]
        keep = ids[ids != small]
        centroids = np.stack([x[labels == c].mean(axis=0) for c in keep])
        members = labels == small
        distances = ((x[members, None, :] - centroids[None]) ** 2).sum(axis=2)
        labels[members] = keep[distances.argmin(axis=1)]
        dissolved += 1
    ids, sizes = np.unique(labels, return_counts=True)
    order = ids[np.argsort(-sizes, kind="stable")]
    renumber = {old: new for new, old in enumerate(order)}
    return np.array([renumber[v] for v in labels], int), dissolved


def segment(x: np.ndarray, cfg: SegmentConfig) -> Segmentation:
    """Cluster the rows of ``x`` (module docstring)."""
    # pylint: disable=import-outside-toplevel
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    cfg.validate()
    x = np.asarray(x, np.float64)
    n = len(x)
    if n < max(cfg.min_segment_size, 3):
        return Segmentation(np.full(n, -1), {}, None, 0, np.zeros((n, 2)))
    components = min(cfg.pca_components, x.shape[1], n - 1)
    reduced = PCA(n_components=components, random_state=cfg.seed).fit_transform(x)
    scores, fits = {}, {}
    sample = min(n, cfg.silhouette_sample)
    for k in range(cfg.k_min, min(cfg.k_max, n - 1) + 1):
        fit = KMeans(n_clusters=k, n_init=cfg.n_init, random_state=cfg.seed).fit(reduced)
        if len(np.unique(fit.labels_)) < 2:
            continue
        scores[k] = float(silhouette_score(reduced, fit.labels_, sample_size=sample,
                                           random_state=cfg.seed))
        fits[k] = fit.labels_
    if not scores:
        return Segmentation(np.zeros(n, int), {}, 1, 0, reduced[:, :2])
    k_chosen = max(scores, key=lambda k: (scores[k], -k))
    labels, dissolved = _dissolve_small(reduced, fits[k_chosen], cfg.min_segment_size)
    return Segmentation(labels, scores, k_chosen, dissolved, reduced[:, :2])


def _shares(counter: collections.Counter, total: int, top_n: int) -> list:
    return [{"name": name, "share": round(count / total, 3)}
            for name, count in counter.most_common(top_n) if name]


def _price_band(price: float, edges: np.ndarray) -> str:
    return PRICE_BANDS[int(np.searchsorted(edges, price, side="right"))]


def profiles(users: list, labels: np.ndarray, engagements: pd.DataFrame,
             searches: pd.DataFrame, cfg: SegmentConfig) -> list:
    """Aggregates per segment (module docstring). ``engagements``: user_id, item_id,
    category, brand, price, timestamp (one row per engaged unit); ``searches``: user_id,
    query (one row per search). Users outside ``users`` are ignored."""
    segment_of = dict(zip(users, labels.tolist()))
    eng = engagements[engagements["user_id"].map(segment_of).fillna(-1).to_numpy() >= 0]
    eng = eng.assign(segment=eng["user_id"].map(segment_of).astype(int))
    prices = eng["price"].to_numpy(np.float64)
    edges = np.quantile(prices, [1 / 3, 2 / 3]) if len(prices) else np.zeros(2)
    queries = searches.assign(segment=searches["user_id"].map(segment_of)).dropna(
        subset=["segment"])
    out = []
    for s in range(int(labels.max()) + 1 if len(labels) else 0):
        rows = eng[eng["segment"] == s]
        size = int((labels == s).sum())
        tops = collections.Counter(top_category(c) for c in rows["category"])
        leaves = collections.Counter(rows["category"])
        brands = collections.Counter(rows["brand"])
        per_user = rows.groupby("user_id").size()
        days = rows.groupby("user_id")["timestamp"].agg(lambda t: len(set(t // 86400)))
        typed = queries[queries["segment"] == s].assign(
            query=lambda f: f["query"].map(normalise_query))
        typed = typed[typed["query"] != ""].groupby("query")["user_id"].nunique()
        typed = typed[typed >= cfg.min_query_users].sort_values(ascending=False, kind="stable")
        items = rows.groupby("item_id")["user_id"].nunique().sort_values(
            ascending=False, kind="stable")
        median_price = float(np.median(rows["price"])) if len(rows) else None
        # the label names the categories holding at least a fifth of the engagements
        top_names = [t["name"] for t in _shares(tops, max(len(rows), 1), cfg.top_n)
                     if t["share"] >= 0.2]
        profile = {
            "segment": s, "size": size, "share_of_users": round(size / len(labels), 3),
            "top_categories": _shares(tops, max(len(rows), 1), cfg.top_n),
            "leaf_categories": _shares(leaves, max(len(rows), 1), cfg.top_n),
            "brands": _shares(brands, max(len(rows), 1), cfg.top_n),
            "price": {"median": None if median_price is None else round(median_price, 2),
                      "band": None if median_price is None else _price_band(median_price,
                                                                             edges)},
            "activity": {
                "engagements_per_user_median": float(np.median(per_user)) if size else 0.0,
                "engagements_per_user_mean": round(len(rows) / size, 2),
                "active_days_per_user_median": float(np.median(days)) if len(days) else 0.0},
            "typical_searches": [{"query": q, "users": int(n)}
                                 for q, n in typed.head(cfg.top_n).items()],
            "popular_items": [str(i) for i in items.head(cfg.popular_items).index],
        }
        price_band = profile["price"]["band"]
        profile["label"] = " · ".join(
            [*top_names[:2], *(b["name"] for b in profile["brands"][:1]),
             *([f"{price_band} price"] if price_band else [])]) or f"segment {s}"
        out.append(profile)
    return out


def normalise_query(text) -> str:
    """Lower case, single spaces: the form searches are counted in."""
    return re.sub(r"\s+", " ", str(text or "")).strip().lower()


def report(seg: Segmentation, segment_profiles: list, cfg: SegmentConfig, **about) -> dict:
    """The JSON report: the settings, how k was chosen, and the profiles (no user ids)."""
    return {
        "version": REPORT_VERSION, "users": int(len(seg.labels)), "segments": seg.count,
        "k_chosen": seg.k_chosen, "criterion": "silhouette (highest; ties: smaller k)",
        "silhouette_by_k": {str(k): round(v, 4) for k, v in sorted(seg.k_scores.items())},
        "dissolved_below_min_size": seg.dissolved,
        "config": dataclasses.asdict(cfg), **about,
        "profiles": segment_profiles,
    }


def plot(seg: Segmentation, segment_profiles: list, path: str, title: str = "") -> None:
    """PNG: left, the 2-D map (per segment its centroid in the first two principal axes,
    an ellipse of one standard deviation and a marker sized by the segment's users: no
    user's own point is drawn); right, each segment's top-category shares."""
    # pylint: disable=import-outside-toplevel
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6.5),
                                      gridspec_kw={"width_ratios": [1, 1.4]})
    colours = plt.get_cmap("tab20")
    for s in range(seg.count):
        points = seg.coords[seg.labels == s]
        centre, spread = points.mean(axis=0), points.std(axis=0)
        colour = colours(s % 20)
        left.add_patch(Ellipse(centre, 2 * spread[0], 2 * spread[1], color=colour, alpha=0.25))
        left.scatter(*centre, s=20 + 3 * len(points), color=colour, edgecolor="black")
        left.annotate(str(s), centre, fontsize=8, ha="center", va="center")
    left.autoscale_view()
    left.set_xlabel("principal axis 1")
    left.set_ylabel("principal axis 2")
    left.set_title("segments (centroid, 1 s.d. ellipse, marker ~ users)")
    tops = sorted({t["name"] for p in segment_profiles for t in p["top_categories"]})
    grid = np.zeros((len(segment_profiles), len(tops)))
    for i, p in enumerate(segment_profiles):
        for t in p["top_categories"]:
            grid[i, tops.index(t["name"])] = t["share"]
    image = right.imshow(grid, aspect="auto", cmap="Blues", vmin=0, vmax=max(grid.max(), 1e-9))
    right.set_xticks(range(len(tops)), tops, rotation=60, ha="right", fontsize=8)
    right.set_yticks(range(len(segment_profiles)),
                     [f"{p['segment']}: {p['label']} ({p['size']} users)"
                      for p in segment_profiles], fontsize=8)
    right.set_title("share of each segment's engagements per top category")
    fig.colorbar(image, ax=right, fraction=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
