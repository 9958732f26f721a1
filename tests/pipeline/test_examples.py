"""Rules of example generation on hand-built event rows (pipeline/examples.py)."""
import collections
import math

import pytest

from pipeline import examples
from trainer import features

GAP = 30 * 60


def ev(ts, event_type, item="", session="", value=math.nan, query="", seq=None):
    return {"user_id": "u1", "item_id": item, "event_type": event_type, "value": value,
            "query": query, "session_id": session, "timestamp": ts,
            "seq": ts if seq is None else seq}


def units_by(events, gap=GAP):
    units = examples.build_units("u1", events, gap)
    return {(u[features.ITEM_ID], u[features.TIMESTAMP]): u for u in units}


def test_sessions_split_at_gaps_longer_than_limit():
    events = [ev(0, "view", "a"), ev(GAP, "view", "b"), ev(2 * GAP + 1, "view", "c"),
              ev(2 * GAP + 2, "view", "d", session="s9")]
    keys = examples.assign_sessions(events, GAP)
    assert keys[0] == keys[1]            # exactly the limit: same session
    assert keys[1] != keys[2]            # one second more: new session
    assert keys[3] == "id:s9"


def test_session_id_wins_over_gap_and_gap_ignores_sessioned_events():
    events = [ev(0, "view", "a"), ev(GAP - 5, "view", "b", session="x"),
              ev(GAP + 5, "view", "c"), ev(5 * GAP, "view", "d", session="x")]
    keys = examples.assign_sessions(events, GAP)
    assert keys[1] == keys[3] == "id:x"
    assert keys[0] != keys[2]            # sessioned events do not bridge a gap
    with pytest.raises(ValueError, match="positive"):
        examples.assign_sessions(events, 0)


def test_unit_per_session_and_item_with_labels():
    events = [ev(0, "view", "a"), ev(1, "click", "a"), ev(2, "view", "b"),
              ev(3, "add_to_cart", "b"), ev(4, "view", "c"), ev(5, "purchase", "c"),
              ev(4 * GAP, "view", "a")]                # new session: a second unit of a
    units = units_by(events)
    assert set(units) == {("a", 0), ("b", 2), ("c", 4), ("a", 4 * GAP)}
    labels = lambda u: (u[features.CLICKED], u[features.ADDED_TO_CART], u[features.PURCHASED])
    assert labels(units[("a", 0)]) == (1, 0, 0)
    assert labels(units[("b", 2)]) == (1, 1, 0)
    assert labels(units[("c", 4)]) == (1, 1, 1)
    assert labels(units[("a", 4 * GAP)]) == (0, 0, 0)
    assert all(u[features.RATING] == 0.0 and u[features.HAS_RATING] == 0
               for u in units.values())


def test_unit_timestamp_is_first_event_even_when_click_comes_first():
    units = units_by([ev(5, "click", "a"), ev(9, "view", "a")])
    assert list(units) == [("a", 5)]


def test_history_excludes_same_time_and_future_events():
    events = [ev(10, "click", "h1"), ev(20, "purchase", "h2"), ev(30, "view", "seen_only"),
              ev(40, "click", "same_time"), ev(40, "view", "target"),
              ev(50, "click", "future")]
    unit = units_by(events)[("target", 40)]
    assert unit[features.HISTORY_ITEM_IDS][:2] == ["h2", "h1"]
    assert unit[features.NUM_HISTORY] == 2
    flat = set(unit[features.HISTORY_ITEM_IDS])
    assert "same_time" not in flat and "future" not in flat and "seen_only" not in flat


def test_no_leakage_for_every_unit():
    events = [ev(t, kind, f"i{t % 7}") for t, kind in
              zip(range(0, 400, 13), ["view", "click", "rating", "purchase"] * 20)]
    for e in events:
        if e["event_type"] == "rating":
            e["value"] = 4.0
    engaged_at = {}
    for e in events:
        if e["event_type"] in examples.ENGAGEMENT_EVENTS:
            engaged_at.setdefault(e["item_id"], []).append(e["timestamp"])
    for unit in examples.build_units("u1", events, GAP):
        for item in unit[features.HISTORY_ITEM_IDS][:unit[features.NUM_HISTORY]]:
            assert min(engaged_at[item]) < unit[features.TIMESTAMP]


