"""Tests for pipeline/contract/load.py: load_shop, both policies, the report and the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.contract.load import DataContractError, load_shop, main

REPO = Path(__file__).resolve().parents[3]

ITEMS = (
    "item_id,title,description,brand,categories,price,in_stock,created_at\n"
    'A1,Red lipstick,"Creamy,\nlong lasting",Acme,Beauty>Makeup >  Lips,9.5,yes,'
    "2024-01-01T00:00:00Z\n"                                   # lines 2-3
    "A2,Blue mascara,,,Beauty,0,FALSE,1700000000\n"           # line 4
    "A3,Crème,,,,12,,2024-01-01T02:00:00+02:00\n")            # line 5
ITEM_LINE = 6          # line of a row appended to ITEMS
EVENTS = (
    "user_id,item_id,event_type,value,query,session_id,timestamp\n"
    "u1,A1,view,,,s1,2024-01-02T10:00:00Z\n"                 # line 2
    "u1,A1,click,,,s1,2024-01-02 10:00:05\n"                 # line 3
    "u1,,search,,red lipstick,s1,1704189600\n"                # line 4
    "u2,A2,add_to_cart,2,,,1704189700\n"                      # line 5
    "u2,A2,purchase,,,,1704189700.9\n"                        # line 6
    "u2,A3,rating,4,,,2024-01-01T00:00:00Z\n")                # line 7
EVENT_LINE = 8         # line of a row appended to EVENTS
USERS = "user_id,age,country\nu1,34,FR\nu2,,DE\n"
USER_LINE = 4


def make_shop(root, items=ITEMS, events=EVENTS, users=None):
    """Write CSV tables into root and return it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "items.csv").write_text(items, encoding="utf-8")
    (root / "events.csv").write_text(events, encoding="utf-8")
    if users is not None:
        (root / "users.csv").write_text(users, encoding="utf-8")
    return root


def problems_of(root, **kwargs):
    """Problem strings of a shop that must fail validation."""
    with pytest.raises(DataContractError) as info:
        load_shop(root, **kwargs)
    return [str(p) for p in info.value.problems]


# --- good data --------------------------------------------------------------------------------

def test_good_csv_shop_gives_canonical_frames(tmp_path):
    shop = load_shop(make_shop(tmp_path, users=USERS))
    items = shop.items
    assert list(items.columns) == ["item_id", "title", "description", "brand", "categories",
                                   "price", "in_stock", "created_at"]
    assert items["item_id"].tolist() == ["A1", "A2", "A3"]
    assert items["description"].tolist() == ["Creamy,\nlong lasting", "", ""]
    assert items["categories"].tolist() == ["Beauty > Makeup > Lips", "Beauty", ""]
    assert items["price"].dtype == np.float64 and items["in_stock"].dtype == bool
    assert items["in_stock"].tolist() == [True, False, True]       # empty in_stock: in stock
    assert items["created_at"].tolist() == [1704067200, 1700000000, 1704067200]
    assert items["created_at"].dtype == np.int64
    events = shop.events
    assert list(events.columns) == ["user_id", "item_id", "event_type", "value", "query",
                                    "session_id", "timestamp"]
    # stably sorted by time: the rating (oldest) first; view and search tie and keep file order
    assert events["event_type"].tolist() == ["rating", "view", "search", "click",
                                             "add_to_cart", "purchase"]
    assert events["timestamp"].tolist() == [1704067200, 1704189600, 1704189600, 1704189605,
                                            1704189700, 1704189700]
    assert events["item_id"].tolist() == ["A3", "A1", "", "A1", "A2", "A2"]
    assert events["value"].tolist()[-2:] == [2.0, 1.0]            # purchase quantity defaults to 1
    assert np.isnan(events["value"].iat[1])                         # view: no value
    assert events["timestamp"].dtype == np.int64
    assert shop.users["age"].tolist() == ["34", ""]
    report = shop.report
    assert report.problems == [] and report.quarantined == []
    assert (report.tables["events"].rows_read, report.tables["events"].rows_kept) == (6, 6)


def test_events_ties_keep_file_order(tmp_path):
    events = ("user_id,item_id,event_type,timestamp\n"
              "u1,A2,view,50\nu1,A1,view,10\nu1,A3,click,50\nu1,A1,click,10\n")
    shop = load_shop(make_shop(tmp_path, events=events))
    assert shop.events["item_id"].tolist() == ["A1", "A1", "A2", "A3"]
    assert shop.events["event_type"].tolist() == ["view", "click", "view", "click"]


def test_users_file_is_optional(tmp_path):
    shop = load_shop(make_shop(tmp_path))
    assert list(shop.users.columns) == ["user_id"] and len(shop.users) == 0
    assert shop.report.tables["users"].file is None


