"""The sample shop's catalog: item table plus the numeric arrays behaviour is drawn from."""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.contract import spec
from pipeline.sample_shop.config import SampleConfig, epoch, iso_times
from pipeline.sample_shop.taxonomy import (ATTRIBUTES, BOOK_ADJECTIVES, BOOK_NOUNS, BRANDS,
                                      LEAVES)
from pipeline.sample_shop.text import description_of, title_of

TOPS = tuple(dict.fromkeys(spec.top_category(leaf.path) for leaf in LEAVES))
LEAF_TOP = np.array([TOPS.index(spec.top_category(leaf.path)) for leaf in LEAVES])
BRAND_NAMES = tuple(b for top in TOPS for b in BRANDS[top])
BRAND_TOP = np.array([TOPS.index(top) for top in TOPS for _ in BRANDS[top]])
# Attribute values get global ids; (attribute name, value) pairs are distinct values.
ATTR_VALUES = tuple((name, v) for name, (values, _) in ATTRIBUTES.items() for v in values)
_ATTR_ID = {pair: i for i, pair in enumerate(ATTR_VALUES)}
# Product types get global ids per leaf ("Backpack" in Camping differs from Backpack in Bags).
TYPE_NAMES = tuple(t for leaf in LEAVES for t in leaf.types)
_TYPE_BASE = np.cumsum([0] + [len(leaf.types) for leaf in LEAVES])
MAX_ATTRS = max(len(leaf.attrs) for leaf in LEAVES)


@dataclass
class Catalog:
    """Item table (contract columns) and aligned per-item arrays."""

    table: pd.DataFrame
    leaf: np.ndarray       # leaf category index into LEAVES
    brand: np.ndarray      # index into BRAND_NAMES
    ptype: np.ndarray      # index into TYPE_NAMES
    attrs: np.ndarray      # (items, MAX_ATTRS) indices into ATTR_VALUES, -1 = none
    price_z: np.ndarray    # log price standardised within the leaf
    log_pop: np.ndarray    # log of the Zipf popularity weight within the leaf
    created: np.ndarray    # epoch seconds
    cold: np.ndarray       # True: added at the very end, never interacted with
    leaf_pop: np.ndarray   # popularity weight of each leaf (sums to 1)


def _zipf(rng, n: int, exponent: float) -> np.ndarray:
    """Zipf weights 1/rank^exponent over n things in random rank order (sums to 1)."""
    w = 1.0 / np.arange(1, n + 1) ** exponent
    w = w[rng.permutation(n)]
    return w / w.sum()


def _leaf_sizes(rng, n_items: int) -> np.ndarray:
    w = rng.lognormal(0.0, 0.5, len(LEAVES))
    return np.maximum(3, np.round(n_items * w / w.sum())).astype(int)


def _created_times(rng, n: int, cfg: SampleConfig) -> tuple:
    """Creation times: most before the range, some inside it, a few cold ones at the end."""
    start, end = epoch(cfg.start), epoch(cfg.end)
    since = epoch(cfg.catalog_since)
    created = rng.integers(since, start, n)
    order = rng.permutation(n)
    n_cold = max(2, round(cfg.cold_fraction * n))
    n_new = round(cfg.new_item_fraction * n)
    cold_idx, new_idx = order[:n_cold], order[n_cold:n_cold + n_new]
    created[new_idx] = rng.integers(start, end - 10 * 86400, n_new)
    created[cold_idx] = rng.integers(end - int(cfg.cold_days * 86400), end - 3600, n_cold)
    cold = np.zeros(n, bool)
    cold[cold_idx] = True
    return created, cold


def _prices(rng, leaf: np.ndarray, brand: np.ndarray, cfg: SampleConfig) -> np.ndarray:
    median = np.array([lf.price for lf in LEAVES])[leaf]
    tier = np.exp(rng.normal(0.0, 0.25, len(BRAND_NAMES)))[brand]
    raw = median * tier * np.exp(rng.normal(0.0, cfg.price_sigma, len(leaf)))
    return np.maximum(np.round(raw) - 0.01, 0.99).round(2)


def _standardise_within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    frame = pd.DataFrame({"v": values, "g": groups})
    grouped = frame.groupby("g")["v"]
    std = grouped.transform("std").fillna(1.0).replace(0.0, 1.0)
    return ((frame["v"] - grouped.transform("mean")) / std).to_numpy()