def test_history_distinct_most_recent_first_truncated_and_padded():
    n = features.HISTORY_LENGTH
    events = [ev(t, "click", f"i{t}") for t in range(n + 3)] + [ev(1000, "click", "i0"),
                                                                ev(2000, "view", "x")]
    unit = units_by(events)[("x", 2000)]
    history = unit[features.HISTORY_ITEM_IDS]
    assert len(history) == n and unit[features.NUM_HISTORY] == n
    assert history[0] == "i0" and len(set(history)) == n
    assert history[1:] == [f"i{t}" for t in range(n + 2, 3, -1)]
    first = units_by(events)[("i0", 0)]
    assert first[features.HISTORY_ITEM_IDS] == [""] * n and first[features.NUM_HISTORY] == 0


@pytest.mark.parametrize("length", [1, 20, 50])
def test_history_has_the_configured_length_and_no_event_at_or_after_the_unit(length):
    """PipelineConfig.history_length: histories of exactly `length` entries, the most recent
    distinct engaged items strictly before the unit (same-second and later events never)."""
    events = [ev(10 * t, "click", f"i{t}") for t in range(60)] + [
        ev(295, "view", "x"), ev(295, "click", "same_second"), ev(296, "click", "later")]
    units = {(u[features.ITEM_ID], u[features.TIMESTAMP]): u
             for u in examples.build_units("u1", events, GAP, history_length=length)}
    x = units[("x", 295)]
    assert len(x[features.HISTORY_ITEM_IDS]) == length
    real = [f"i{t}" for t in range(29, -1, -1)][:length]       # i0..i29 before t=295
    assert x[features.HISTORY_ITEM_IDS] == real + [""] * (length - len(real))
    assert x[features.NUM_HISTORY] == len(real)
    for unit in units.values():
        history = unit[features.HISTORY_ITEM_IDS]
        assert len(history) == length
        engaged_before = {e["item_id"] for e in events if e["timestamp"] < unit[
            features.TIMESTAMP] and e["event_type"] in examples.ENGAGEMENT_EVENTS}
        assert set(history[:unit[features.NUM_HISTORY]]) <= engaged_before
    item = examples.item_features({"item_id": "x", "title": "X", "price": 1.0,
                                   "in_stock": True})
    catalog = examples.catalog_example(item, length)
    assert catalog[features.HISTORY_ITEM_IDS] == [""] * length
    full = examples.join_item(x, item)
    decoded = examples.decode_example(examples.to_tf_example(full, length).SerializeToString())
    assert decoded[features.HISTORY_ITEM_IDS] == x[features.HISTORY_ITEM_IDS]
    with pytest.raises(ValueError, match=f"exactly {length + 1} entries .history_length., "
                                         f"got {length}"):
        examples.to_tf_example(full, length + 1)


@pytest.mark.parametrize("length", [0, 201, 2.5, True])
def test_a_history_length_out_of_range_is_named(length):
    with pytest.raises(ValueError, match=r"history_length=.*: must be a whole number of items "
                                         r"in \[1, 200\]"):
        examples.build_units("u1", [ev(0, "click", "a")], GAP, history_length=length)


def test_rating_attaches_to_latest_unit_at_or_before_it():
    events = [ev(0, "view", "a"), ev(4 * GAP, "view", "a"), ev(8 * GAP, "view", "b"),
              ev(8 * GAP + 5, "rating", "a", value=4.0)]
    units = units_by(events)
    assert units[("a", 4 * GAP)][features.HAS_RATING] == 1
    assert units[("a", 4 * GAP)][features.RATING] == 4.0
    assert units[("a", 4 * GAP)][features.CLICKED] == 0   # rating does not change clicks
    assert units[("a", 0)][features.HAS_RATING] == 0
    assert len(units) == 3


def test_rating_same_second_as_unit_attaches_and_latest_rating_wins():
    events = [ev(100, "rating", "a", value=2.0, seq=1), ev(100, "view", "a", seq=2),
              ev(200, "rating", "a", value=5.0, seq=3)]
    units = units_by(events)
    assert list(units) == [("a", 100)]
    assert units[("a", 100)][features.RATING] == 5.0


def test_rating_without_unit_forms_own_clicked_unit():
    units = units_by([ev(0, "view", "b"), ev(50, "rating", "a", value=3.0),
                      ev(60, "rating", "c", value=math.nan)])
    unit = units[("a", 50)]
    assert (unit[features.CLICKED], unit[features.HAS_RATING], unit[features.RATING]) == (
        1, 1, 3.0)
    assert ("c", 60) not in units                        # NaN rating ignored


