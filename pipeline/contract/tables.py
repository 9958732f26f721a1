"""Find and read one shop table (CSV, Parquet or JSON Lines) with each row's source location.

Locations are real: for CSV the physical line where the record starts (header = line 1; quoted
fields spanning several lines are counted correctly), for JSON Lines the line number, for Parquet
the 1-based row number (shown as "row N"). Records that cannot be split into fields (ragged CSV
rows, malformed JSON lines) are kept aside as ``BadRecord`` so the caller can report them.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl"}
_PANDAS_INDEX = re.compile(r"^__index_level_\d+__$")


class TableReadError(Exception):
    """A whole file cannot be used (missing, ambiguous, unreadable, bad header)."""

    def __init__(self, file: str, message: str, line: int | None = None):
        self.file = file
        self.line = line
        self.message = message
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class BadRecord:
    """A record that could not be split into fields: where it is, why, and its raw text."""

    line: int
    message: str
    raw: str
    file: str = ""          # set when the record's table was read from several files


@dataclass
class RawTable:
    """One table as read from disk, values not yet validated.

    ``frame`` has one row per well-formed record (RangeIndex) and one column per column of the
    file; CSV values are ``str``, JSON Lines values are decoded JSON (None where a key is absent),
    Parquet columns keep their Arrow-derived dtypes. ``lines[i]`` is the location of row i.
    """

    path: Path
    fmt: str
    columns: list[str]
    frame: pd.DataFrame
    lines: np.ndarray
    bad_records: list[BadRecord] = field(default_factory=list)
    column_lines: dict[str, int] = field(default_factory=dict)
    row_files: np.ndarray | None = None     # file name of each row, for a table of shards

    @property
    def name(self) -> str:
        """File name used in messages (a table of shards: "events-*.csv (3 files)")."""
        return self.path.name

    def file_of(self, pos: int) -> str:
        """The file row ``pos`` was read from."""
        return self.name if self.row_files is None else str(self.row_files[pos])

    @property
    def rows_read(self) -> int:
        """Records found in the file, well-formed or not."""
        return len(self.frame) + len(self.bad_records)

    def location(self, line: int) -> str:
        """How a row's location is written in messages: "12" or, for Parquet, "row 12"."""
        return f"row {line}" if self.fmt == "parquet" else str(line)


def concat_tables(raws: list[RawTable], name: str) -> RawTable:
    """One RawTable of the shards ``raws`` (same format, the same columns in any order), in
    their order, each row and bad record remembering its file; ``name`` names the whole
    table in messages. Raises TableReadError naming a shard whose columns differ from the
    first's."""
    if len(raws) == 1:
        return raws[0]
    first = raws[0]
    for raw in raws[1:]:
        if set(raw.columns) != set(first.columns):
            missing = [c for c in first.columns if c not in raw.columns]
            extra = [c for c in raw.columns if c not in first.columns]
            detail = "; ".join(part for part in (
                f"lacks {', '.join(missing)}" if missing else "",
                f"adds {', '.join(extra)}" if extra else "") if part)
            raise TableReadError(raw.name, f"the shards of a table must have the same "
                                 f"columns: {detail} (vs {first.name})",
                                 raw.column_lines.get(raw.columns[0]) if raw.columns else None)
    frame = pd.concat([raw.frame[first.columns] for raw in raws], ignore_index=True)
    return RawTable(
        Path(name), first.fmt, list(first.columns), frame,
        np.concatenate([raw.lines for raw in raws]),
        [BadRecord(r.line, r.message, r.raw, raw.name) for raw in raws for r in raw.bad_records],
        dict(first.column_lines),
        np.concatenate([np.full(len(raw.frame), raw.name, dtype=object) for raw in raws]))


def read_table(path: Path) -> RawTable:
    """Read a CSV, Parquet or JSON Lines file into a RawTable; raise TableReadError if unusable."""
    fmt = FORMATS.get(path.suffix)
    if fmt is None:
        raise TableReadError(path.name, f"unsupported file type '{path.suffix}' "
                             f"(use one of {', '.join(FORMATS)})")
    try:
        with open(path, "rb") as handle:
            return next(iter_chunks(handle, path.name, fmt, None))
    except OSError as err:
        raise TableReadError(path.name, f"cannot read file: {err}") from err


