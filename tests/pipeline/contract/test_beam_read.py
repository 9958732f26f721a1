"""Tests for pipeline/contract/beam_read.py: the data contract applied while Beam reads a shop.

The reference is load_shop (the in-memory reader): on the same files, whatever the chunk
size, sharding or runner, the Beam read must find the same problems, quarantine the same
rows and keep the same canonical rows.
"""
import csv
import glob
import io
import json
import math

import apache_beam as beam
import pandas as pd
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.contract import beam_read
from pipeline.contract.load import DataContractError, load_shop
from tests.pipeline.contract.test_load import make_shop

ITEMS = (
    "item_id,title,description,brand,categories,price,in_stock,created_at\n"
    'A1,Red lipstick,"Creamy,\nlong lasting",Acme,Beauty>Makeup,9.5,yes,2024-01-01T00:00:00Z\n'
    "A2,Blue mascara,,,Beauty,0,FALSE,1700000000\n"          # line 4
    "A3,Green gloss,,,Beauty,-1,,\n"                         # line 5: bad price
    "A4,Nail file,,,Tools,3,,\n"                             # line 6
    "A2,Mascara again,,,Beauty,4,,\n"                        # line 7: duplicate of line 4
    ",No id,,,,1,,\n"                                        # line 8: missing id
    "A5,Comb,,,Tools,2,true,extra\n")                        # line 9: bad created_at
EVENTS = (
    "user_id,item_id,event_type,value,query,session_id,timestamp\n"
    "u1,A1,view,,,s1,2024-01-02T10:00:00Z\n"
    "u1,A1,click,,,s1,2024-01-02 10:00:05\n"
    "u1,,search,,red lipstick,s1,1704189600\n"
    "u2,A2,add_to_cart,2,,,1704189700\n"
    "u2,A3,purchase,,,,1704189700\n"                          # quarantined item A3
    "u2,ZZ,click,,,,1704189701\n"                             # unknown item
    "u3,A4,rating,9,,,1704189702\n"                           # bad rating
    "u3,A4,rating,4,,,1704189703\n"
    "u3,A4,click,,,\n"                                        # ragged record
    "u4,A1,Purchase,1,,,1704189800\n"
    "u4,A4,view,,,,1704189800\n")
USERS = "user_id,age\nu1,34\nu2,\nu1,35\n"                      # line 4: duplicate user


def write_shop(root, items=ITEMS, events=EVENTS, users=USERS):
    return make_shop(root, items, events, users)


def split_csv(root, table, text, parts):
    """Write a CSV table as shards of whole records (the header repeated in each)."""
    header, *records = list(csv.reader(io.StringIO(text)))
    size = math.ceil(len(records) / parts)
    for i in range(parts):
        with open(root / f"{table}-{i:05d}-of-{parts:05d}.csv", "w", newline="",
                  encoding="utf-8") as out:
            csv.writer(out, lineterminator="\n").writerows(
                [header] + records[i * size:(i + 1) * size])


def run_validation(data_dir, out_dir, policy="quarantine", chunk_rows=beam_read.CHUNK_ROWS,
                   mode="in_memory", **privacy):
    files = beam_read.find_shop_files(str(data_dir))
    args = [f"--direct_running_mode={mode}"]
    if mode == "multi_processing":
        args.append("--direct_num_workers=2")
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        beam_read.add_validation(p, files, policy, str(out_dir), chunk_rows=chunk_rows,
                                 **privacy)
    report, extra = beam_read.read_report(files, policy, str(out_dir), str(data_dir))
    events_glob, items_glob = beam_read.canonical_patterns(str(out_dir))
    events = pd.concat([pq.read_table(f).to_pandas() for f in
                        sorted(glob.glob(events_glob))], ignore_index=True)
    items = pd.concat([pq.read_table(f).to_pandas() for f in
                       sorted(glob.glob(items_glob))], ignore_index=True)
    return report, extra, events, items


def problem_keys(problems):
    return sorted((p.table, p.line, p.field or "", p.code, p.message) for p in problems)


def quarantine_keys(rows):
    return sorted((r.table, r.line, tuple(sorted(r.reasons))) for r in rows)


EVENT_KEY = ["user_id", "item_id", "event_type", "query", "session_id", "timestamp"]


def event_rows(frame):
    frame = frame.assign(value=frame["value"].fillna(-1.0))
    return sorted(map(tuple, frame[EVENT_KEY + ["value"]].to_numpy().tolist()))


