"""Tests for pipeline/contract/tables.py: file lookup, readers and their line numbers."""
import json

import pandas as pd
import pytest

from pipeline.contract.tables import TableReadError, find_table_file, read_table, unsupported_files


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


# --- locating files ---------------------------------------------------------------------------

def test_find_table_file_returns_the_single_file(tmp_path):
    write(tmp_path / "items.jsonl", '{"a": 1}\n')
    assert find_table_file(tmp_path, "items") == tmp_path / "items.jsonl"
    assert find_table_file(tmp_path, "users") is None


def test_find_table_file_rejects_two_formats_of_one_table(tmp_path):
    write(tmp_path / "events.csv", "a\n")
    write(tmp_path / "events.parquet", "x")
    with pytest.raises(TableReadError, match=r"several formats \(events.csv, events.parquet\)"):
        find_table_file(tmp_path, "events")


def test_unsupported_files_lists_other_extensions(tmp_path):
    write(tmp_path / "items.json", "[]")
    write(tmp_path / "items.csv.gz", "")
    assert unsupported_files(tmp_path, "items") == ["items.csv.gz", "items.json"]


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