def _write_formats(root: Path, fmt: str) -> Path:
    """The same small shop written as csv, jsonl or parquet, each with its natural types."""
    root.mkdir()
    items = [
        {"item_id": "A1", "title": "Red lipstick", "description": "Creamy\nline",
         "brand": "Acme", "categories": "Beauty > Makeup > Lips", "price": 9.5,
         "in_stock": True, "created_at": "2024-01-01T00:00:00Z"},
        {"item_id": "A2", "title": "Blue mascara", "description": "", "brand": "",
         "categories": "Beauty", "price": 0.0, "in_stock": False,
         "created_at": "2023-11-14T22:13:20Z"}]
    events = [
        {"user_id": "u1", "item_id": "A1", "event_type": "view", "value": None, "query": "",
         "session_id": "s1", "timestamp": 1704189600},
        {"user_id": "u1", "item_id": "", "event_type": "search", "value": None,
         "query": "mascara", "session_id": "s1", "timestamp": 1704189660},
        {"user_id": "u2", "item_id": "A2", "event_type": "rating", "value": 5.0, "query": "",
         "session_id": "", "timestamp": 1704189000}]
    users = [{"user_id": "u1", "age": 34}, {"user_id": "u2", "age": 51}]
    if fmt == "csv":
        for name, rows in (("items", items), ("events", events), ("users", users)):
            pd.DataFrame(rows).to_csv(root / f"{name}.csv", index=False)
    elif fmt == "jsonl":
        for item in items:       # epoch seconds here, ISO text elsewhere
            item["created_at"] = int(pd.Timestamp(item["created_at"]).timestamp())
        for name, rows in (("items", items), ("events", events), ("users", users)):
            with open(root / f"{name}.jsonl", "w") as handle:
                for row in rows:
                    handle.write(json.dumps({k: v for k, v in row.items() if v is not None})
                                 + "\n")
    else:
        frame = pd.DataFrame(items)
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)   # typed timestamps
        frame.to_parquet(root / "items.parquet")
        pd.DataFrame(events).to_parquet(root / "events.parquet")
        pd.DataFrame(users).to_parquet(root / "users.parquet")
    return root


def test_all_three_formats_load_to_identical_frames(tmp_path):
    shops = {fmt: load_shop(_write_formats(tmp_path / fmt, fmt))
             for fmt in ("csv", "jsonl", "parquet")}
    for fmt in ("jsonl", "parquet"):
        for table in ("items", "users", "events"):
            pd.testing.assert_frame_equal(getattr(shops[fmt], table),
                                          getattr(shops["csv"], table), obj=f"{fmt} {table}")
    assert shops["csv"].items["created_at"].tolist() == [1704067200, 1700000000]
    assert shops["csv"].users["age"].tolist() == ["34", "51"]


# --- file-level problems (always fail) --------------------------------------------------------

def test_missing_required_file(tmp_path):
    make_shop(tmp_path)
    (tmp_path / "events.csv").unlink()
    (tmp_path / "events.json").write_text("[]")
    assert problems_of(tmp_path, on_bad_rows="quarantine") == [
        f"events.csv|parquet|jsonl: required file is missing from {tmp_path} "
        "(found events.json: unsupported format)"]


def test_missing_folder(tmp_path):
    assert "does not exist" in problems_of(tmp_path / "nope")[0]


def test_two_formats_of_one_table(tmp_path):
    make_shop(tmp_path)
    (tmp_path / "items.jsonl").write_text('{"item_id": "A1"}\n')
    assert "several formats (items.csv, items.jsonl)" in problems_of(tmp_path)[0]


def test_missing_required_and_unknown_columns_name_the_allowed_ones(tmp_path):
    items = "item_id,titel,price,colour\nA1,x,1,red\n"
    found = problems_of(make_shop(tmp_path, items=items), on_bad_rows="quarantine")
    assert found[0] == ("items.csv:1: field 'title': required column is missing "
                        "(required columns: item_id, title, price)")
    assert found[1].startswith("items.csv:1: field 'titel': unknown column; did you mean "
                               "'title'? (allowed columns: item_id, title, price, description,")
    assert found[2].startswith("items.csv:1: field 'colour': unknown column (allowed")


def test_unknown_jsonl_key_names_the_line_it_first_appears_on(tmp_path):
    make_shop(tmp_path)
    (tmp_path / "events.csv").unlink()
    (tmp_path / "events.jsonl").write_text(
        '{"user_id": "u1", "item_id": "A1", "event_type": "view", "timestamp": 1}\n'
        '{"user_id": "u1", "item_id": "A1", "event_type": "view", "timestamp": 1, "price": 3}\n')
    assert problems_of(tmp_path)[0].startswith("events.jsonl:2: field 'price': unknown column")


