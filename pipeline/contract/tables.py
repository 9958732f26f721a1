"""Find and read one shop table (CSV, Parquet or JSON Lines) with each row's source location.

Locations are real: for CSV the physical line where the record starts (header = line 1; quoted
fields spanning several lines are counted correctly), for JSON Lines the line number, for Parquet
the 1-based row number (shown as "row N"). Records that cannot be split into fields (ragged CSV
rows, malformed JSON lines) are kept aside as ``BadRecord`` so the caller can report them.
"""
from __future__ import annotations

import csv
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

    @property
    def name(self) -> str:
        """File name used in messages."""
        return self.path.name

    @property
    def rows_read(self) -> int:
        """Records found in the file, well-formed or not."""
        return len(self.frame) + len(self.bad_records)

    def location(self, line: int) -> str:
        """How a row's location is written in messages: "12" or, for Parquet, "row 12"."""
        return f"row {line}" if self.fmt == "parquet" else str(line)


def find_table_file(data_dir: Path, table: str) -> Path | None:
    """The single ``<table>.csv|parquet|jsonl`` in data_dir, or None if there is none.

    Raises TableReadError if the table exists in more than one format.
    """
    found = [path for path in (data_dir / f"{table}{ext}" for ext in FORMATS) if path.is_file()]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise TableReadError(f"{table}.*", f"table '{table}' is given in several formats "
                             f"({names}); keep exactly one file per table")
    return found[0] if found else None


def unsupported_files(data_dir: Path, table: str) -> list[str]:
    """Names of ``<table>.*`` files whose extension is not a supported format (for hints)."""
    return sorted(p.name for p in data_dir.glob(f"{table}.*")
                  if p.is_file() and p.suffix.lower() not in FORMATS)


def read_table(path: Path) -> RawTable:
    """Read a CSV, Parquet or JSON Lines file into a RawTable; raise TableReadError if unusable."""
    fmt = FORMATS.get(path.suffix)
    if fmt is None:
        raise TableReadError(path.name, f"unsupported file type '{path.suffix}' "
                             f"(use one of {', '.join(FORMATS)})")
    reader = {"csv": _read_csv, "parquet": _read_parquet, "jsonl": _read_jsonl}[fmt]
    try:
        return reader(path)
    except UnicodeDecodeError as err:
        raise TableReadError(path.name,
                             f"not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise TableReadError(path.name, f"cannot read file: {err}") from err


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


def _read_csv(path: Path) -> RawTable:
    """CSV with a header row; every value is a str. Blank lines are skipped."""
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[BadRecord] = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, strict=True)
        header: list[str] | None = None
        header_line = 1
        end = 0
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
        except csv.Error as err:
            raise TableReadError(path.name, f"malformed CSV in the record starting here: {err} "
                                 "(unbalanced double quote?)", end + 1) from err
    if header is None:
        raise TableReadError(path.name, "no header row (the file is empty)")
    frame = pd.DataFrame(rows, columns=header, dtype=object) if rows else \
        pd.DataFrame({name: pd.Series(dtype=object) for name in header})
    return RawTable(path, "csv", header, frame, np.asarray(lines, dtype=np.int64), bad,
                    {name: header_line for name in header})


def _read_jsonl(path: Path) -> RawTable:
    """One JSON object per line; a key absent from a line reads as None. Blank lines skipped."""
    records: list[dict] = []
    lines: list[int] = []
    bad: list[BadRecord] = []
    first_seen: dict[str, int] = {}
    with open(path, encoding="utf-8-sig") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                bad.append(BadRecord(number, f"malformed JSON: {err.msg} (column {err.colno})",
                                     text.rstrip("\r\n")))
                continue
            except (ValueError, RecursionError) as err:   # a 5,000-digit number; [[[[...
                bad.append(BadRecord(number, f"unreadable JSON: {json_problem(err)}",
                                     text.rstrip("\r\n")))
                continue
            if not isinstance(record, dict):
                bad.append(BadRecord(number, "expected a JSON object {...} on each line, got "
                                     f"{type(record).__name__}", text.rstrip("\r\n")))
                continue
            if not first_seen.keys() >= record.keys():
                for key in record:
                    first_seen.setdefault(key, number)
            records.append(record)
            lines.append(number)
    columns = [name.strip() for name in first_seen]
    if not columns:
        why = (f"; line {bad[0].line}: {bad[0].message}" if bad else
               " (every object is empty {})" if records else " (the file is empty)")
        raise TableReadError(path.name, f"no JSON object records{why}")
    _check_header(path, columns, None)
    data = {name.strip(): pd.Series([r.get(name) for r in records], dtype=object)
            for name in first_seen}
    frame = pd.DataFrame(data) if data else pd.DataFrame(index=pd.RangeIndex(len(records)))
    return RawTable(path, "jsonl", columns, frame, np.asarray(lines, dtype=np.int64), bad,
                    {name.strip(): line for name, line in first_seen.items()})


def json_problem(err: Exception) -> str:
    """What json.loads refused beyond syntax: nesting too deep, or an integer too long."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err).split(";")[0]      # "Exceeds the limit (4300 digits) for integer ..."


def _read_parquet(path: Path) -> RawTable:
    """Parquet columns with their types; integer columns with nulls keep Python ints."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, ValueError) as err:
        raise TableReadError(path.name, f"unreadable Parquet file: {err}") from err
    # pandas bookkeeping (a saved non-default index) is not shop data
    table = table.drop([n for n in table.column_names if _PANDAS_INDEX.match(n)])
    columns = [name.strip() for name in table.column_names]
    _check_header(path, columns, None)
    frame = table.to_pandas(ignore_metadata=True, integer_object_nulls=True,
                            date_as_object=False)
    frame.columns = columns
    for name in columns:
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype(object)
    lines = np.arange(1, len(frame) + 1, dtype=np.int64)
    return RawTable(path, "parquet", columns, frame.reset_index(drop=True), lines)