def test_rating_before_view_in_same_session_merges_into_one_unit():
    units = units_by([ev(10, "rating", "a", value=5.0), ev(20, "view", "a")])
    assert list(units) == [("a", 10)]
    assert units[("a", 10)][features.CLICKED] == 1


def test_query_carried_to_later_units_of_the_session_only():
    events = [ev(0, "view", "before", session="s1"),
              ev(5, "search", query="red shoes", session="s1"),
              ev(6, "view", "after", session="s1"),
              ev(7, "search", query="", session="s1"),          # empty text: ignored
              ev(8, "view", "after2", session="s1"),
              ev(9, "view", "other", session="s2")]
    units = units_by(events)
    assert units[("before", 0)][features.QUERY] == ""
    assert units[("after", 6)][features.QUERY] == "red shoes"
    assert units[("after2", 8)][features.QUERY] == "red shoes"
    assert units[("other", 9)][features.QUERY] == ""


def test_query_same_second_uses_export_order():
    units = units_by([ev(5, "search", query="q", seq=1), ev(5, "view", "a", seq=2),
                      ev(5, "view", "b", seq=0)])
    assert units[("a", 5)][features.QUERY] == "q"
    assert units[("b", 5)][features.QUERY] == ""


def test_bad_events_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown event_type 'like'"):
        examples.build_units("u1", [ev(0, "like", "a")], GAP)
    with pytest.raises(ValueError, match="click event .* has no item_id"):
        examples.build_units("u1", [ev(0, "click", "")], GAP)


def test_cutoff_is_exact_quantile_and_split_by_it():
    timestamps = list(range(100, 200, 10))                  # 10 units
    cutoff = examples.eval_cutoff(timestamps, 0.1)
    assert cutoff == 190
    splits = [examples.split_of(t, cutoff) for t in timestamps]
    assert splits.count(features.EVAL_SPLIT) == 1 and splits[-1] == features.EVAL_SPLIT
    assert examples.eval_cutoff(timestamps, 0.35) == 160    # index floor(6.5) = 6
    assert examples.eval_cutoff([5, 5, 5, 9], 0.5) == 5     # ties at cutoff all go to eval
    assert examples.eval_cutoff([], 0.1) is None
    for bad in (0, 1, -0.1, "0.1"):
        with pytest.raises(ValueError, match="eval_fraction"):
            examples.eval_cutoff(timestamps, bad)


def test_rank_split_sits_between_train_and_eval():
    timestamps = list(range(100, 200, 10))                  # 10 units
    counts = collections.Counter(timestamps)
    assert examples.cutoffs_from_counts(counts, 0.1) == (190, None)
    cutoff, rank_cutoff = examples.cutoffs_from_counts(counts, 0.1, 0.3)
    assert (cutoff, rank_cutoff) == (190, 160)
    splits = [examples.split_of(t, cutoff, rank_cutoff) for t in timestamps]
    assert splits == [features.TRAIN_SPLIT] * 6 + [features.RANK_SPLIT] * 3 + [
        features.EVAL_SPLIT]
    assert examples.cutoffs_from_counts({}, 0.1, 0.3) == (None, None)
    assert examples.unit_splits(0.0) == (features.TRAIN_SPLIT, features.EVAL_SPLIT)
    assert examples.unit_splits(0.2) == (features.TRAIN_SPLIT, features.RANK_SPLIT,
                                         features.EVAL_SPLIT)
    for bad in (-0.1, 0.9, 1.0, True, "0.1"):
        with pytest.raises(ValueError, match="rank_fraction"):
            examples.cutoffs_from_counts(counts, 0.1, bad)


def test_split_times_parse_and_check():
    assert examples.parse_split_time("", "eval_from") is None
    assert examples.parse_split_time("2014-06-30T12:00:00Z", "eval_from") == 1404129600
    assert examples.parse_split_time("2014-06-30T14:00:00+02:00", "x") == 1404129600
    assert examples.check_split_times("", "") == (None, None)
    assert examples.check_split_times("2014-06-30T12:00:00Z", "2014-06-29T12:00:00Z") == (
        1404129600, 1404043200)
    assert examples.has_rank_split(0.1) and not examples.has_rank_split(0.0)
    assert not examples.has_rank_split(0.1, "2014-06-30T12:00:00Z")
    assert examples.has_rank_split(0.0, "2014-06-30T12:00:00Z", "2014-06-29T12:00:00Z")
    for args, message in ((("30/06/2014", ""), "eval_from='30/06/2014': not an ISO"),
                          ((1404129600, ""), "eval_from must be an ISO-8601"),
                          (("2014-06-30T12:00:00", ""), "time zone"),
                          (("", "2014-06-29T12:00:00Z"), "rank_from needs eval_from"),
                          (("2014-06-29T12:00:00Z", "2014-06-29T12:00:00Z"), "before")):
        with pytest.raises(ValueError, match=message):
            examples.check_split_times(*args)


