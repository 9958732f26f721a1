"""Training examples from a shop's canonical tables: the rules, free of Beam and TFX.

The Beam pipeline (pipeline/components/example_beam.py) applies these functions per user and per item;
they are pure so every rule is tested on hand-built rows.

Rules
-----
Events are ordered by (timestamp, seq); seq is the row's position in the canonical events
table, which load_shop sorts stably by timestamp, so ties keep the export's order.

Sessions
    An event with a session_id belongs to that session (per user). A user's events without
    one are split into sessions at gaps longer than ``session_gap_minutes`` between
    consecutive session-less events (a gap of exactly the limit stays in the session).
Impression unit
    One unit per (user, session, item) over the user's non-search events (view, click,
    add_to_cart, purchase; rating: see below). Its timestamp is that of its first event.
Labels
    clicked = any click, add_to_cart or purchase of the item in the unit; added_to_cart = any
    add_to_cart or purchase; purchased = any purchase.
Ratings
    A rating attaches to the user's latest unit of that item whose timestamp is at or before
    the rating's (any session): rating = the value, has_rating = 1; the unit's other labels do
    not change. When several ratings attach to one unit the latest wins. A rating with no
    such unit makes (or joins) the unit (rating's session, item) with clicked = 1, taking the
    rating's time if that is earlier. Ratings without a value (NaN) are ignored. Ratings
    often come days after a purchase, so the latest units (the eval split) have fewer of them
    than earlier ones: compare has_rating rates only between equally old units.
History
    The user's engaged items (click, add_to_cart, purchase, rating events) with timestamp
    strictly before the unit's timestamp (same-second events are excluded), distinct, most
    recent engagement first, truncated or padded with "" to ``history_length`` entries
    (PipelineConfig.history_length, default features.HISTORY_LENGTH = 10); num_history is
    the number of real entries. The unit's own item appears when the user
    engaged with it earlier (repeat interest is signal).
Query
    The text of the latest non-empty search event of the same session that comes before the
    unit's first event in (timestamp, seq) order; "" when there is none.
Item features
    title, description, brand, category (the " > " path), top_category (its first level, ""
    if none), price (NaN read as 0.0), in_stock (0/1) come from the items table (every
    non-search event must refer to an item of the table; the data contract ensures it).
Time split
    cutoff = the exact (1 - eval_fraction) quantile of unit timestamps: the value at index
    floor((1 - eval_fraction) * N) of the sorted timestamps. Units at or after the cutoff go
    to "eval", earlier ones to "train" (ties at the cutoff all go to eval). With
    rank_fraction > 0 a "rank" split sits between them: units at or after the
    (1 - eval_fraction - rank_fraction) quantile and before the eval cutoff. Retrieval and
    its item-to-item tables are fitted on "train" only, so the candidate stage's scores on
    the "rank" window are as honest as at serving time: the ranking model learns from
    them (two-stage rows, pipeline/components/candidate_examples.py). Fixed split times
    (``eval_from``, ``rank_from``: ISO-8601 date-times) replace both quantiles when given:
    units at or after ``eval_from`` are "eval", those at or after ``rank_from`` "rank".
    The Beauty benchmark's config uses them to reproduce leave-one-out
    (benchmarks/configs/beauty.json).
Catalog split
    One example per item of the items table (with or without events): user side empty
    (user_id "", history all "", num_history 0, query "", timestamp 0), labels 0.
Slice features (for TFMA slicing; no model reads them)
    user_activity: from the number of distinct items the user engaged with strictly before
    the unit (the history above, not truncated): "cold" = 0, "warm" = 1-9, "heavy" = 10 or
    more (a full window of the default history length; fixed whatever ``history_length``
    is, so slices compare across runs). item_novelty: "new" when the item's created_at is known
    (> 0) and at most 30 days before the unit's timestamp, else "established". Catalog
    examples have "" for both.
"""
import bisect
import collections
import datetime
import math
from typing import Dict, Iterable, List, Mapping, Sequence

from pipeline.contract import spec
from pipeline.contract.spec import CREATED_AT, SEARCH
from trainer import features

# Event types (the contract's names) by the labels they set; see the module docstring.
CLICK_EVENTS = frozenset({spec.CLICK, spec.ADD_TO_CART, spec.PURCHASE})
CART_EVENTS = frozenset({spec.ADD_TO_CART, spec.PURCHASE})
ENGAGEMENT_EVENTS = frozenset(spec.ENGAGEMENT_TYPES)

