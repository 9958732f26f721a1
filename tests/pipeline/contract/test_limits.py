"""Length caps of text columns (spec.MAX_CHARS, reason code too_long) and values that must be
row problems instead of exceptions: integers beyond the float range, lone surrogates, JSON
Lines records nested too deeply or with numbers too long to read (issue #19)."""
import json

import numpy as np
import pandas as pd
import pytest

from pipeline.contract import spec
from pipeline.contract.fields import as_float, invalid_unicode, parse_text
from pipeline.contract.load import load_shop
from tests.pipeline.contract.test_checks import problems_of
from tests.pipeline.contract.test_load import (EVENT_LINE, EVENTS, ITEM_LINE, ITEMS, USER_LINE,
                                               USERS, make_shop)


def test_caps_are_named_once_and_cover_every_text_column_of_events_and_items():
    assert spec.MAX_CHARS[spec.USER_ID] == spec.MAX_CHARS[spec.ITEM_ID] \
        == spec.MAX_CHARS[spec.SESSION_ID] == spec.MAX_ID_CHARS == 256
    assert spec.MAX_CHARS[spec.QUERY] == spec.MAX_QUERY_CHARS == 500
    assert spec.MAX_CHARS[spec.DESCRIPTION] == 10_000
    # the Amazon Beauty catalog's longest title (841), brand (148) and category path (98)
    assert spec.MAX_CHARS[spec.TITLE] >= 841 and spec.MAX_CHARS[spec.BRAND] >= 148
    assert spec.MAX_CHARS[spec.CATEGORIES] >= 98


def _item_row(**values) -> str:
    row = {"item_id": "B1", "title": "T", "description": "", "brand": "", "categories": "",
           "price": "1", "in_stock": "true", "created_at": ""}
    row.update(values)
    return ",".join(row.values())


@pytest.mark.parametrize("field", ["item_id", "title", "description", "brand", "categories"])
def test_item_text_longer_than_its_cap_is_too_long_without_quoting_it(tmp_path, field):
    cap = spec.MAX_CHARS[field]
    found = problems_of(make_shop(tmp_path, items=ITEMS + _item_row(**{field: "x" * (cap + 1)})
                                  + "\n"))
    assert found == [f"items.csv:{ITEM_LINE}: field '{field}': must be at most {cap} "
                     f"characters, got {cap + 1}"]


def test_item_text_at_its_cap_is_accepted_and_lengths_count_characters(tmp_path):
    row = _item_row(**{name: "é" * spec.MAX_CHARS[name]
                       for name in ("item_id", "title", "description", "brand")},
                    categories=" > ".join(["Ab"] * 200))            # 998 characters
    items = load_shop(make_shop(tmp_path, items=ITEMS + row + "\n")).items
    assert len(items) == 4 and len(items["title"].iat[3]) == spec.MAX_CHARS[spec.TITLE]


def test_caps_apply_after_trimming(tmp_path):
    row = _item_row(title="  " + "t" * spec.MAX_CHARS[spec.TITLE] + "  ")
    assert len(load_shop(make_shop(tmp_path, items=ITEMS + row + "\n")).items) == 4


@pytest.mark.parametrize("row, field, cap", [
    ("{},A1,view,,,,1704189600", "user_id", 256),
    ("u1,{},view,,,,1704189600", "item_id", 256),
    ("u1,,search,,{},,1704189600", "query", 500),
    ("u1,A1,view,,,{},1704189600", "session_id", 256),
])
def test_event_text_longer_than_its_cap_is_too_long(tmp_path, row, field, cap):
    long = "q" * 100_000           # (the CSV reader refuses fields over 131,072 characters)
    found = problems_of(make_shop(tmp_path, events=EVENTS + row.format(long) + "\n"))
    expected = f"events.csv:{EVENT_LINE}: field '{field}': must be at most {cap} characters, " \
               f"got 100000"
    assert expected in found
    if field != "item_id":
        assert found == [expected]


def test_user_id_longer_than_its_cap_is_too_long(tmp_path):
    found = problems_of(make_shop(tmp_path, users=USERS + "u" * 257 + ",5,NL\n"))
    assert found == [f"users.csv:{USER_LINE}: field 'user_id': must be at most 256 characters, "
                     f"got 257"]


def test_too_long_rows_are_quarantined_with_the_reason_code(tmp_path):
    root = make_shop(tmp_path / "shop", events=EVENTS + "u9,,search,," + "q" * 501
                     + ",,1704189600\n")
    shop = load_shop(root, on_bad_rows="quarantine", report_dir=tmp_path / "report")
    assert len(shop.events) == 6 and "u9" not in set(shop.events["user_id"])
    summary = json.loads((tmp_path / "report" / "quarantine_summary.json").read_text())
    assert summary["tables"]["events"]["reasons"] == {"too_long": 1}