def test_users_may_have_extra_columns_but_need_user_id(tmp_path):
    found = problems_of(make_shop(tmp_path, users="id,age\nu1,3\n"))
    assert found == ["users.csv:1: field 'user_id': required column is missing "
                     "(required columns: user_id)"]


def test_unreadable_file(tmp_path):
    make_shop(tmp_path)
    (tmp_path / "items.csv").unlink()
    (tmp_path / "items.parquet").write_bytes(b"garbage")
    assert problems_of(tmp_path, on_bad_rows="quarantine")[0].startswith(
        "items.parquet: unreadable Parquet file")


def test_invalid_policy_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="on_bad_rows must be one of fail, quarantine, "
                                         "got 'skip'"):
        load_shop(make_shop(tmp_path), on_bad_rows="skip")


# --- fail policy: message cap -----------------------------------------------------------------

def test_fail_lists_every_problem_but_caps_the_message(tmp_path):
    bad = "".join(f"u1,A1,view,,,,-{i + 1}\n" for i in range(60))
    with pytest.raises(DataContractError) as info:
        load_shop(make_shop(tmp_path, events=EVENTS + bad))
    assert len(info.value.problems) == 60
    message = str(info.value)
    assert message.splitlines()[0].endswith("(60 problems):")
    assert f"events.csv:{EVENT_LINE}: field 'timestamp': negative epoch seconds (got '-1')" \
        in message
    assert message.splitlines()[-1] == "... and 10 more"
    assert len(message.splitlines()) == 1 + 50 + 1


# --- quarantine policy ------------------------------------------------------------------------

QUARANTINE_ITEMS = ITEMS + (
    "B1,,,,,3,true,\n"            # line 6: empty title -> quarantined, and its events
    "A2,Again,,,,1,true,\n"       # line 7: duplicate of A2 (line 4) -> quarantined, A2 kept
    "B2,Ragged,1\n")              # line 8: ragged row
QUARANTINE_EVENTS = EVENTS + (
    "u3,B1,click,,,,1704189800\n"     # line 8: item B1 was quarantined
    "u3,B1,purchase,0,,,1704189801\n" # line 9: item quarantined and bad quantity
    "u3,ZZ,view,,,,1704189802\n"      # line 10: unknown item
    "u3,,search,,,,1704189803\n"      # line 11: search without query
    "u3,A1,view,,,,1704189804\n")     # line 12: fine


def test_quarantine_removes_bad_rows_cascades_and_counts_add_up(tmp_path):
    root = make_shop(tmp_path / "shop", QUARANTINE_ITEMS, QUARANTINE_EVENTS,
                     USERS + "u1,99,XX\n")                     # line 4: duplicate user
    report_dir = tmp_path / "report"
    shop = load_shop(root, on_bad_rows="quarantine", report_dir=report_dir)
    assert shop.items["item_id"].tolist() == ["A1", "A2", "A3"]
    assert shop.items.set_index("item_id").loc["A2", "title"] == "Blue mascara"  # first kept
    assert "B1" not in set(shop.events["item_id"])
    assert shop.events["user_id"].tolist().count("u3") == 1
    assert shop.users["user_id"].tolist() == ["u1", "u2"]

    counts = {name: (c.rows_read, c.rows_kept, c.rows_quarantined)
              for name, c in shop.report.tables.items()}
    assert counts == {"items": (6, 3, 3), "users": (3, 2, 1), "events": (11, 7, 4)}
    for name, (read, kept, quarantined) in counts.items():
        assert read == kept + quarantined
        frame = getattr(shop, name)
        assert len(frame) == kept

    records = [json.loads(line) for line in
               (report_dir / "quarantine.jsonl").read_text().splitlines()]
    assert len(records) == sum(c[2] for c in counts.values())
    where = {(r["table"], r["line"]): r for r in records}
    assert set(where) == {("items", 6), ("items", 7), ("items", 8), ("users", 4),
                          ("events", 8), ("events", 9), ("events", 10), ("events", 11)}
    assert where[("items", 6)]["fields"] == ["title"]
    assert where[("items", 6)]["reasons"] == ["empty_title"]
    assert where[("items", 6)]["raw"]["item_id"] == "B1"
    assert where[("items", 7)]["messages"] == ["duplicate item_id 'A2' (first seen at line 4)"]
    assert where[("items", 8)]["reasons"] == ["malformed_record"]
    assert where[("items", 8)]["raw"] == "B2,Ragged,1"
    assert where[("events", 8)]["reasons"] == ["quarantined_item"]
    assert where[("events", 8)]["messages"] == ["item 'B1' was quarantined"]
    assert sorted(where[("events", 9)]["reasons"]) == ["bad_quantity", "quarantined_item"]
    assert where[("events", 10)]["reasons"] == ["unknown_item"]
    assert where[("events", 11)] == {
        "table": "events", "file": "events.csv", "line": 11, "location": "11",
        "fields": ["query"], "reasons": ["missing_query"],
        "messages": ["search events need a non-empty query"],
        "raw": {"user_id": "u3", "item_id": "", "event_type": "search", "value": "",
                "query": "", "session_id": "", "timestamp": "1704189803"}}

    summary = json.loads((report_dir / "quarantine_summary.json").read_text())
    assert summary["policy"] == "quarantine"
    assert summary["tables"]["items"] == {
        "file": "items.csv", "rows_read": 6, "rows_kept": 3, "rows_quarantined": 3,
        "reasons": {"duplicate_id": 1, "empty_title": 1, "malformed_record": 1}}
    assert summary["tables"]["events"]["reasons"] == {
        "bad_quantity": 1, "missing_query": 1, "quarantined_item": 2, "unknown_item": 1}
    assert summary["tables"]["users"]["reasons"] == {"duplicate_id": 1}