ITEM_FEATURES = (features.TITLE, features.DESCRIPTION, features.BRAND, features.CATEGORY,
                 features.TOP_CATEGORY, features.PRICE, features.IN_STOCK)

# Slice features (string values, see the module docstring); evaluation slices on them.
USER_ACTIVITY = "user_activity"
ITEM_NOVELTY = "item_novelty"
SLICE_FEATURES = (USER_ACTIVITY, ITEM_NOVELTY)
COLD, WARM, HEAVY = "cold", "warm", "heavy"
HEAVY_MIN_ITEMS = 10                  # distinct engaged items before the unit for "heavy"
NEW, ESTABLISHED = "new", "established"
NEW_ITEM_SECONDS = 30 * 86400         # an item is "new" for 30 days after its created_at

ALL_FEATURES = features.STRING_FEATURES + features.INT_FEATURES + features.FLOAT_FEATURES + (
    features.HISTORY_ITEM_IDS,) + SLICE_FEATURES


def user_activity(num_prior_items: int) -> str:
    """Activity bucket from the number of distinct items engaged with before the unit."""
    if num_prior_items <= 0:
        return COLD
    return HEAVY if num_prior_items >= HEAVY_MIN_ITEMS else WARM


def item_novelty(created_at: int, timestamp: int) -> str:
    """"new" when the item was created (known, > 0) at most 30 days before `timestamp`."""
    created_at = int(created_at or 0)
    return NEW if 0 < created_at and timestamp - created_at <= NEW_ITEM_SECONDS else ESTABLISHED


def _order(event: Mapping) -> tuple:
    return (int(event["timestamp"]), int(event.get("seq", 0)))


def sort_events(events: Iterable[Mapping]) -> List[Mapping]:
    """The events in (timestamp, seq) order (stable for events without seq)."""
    return sorted(events, key=_order)


def assign_sessions(events: Sequence[Mapping], gap_seconds: int) -> List[str]:
    """Session key of each of one user's time-ordered events (see module docstring)."""
    if gap_seconds <= 0:
        raise ValueError(f"session gap must be positive seconds, got {gap_seconds}")
    keys = []
    last_ts = None
    gap_session = -1
    for event in events:
        session_id = event.get("session_id") or ""
        if session_id:
            keys.append("id:" + session_id)
            continue
        ts = int(event["timestamp"])
        if last_ts is None or ts - last_ts > gap_seconds:
            gap_session += 1
        last_ts = ts
        keys.append(f"gap:{gap_session}")
    return keys


class _Unit:
    """Mutable state of one impression unit while a user's events are scanned."""

    __slots__ = ("session", "item_id", "first", "clicked", "added_to_cart", "purchased",
                 "rating", "has_rating", "rating_order")

    def __init__(self, session: str, item_id: str, first: tuple):
        self.session, self.item_id, self.first = session, item_id, first
        self.clicked = self.added_to_cart = self.purchased = self.has_rating = 0
        self.rating = 0.0
        self.rating_order = None

    def attach_rating(self, value: float, order: tuple) -> None:
        if self.rating_order is None or order >= self.rating_order:
            self.rating, self.has_rating, self.rating_order = float(value), 1, order


def _check_event(event: Mapping) -> str:
    event_type = event["event_type"]
    if event_type not in spec.EVENT_TYPES:
        raise ValueError(f"unknown event_type {event_type!r} (expected one of "
                         f"{sorted(spec.EVENT_TYPES)}) for user {event.get('user_id')!r}")
    if event_type != SEARCH and not event.get("item_id"):
        raise ValueError(f"{event_type} event of user {event.get('user_id')!r} at "
                         f"{event['timestamp']} has no item_id")
    return event_type


def _build_unit_states(events: Sequence[Mapping], sessions: Sequence[str]) -> List[_Unit]:
    units: Dict[tuple, _Unit] = {}
    by_item: Dict[str, List[_Unit]] = collections.defaultdict(list)
    ratings = []
    for event, session in zip(events, sessions):
        event_type = _check_event(event)
        if event_type == SEARCH:
            continue
        if event_type == spec.RATING:
            ratings.append((event, session))
            continue
        key = (session, event["item_id"])
        unit = units.get(key)
        if unit is None:
            unit = units[key] = _Unit(session, event["item_id"], _order(event))
            by_item[unit.item_id].append(unit)
        unit.clicked |= event_type in CLICK_EVENTS
        unit.added_to_cart |= event_type in CART_EVENTS
        unit.purchased |= event_type == spec.PURCHASE
    for event, session in ratings:
        value = event.get("value")
        if value is None or math.isnan(float(value)):
            continue
        order = _order(event)
        earlier = [u for u in by_item[event["item_id"]] if u.first[0] <= order[0]]
        if earlier:
            max(earlier, key=lambda u: u.first).attach_rating(value, order)
            continue
        key = (session, event["item_id"])
        unit = units.get(key)
        if unit is None:
            unit = units[key] = _Unit(session, event["item_id"], order)
            by_item[unit.item_id].append(unit)
        unit.first = min(unit.first, order)
        unit.clicked = 1
        unit.attach_rating(value, order)
    return sorted(units.values(), key=lambda u: u.first)


