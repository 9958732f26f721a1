"""The data contract on Beam: read a shop export with Beam I/O and validate it chunk by chunk.

``find_shop_files(data_dir)`` lists each table's files on any filesystem Beam supports
(local, ``gs://``, ``s3://``): ``<table>.<ext>`` or shards ``<table>-*.<ext>`` (all of one
format: csv, parquet or jsonl). ``add_validation(pipeline, files, policy, out_dir, ...)``
adds the steps that read every file in chunks of ``chunk_rows`` records (files spread over
the workers), apply the row checks of pipeline/contract/checks.py to each chunk, and write
to ``out_dir``:

- ``events-*.parquet`` / ``items-*.parquet``: the canonical rows kept (events with ``seq``,
  their order in the export: file, then line), read by pipeline/components/example_beam.py;
- ``problems.jsonl``, ``quarantined.jsonl`` (policy "quarantine"), ``file_problems.jsonl``,
  ``columns.jsonl`` (columns seen per chunk) and ``counts.jsonl`` (rows read / kept /
  quarantined per table, erased events removed).

Checks that span rows run on keys: a repeated item or user id is found by grouping on the
id across chunks and files; events are checked against the item ids (all, and those kept) as
side inputs. ``read_report(files, policy, out_dir)`` then assembles the ValidationReport from
those outputs and raises DataContractError exactly where ``load_shop`` (the in-memory reader
used by the API, the CLI and the benchmarks) does: file-level problems, any problem under
"fail", no usable items or events.
"""
from __future__ import annotations

import dataclasses
import json
import os

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.components import example_beam
from pipeline.contract import spec
from pipeline.contract.checks import check_events, check_items, check_users
from pipeline.contract import files as files_lib
from pipeline.contract.files import TableFiles, basename as _basename
from pipeline.contract.load import column_problems, require_rows, row_outcomes
from pipeline.contract.report import (DataContractError, Problem, QuarantinedRow, TableCounts,
                                      ValidationReport)
from pipeline.contract.tables import RawTable, TableReadError, iter_chunks

CHUNK_ROWS = 50_000               # records validated together (one pandas frame per chunk)
# the canonical layout example_beam reads, plus the columns this step always fills
EVENT_COLUMNS = example_beam.EVENT_COLUMNS + ("seq",)
ITEM_COLUMNS = example_beam.ITEM_COLUMNS + tuple(example_beam.OPTIONAL_ITEM_COLUMNS)
LINE_BITS = 40                    # seq = file index << LINE_BITS | line
OUTPUTS = ("problems", "quarantined", "file_problems", "columns", "counts")   # tagged, per step
_ID = {"items": spec.ITEM_ID, "users": spec.USER_ID}


def _match(pattern: str) -> list[str]:
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def find_shop_files(data_dir: str) -> dict[str, TableFiles]:
    """Every table's files in ``data_dir`` (a local folder or a Beam filesystem URI), by the
    rules of pipeline/contract/files.py (which raises DataContractError for file-level
    problems)."""
    return files_lib.find_shop_files(data_dir, _match)


def _chunks(files: TableFiles, index: int, chunk_rows: int):
    """(chunk, None) per chunk of one file, then (None, Problem) if the file is unusable."""
    uri = files.uris[index]
    try:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            for raw in iter_chunks(handle, _basename(uri), files.fmt, chunk_rows):
                yield raw, None
    except TableReadError as err:
        line = err.line
        yield None, Problem(files.table, err.file, line, "" if line is None else str(line),
                            None, "unreadable_file", err.message)
    except OSError as err:
        yield None, Problem(files.table, _basename(uri), None, "", None, "unreadable_file",
                            f"cannot read file: {err}")


def _columns_record(table: str, raw: RawTable) -> str:
    return json.dumps({"table": table, "file": raw.name, "fmt": raw.fmt,
                       "columns": raw.columns, "column_lines": raw.column_lines})


def _problem_json(problem: Problem) -> str:
    return json.dumps(dataclasses.asdict(problem), ensure_ascii=False)


def _pseudonymise_raw(row: QuarantinedRow, pseudonyms) -> QuarantinedRow:
    if pseudonyms is not None and isinstance(row.raw, dict) \
            and isinstance(row.raw.get(spec.USER_ID), str):
        row.raw = {**row.raw, spec.USER_ID: pseudonyms(row.raw[spec.USER_ID])}
    return row


