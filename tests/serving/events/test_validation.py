"""Tests for serving/events/validation.py: posted events checked with the data contract's
rules, including its length caps, and nothing a client sends echoed back unbounded."""
import json

import pandas as pd
import pytest

from pipeline.contract import spec
from serving.events.validation import KEY_PREVIEW, EventValidationError, validate_events

ITEMS = pd.Index(["toy1", "book0"])
NOW = 1_735_689_600


def problems(payload, max_events=1000):
    with pytest.raises(EventValidationError) as info:
        validate_events(payload, ITEMS, NOW, max_events)
    return [(p.loc, p.code, p.message) for p in info.value.problems]


def test_valid_events_at_the_caps_are_accepted():
    events = validate_events([
        {"user_id": "u" * 256, "item_id": "toy1", "event_type": "view", "session_id": "s" * 256},
        {"user_id": "u", "event_type": "search", "query": "é" * 500}], ITEMS, NOW, 10)
    assert events["query"].tolist() == ["", "é" * 500]
    assert events["timestamp"].tolist() == [NOW, NOW]


@pytest.mark.parametrize("field, cap", [("user_id", 256), ("session_id", 256), ("query", 500),
                                        ("item_id", 256)])
def test_text_longer_than_the_contract_cap_is_too_long(field, cap):
    event = {"user_id": "u", "item_id": "toy1", "event_type": "view", field: "x" * 900_000}
    if field == "query":
        event = {"user_id": "u", "event_type": "search", "query": "x" * 900_000}
    found = problems(event)
    assert (("body", field), "too_long",
            f"must be at most {cap} characters, got 900000") in found
    assert all(len(message) < 200 for _, _, message in found), "the value is never quoted"


def test_query_cap_is_the_api_default_for_search():
    from serving.api.settings import Settings

    assert Settings(shop_dir="x").max_query_chars == spec.MAX_QUERY_CHARS


def test_integers_beyond_the_float_range_are_field_problems():
    found = problems([{"user_id": "u", "item_id": "toy1", "event_type": "rating",
                       "value": 10 ** 400},
                      {"user_id": "u", "item_id": "toy1", "event_type": "view",
                       "timestamp": 10 ** 400}])
    assert [(loc, code) for loc, code, _ in found] == [
        (("body", 0, "value"), "bad_value"), (("body", 1, "timestamp"), "bad_timestamp")]


def test_lone_surrogates_are_field_problems():
    payload = json.loads('{"user_id": "\\ud800", "item_id": "toy1", "event_type": "view", '
                         '"timestamp": "2025-01-01\\udfff"}')
    found = problems(payload)
    assert [(loc, code) for loc, code, _ in found] == [
        (("body", "timestamp"), "bad_timestamp"), (("body", "user_id"), "bad_text")]


def test_unknown_field_names_are_quoted_bounded_and_encodable():
    name = "\ud800" + "k" * 900_000
    found = problems({"user_id": "u", "item_id": "toy1", "event_type": "view", name: 1,
                      "userid": 2})
    locs = {loc[1]: message for loc, _, message in found}
    label = "\\ud800" + "k" * (KEY_PREVIEW - 4) + "..."
    assert set(locs) == {label, "userid"}
    label.encode("utf-8")
    assert "did you mean 'user_id'?" in locs["userid"]
    assert "did you mean" not in locs[label]


def test_event_id_is_optional_text_capped_by_the_contract():
    events = validate_events([
        {"user_id": "u", "item_id": "toy1", "event_type": "view", "event_id": " e-1 "},
        {"user_id": "u", "item_id": "toy1", "event_type": "view", "event_id": 42},
        {"user_id": "u", "item_id": "toy1", "event_type": "view", "event_id": None},
        {"user_id": "u", "item_id": "toy1", "event_type": "view"}], ITEMS, NOW, 10)
    assert list(events.columns) == [*spec.EVENT_COLUMNS, spec.EVENT_ID]
    assert events[spec.EVENT_ID].tolist() == ["e-1", "42", "", ""]
    found = problems([{"user_id": "u", "item_id": "toy1", "event_type": "view",
                       "event_id": "e" * 129},
                      {"user_id": "u", "item_id": "toy1", "event_type": "view",
                       "event_id": ["e1"]}])
    assert [(loc, code) for loc, code, _ in found] == [
        (("body", 0, "event_id"), "too_long"), (("body", 1, "event_id"), "wrong_type")]
    assert problems({"user_id": "u", "item_id": "toy1", "event_type": "view",
                     "eventid": "x"})[0][2].startswith("unknown field; did you mean 'event_id'?")