def history_before(engagements: Sequence[Mapping], timestamp: int,
                   length: int = features.HISTORY_LENGTH) -> List[str]:
    """Distinct engaged item ids strictly before `timestamp`, most recent first (unpadded).

    `engagements` must be in (timestamp, seq) order.
    """
    end = bisect.bisect_left(engagements, timestamp, key=lambda e: int(e["timestamp"]))
    seen, history = set(), []
    for position in range(end - 1, -1, -1):
        item_id = engagements[position]["item_id"]
        if item_id not in seen:
            seen.add(item_id)
            history.append(item_id)
            if len(history) == length:
                break
    return history


def pad_history(history: Sequence[str], length: int = features.HISTORY_LENGTH) -> List[str]:
    """History truncated or padded with "" to exactly `length` entries."""
    return list(history[:length]) + [""] * max(0, length - len(history))


def _latest_query(searches: Sequence[tuple], session: str, before: tuple) -> str:
    query = ""
    for order, search_session, text in searches:
        if order >= before:
            break
        if search_session == session and text:
            query = text
    return query


def build_units(user_id: str, events: Iterable[Mapping], session_gap_seconds: int,
                history_length: int = features.HISTORY_LENGTH) -> List[dict]:
    """Impression units of one user: user side (a history of ``history_length`` entries),
    item_id, timestamp and labels of each."""
    features.check_history_length(history_length)
    ordered = sort_events(events)
    sessions = assign_sessions(ordered, session_gap_seconds)
    engagements = [e for e in ordered if e["event_type"] in ENGAGEMENT_EVENTS]
    searches = [(_order(e), s, e.get("query") or "")
                for e, s in zip(ordered, sessions) if e["event_type"] == SEARCH]
    # distinct[i] = distinct items among engagements[:i] (activity buckets, not truncated)
    distinct, seen = [0], set()
    for event in engagements:
        seen.add(event["item_id"])
        distinct.append(len(seen))
    out = []
    for unit in _build_unit_states(ordered, sessions):
        history = history_before(engagements, unit.first[0], history_length)
        prior = bisect.bisect_left(engagements, unit.first[0],
                                   key=lambda e: int(e["timestamp"]))
        out.append({
            features.USER_ID: user_id,
            features.HISTORY_ITEM_IDS: pad_history(history, history_length),
            features.NUM_HISTORY: len(history),
            features.QUERY: _latest_query(searches, unit.session, unit.first),
            features.TIMESTAMP: unit.first[0],
            features.ITEM_ID: unit.item_id,
            features.CLICKED: int(unit.clicked),
            features.ADDED_TO_CART: int(unit.added_to_cart),
            features.PURCHASED: int(unit.purchased),
            features.RATING: unit.rating,
            features.HAS_RATING: unit.has_rating,
            USER_ACTIVITY: user_activity(distinct[prior]),
        })
    return out


def item_features(item: Mapping) -> dict:
    """Item-side features of one row of the canonical items table."""
    category = item.get("categories") or ""
    price = item.get("price")
    price = 0.0 if price is None or math.isnan(float(price)) else float(price)
    return {
        features.ITEM_ID: item["item_id"],
        features.TITLE: item.get("title") or "",
        features.DESCRIPTION: item.get("description") or "",
        features.BRAND: item.get("brand") or "",
        features.CATEGORY: category,
        features.TOP_CATEGORY: spec.top_category(category),
        features.PRICE: price,
        features.IN_STOCK: int(bool(item.get("in_stock"))),
        CREATED_AT: _epoch_seconds(item.get(CREATED_AT)),
    }


def _epoch_seconds(value) -> int:
    """created_at as int epoch seconds; missing / NaN -> 0 (unknown)."""
    if value is None:
        return 0
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0
    return 0 if math.isnan(value) else int(value)