def test_fail_policy_reports_item_problems_not_their_cascade(tmp_path):
    found = problems_of(make_shop(tmp_path, QUARANTINE_ITEMS, QUARANTINE_EVENTS))
    assert found == [
        "items.csv:6: field 'title': title must not be empty",
        "items.csv:7: field 'item_id': duplicate item_id 'A2' (first seen at line 4)",
        "items.csv:8: has 3 fields but the header has 8",
        "events.csv:9: field 'value': quantity must be a whole number >= 1 (got '0')",
        "events.csv:10: field 'item_id': no item with this item_id in items.csv (got 'ZZ')",
        "events.csv:11: field 'query': search events need a non-empty query"]


def test_quarantine_that_leaves_no_items_fails(tmp_path):
    items = "item_id,title,price\nA1,,1\n"
    root = make_shop(tmp_path / "shop", items=items,
                     events="user_id,item_id,event_type,timestamp\nu1,A1,view,1\n")
    found = problems_of(root, on_bad_rows="quarantine", report_dir=tmp_path / "r")
    assert found[:2] == ["items.csv: no usable rows left after quarantine",
                         "events.csv: no usable rows left after quarantine"]
    summary = json.loads((tmp_path / "r" / "quarantine_summary.json").read_text())
    assert summary["tables"]["items"]["reasons"] == {"empty_title": 1}


# --- command line -----------------------------------------------------------------------------

def test_cli_ok_and_quarantine_summary(tmp_path, capsys):
    root = make_shop(tmp_path / "shop", QUARANTINE_ITEMS, QUARANTINE_EVENTS)
    assert main([str(root), "--on-bad-rows", "quarantine", "--report-dir",
                 str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "items (items.csv): 6 read, 3 kept, 3 quarantined" in out
    assert "quarantined_item: 2" in out
    assert (tmp_path / "r" / "quarantine.jsonl").exists()


def test_cli_fails_with_problems(tmp_path, capsys):
    root = make_shop(tmp_path, QUARANTINE_ITEMS, QUARANTINE_EVENTS)
    assert main([str(root)]) == 1
    err = capsys.readouterr().err
    assert "items.csv:6: field 'title': title must not be empty" in err


@pytest.mark.slow
def test_cli_runs_as_module(tmp_path):
    command = [sys.executable, "-m", "pipeline.contract", str(make_shop(tmp_path))]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "events (events.csv): 6 read, 6 kept, 0 quarantined" in done.stdout


# --- the examples in docs/data.md are valid ---------------------------------------------------

def _doc_blocks(language):
    """Fenced code blocks of docs/data.md in a given language, in order."""
    text = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    parts = text.split(f"```{language}\n")[1:]
    return [part.split("```", 1)[0] for part in parts]


def test_docs_examples_load(tmp_path, monkeypatch):
    items, events, users = _doc_blocks("csv")
    csv_shop = load_shop(make_shop(tmp_path / "csv", items, events, users))
    assert csv_shop.report.tables["events"].rows_kept == 6
    assert csv_shop.items["description"].iat[0] == "Long-lasting, matte.\nShade: ruby"
    jsonl = tmp_path / "jsonl"
    jsonl.mkdir()
    items_jsonl, events_jsonl = _doc_blocks("json")
    (jsonl / "items.jsonl").write_text(items_jsonl)
    (jsonl / "events.jsonl").write_text(events_jsonl)
    json_shop = load_shop(jsonl)
    pd.testing.assert_frame_equal(json_shop.items, csv_shop.items)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shop").mkdir()
    exec(_doc_blocks("python")[0], {})
    parquet_shop = load_shop(tmp_path / "shop")
    assert parquet_shop.items["created_at"].tolist() == [1705309200, 1705309200]
