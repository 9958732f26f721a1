"""Tests for pipeline/contract/tables.py: readers, their line numbers, tables of shards."""
import json

import pandas as pd
import pytest

from pipeline.contract.tables import TableReadError, concat_tables, read_table


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


# --- tables read from several files ----------------------------------------------------------

def test_shards_join_in_order_and_each_row_keeps_its_file_and_line(tmp_path):
    first = read_table(write(tmp_path / "events-00000-of-00002.csv",
                             "a,b\n1,x\n2,y,extra\n3,z\n"))
    second = read_table(write(tmp_path / "events-00001-of-00002.csv", "b,a\nw,4\n"))
    joined = concat_tables([first, second], "events-*.csv (2 files)")
    assert joined.name == "events-*.csv (2 files)" and joined.columns == ["a", "b"]
    assert joined.frame.to_dict("list") == {"a": ["1", "3", "4"], "b": ["x", "z", "w"]}
    assert joined.lines.tolist() == [2, 4, 2]
    assert [joined.file_of(i) for i in range(3)] == [
        "events-00000-of-00002.csv", "events-00000-of-00002.csv", "events-00001-of-00002.csv"]
    assert [(r.file, r.line) for r in joined.bad_records] == [("events-00000-of-00002.csv", 3)]
    assert joined.rows_read == 4
    assert concat_tables([first], "ignored") is first
    assert first.file_of(0) == "events-00000-of-00002.csv"


def test_shards_with_other_columns_are_refused_naming_the_shard(tmp_path):
    first = read_table(write(tmp_path / "items-0.csv", "item_id,title\nA,x\n"))
    other = read_table(write(tmp_path / "items-1.csv", "item_id,price\nB,1\n"))
    with pytest.raises(TableReadError, match=r"items-1.csv:1: the shards of a table must have "
                                             r"the same columns: lacks title; adds price "
                                             r"\(vs items-0.csv\)"):
        concat_tables([first, other], "items-*.csv (2 files)")


# --- CSV --------------------------------------------------------------------------------------

def test_csv_lines_count_quoted_multiline_fields_and_blank_lines(tmp_path):
    text = ('id,text\n'
            'a,"first\nsecond\nthird"\n'      # lines 2-4
            '\n'                               # line 5, blank
            'b,plain\n'                        # line 6
            'c,"x, ""quoted"""\n')             # line 7
    raw = read_table(write(tmp_path / "t.csv", text))
    assert raw.columns == ["id", "text"]
    assert list(raw.lines) == [2, 6, 7]
    assert list(raw.frame["text"]) == ["first\nsecond\nthird", "plain", 'x, "quoted"']
    assert raw.rows_read == 3
    assert raw.location(6) == "6"


def test_csv_ragged_rows_are_bad_records_with_their_line(tmp_path):
    raw = read_table(write(tmp_path / "t.csv", "a,b\n1,2\n1,2,3\n4\n5,6\n"))
    assert list(raw.lines) == [2, 5]
    assert [(r.line, r.message) for r in raw.bad_records] == [
        (3, "has 3 fields but the header has 2"), (4, "has 1 fields but the header has 2")]
    assert raw.bad_records[0].raw == "1,2,3"
    assert raw.rows_read == 4


def test_csv_values_are_strings_and_header_is_stripped_of_bom_and_spaces(tmp_path):
    raw = read_table(write(tmp_path / "t.csv", "\ufeffid , n\n007,1.50\n"))
    assert raw.columns == ["id", "n"]
    assert raw.frame.iloc[0].tolist() == ["007", "1.50"]


def test_csv_header_only_gives_empty_frame(tmp_path):
    raw = read_table(write(tmp_path / "t.csv", "a,b\n"))
    assert raw.columns == ["a", "b"] and len(raw.frame) == 0 and raw.rows_read == 0


@pytest.mark.parametrize("text, message", [
    ("", "no header row"),
    ("a,a\n1,2\n", "t.csv:1: column 'a' appears more than once"),
    ("a,,b\n", "t.csv:1: column 2 of the header has no name"),
    ('a,b\n1,2\n3,"open\n\n4,5\n', "t.csv:3: malformed CSV in the record starting here"),
    ('a,b\n"x"y,2\n', "t.csv:2: malformed CSV"),
])
def test_csv_file_level_errors(tmp_path, text, message):
    with pytest.raises(TableReadError, match=message):
        read_table(write(tmp_path / "t.csv", text))


def test_non_utf8_file_is_unreadable(tmp_path):
    with pytest.raises(TableReadError, match="t.csv: not UTF-8 text"):
        read_table(write(tmp_path / "t.csv", "a\ncrème\n", encoding="latin-1"))


# --- JSON Lines -------------------------------------------------------------------------------

def test_jsonl_lines_missing_keys_and_first_seen_columns(tmp_path):
    text = '{"id": "a", "n": 1}\n\n{"id": "b"}\n{"id": "c", "n": 2.5, "extra": true}\n'
    raw = read_table(write(tmp_path / "t.jsonl", text))
    assert raw.columns == ["id", "n", "extra"]
    assert list(raw.lines) == [1, 3, 4]
    assert raw.frame["n"].tolist() == [1, None, 2.5]
    assert raw.frame["extra"].tolist() == [None, None, True]
    assert raw.column_lines == {"id": 1, "n": 1, "extra": 4}


def test_jsonl_malformed_and_non_object_lines_are_bad_records(tmp_path):
    text = '{"id": "a"}\n{"id": "b",}\n["c"]\n{"id": "d"}\n'
    raw = read_table(write(tmp_path / "t.jsonl", text))
    assert list(raw.lines) == [1, 4]
    assert [r.line for r in raw.bad_records] == [2, 3]
    assert raw.bad_records[0].message.startswith("malformed JSON")
    assert "got list" in raw.bad_records[1].message
    assert raw.bad_records[1].raw == '["c"]'
    assert raw.rows_read == 4


@pytest.mark.parametrize("text, message", [
    ("", "no JSON object records"),
    ("\n{oops\n", "line 2: malformed JSON"),
])
def test_jsonl_without_any_record_is_unreadable(tmp_path, text, message):
    with pytest.raises(TableReadError, match=message):
        read_table(write(tmp_path / "t.jsonl", text))


# --- Parquet ----------------------------------------------------------------------------------

def test_parquet_rows_are_numbered_from_one_and_keep_types(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b", "c"], "n": pd.array([1, None, 3], dtype="Int64"),
                          "cat": pd.Categorical(["x", "y", "x"])})
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    raw = read_table(path)
    assert raw.columns == ["id", "n", "cat"]
    assert list(raw.lines) == [1, 2, 3]
    assert raw.location(2) == "row 2"
    assert raw.frame["n"].tolist() == [1, None, 3]          # ints stay ints next to nulls
    assert raw.frame["cat"].dtype == object


def test_corrupt_parquet_is_unreadable(tmp_path):
    with pytest.raises(TableReadError, match="t.parquet: unreadable Parquet file"):
        read_table(write(tmp_path / "t.parquet", "not parquet"))


def test_unsupported_extension(tmp_path):
    with pytest.raises(TableReadError, match="unsupported file type '.json'"):
        read_table(write(tmp_path / "t.json", json.dumps({})))


def test_parquet_saved_pandas_index_is_not_a_column(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"id": ["a", "b"]}, index=[7, 9]).to_parquet(path)
    raw = read_table(path)
    assert raw.columns == ["id"] and raw.frame["id"].tolist() == ["a", "b"]
