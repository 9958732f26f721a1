"""Tests for pipeline/contract/files.py: which files hold a shop's tables."""
import pytest

from pipeline.contract.files import find_shop_files
from pipeline.contract.report import DataContractError


def touch(root, *names):
    for name in names:
        (root / name).write_text("x\n", encoding="utf-8")


def messages(data_dir):
    with pytest.raises(DataContractError) as info:
        find_shop_files(str(data_dir))
    return [f"{p.file}: {p.message}" for p in info.value.problems]


def test_single_files_and_optional_tables(tmp_path):
    touch(tmp_path, "items.jsonl", "events.csv")
    found = find_shop_files(str(tmp_path))
    assert sorted(found) == ["events", "items"], "users is optional"
    assert found["items"].fmt == "jsonl" and found["items"].display == "items.jsonl"
    assert found["events"].uris == (str(tmp_path / "events.csv"),)


def test_shards_are_found_in_name_order(tmp_path):
    touch(tmp_path, "items.csv", "events-00002-of-00003.parquet",
          "events-00000-of-00003.parquet", "events-00001-of-00003.parquet")
    events = find_shop_files(str(tmp_path))["events"]
    assert [u.rsplit("/", 1)[-1] for u in events.uris] == [
        "events-00000-of-00003.parquet", "events-00001-of-00003.parquet",
        "events-00002-of-00003.parquet"]
    assert events.display == "events-*.parquet (3 files)"
    assert events.order("events-00001-of-00003.parquet") == 1
    assert events.order("events-*.parquet (3 files)") == 3, "the table's name sorts last"


def test_file_level_problems_are_named_together(tmp_path):
    touch(tmp_path, "items.json", "items.csv.gz", "events.csv", "events-0.parquet")
    assert messages(tmp_path) == [
        f"items.csv|parquet|jsonl: required file is missing from {tmp_path} "
        "(found items.csv.gz, items.json: unsupported format)",
        "events.*: table 'events' is given in several formats (events.csv, "
        "events-0.parquet); keep one format per table"]
    assert messages(tmp_path / "nowhere") == [
        f"{tmp_path / 'nowhere'}: shop data folder does not exist"]
