"""Tests for pipeline/contract/checks.py: one bad-input case per rule, with its exact message.

Each case appends one bad row to a good CSV, JSON Lines or Parquet shop and asserts the exact
problem list (file, line or row, field, message) that load_shop reports.
"""
import json

import pandas as pd
import pytest

from pipeline.contract.load import DataContractError, load_shop
from tests.pipeline.contract.test_load import (EVENT_LINE, EVENTS, ITEM_LINE, ITEMS, USER_LINE,
                                               USERS, make_shop)


def problems_of(root):
    with pytest.raises(DataContractError) as info:
        load_shop(root)
    return [str(p) for p in info.value.problems]


ITEM_CASES = [
    ("B1,,d,,,1,true,", "title", "title must not be empty"),
    ("B1,  ,d,,,1,true,", "title", "title must not be empty"),
    (",T,,,,1,true,", "item_id", "required value is missing"),
    ("A1,T,,,,1,true,", "item_id", "duplicate item_id 'A1' (first seen at line 2)"),
    ("B1,T,,,,-2,true,", "price", "must be >= 0 (got '-2')"),
    ("B1,T,,,,NaN,true,", "price", "NaN is not allowed (got 'NaN')"),
    ("B1,T,,,,inf,true,", "price", "must be a finite number (got 'inf')"),
    ("B1,T,,,,abc,true,", "price", "not a number (got 'abc')"),
    ("B1,T,,,,,true,", "price", "required number is missing"),
    ("B1,T,,,,1,maybe,", "in_stock", "expected a boolean: true/false, 1/0 or yes/no "
                                     "(got 'maybe')"),
    ("B1,T,,,,1,2,", "in_stock", "expected a boolean: true/false, 1/0 or yes/no (got '2')"),
    ("B1,T,,,,1,,-5", "created_at", "negative epoch seconds (got '-5')"),
    ("B1,T,,,,1,,nan", "created_at", "NaN is not a timestamp (got 'nan')"),
    ("B1,T,,,,1,,2300-01-01", "created_at", "after year 2200; check the value "
                                            "(got '2300-01-01')"),
    ("B1,T,,,,1,,1714000000000", "created_at", "after year 2200; looks like epoch "
                                               "milliseconds, give seconds (got '1714000000000')"),
    ("B1,T,,,,1,,2024-02-30T10:00:00", "created_at", "not a valid date/time "
                                                     "(got '2024-02-30T10:00:00')"),
    ("B1,T,,,,1,,1969-12-31", "created_at", "before 1970-01-01 (negative epoch time) "
                                            "(got '1969-12-31')"),
    ("B1,T,,,,1,,yesterday", "created_at", "unparsable; use ISO-8601 (2024-05-01T12:30:00Z) "
                                           "or epoch seconds (got 'yesterday')"),
    ("B1,T,,,,1,,01/02/2024", "created_at", "unparsable; use ISO-8601 (2024-05-01T12:30:00Z) "
                                            "or epoch seconds (got '01/02/2024')"),
]


@pytest.mark.parametrize("row, field, message", ITEM_CASES)
def test_bad_item_row(tmp_path, row, field, message):
    found = problems_of(make_shop(tmp_path, items=ITEMS + row + "\n"))
    assert found == [f"items.csv:{ITEM_LINE}: field '{field}': {message}"]


EVENT_CASES = [
    ("u1,A1,like,,,,1704189600", "event_type",
     "must be one of view, click, add_to_cart, purchase, rating, search (got 'like')"),
    ("u1,A1,,,,,1704189600", "event_type", "required value is missing"),
    (",A1,view,,,,1704189600", "user_id", "required value is missing"),
    ("u1,,search,,,,1704189600", "query", "search events need a non-empty query"),
    ("u1,,search,,  ,,1704189600", "query", "search events need a non-empty query"),
    ("u1,A1,search,,lips,,1704189600", "item_id", "must be empty for search events (got 'A1')"),
    ("u1,,click,,,,1704189600", "item_id", "required for every event type except search"),
    ("u1,ZZ,view,,,,1704189600", "item_id", "no item with this item_id in items.csv "
                                            "(got 'ZZ')"),
    ("u1,A1,rating,,,,1704189600", "value", "rating events need a value between 1 and 5"),
    ("u1,A1,rating,0,,,1704189600", "value", "rating must be between 1 and 5 (got '0')"),
    ("u1,A1,rating,5.5,,,1704189600", "value", "rating must be between 1 and 5 (got '5.5')"),
    ("u1,A1,purchase,0,,,1704189600", "value", "quantity must be a whole number >= 1 "
                                               "(got '0')"),
    ("u1,A1,add_to_cart,1.5,,,1704189600", "value", "quantity must be a whole number >= 1 "
                                                    "(got '1.5')"),
    ("u1,A1,view,lots,,,1704189600", "value", "not a number (got 'lots')"),
    ("u1,A1,view,,,,", "timestamp", "required timestamp is missing"),
    ("u1,A1,view,,,,NaN", "timestamp", "NaN is not a timestamp (got 'NaN')"),
    ("u1,A1,view,,,,9999999999", "timestamp", "after year 2200; check the value "
                                              "(got '9999999999')"),
    ("u1,A1,view,,,,2024-01-02T10:00:00+25:00", "timestamp",
     "not a valid date/time (got '2024-01-02T10:00:00+25:00')"),
]