class _Privacy:
    """Pseudonyms and erasures, loaded where the DoFn runs (key files are never pickled)."""

    def __init__(self, pseudonym_key_file: str, erasures_from: str, erasure_key_file: str):
        self._args = (pseudonym_key_file, erasures_from, erasure_key_file)
        self.pseudonyms = self.erasures = None

    def load(self, erasures: bool = False) -> None:
        key_file, erasures_from, erasure_key_file = self._args
        if key_file:
            from pipeline.contract.pseudonym import Pseudonyms
            self.pseudonyms = Pseudonyms.from_file(key_file)
        if erasures and erasures_from:
            from serving.events.erasure import read_erasures, read_key_file
            self.erasures = read_erasures(erasures_from, read_key_file(erasure_key_file))


class _ReadKeyed(beam.DoFn):
    """Items or users files -> (id, row record) for the duplicate check; unkeyed bad rows and
    records go straight to their outcomes."""

    def __init__(self, files: TableFiles, policy: str, chunk_rows: int, privacy: _Privacy):
        self._files, self._policy, self._chunk_rows = files, policy, chunk_rows
        self._privacy = privacy

    def setup(self):
        self._privacy.load()

    def process(self, index):
        table = self._files.table
        check = check_items if table == "items" else check_users
        for raw, problem in _chunks(self._files, index, self._chunk_rows):
            if problem is not None:
                yield beam.pvalue.TaggedOutput("file_problems", _problem_json(problem))
                continue
            yield beam.pvalue.TaggedOutput("columns", _columns_record(table, raw))
            yield beam.pvalue.TaggedOutput("counts", (table, (raw.rows_read, 0, 0)))
            frame, issues = check(raw, duplicates=False)
            problems, quarantined, bad = row_outcomes(table, raw, issues, "quarantine")
            by_line = {}
            for p in problems:
                by_line.setdefault(p.line, []).append(p)
            quarantined = {q.line: q for q in quarantined}
            ids = frame[_ID[table]].to_numpy(dtype=object)
            canonical = frame.to_dict("records") if table == "items" else [None] * len(frame)
            for pos, line in enumerate(raw.lines.tolist()):
                record = (index, line, by_line.get(line, []), quarantined.get(line),
                          canonical[pos], {c: raw.frame[c].iat[pos] for c in raw.columns})
                if ids[pos]:
                    yield ids[pos], record
                else:                                 # no usable id: bad already
                    yield from _outcomes(table, record, self._policy, self._privacy)
            for record in raw.bad_records:
                yield from _outcomes(table, (index, record.line, by_line[record.line],
                                             quarantined[record.line], None, None),
                                     self._policy, self._privacy)


def _outcomes(table: str, record, policy: str, privacy: _Privacy):
    """Tagged outputs of one finished row: its problems and quarantine record, or the row."""
    _, _, problems, quarantined, canonical, _ = record
    if problems:
        for p in problems:
            yield beam.pvalue.TaggedOutput("problems", _problem_json(p))
        if policy == "quarantine":
            yield beam.pvalue.TaggedOutput("quarantined", _pseudonymise_raw(
                quarantined, privacy.pseudonyms).to_json())
        yield beam.pvalue.TaggedOutput("counts", (table, (0, 0, 1)))
    else:
        yield beam.pvalue.TaggedOutput("counts", (table, (0, 1, 0)))
        if canonical is not None:
            yield canonical