def _draw_item_arrays(rng, n_items: int, cfg: SampleConfig) -> dict:
    sizes = _leaf_sizes(rng, n_items)
    leaf = np.repeat(np.arange(len(LEAVES)), sizes)
    n = len(leaf)
    brand_w = {t: _zipf(rng, len(BRANDS[top]), cfg.brand_zipf) for t, top in enumerate(TOPS)}
    brand_base = {t: int(np.flatnonzero(BRAND_TOP == t)[0]) for t in range(len(TOPS))}
    brand = np.empty(n, int)
    ptype = np.empty(n, int)
    attrs = np.full((n, MAX_ATTRS), -1)
    extra = np.full(n, -1)
    log_pop = np.empty(n)
    for li, lf in enumerate(LEAVES):
        rows = np.flatnonzero(leaf == li)
        top = LEAF_TOP[li]
        brand[rows] = brand_base[top] + rng.choice(len(brand_w[top]), len(rows), p=brand_w[top])
        ptype[rows] = _TYPE_BASE[li] + rng.integers(0, len(lf.types), len(rows))
        for j, name in enumerate(lf.attrs):
            values = ATTRIBUTES[name][0]
            skew = 1.0 / np.sqrt(np.arange(1, len(values) + 1))
            picks = rng.choice(len(values), len(rows), p=skew / skew.sum())
            attrs[rows, j] = [_ATTR_ID[(name, values[p])] for p in picks]
        if lf.extras:
            has = rng.random(len(rows)) < 0.6
            extra[rows] = np.where(has, rng.integers(0, len(lf.extras), len(rows)), -1)
        log_pop[rows] = np.log(_zipf(rng, len(rows), cfg.item_zipf))
    price = _prices(rng, leaf, brand, cfg)
    created, cold = _created_times(rng, n, cfg)
    return dict(leaf=leaf, brand=brand, ptype=ptype, attrs=attrs, extra=extra, price=price,
                log_pop=log_pop, created=created, cold=cold,
                in_stock=rng.random(n) < cfg.in_stock_rate,
                book_name=rng.integers(0, len(BOOK_ADJECTIVES) * len(BOOK_NOUNS), n),
                text_choices=rng.integers(0, 1000, (n, 4)))


def _texts(a: dict) -> tuple:
    titles, descriptions = [], []
    for i in range(len(a["leaf"])):
        lf = LEAVES[a["leaf"][i]]
        top = TOPS[LEAF_TOP[a["leaf"][i]]]
        brand = BRAND_NAMES[a["brand"][i]]
        ptype = TYPE_NAMES[a["ptype"][i]]
        values = {ATTR_VALUES[v][0]: ATTR_VALUES[v][1] for v in a["attrs"][i] if v >= 0}
        extra = lf.extras[a["extra"][i]] if a["extra"][i] >= 0 else ""
        name = ""
        if top == "Books":
            adj, noun = divmod(int(a["book_name"][i]), len(BOOK_NOUNS))
            name = f"The {BOOK_ADJECTIVES[adj]} {BOOK_NOUNS[noun]}"
        titles.append(title_of(brand, ptype, values, extra, name))
        descriptions.append(description_of(top, brand, ptype, values, extra, name,
                                           tuple(int(c) for c in a["text_choices"][i])))
    return titles, descriptions


def make_catalog(rng: np.random.Generator, n_items: int, cfg: SampleConfig) -> Catalog:
    """Draw about `n_items` items over all leaf categories (at least 3 per leaf)."""
    a = _draw_item_arrays(rng, n_items, cfg)
    leaf_pop = _zipf(rng, len(LEAVES), cfg.leaf_zipf)
    perm = rng.permutation(len(a["leaf"]))   # item ids carry no category order
    a = {k: v[perm] for k, v in a.items()}
    titles, descriptions = _texts(a)
    table = pd.DataFrame({
        "item_id": [f"i{k:06d}" for k in range(1, len(perm) + 1)],
        "title": titles,
        "description": descriptions,
        "brand": [BRAND_NAMES[b] for b in a["brand"]],
        "categories": [LEAVES[li].path for li in a["leaf"]],
        "price": a["price"],
        "in_stock": a["in_stock"],
        "created_at": iso_times(a["created"]),
    }, columns=list(spec.ITEM_COLUMNS))
    return Catalog(table=table, leaf=a["leaf"], brand=a["brand"], ptype=a["ptype"],
                   attrs=a["attrs"], price_z=_standardise_within(np.log(a["price"]), a["leaf"]),
                   log_pop=a["log_pop"], created=a["created"], cold=a["cold"],
                   leaf_pop=leaf_pop)