def test_item_features_and_catalog_example():
    item = examples.item_features({
        "item_id": "i1", "title": "Red Shoe", "description": "d", "brand": "",
        "categories": "Shoes > Running", "price": math.nan, "in_stock": True,
        "created_at": 0})
    assert item[features.TOP_CATEGORY] == "Shoes"
    assert item[features.PRICE] == 0.0 and item[features.IN_STOCK] == 1
    none = examples.item_features({"item_id": "i2", "categories": "", "price": 3.5,
                                   "in_stock": False})
    assert none[features.TOP_CATEGORY] == "" and none[features.IN_STOCK] == 0
    catalog = examples.catalog_example(item)
    assert catalog[features.USER_ID] == "" and catalog[features.NUM_HISTORY] == 0
    assert catalog[features.HISTORY_ITEM_IDS] == [""] * features.HISTORY_LENGTH
    assert all(catalog[key] == 0 for key in features.LABEL_KEYS)
    assert set(catalog) == set(examples.ALL_FEATURES)


def test_tf_example_round_trip_has_every_feature_with_fixed_shapes():
    item = examples.item_features({"item_id": "i1", "title": "Crème", "categories": "A",
                                   "price": 2.5, "in_stock": True})
    unit = units_by([ev(0, "click", "h"), ev(10, "view", "i1")])[("i1", 10)]
    example = examples.join_item(unit, item)
    serialized = examples.to_tf_example(example).SerializeToString()
    decoded = examples.decode_example(serialized)
    assert decoded == example
    assert len(decoded[features.HISTORY_ITEM_IDS]) == features.HISTORY_LENGTH
    del example[features.PRICE]
    with pytest.raises(ValueError, match="lacks"):
        examples.to_tf_example(example)


def test_user_activity_counts_distinct_prior_engaged_items_untruncated():
    events = [ev(10 * i, "click", f"h{i % 12}") for i in range(15)]   # 12 distinct items
    events += [ev(1000, "view", "x"), ev(-5, "view", "early")]
    units = units_by(events, gap=10 ** 6)
    assert units[("early", -5)][examples.USER_ACTIVITY] == examples.COLD      # nothing before
    assert units[("h1", 10)][examples.USER_ACTIVITY] == examples.WARM        # h0 before
    # 9 distinct items before ts 90 -> warm; 10 before ts 100 -> heavy (history window full)
    assert units[("h9", 90)][examples.USER_ACTIVITY] == examples.WARM
    assert units[("h10", 100)][examples.USER_ACTIVITY] == examples.HEAVY
    assert units[("x", 1000)][examples.USER_ACTIVITY] == examples.HEAVY
    assert units[("x", 1000)][features.NUM_HISTORY] == features.HISTORY_LENGTH  # truncated
    assert [examples.user_activity(n) for n in (0, 1, 9, 10, 500)] == [
        "cold", "warm", "warm", "heavy", "heavy"]


def test_item_novelty_from_created_at():
    day = 86400
    item = examples.item_features({"item_id": "i1", "categories": "A", "price": 1.0,
                                   "in_stock": True, "created_at": 100 * day})
    unit = units_by([ev(0, "click", "h"), ev(120 * day, "view", "i1")], gap=10 ** 9)
    late = units_by([ev(131 * day, "view", "i1")])
    assert examples.join_item(unit[("i1", 120 * day)], item)[examples.ITEM_NOVELTY] == "new"
    assert examples.join_item(late[("i1", 131 * day)], item)[examples.ITEM_NOVELTY] == \
        "established"
    assert examples.item_novelty(0, 5) == "established"              # created_at unknown
    assert examples.item_novelty(30 * day, 60 * day) == "new"        # exactly 30 days
    no_date = examples.item_features({"item_id": "i2", "price": 1.0, "in_stock": True,
                                      "created_at": float("nan")})
    assert no_date[examples.CREATED_AT] == 0
    assert examples.catalog_example(item)[examples.ITEM_NOVELTY] == ""
    assert examples.catalog_example(item)[examples.USER_ACTIVITY] == ""
