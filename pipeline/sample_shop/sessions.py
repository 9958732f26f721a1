"""Sessions of the sample shop: who shops when, in which category, and what they are shown.

A session belongs to one user, starts at a time drawn with daily and weekly rhythm, and stays in
one leaf category drawn from the user's (drifting) preferences; some sessions continue the
category of the user's previous session. A share of sessions opens with a search whose words
come from a product the user would like; its results favour items matching those words.
Impressions are drawn without replacement from the leaf, weighted by Zipf popularity times the
user's brand, attribute and price affinity (Gumbel top-k).
"""
from dataclasses import dataclass

import numpy as np

from pipeline.sample_shop.catalog import ATTR_VALUES, BRAND_NAMES, MAX_ATTRS, TYPE_NAMES, Catalog
from pipeline.sample_shop.config import SampleConfig, epoch
from pipeline.sample_shop.text import SUFFIX_ATTRIBUTES, query_of
from pipeline.sample_shop.users import Population

# Longest possible session (see the caps in sample_behaviour); sessions start early enough.
MAX_SESSION_SECONDS = 5 * 3600
HOUR_WEIGHTS = np.array([0.6, 0.4, 0.3, 0.2, 0.2, 0.3, 0.6, 1.0, 1.3, 1.4, 1.4, 1.5,
                         1.6, 1.5, 1.4, 1.4, 1.5, 1.7, 2.0, 2.3, 2.4, 2.1, 1.6, 1.0])
SEARCH_BOOST = 5.0         # score bonus of an item matching every query word
CHUNK_ROWS = 2048          # sessions scored at once (bounds memory at large scales)


@dataclass
class Sessions:
    """Per-session arrays, sorted by user then start time."""

    user: np.ndarray
    start: np.ndarray          # epoch seconds
    leaf: np.ndarray
    price: np.ndarray          # preferred standardised log price at that time
    is_search: np.ndarray
    n_impressions: np.ndarray