def join_item(unit: Mapping, item: Mapping) -> dict:
    """A full example: the unit with the item features of its item (and its novelty)."""
    example = dict(unit)
    example.update({key: item[key] for key in ITEM_FEATURES})
    example[ITEM_NOVELTY] = item_novelty(item.get(CREATED_AT, 0), unit[features.TIMESTAMP])
    return example


def catalog_example(item: Mapping, history_length: int = features.HISTORY_LENGTH) -> dict:
    """Catalog example of one item (output of item_features): empty user side (a history of
    ``history_length`` ""), labels 0."""
    example = {
        features.USER_ID: "",
        features.HISTORY_ITEM_IDS: pad_history([], history_length),
        features.NUM_HISTORY: 0,
        features.QUERY: "",
        features.TIMESTAMP: 0,
        features.ITEM_ID: item[features.ITEM_ID],
        features.CLICKED: 0,
        features.ADDED_TO_CART: 0,
        features.PURCHASED: 0,
        features.RATING: 0.0,
        features.HAS_RATING: 0,
        USER_ACTIVITY: "",
    }
    example = join_item(example, item)
    example[ITEM_NOVELTY] = ""
    return example


def check_eval_fraction(eval_fraction: float) -> float:
    """eval_fraction as a float in (0, 1), else ValueError."""
    if not isinstance(eval_fraction, (int, float)) or not 0.0 < float(eval_fraction) < 1.0:
        raise ValueError(f"eval_fraction must be a number in (0, 1), got {eval_fraction!r}")
    return float(eval_fraction)


def check_rank_fraction(rank_fraction: float, eval_fraction: float) -> float:
    """rank_fraction as a float in [0, 1) leaving a train split (rank + eval < 1)."""
    eval_fraction = check_eval_fraction(eval_fraction)
    if isinstance(rank_fraction, bool) or not isinstance(rank_fraction, (int, float)) or \
            not 0.0 <= float(rank_fraction) < 1.0 - eval_fraction:
        raise ValueError(f"rank_fraction must be a number in [0, 1 - eval_fraction) = "
                         f"[0, {1.0 - eval_fraction:g}), got {rank_fraction!r}")
    return float(rank_fraction)


def cutoff_from_counts(counts: Mapping[int, int], eval_fraction: float):
    """Exact (1 - eval_fraction) quantile from {timestamp: count}; None when empty."""
    eval_fraction = check_eval_fraction(eval_fraction)
    total = sum(counts.values())
    if total == 0:
        return None
    index = min(total - 1, int(math.floor((1.0 - eval_fraction) * total + 1e-9)))
    seen = 0
    for timestamp in sorted(counts):
        seen += counts[timestamp]
        if seen > index:
            return int(timestamp)
    raise AssertionError("unreachable")


def cutoffs_from_counts(counts: Mapping[int, int], eval_fraction: float,
                        rank_fraction: float = 0.0):
    """(eval cutoff, rank cutoff) from {timestamp: count}: the (1 - eval_fraction) and the
    (1 - eval_fraction - rank_fraction) quantiles; the rank cutoff is None without a rank
    split (rank_fraction 0) and both are None when there are no units."""
    rank_fraction = check_rank_fraction(rank_fraction, eval_fraction)
    cutoff = cutoff_from_counts(counts, eval_fraction)
    if not rank_fraction or cutoff is None:
        return cutoff, None
    return cutoff, cutoff_from_counts(counts, eval_fraction + rank_fraction)


def eval_cutoff(timestamps: Iterable[int], eval_fraction: float):
    """Exact (1 - eval_fraction) quantile of unit timestamps (see module docstring)."""
    return cutoff_from_counts(collections.Counter(int(t) for t in timestamps), eval_fraction)