class _ResolveDuplicates(beam.DoFn):
    """All rows of one id: repeats after the first (file, line) become duplicate_id rows."""

    def __init__(self, files: TableFiles, policy: str, privacy: _Privacy):
        self._files, self._policy, self._privacy = files, policy, privacy

    def setup(self):
        self._privacy.load()

    def process(self, keyed):
        key, records = keyed
        table, field = self._files.table, _ID[self._files.table]
        records = sorted(records, key=lambda r: (r[0], r[1]))
        first_index, first_line = records[0][0], records[0][1]
        fmt = self._files.fmt
        first = f"row {first_line}" if fmt == "parquet" else f"line {first_line}"
        for record in records[1:]:
            index, line, problems, quarantined, canonical, raw = record
            where = first if index == first_index else \
                f"{_basename(self._files.uris[first_index])} {first}"
            message = f"duplicate {field} {key!r} (first seen at {where})"
            name = _basename(self._files.uris[index])
            location = f"row {line}" if fmt == "parquet" else str(line)
            problem = Problem(table, name, line, location, field, "duplicate_id", message)
            if quarantined is None:
                quarantined = QuarantinedRow(table, name, line, location, [], [], [], raw)
            quarantined.fields.append(field)
            quarantined.reasons.append("duplicate_id")
            quarantined.messages.append(message)
            record = (index, line, problems + [problem], quarantined, canonical, raw)
            yield from _outcomes(table, record, self._policy, self._privacy)
        yield from _outcomes(table, records[0], self._policy, self._privacy)
        if not records[0][2]:
            yield beam.pvalue.TaggedOutput("kept_ids", key)
        yield beam.pvalue.TaggedOutput("known_ids", key)


class _ReadEvents(beam.DoFn):
    """Events files -> canonical kept events (pyarrow tables with seq) and outcomes."""

    def __init__(self, files: TableFiles, items_display: str, policy: str, chunk_rows: int,
                 privacy: _Privacy):
        self._files, self._items_display = files, items_display
        self._policy, self._chunk_rows, self._privacy = policy, chunk_rows, privacy
        self._indexes = None

    def setup(self):
        self._privacy.load(erasures=True)

    def _item_indexes(self, known, kept):
        if self._indexes is None or self._indexes[0] is not known:
            self._indexes = (known, pd.Index(known), pd.Index(kept))
        return self._indexes[1], self._indexes[2]

    def process(self, index, known, kept):
        import pyarrow as pa

        known_index, kept_index = self._item_indexes(known, kept)
        for raw, problem in _chunks(self._files, index, self._chunk_rows):
            if problem is not None:
                yield beam.pvalue.TaggedOutput("file_problems", _problem_json(problem))
                continue
            yield beam.pvalue.TaggedOutput("columns", _columns_record("events", raw))
            frame, issues, cascade = check_events(raw, known_index, kept_index,
                                                  self._items_display)
            if self._policy == "quarantine":
                for i in np.flatnonzero(cascade):
                    item = frame[spec.ITEM_ID].iat[i]
                    issues.entries.append((int(i), spec.ITEM_ID, "quarantined_item",
                                           f"item {item!r} was quarantined"))
            problems, quarantined, bad = row_outcomes("events", raw, issues, self._policy)
            for p in problems:
                yield beam.pvalue.TaggedOutput("problems", _problem_json(p))
            for q in quarantined:
                yield beam.pvalue.TaggedOutput("quarantined", _pseudonymise_raw(
                    q, self._privacy.pseudonyms).to_json())
            kept_rows = frame[~bad].assign(
                seq=(index << LINE_BITS) + raw.lines[~bad])
            if self._privacy.pseudonyms is not None:
                kept_rows[spec.USER_ID] = self._privacy.pseudonyms.column(
                    kept_rows[spec.USER_ID])
            erased = 0
            if self._privacy.erasures is not None:
                mask = self._privacy.erasures.erased_mask(kept_rows)
                erased = int(mask.sum())
                kept_rows = kept_rows[~mask]
            yield beam.pvalue.TaggedOutput("counts", ("events", (
                raw.rows_read, int((~bad).sum()), int(bad.sum()) + len(raw.bad_records))))
            if erased:
                yield beam.pvalue.TaggedOutput("counts", ("erased_events", (erased, 0, 0)))
            if len(kept_rows):
                kept_rows = kept_rows.loc[:, list(EVENT_COLUMNS)].astype(
                    {"value": "float64", "timestamp": "int64", "seq": "int64"})
                yield pa.Table.from_pandas(kept_rows, schema=event_schema(),
                                           preserve_index=False)


def event_schema():
    """Arrow schema of the canonical events written for example generation."""
    import pyarrow as pa

    return pa.schema([(c, pa.string()) for c in EVENT_COLUMNS[:3]]
                     + [("value", pa.float64())]
                     + [(c, pa.string()) for c in ("query", "session_id")]
                     + [("timestamp", pa.int64()), ("seq", pa.int64())])