def _start_times(rng, users: np.ndarray, signup: np.ndarray, cfg: SampleConfig) -> np.ndarray:
    start, end = epoch(cfg.start), epoch(cfg.end)
    n_days = (end - start) // 86400 + 1
    weekday = (np.arange(n_days) + 3) % 7          # 2026-01-01 is a Thursday (Monday = 0)
    cum = np.cumsum(np.where(weekday >= 5, 1.2, 1.0))
    first_day = np.clip((signup[users] - start) // 86400, 0, n_days - 1)
    low = np.where(first_day > 0, cum[first_day - 1], 0.0)
    day = np.searchsorted(cum, low + rng.random(len(users)) * (cum[-1] - low), side="right")
    hour = rng.choice(24, len(users), p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    t = start + day * 86400 + hour * 3600 + rng.integers(0, 3600, len(users))
    t = np.maximum(t, signup[users])
    return np.where(t > end - MAX_SESSION_SECONDS, t - MAX_SESSION_SECONDS, t)


def draw_sessions(rng: np.random.Generator, pop: Population, n_sessions: int,
                  cfg: SampleConfig) -> Sessions:
    """Who, when, which category, search or not, how many impressions."""
    user = rng.choice(len(pop.activity), n_sessions, p=pop.activity / pop.activity.sum())
    t0 = _start_times(rng, user, pop.signup, cfg)
    order = np.lexsort((t0, user))
    user, t0 = user[order], t0[order]
    frac = (t0 - epoch(cfg.start)) / (epoch(cfg.end) - epoch(cfg.start))
    late = (rng.random(n_sessions) < frac)[:, None]
    pref = np.where(late, pop.pref_end[user], pop.pref_start[user])
    cum = np.cumsum(pref, axis=1)
    u = rng.random(n_sessions) * cum[:, -1]
    drawn = np.minimum((cum <= u[:, None]).sum(axis=1), pref.shape[1] - 1)
    first = np.r_[True, user[1:] != user[:-1]]
    repeat = (rng.random(n_sessions) < cfg.repeat_leaf_rate) & ~first
    anchor = np.maximum.accumulate(np.where(repeat, 0, np.arange(n_sessions)))
    n_imp = np.minimum(2 + rng.poisson(cfg.mean_impressions - 2, n_sessions),
                       cfg.max_impressions)
    return Sessions(user=user, start=t0, leaf=drawn[anchor],
                    price=(1 - frac) * pop.price_start[user] + frac * pop.price_end[user],
                    is_search=rng.random(n_sessions) < cfg.search_fraction,
                    n_impressions=n_imp)


def _affinity(cat: Catalog, pop: Population, users: np.ndarray, items: np.ndarray,
              price: np.ndarray) -> np.ndarray:
    """(sessions, items) personal match: favourite brand, favourite attribute, price fit."""
    brand = pop.fav_brand[users[:, None], cat.brand[items][None, :]]
    attr = pop.fav_attr[users[:, None, None], cat.attrs[items][None, :, :]].any(axis=2)
    price_fit = (cat.price_z[items][None, :] - price[:, None]) ** 2 / (2 * 0.8 ** 2)
    return 1.2 * brand + 0.8 * attr - price_fit


def _queries(rng, cat: Catalog, items: np.ndarray, score: np.ndarray, valid: np.ndarray):
    """Search text per row from a liked target item, and each item's share of query words."""
    n = len(score)
    keys = np.where(valid, score + rng.gumbel(size=score.shape), -np.inf)
    target = items[np.argmax(keys, axis=1)]
    t_attrs = cat.attrs[target]
    use_attr = (rng.random((n, MAX_ATTRS)) < 0.55) & (t_attrs >= 0)
    use_brand = rng.random(n) < 0.1
    match = (cat.ptype[items][None, :] == cat.ptype[target][:, None]).astype(float)
    for j in range(MAX_ATTRS):
        hit = (cat.attrs[items][None, :, :] == t_attrs[:, j][:, None, None]).any(axis=2)
        match += hit * use_attr[:, j][:, None]
    match += use_brand[:, None] * (cat.brand[items][None, :] == cat.brand[target][:, None])
    match /= (1 + use_attr.sum(axis=1) + use_brand)[:, None]
    texts = []
    for r in range(n):
        pairs = [ATTR_VALUES[v] for v, used in zip(t_attrs[r], use_attr[r]) if used]
        words = ([BRAND_NAMES[cat.brand[target[r]]]] if use_brand[r] else [])
        words += [v for k, v in pairs if k not in SUFFIX_ATTRIBUTES]
        words += [TYPE_NAMES[cat.ptype[target[r]]]]
        words += [v for k, v in pairs if k in SUFFIX_ATTRIBUTES]
        texts.append(query_of(words))
    return texts, match


def _chunk_impressions(rng, cat: Catalog, pop: Population, ses: Sessions, rows: np.ndarray,
                       items: np.ndarray) -> dict:
    users = ses.user[rows]
    aff = _affinity(cat, pop, users, items, ses.price[rows])
    score = cat.log_pop[items][None, :] + aff
    valid = cat.created[items][None, :] <= ses.start[rows][:, None]
    match = np.zeros_like(score)
    search_rows = np.flatnonzero(ses.is_search[rows])
    texts = []
    if len(search_rows):
        texts, match[search_rows] = _queries(rng, cat, items, score[search_rows],
                                             valid[search_rows])
    keys = np.where(valid, score + SEARCH_BOOST * match + rng.gumbel(size=score.shape), -np.inf)
    k = np.minimum(ses.n_impressions[rows], valid.sum(axis=1))
    width = min(max(int(k.max()), 1), keys.shape[1])
    top = np.argpartition(-keys, width - 1, axis=1)[:, :width]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1,
                                             kind="stable"), axis=1)
    r, p = np.nonzero(np.arange(top.shape[1])[None, :] < k[:, None])
    cols = top[r, p]
    shown = k[search_rows] > 0
    return {"session": rows[r], "item": items[cols], "position": p,
            "affinity": aff[r, cols], "match": match[r, cols],
            "search_session": rows[search_rows][shown],
            "query": [t for t, s in zip(texts, shown) if s]}


def draw_impressions(rng: np.random.Generator, cat: Catalog, pop: Population, ses: Sessions,
                     progress: bool = False) -> dict:
    """All impressions (rows grouped by session, in position order) and search queries."""
    from tqdm import tqdm

    live = ~cat.cold
    parts = []
    leaves = np.unique(ses.leaf)
    for leaf in tqdm(leaves, desc="sessions by category", unit="category",
                     disable=not progress):
        items = np.flatnonzero(live & (cat.leaf == leaf))
        rows = np.flatnonzero(ses.leaf == leaf)
        for lo in range(0, len(rows), CHUNK_ROWS):
            parts.append(_chunk_impressions(rng, cat, pop, ses, rows[lo:lo + CHUNK_ROWS],
                                            items))
    out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0] if key != "query"}
    out["query"] = [q for p in parts for q in p["query"]]
    order = np.lexsort((out["position"], out["session"]))
    for key in ("session", "item", "position", "affinity", "match"):
        out[key] = out[key][order]
    return out