def parse_split_time(value, name: str):
    """A split time: "" / None -> None (not set); an ISO-8601 date-time with a time zone
    (e.g. "2014-06-30T12:00:00Z") -> epoch seconds. ValueError naming ``name`` otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO-8601 date-time string such as "
                         f"'2014-06-30T12:00:00Z', got {value!r}")
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}={value!r}: not an ISO-8601 date-time (e.g. "
                         f"'2014-06-30T12:00:00Z')") from None
    if when.tzinfo is None:
        raise ValueError(f"{name}={value!r}: give a time zone (e.g. a trailing Z for UTC)")
    return int(when.timestamp())


def check_split_times(eval_from, rank_from) -> tuple:
    """(eval cutoff, rank cutoff) in epoch seconds from ``eval_from`` / ``rank_from`` (see
    ``parse_split_time``; both None when ``eval_from`` is not set). Fixed times replace the
    fractions' quantiles: units at or after ``eval_from`` are "eval", those at or after
    ``rank_from`` and before it "rank" (no rank split without ``rank_from``)."""
    eval_at = parse_split_time(eval_from, "eval_from")
    rank_at = parse_split_time(rank_from, "rank_from")
    if rank_at is not None and eval_at is None:
        raise ValueError("rank_from needs eval_from (the rank split ends where eval begins)")
    if rank_at is not None and rank_at >= eval_at:
        raise ValueError(f"rank_from ({rank_from}) must be before eval_from ({eval_from})")
    return eval_at, rank_at


def has_rank_split(rank_fraction: float, eval_from="", rank_from="") -> bool:
    """Whether the units get a "rank" split: ``rank_from`` when split times are fixed,
    else ``rank_fraction`` > 0."""
    if check_split_times(eval_from, rank_from)[0] is not None:
        return bool(rank_from)
    return float(rank_fraction or 0.0) > 0


def unit_splits(rank_fraction: float) -> tuple:
    """The splits of impression units: train, [rank,] eval (rank when ``rank_fraction`` is
    truthy: a fraction > 0 or ``has_rank_split``)."""
    return ((features.TRAIN_SPLIT, features.RANK_SPLIT, features.EVAL_SPLIT) if rank_fraction
            else (features.TRAIN_SPLIT, features.EVAL_SPLIT))


def split_of(timestamp: int, cutoff: int, rank_cutoff: int | None = None) -> str:
    """features.EVAL_SPLIT at or after the cutoff, features.RANK_SPLIT at or after the rank
    cutoff (when there is one), else features.TRAIN_SPLIT."""
    if timestamp >= cutoff:
        return features.EVAL_SPLIT
    if rank_cutoff is not None and timestamp >= rank_cutoff:
        return features.RANK_SPLIT
    return features.TRAIN_SPLIT


def to_tf_example(example: Mapping, history_length: int = features.HISTORY_LENGTH):
    """tf.train.Example with every feature of trainer/features.py, fixed shapes (the history
    exactly ``history_length`` entries)."""
    from tensorflow.core.example import example_pb2   # the proto alone: ~3x faster than tf.train

    missing = [key for key in ALL_FEATURES if key not in example]
    if missing:
        raise ValueError(f"example of item {example.get(features.ITEM_ID)!r} lacks {missing}")
    history = example[features.HISTORY_ITEM_IDS]
    if len(history) != history_length:
        raise ValueError(f"{features.HISTORY_ITEM_IDS} must have exactly "
                         f"{history_length} entries (history_length), got {len(history)}")
    out = example_pb2.Example()
    feature = out.features.feature
    feature[features.HISTORY_ITEM_IDS].bytes_list.value.extend(
        [h.encode("utf-8") for h in history])
    for key in features.STRING_FEATURES + SLICE_FEATURES:
        feature[key].bytes_list.value.append(str(example[key]).encode("utf-8"))
    for key in features.INT_FEATURES:
        feature[key].int64_list.value.append(int(example[key]))
    for key in features.FLOAT_FEATURES:
        feature[key].float_list.value.append(float(example[key]))
    for key in features.OPTIONAL_FLOAT_FEATURES:
        if key in example:
            feature[key].float_list.value.append(float(example[key]))
    for key in features.OPTIONAL_STRING_FEATURES:
        if key in example:
            feature[key].bytes_list.value.append(str(example[key]).encode("utf-8"))
    return out


def decode_example(serialized: bytes) -> dict:
    """Inverse of to_tf_example (for tests and inspection)."""
    from tensorflow.core.example import example_pb2

    parsed = example_pb2.Example.FromString(serialized).features.feature
    out = {features.HISTORY_ITEM_IDS: [
        v.decode("utf-8") for v in parsed[features.HISTORY_ITEM_IDS].bytes_list.value]}
    for key in features.STRING_FEATURES + SLICE_FEATURES:
        out[key] = parsed[key].bytes_list.value[0].decode("utf-8")
    for key in features.INT_FEATURES:
        out[key] = int(parsed[key].int64_list.value[0])
    for key in features.FLOAT_FEATURES:
        out[key] = float(parsed[key].float_list.value[0])
    for key in features.OPTIONAL_FLOAT_FEATURES:
        if key in parsed:
            out[key] = float(parsed[key].float_list.value[0])
    for key in features.OPTIONAL_STRING_FEATURES:
        if key in parsed:
            out[key] = parsed[key].bytes_list.value[0].decode("utf-8")
    return out