def item_schema():
    """Arrow schema of the canonical items written for example generation."""
    import pyarrow as pa

    return pa.schema([(c, pa.string()) for c in ITEM_COLUMNS[:5]]
                     + [("price", pa.float64()), ("in_stock", pa.bool_()),
                        ("created_at", pa.int64())])


def _item_row(row: dict) -> dict:
    return {"item_id": row[spec.ITEM_ID], "title": row[spec.TITLE],
            "description": row[spec.DESCRIPTION], "brand": row[spec.BRAND],
            "categories": row[spec.CATEGORIES], "price": float(row[spec.PRICE]),
            "in_stock": bool(row[spec.IN_STOCK]), "created_at": int(row[spec.CREATED_AT])}


def _sum_columns(rows) -> tuple:
    """Column sums of int tuples (associative: Beam applies it to inputs and partial sums)."""
    return tuple(map(sum, zip(*rows)))


def _write_lines(pcoll, label: str, path: str):
    return pcoll | label >> beam.io.WriteToText(path, num_shards=1, shard_name_template="")


def add_validation(pipeline: beam.Pipeline, files: dict[str, TableFiles], policy: str,
                   out_dir: str, pseudonym_key_file: str = "", erasures_from: str = "",
                   erasure_key_file: str = "", chunk_rows: int = CHUNK_ROWS) -> None:
    """Add the read-and-validate steps to ``pipeline`` (run it, then ``read_report``)."""
    if policy not in ("fail", "quarantine"):
        raise ValueError(f"policy must be fail or quarantine, got {policy!r}")
    privacy = _Privacy(pseudonym_key_file, erasures_from, erasure_key_file)
    tags = OUTPUTS
    outputs = {tag: [] for tag in tags}
    ids = {}
    for table in ("items", "users"):
        if table not in files:
            continue
        read = (pipeline
                | f"Files[{table}]" >> beam.Create(range(len(files[table].uris)))
                | f"Spread[{table}]" >> beam.Reshuffle()
                | f"Read[{table}]" >> beam.ParDo(_ReadKeyed(
                    files[table], policy, chunk_rows, privacy)).with_outputs(
                        *tags, main="keyed"))
        resolved = (read.keyed
                    | f"GroupById[{table}]" >> beam.GroupByKey()
                    | f"Duplicates[{table}]" >> beam.ParDo(_ResolveDuplicates(
                        files[table], policy, privacy)).with_outputs(
                            *tags, "known_ids", "kept_ids", main="rows"))
        for tag in tags:
            outputs[tag] += [read[tag], resolved[tag]]
        ids[table] = resolved
        if table == "items":
            _ = (resolved.rows
                 | "ItemRows" >> beam.Map(_item_row)
                 | "WriteItems" >> beam.io.WriteToParquet(
                     os.path.join(out_dir, "items"), item_schema(),
                     file_name_suffix=".parquet"))
    events = (pipeline
              | "Files[events]" >> beam.Create(range(len(files["events"].uris)))
              | "Spread[events]" >> beam.Reshuffle()
              | "Read[events]" >> beam.ParDo(
                  _ReadEvents(files["events"], files["items"].display, policy, chunk_rows,
                              privacy),
                  known=beam.pvalue.AsList(ids["items"].known_ids),
                  kept=beam.pvalue.AsList(ids["items"].kept_ids)).with_outputs(
                      *tags, main="tables"))
    for tag in tags:
        outputs[tag].append(events[tag])
    _ = events.tables | "WriteEvents" >> beam.io.WriteToParquetBatched(
        os.path.join(out_dir, "events"), event_schema(), file_name_suffix=".parquet")
    for tag in ("problems", "quarantined", "file_problems", "columns"):
        _write_lines(tuple(outputs[tag]) | f"All[{tag}]" >> beam.Flatten(),
                     f"Write[{tag}]", os.path.join(out_dir, f"{tag}.jsonl"))
    _write_lines(tuple(outputs["counts"]) | "All[counts]" >> beam.Flatten()
                 | "SumCounts" >> beam.CombinePerKey(_sum_columns)
                 | "CountsJson" >> beam.MapTuple(lambda t, c: json.dumps([t, list(c)])),
                 "Write[counts]", os.path.join(out_dir, "counts.jsonl"))