def test_integers_beyond_the_float_range_are_row_problems(tmp_path):
    make_shop(tmp_path)
    (tmp_path / "events.csv").unlink()
    lines = [{"user_id": "u1", "item_id": "A1", "event_type": "rating", "value": 10 ** 400,
              "timestamp": 1704189600},
             {"user_id": "u1", "item_id": "A1", "event_type": "view", "timestamp": -10 ** 400},
             {"user_id": "u1", "item_id": "A1", "event_type": "view", "timestamp": 1704189600}]
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    found = problems_of(tmp_path)
    assert found[0].startswith("events.jsonl:1: field 'value': must be a finite number")
    assert found[1].startswith("events.jsonl:2: field 'timestamp': negative epoch seconds")
    assert len(found) == 2


def test_lone_surrogates_are_bad_text_not_an_exception(tmp_path):
    make_shop(tmp_path)
    (tmp_path / "events.csv").unlink()
    (tmp_path / "events.jsonl").write_text(
        '{"user_id": "u\\ud800", "item_id": "A1", "event_type": "view", "timestamp": 1}\n'
        '{"user_id": "u1", "item_id": "A1", "event_type": "view", "timestamp": "\\udfff"}\n'
        '{"user_id": "u1", "item_id": "A1", "event_type": "view", "timestamp": 1}\n')
    found = problems_of(tmp_path)
    assert [p.split(": not valid")[0] for p in found] == [
        "events.jsonl:1: field 'user_id'", "events.jsonl:2: field 'timestamp'"]
    assert all("lone surrogate" in p and "(got '" in p for p in found)


@pytest.mark.parametrize("line, message", [
    ("[" * 100_000 + "]" * 100_000, "unreadable JSON: nested too deeply"),
    ('{"user_id": ' + "1" * 5000 + "}", "unreadable JSON: Exceeds the limit (4300 digits) "
                                        "for integer string conversion"),
])
def test_unreadable_jsonl_records_are_malformed_records(tmp_path, line, message):
    make_shop(tmp_path)
    (tmp_path / "events.csv").unlink()
    good = '{"user_id": "u1", "item_id": "A1", "event_type": "view", "timestamp": 1}'
    (tmp_path / "events.jsonl").write_text(good + "\n" + line + "\n")
    found = problems_of(tmp_path)
    assert len(found) == 1 and found[0].startswith(f"events.jsonl:2: {message}")


def test_field_helpers():
    assert as_float(np.array([1, 10 ** 400, -10 ** 400], dtype=object)).tolist() == \
        [1.0, np.inf, -np.inf]
    values = np.array(["ok", "x\ud800", "", "😀"], dtype=object)
    assert invalid_unicode(values).tolist() == [False, True, False, False]
    parsed = parse_text(pd.Series(["a", "\udc80", 5], dtype=object))
    assert parsed.values.tolist() == ["a", "", "5"]
    assert parsed.absent.tolist() == [False, False, False]
    assert [(i.code, i.mask.tolist()) for i in parsed.issues] == [
        ("bad_text", [False, True, False])]


# --- event_id: the optional idempotency key (serving/events) ---------------------------------

def test_event_id_is_an_optional_capped_column(tmp_path):
    assert spec.MAX_CHARS[spec.EVENT_ID] == spec.MAX_EVENT_ID_CHARS == 128
    assert spec.EVENT_ID in spec.EVENTS.optional and spec.EVENT_ID not in spec.EVENT_COLUMNS
    events = EVENTS.replace("session_id,timestamp\n", "session_id,timestamp,event_id\n", 1)
    lines = events.splitlines()
    lines[1:] = [f"{line},e{n}" if n % 2 else f"{line}," for n, line in enumerate(lines[1:])]
    shop = load_shop(make_shop(tmp_path / "ok", events="\n".join(lines) + "\n"))
    assert list(shop.events.columns) == [*spec.EVENT_COLUMNS, spec.EVENT_ID]
    assert sorted(shop.events[spec.EVENT_ID]) == ["", "", "", "e1", "e3", "e5"]
    assert spec.EVENT_ID not in load_shop(make_shop(tmp_path / "without")).events.columns
    long = "\n".join(lines) + "\nu1,A1,view,,,,1704189600," + "e" * 129 + "\n"
    found = problems_of(make_shop(tmp_path / "long", events=long))
    assert found == [f"events.csv:{EVENT_LINE}: field 'event_id': must be at most 128 "
                     "characters, got 129"]