@pytest.mark.parametrize("chunk_rows", [2, 3, beam_read.CHUNK_ROWS])
def test_same_outcome_as_load_shop_whatever_the_chunk_size(tmp_path, chunk_rows):
    root = write_shop(tmp_path / "shop")
    expected = load_shop(root, on_bad_rows="quarantine")
    report, extra, events, items = run_validation(root, tmp_path / "out",
                                                  chunk_rows=chunk_rows)
    assert problem_keys(report.problems) == problem_keys(expected.report.problems)
    assert quarantine_keys(report.quarantined) == quarantine_keys(expected.report.quarantined)
    assert report.summary() == expected.report.summary()
    assert event_rows(events) == event_rows(expected.events)
    assert sorted(items["item_id"]) == sorted(expected.items["item_id"]) == \
        ["A1", "A2", "A4"]
    assert extra == {"erased_events": 0, "items_kept": 3, "events_written": len(events)}
    # the duplicate is the later row, named with the first one's line; the cascade is named
    codes = {(p.table, p.line): p.code for p in report.problems}
    assert codes[("items", 7)] == "duplicate_id" and codes[("users", 4)] == "duplicate_id"
    assert codes[("events", 6)] == "quarantined_item" and codes[("events", 7)] == "unknown_item"
    assert "first seen at line 4" in [p for p in report.problems if p.line == 7
                                      and p.table == "items"][0].message
    # seq orders the kept events as the export did (file, then line)
    assert events.sort_values("seq")["event_type"].tolist()[:3] == ["view", "click", "search"]


def write_sharded_shop(root):
    """The messy shop with events in 3 shards and items in 2 (users one file)."""
    root.mkdir()
    split_csv(root, "events", EVENTS, 3)
    split_csv(root, "items", ITEMS, 2)
    (root / "users.csv").write_text(USERS, encoding="utf-8")
    return root


def test_sharded_tables_on_two_worker_processes_match_the_single_files(tmp_path):
    whole = write_shop(tmp_path / "whole")
    shards = write_sharded_shop(tmp_path / "shards")
    expected = load_shop(whole, on_bad_rows="quarantine")
    report, _, events, items = run_validation(shards, tmp_path / "out",
                                              mode="multi_processing")
    assert event_rows(events) == event_rows(expected.events)
    assert sorted(items["item_id"]) == sorted(expected.items["item_id"])
    assert report.tables["events"].file == "events-*.csv (3 files)"
    assert report.tables["events"].rows_read == expected.report.tables["events"].rows_read
    assert len(report.quarantined) == len(expected.report.quarantined)
    duplicate = [p for p in report.problems if p.code == "duplicate_id" and p.table == "items"]
    # A2 first appears in the first shard; the repeat sits in the second one
    assert [(p.file, p.message) for p in duplicate] == [
        ("items-00001-of-00002.csv",
         "duplicate item_id 'A2' (first seen at items-00000-of-00002.csv line 4)")]


def test_load_shop_reads_sharded_tables_as_the_beam_read_does(tmp_path):
    """The API and the CLI (load_shop) accept the sharded export the pipeline trains on, with
    the same problems, file by file, and the same rows."""
    shards = write_sharded_shop(tmp_path / "shards")
    loaded = load_shop(shards, on_bad_rows="quarantine")
    report, _, events, items = run_validation(shards, tmp_path / "out")

    def keyed(problems):
        return sorted((p.table, p.file, p.line, p.field or "", p.code, p.message)
                      for p in problems)
    assert keyed(loaded.report.problems) == keyed(report.problems)
    assert sorted((r.table, r.file, r.line, tuple(sorted(r.reasons)))
                  for r in loaded.report.quarantined) == \
        sorted((r.table, r.file, r.line, tuple(sorted(r.reasons))) for r in report.quarantined)
    assert loaded.report.summary() == report.summary()
    assert event_rows(loaded.events) == event_rows(events)
    assert sorted(loaded.items["item_id"]) == sorted(items["item_id"]) == ["A1", "A2", "A4"]
    assert loaded.report.tables["events"].file == "events-*.csv (3 files)"
    # the report lists problems in export order: table, then shard, then line
    files = [p.file for p in loaded.report.problems if p.table == "events"]
    assert files == sorted(files)
    with pytest.raises(DataContractError) as info:
        load_shop(shards)
    assert "items-00001-of-00002.csv:2: field 'item_id': duplicate item_id 'A2' (first seen " \
           "at items-00000-of-00002.csv line 4)" in str(info.value).splitlines()


def test_fail_policy_raises_every_problem_with_file_and_line(tmp_path):
    root = write_shop(tmp_path / "shop")
    with pytest.raises(DataContractError) as info:
        run_validation(root, tmp_path / "out", policy="fail", chunk_rows=2)
    text = str(info.value)
    assert "items.csv:5: field 'price': must be >= 0" in text
    assert "events.csv:7: field 'item_id': no item with this item_id in items.csv" in text
    assert "events.csv:10: has 6 fields but the header has 7" in text
    assert len(info.value.problems) == len(
        pytest.raises(DataContractError, load_shop, root).value.problems)


