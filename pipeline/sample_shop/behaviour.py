"""Events of the sample shop: the funnel from impressions to ratings, with timestamps.

Every impression is a `view`. Clicks depend on the user's affinity to the item and, after a
search, on how many query words the item matches; carts and purchases follow clicks with
affinity-driven odds; some purchases are rated days later, higher when the item fits the user.
Within a session events are ordered search -> view -> click -> add_to_cart ... -> purchase
(checkout at the end); each rating is a one-event session of its own.
"""
import numpy as np
import pandas as pd

from pipeline.contract import spec
from pipeline.sample_shop.catalog import Catalog
from pipeline.sample_shop.config import SampleConfig, epoch, iso_times
from pipeline.sample_shop.sessions import Sessions, draw_impressions, draw_sessions
from pipeline.sample_shop.users import Population

VIEW, CLICK, CART, PURCHASE, RATING, SEARCH = (spec.EVENT_TYPES.index(t) for t in (
    spec.VIEW, spec.CLICK, spec.ADD_TO_CART, spec.PURCHASE, spec.RATING, spec.SEARCH))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _capped_exp(rng, mean: float, cap: float, n: int) -> np.ndarray:
    return np.minimum(rng.exponential(mean, n), cap).astype(np.int64)


def _funnel(rng, imp: dict, cfg: SampleConfig) -> dict:
    """Outcome flags, quantities and ratings for every impression."""
    n = len(imp["item"])
    aff, match = imp["affinity"], imp["match"]
    clicked = rng.random(n) < _sigmoid(cfg.click_bias + 1.1 * aff + 2.5 * match
                                       - 0.05 * imp["position"])
    carted = clicked & (rng.random(n) < _sigmoid(-1.6 + 0.7 * aff + 0.8 * match))
    bought = carted & (rng.random(n) < _sigmoid(0.0 + 0.6 * aff))
    rated = bought & (rng.random(n) < cfg.rating_rate)
    rating = np.clip(np.round(3.4 + 0.9 * aff + rng.normal(0.0, 0.7, n)), 1, 5).astype(int)
    quantity = 1 + (rng.random(n) < 0.15) * (1 + rng.poisson(0.6, n))
    return {"clicked": clicked, "carted": carted, "bought": bought, "rated": rated,
            "rating": rating, "quantity": quantity}


def _times(rng, ses: Sessions, imp: dict, out: dict) -> dict:
    """Second-resolution times; caps keep a session under MAX_SESSION_SECONDS."""
    n, session = len(imp["item"]), imp["session"]
    base = ses.start + ses.is_search * (3 + _capped_exp(rng, 8, 60, len(ses.start)))
    click_delay = 1 + _capped_exp(rng, 6, 60, n)
    cart_delay = 2 + _capped_exp(rng, 20, 120, n)
    dwell = out["clicked"] * (click_delay + out["carted"] * cart_delay
                              + 3 + _capped_exp(rng, 45, 300, n))
    step = 2 + _capped_exp(rng, 15, 120, n) + np.r_[0, dwell[:-1]] * (imp["position"] > 0)
    csum = np.cumsum(step)
    first = np.flatnonzero(imp["position"] == 0)
    offset = np.repeat(csum[first] - step[first], np.diff(np.r_[first, n]))
    view = base[session] + csum - offset
    click = view + click_delay
    cart = click + cart_delay
    last = np.zeros(len(ses.start), np.int64)
    np.maximum.at(last, session, np.where(out["carted"], cart, view))
    checkout = last + 20 + _capped_exp(rng, 90, 1800, len(ses.start))
    return {"search": ses.start, "view": view, "click": click, "cart": cart,
            "purchase": checkout[session], "rating": checkout[session]
            + rng.integers(86400, 21 * 86400, n)}


def _event_arrays(ses: Sessions, imp: dict, out: dict, t: dict, end: int) -> dict:
    """Flat arrays of all events: session, item (-1 = none), type, value (0 = none), time."""
    s, item = imp["session"], imp["item"]
    rated = out["rated"] & (t["rating"] <= end)
    searched = imp["search_session"]
    parts = [
        (searched, np.full(len(searched), -1), SEARCH, 0, ses.start[searched], 0),
        (s, item, VIEW, 0, t["view"], 1 + 4 * imp["position"]),
        (s[out["clicked"]], item[out["clicked"]], CLICK, 0, t["click"][out["clicked"]],
         2 + 4 * imp["position"][out["clicked"]]),
        (s[out["carted"]], item[out["carted"]], CART, out["quantity"][out["carted"]],
         t["cart"][out["carted"]], 3 + 4 * imp["position"][out["carted"]]),
        (s[out["bought"]], item[out["bought"]], PURCHASE, out["quantity"][out["bought"]],
         t["purchase"][out["bought"]], 1000 + imp["position"][out["bought"]]),
        (s[rated], item[rated], RATING, out["rating"][rated], t["rating"][rated], 0),
    ]
    cols = ("session", "item", "type", "value", "time", "seq")
    ev = {c: np.concatenate([np.broadcast_to(p[i], len(p[0])) for p in parts])
          for i, c in enumerate(cols)}
    # Ratings happen later, each in a session of its own: give them new session numbers.
    is_rating = ev["type"] == RATING
    ev["session"] = np.where(is_rating, len(ses.start) + np.cumsum(is_rating) - 1,
                             ev["session"])
    ev["user"] = np.r_[ses.user, ses.user[s[rated]]][ev["session"]]
    return ev


def make_events(rng: np.random.Generator, cat: Catalog, pop: Population, n_sessions: int,
                cfg: SampleConfig, progress: bool = False) -> tuple:
    """Event table (contract columns, time order) and the number of sessions in it."""
    ses = draw_sessions(rng, pop, n_sessions, cfg)
    imp = draw_impressions(rng, cat, pop, ses, progress)
    out = _funnel(rng, imp, cfg)
    ev = _event_arrays(ses, imp, out, _times(rng, ses, imp, out), epoch(cfg.end))
    # Session ids in order of each session's first event; events in time order.
    first_time = pd.Series(ev["time"]).groupby(ev["session"]).min()
    by_time = first_time.index.to_numpy()[np.lexsort((first_time.index, first_time))]
    rank = np.full(int(ev["session"].max()) + 1, -1, np.int64)
    rank[by_time] = np.arange(1, len(by_time) + 1)
    ev["origin"] = ev["session"]
    ev["session"] = rank[ev["session"]]
    order = np.lexsort((ev["seq"], ev["session"], ev["time"]))
    ev = {k: v[order] for k, v in ev.items()}
    item_ids = np.r_[cat.table["item_id"].to_numpy(dtype=object), [""]]
    queries = np.full(len(ses.start), "", dtype=object)
    queries[imp["search_session"]] = imp["query"]
    is_search = ev["type"] == SEARCH
    query = np.full(len(order), "", dtype=object)
    query[is_search] = queries[ev["origin"][is_search]]
    value = pd.array(ev["value"], dtype="Int64")
    value[ev["value"] == 0] = pd.NA
    table = pd.DataFrame({
        "user_id": pop.table["user_id"].to_numpy(dtype=object)[ev["user"]],
        "item_id": item_ids[ev["item"]],
        "event_type": np.array(spec.EVENT_TYPES, dtype=object)[ev["type"]],
        "value": value,
        "query": query,
        "session_id": np.array([f"s{k:07d}" for k in range(len(by_time) + 1)],
                               dtype=object)[ev["session"]],
        "timestamp": iso_times(ev["time"]),
    }, columns=list(spec.EVENT_COLUMNS))
    return table, len(first_time)