@pytest.mark.parametrize("row, field, message", EVENT_CASES)
def test_bad_event_row(tmp_path, row, field, message):
    found = problems_of(make_shop(tmp_path, events=EVENTS + row + "\n"))
    assert found == [f"events.csv:{EVENT_LINE}: field '{field}': {message}"]


def test_ragged_event_row(tmp_path):
    found = problems_of(make_shop(tmp_path, events=EVENTS + "u1,A1,view\n"))
    assert found == [f"events.csv:{EVENT_LINE}: has 3 fields but the header has 7"]


def test_several_problems_in_one_row_are_all_named(tmp_path):
    found = problems_of(make_shop(tmp_path, events=EVENTS + "u1,ZZ,rating,9,,,later\n"))
    assert [p.split(": field ")[1].split(":")[0] for p in found] == [
        "'item_id'", "'value'", "'timestamp'"]


@pytest.mark.parametrize("row, message", [
    ("u1,5,NL", "duplicate user_id 'u1' (first seen at line 2)"),
    (",5,NL", "required value is missing"),
])
def test_bad_user_row(tmp_path, row, message):
    found = problems_of(make_shop(tmp_path, users=USERS + row + "\n"))
    assert found == [f"users.csv:{USER_LINE}: field 'user_id': {message}"]


def test_accepted_timestamp_forms_agree(tmp_path):
    forms = ["2024-01-02T10:00:00Z", "2024-01-02T10:00:00", "2024-01-02 10:00:00",
             "2024-01-02T11:00:00+01:00", "2024-01-02T05:00-0500", "2024-01-02T10:00:00.75Z",
             "1704189600", "1704189600.9", "2024-01-02T10:00:00,5z"]
    events = "user_id,item_id,event_type,timestamp\n" + "".join(
        f'u1,A1,view,"{form}"\n' for form in forms)
    shop = load_shop(make_shop(tmp_path, events=events))
    assert shop.events["timestamp"].tolist() == [1704189600] * len(forms)


# --- JSON Lines and Parquet specifics ---------------------------------------------------------

def _jsonl_shop(tmp_path, extra_item):
    make_shop(tmp_path)
    (tmp_path / "items.csv").unlink()
    lines = [json.dumps({"item_id": "A1", "title": "T", "price": 1}), "",
             "{not json", json.dumps(extra_item)]
    (tmp_path / "items.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "events.csv").write_text("user_id,item_id,event_type,timestamp\nu,A1,view,1\n")
    return tmp_path


def test_jsonl_wrong_types_and_malformed_line(tmp_path):
    found = problems_of(_jsonl_shop(tmp_path, {"item_id": 7.5, "title": ["a"], "price": True,
                                               "in_stock": "perhaps",
                                               "created_at": {"when": 1}}))
    assert found == [
        "items.jsonl:3: malformed JSON: Expecting property name enclosed in double quotes "
        "(column 2)",
        "items.jsonl:4: field 'item_id': expected text, got number (got 7.5)",
        "items.jsonl:4: field 'title': expected text, got list (got ['a'])",
        "items.jsonl:4: field 'price': expected a number, got boolean (got True)",
        "items.jsonl:4: field 'in_stock': expected a boolean: true/false, 1/0 or yes/no "
        "(got 'perhaps')",
        "items.jsonl:4: field 'created_at': expected a timestamp, got object (got {'when': 1})"]


def test_jsonl_numbers_as_ids_and_category_lists_are_accepted(tmp_path):
    root = _jsonl_shop(tmp_path, {"item_id": 42, "title": "T", "price": "3.5",
                                  "categories": ["Beauty", " Lips "], "in_stock": 0})
    (root / "items.jsonl").write_text("\n".join(
        line for line in (root / "items.jsonl").read_text().splitlines() if "not json" not in line))
    items = load_shop(root).items
    assert items["item_id"].tolist() == ["A1", "42"]
    assert items["categories"].tolist() == ["", "Beauty > Lips"]
    assert items["price"].tolist() == [1.0, 3.5]
    assert items["in_stock"].tolist() == [True, False]


def test_parquet_problems_name_rows(tmp_path):
    make_shop(tmp_path)
    (tmp_path / "items.csv").unlink()
    pd.DataFrame({"item_id": ["A1", "A2", "A1"], "title": ["x", "y", "z"],
                  "price": [1.0, -3.0, 2.0]}).to_parquet(tmp_path / "items.parquet")
    (tmp_path / "events.csv").write_text("user_id,item_id,event_type,timestamp\nu,A1,view,1\n")
    assert problems_of(tmp_path) == [
        "items.parquet:row 2: field 'price': must be >= 0 (got -3.0)",
        "items.parquet:row 3: field 'item_id': duplicate item_id 'A1' (first seen at row 1)"]