def canonical_patterns(out_dir: str) -> tuple[str, str]:
    """(events, items) file patterns of the canonical Parquet the validation wrote."""
    return os.path.join(out_dir, "events-*.parquet"), os.path.join(out_dir, "items-*.parquet")


def _read_lines(path: str) -> list[str]:
    if not FileSystems.exists(path):
        return []
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return [line for line in f.read().decode("utf-8").splitlines() if line]


class _Columns:
    """What column_problems reads of a RawTable, merged over a file's chunks."""

    def __init__(self, file: str, fmt: str):
        self.name, self.fmt, self.columns, self.column_lines = file, fmt, [], {}

    def add(self, columns: list, column_lines: dict) -> None:
        for c in columns:
            if c not in self.column_lines:
                self.columns.append(c)
        for c, line in column_lines.items():
            self.column_lines[c] = min(line, self.column_lines.get(c, line))


def read_report(files: dict[str, TableFiles], policy: str, out_dir: str,
                data_dir: str = "") -> tuple[ValidationReport, dict]:
    """The validation report from the pipeline's outputs, and its extra counts
    (``erased_events``, ``items_kept``). Raises DataContractError as load_shop does."""
    order = {name: i for i, name in enumerate(spec.TABLE_NAMES)}
    file_order = {(t, _basename(u)): i for t, f in files.items() for i, u in enumerate(f.uris)}
    file_problems = [Problem(**json.loads(line)) for line in
                     _read_lines(os.path.join(out_dir, "file_problems.jsonl"))]
    merged: dict[tuple, _Columns] = {}
    for line in _read_lines(os.path.join(out_dir, "columns.jsonl")):
        record = json.loads(line)
        key = (record["table"], record["file"])
        merged.setdefault(key, _Columns(record["file"], record["fmt"])).add(
            record["columns"], {c: int(n) for c, n in record["column_lines"].items()})
    unusable = {(p.table, p.file) for p in file_problems}
    for (table, file), columns in merged.items():
        if (table, file) not in unusable:
            file_problems += column_problems(table, columns)
    if file_problems:
        file_problems.sort(key=lambda p: (order.get(p.table, 0),
                                          file_order.get((p.table, p.file), 0), p.line or 0))
        raise DataContractError(file_problems, f"cannot use the shop data in {data_dir}")
    counts = {table: tuple(c) for table, c in
              map(json.loads, _read_lines(os.path.join(out_dir, "counts.jsonl")))}
    report = ValidationReport(policy)
    for name in spec.TABLE_NAMES:
        if name not in files:
            report.tables[name] = TableCounts(None)
            continue
        read, kept, bad = counts.get(name, (0, 0, 0))
        report.tables[name] = TableCounts(files[name].display, read, kept, bad)
    problems = [Problem(**json.loads(line)) for line in
                _read_lines(os.path.join(out_dir, "problems.jsonl"))]
    report.problems = sorted(problems, key=lambda p: (
        order[p.table], file_order.get((p.table, p.file), 0), p.line or 0))
    if policy == "fail" and report.problems:
        raise DataContractError(report.problems)
    for line in _read_lines(os.path.join(out_dir, "quarantined.jsonl")):
        record = json.loads(line)
        report.quarantined.append(QuarantinedRow(**record))
    report.quarantined.sort(key=lambda r: (order[r.table], file_order.get((r.table, r.file), 0),
                                           r.line))
    require_rows(report, {name: report.tables[name].rows_kept for name in ("items", "events")})
    extra = {"erased_events": counts.get("erased_events", (0, 0, 0))[0],
             "items_kept": report.tables["items"].rows_kept}
    extra["events_written"] = report.tables["events"].rows_kept - extra["erased_events"]
    _check_written(out_dir, extra)
    return report, extra


def _check_written(out_dir: str, extra: dict) -> None:
    """The Parquet shards hold every kept row (from their footers): a runner that lost
    output raises here rather than training on part of the shop."""
    import pyarrow.parquet as pq

    for name, pattern, expected in zip(("events", "items"), canonical_patterns(out_dir),
                                       (extra["events_written"], extra["items_kept"])):
        rows = 0
        for path in _match(pattern):
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                rows += pq.ParquetFile(f).metadata.num_rows
        if rows != expected:
            raise RuntimeError(f"the Beam runner lost data: {rows} of {expected} kept {name} "
                               f"rows reached {pattern}")