def iter_chunks(handle, name: str, fmt: str, chunk_rows: int | None):
    """RawTables of at most ``chunk_rows`` records each (None: one) from a binary file object.

    Locations stay those of the whole file; bad records belong to the chunk they occur in;
    at least one chunk (maybe empty) is yielded for a usable file. Raises TableReadError for a
    file-level problem (not UTF-8, bad header, malformed CSV quoting, unreadable Parquet),
    possibly after earlier chunks were yielded. ``handle`` may be any readable stream (Beam's
    FileSystems.open for gs:// or s3://); Parquet needs it seekable.
    """
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(
            chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be an int >= 1 or None, got {chunk_rows!r}")
    reader = {"csv": _csv_chunks, "parquet": _parquet_chunks, "jsonl": _jsonl_chunks}[fmt]
    try:
        yield from reader(handle, Path(name), chunk_rows)
    except UnicodeDecodeError as err:
        raise TableReadError(name, f"not UTF-8 text ({err.reason} at byte {err.start})") from err


def _full(count: int, chunk_rows: int | None) -> bool:
    return chunk_rows is not None and count >= chunk_rows


def _check_header(path: Path, columns: list[str], line: int | None) -> None:
    """Reject empty or repeated column names."""
    if not columns:
        raise TableReadError(path.name, "no columns found (is the file empty?)", line)
    for i, name in enumerate(columns):
        if name == "":
            raise TableReadError(path.name, f"column {i + 1} of the header has no name", line)
    seen = set()
    for name in columns:
        if name in seen:
            raise TableReadError(path.name, f"column '{name}' appears more than once", line)
        seen.add(name)


def _csv_chunks(handle, path: Path, chunk_rows: int | None):
    """CSV with a header row; every value is a str. Blank lines are skipped."""
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, strict=True)
    header: list[str] | None = None
    header_line, end = 1, 0
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[BadRecord] = []

    def chunk():
        frame = pd.DataFrame(rows, columns=header, dtype=object) if rows else \
            pd.DataFrame({name: pd.Series(dtype=object) for name in header})
        return RawTable(path, "csv", header, frame, np.asarray(lines, dtype=np.int64),
                        list(bad), {name: header_line for name in header})

    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row:
                continue
            if header is None:
                header = [name.strip() for name in row]
                header_line = start
                _check_header(path, header, header_line)
                width = len(header)
            elif len(row) == width:
                rows.append(row)
                lines.append(start)
            else:
                bad.append(BadRecord(start, f"has {len(row)} fields but the header has "
                                     f"{width}", ",".join(row)))
            if _full(len(rows) + len(bad), chunk_rows):
                yield chunk()
                rows, lines, bad = [], [], []
    except csv.Error as err:
        raise TableReadError(path.name, f"malformed CSV in the record starting here: {err} "
                             "(unbalanced double quote?)", end + 1) from err
    if header is None:
        raise TableReadError(path.name, "no header row (the file is empty)")
    yield chunk()


def _jsonl_chunks(handle, path: Path, chunk_rows: int | None):
    """One JSON object per line; a key absent from a line reads as None. Blank lines skipped.

    A chunk's columns are the keys seen up to its end (``column_lines``: where each first
    appeared in the file)."""
    records: list[dict] = []
    lines: list[int] = []
    bad: list[BadRecord] = []
    first_seen: dict[str, int] = {}
    first_bad: list[BadRecord] = []

    def chunk(last: bool):
        columns = [name.strip() for name in first_seen]
        if not columns and last:        # no key anywhere in the file
            problem = first_bad[0] if first_bad else None
            why = (f"; line {problem.line}: {problem.message}" if problem else
                   " (every object is empty {})" if records else " (the file is empty)")
            raise TableReadError(path.name, f"no JSON object records{why}")
        if columns:
            _check_header(path, columns, None)
        data = {name.strip(): pd.Series([r.get(name) for r in records], dtype=object)
                for name in first_seen}
        frame = pd.DataFrame(data) if data else \
            pd.DataFrame(index=pd.RangeIndex(len(records)))
        return RawTable(path, "jsonl", columns, frame, np.asarray(lines, dtype=np.int64),
                        list(bad), {name.strip(): line for name, line in first_seen.items()})

    text = io.TextIOWrapper(handle, encoding="utf-8-sig")
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            bad.append(BadRecord(number, f"malformed JSON: {err.msg} (column {err.colno})",
                                 line.rstrip("\r\n")))
        except (ValueError, RecursionError) as err:   # a 5,000-digit number; [[[[...
            bad.append(BadRecord(number, f"unreadable JSON: {json_problem(err)}",
                                 line.rstrip("\r\n")))
        else:
            if not isinstance(record, dict):
                bad.append(BadRecord(number, "expected a JSON object {...} on each line, got "
                                     f"{type(record).__name__}", line.rstrip("\r\n")))
            else:
                if not first_seen.keys() >= record.keys():
                    for key in record:
                        first_seen.setdefault(key, number)
                records.append(record)
                lines.append(number)
        if bad and not first_bad:
            first_bad.append(bad[0])
        if _full(len(records) + len(bad), chunk_rows):
            yield chunk(last=False)
            records, lines, bad = [], [], []
    yield chunk(last=True)


def json_problem(err: Exception) -> str:
    """What json.loads refused beyond syntax: nesting too deep, or an integer too long."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err).split(";")[0]      # "Exceeds the limit (4300 digits) for integer ..."


def _parquet_chunks(handle, path: Path, chunk_rows: int | None):
    """Parquet columns with their types; integer columns with nulls keep Python ints."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(handle)
        names = source.schema_arrow.names
        # pandas bookkeeping (a saved non-default index) is not shop data
        keep = [n for n in names if not _PANDAS_INDEX.match(n)]
        columns = [name.strip() for name in keep]
        _check_header(path, columns, None)
        if chunk_rows is None:
            batches = [source.read(columns=keep)] if source.metadata.num_rows else []
        else:
            batches = source.iter_batches(batch_size=chunk_rows, columns=keep)
        first = 1
        for batch in batches:
            yield _parquet_chunk(path, columns, batch, first)
            first += batch.num_rows
    except (pa.ArrowException, ValueError, OSError) as err:
        raise TableReadError(path.name, f"unreadable Parquet file: {err}") from err
    if first == 1:
        yield _parquet_chunk(path, columns, source.schema_arrow.empty_table().select(keep), 1)


def _parquet_chunk(path: Path, columns: list[str], batch, first: int) -> RawTable:
    frame = batch.to_pandas(ignore_metadata=True, integer_object_nulls=True,
                            date_as_object=False)
    frame.columns = columns
    for name in columns:
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype(object)
    lines = np.arange(first, first + len(frame), dtype=np.int64)
    return RawTable(path, "parquet", columns, frame.reset_index(drop=True), lines)