def test_file_level_problems_stop_before_any_row_is_used(tmp_path):
    root = write_shop(tmp_path / "mixed")
    (root / "events-00001.jsonl").write_text("{}\n", encoding="utf-8")
    with pytest.raises(DataContractError, match="several formats"):
        beam_read.find_shop_files(str(root))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "items.xlsx").write_text("x")
    with pytest.raises(DataContractError) as info:
        beam_read.find_shop_files(str(empty))
    assert "found items.xlsx: unsupported format" in str(info.value)
    with pytest.raises(DataContractError, match="does not exist"):
        beam_read.find_shop_files(str(tmp_path / "nowhere"))
    # an unknown key that first appears in a late chunk of a JSON Lines shard
    late = write_shop(tmp_path / "late")
    (late / "events.csv").unlink()
    lines = [json.dumps({"user_id": "u1", "item_id": "A1", "event_type": "view",
                         "timestamp": 1704189600 + i}) for i in range(5)]
    lines.append(json.dumps({"user_id": "u1", "item_id": "A1", "event_type": "view",
                             "timestamp": 1704189700, "tiemstamp": 1}))
    (late / "events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataContractError) as info:
        run_validation(late, tmp_path / "out", chunk_rows=2)
    assert "events.jsonl:6: field 'tiemstamp': unknown column; did you mean 'timestamp'?" \
        in str(info.value)


def test_user_ids_are_pseudonymised_in_kept_and_quarantined_rows(tmp_path):
    from pipeline.contract.pseudonym import Pseudonyms, write_new_key

    key = tmp_path / "key"
    write_new_key(key)
    root = write_shop(tmp_path / "shop")
    report, _, events, _ = run_validation(root, tmp_path / "out",
                                          pseudonym_key_file=str(key))
    pseudonyms = Pseudonyms.from_file(key)
    assert set(events["user_id"]) == {pseudonyms(u) for u in ("u1", "u2", "u3", "u4")}
    raw_ids = {r.raw["user_id"] for r in report.quarantined
               if r.table in ("events", "users") and isinstance(r.raw, dict)}
    assert raw_ids and not raw_ids & {"u1", "u2", "u3", "u4"}


class MemoryFileSystem(FileSystem):
    """A read-only ``mem://`` filesystem: shows the reader only goes through Beam's
    FileSystems (as it would for gs:// or s3://)."""

    files: dict = {}

    @classmethod
    def scheme(cls):
        return "mem"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        return tuple(path.rsplit("/", 1))

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        for path, data in self.files.items():
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(data))

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        if path not in self.files:
            raise BeamIOError(f"no such file {path}")
        return io.BytesIO(self.files[path])

    def exists(self, path):
        return path in self.files

    def size(self, path):
        return len(self.files[path])

    def mkdirs(self, path):
        raise NotImplementedError

    def create(self, path, mime_type=None, compression_type=None):
        raise NotImplementedError

    def copy(self, source_file_names, destination_file_names):
        raise NotImplementedError

    def rename(self, source_file_names, destination_file_names):
        raise NotImplementedError

    def last_updated(self, path):
        return 0.0

    def checksum(self, path):
        return str(len(self.files[path]))

    def metadata(self, path):
        return FileMetadata(path, len(self.files[path]))

    def delete(self, paths):
        raise NotImplementedError


def test_reads_a_shop_on_a_non_local_filesystem(tmp_path):
    local = write_shop(tmp_path / "shop", users=None)
    buffer = io.BytesIO()
    pd.read_csv(local / "items.csv", dtype=str, keep_default_na=False).to_parquet(buffer)
    MemoryFileSystem.files = {"mem://bucket/shop/events.csv": EVENTS.encode("utf-8"),
                              "mem://bucket/shop/items.parquet": buffer.getvalue()}
    try:
        report, _, events, items = run_validation("mem://bucket/shop", tmp_path / "out")
    finally:
        MemoryFileSystem.files = {}
    assert report.tables["items"].file == "items.parquet"
    assert sorted(items["item_id"]) == ["A1", "A2", "A4"]
    locations = {p.location for p in report.problems if p.table == "items"}
    assert "row 3" in locations                  # Parquet rows are named "row N"
    assert len(events) == len(load_shop(local, on_bad_rows="quarantine").events)


def test_missing_output_rows_are_an_error_not_a_smaller_shop(tmp_path):
    root = write_shop(tmp_path / "shop")
    files = beam_read.find_shop_files(str(root))
    out = tmp_path / "out"
    with beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"])) as p:
        beam_read.add_validation(p, files, "quarantine", str(out))
    assert beam_read.read_report(files, "quarantine", str(out))[1]["events_written"] == 7
    for path in glob.glob(str(out / "events-*.parquet")):    # as if a worker's output vanished
        table = pq.read_table(path)
        pq.write_table(table.slice(0, table.num_rows - 1), path)
    with pytest.raises(RuntimeError, match="lost data: 6 of 7 kept events rows"):
        beam_read.read_report(files, "quarantine", str(out))
