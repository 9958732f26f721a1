"""Load a shop folder (items, events, optional users) into validated canonical pandas frames.

``load_shop(data_dir, on_bad_rows="fail" | "quarantine", report_dir=None) -> ShopTables``.
The contract itself (tables, columns, accepted values) is documented in docs/data.md and named
in pipeline/contract/spec.py. Command line:
``python -m pipeline.contract DIR [--on-bad-rows quarantine --report-dir D]``.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract import spec
from pipeline.contract.report import (DataContractError, Problem, QuarantinedRow, TableCounts,
                                      ValidationReport)
from pipeline.contract.pseudonym import Pseudonyms
from pipeline.contract.checks import RowIssues, check_events, check_items, check_users
from pipeline.contract.files import TableFiles, find_shop_files, missing_file_problem
from pipeline.contract.tables import RawTable, TableReadError, concat_tables, read_table

__all__ = ["DataContractError", "POLICIES", "Problem", "ShopTables", "ValidationReport",
           "column_problems", "load_shop", "main", "missing_file_problem", "require_rows",
           "row_outcomes"]

POLICIES = ("fail", "quarantine")


@dataclass
class ShopTables:
    """Validated canonical tables of one shop.

    items: item_id, title, description, brand, categories (str), price (float64), in_stock
    (bool), created_at (int64 epoch s, 0 = unknown). users: user_id + attribute columns (str).
    events: user_id, item_id ("" for search), event_type, value (float64, NaN if absent), query,
    session_id (str), timestamp (int64 epoch s), stably sorted by timestamp, and event_id
    (str, "" = none) only when the events file has that column. RangeIndex.
    """

    items: pd.DataFrame
    users: pd.DataFrame
    events: pd.DataFrame
    report: ValidationReport


def load_shop(data_dir, on_bad_rows: str = "fail", report_dir=None,
              pseudonyms: Pseudonyms | None = None) -> ShopTables:
    """Read and validate a shop folder.

    on_bad_rows="fail" raises DataContractError listing every problem; "quarantine" removes bad
    rows (and events of removed items), keeps the rest and, with report_dir, writes
    quarantine.jsonl and quarantine_summary.json there. File-level problems always raise.
    ``pseudonyms``: the user ids of events and users (also in the quarantined rows) become
    their keyed pseudonyms (pipeline/contract/pseudonym.py) before anything is written.
    """
    if on_bad_rows not in POLICIES:
        raise ValueError(f"on_bad_rows must be one of {', '.join(POLICIES)}, got {on_bad_rows!r}")
    files = find_shop_files(str(data_dir))
    raws = _read_tables(Path(data_dir), files)
    report = ValidationReport(on_bad_rows)
    items, item_issues = check_items(raws["items"])
    item_bad = _bad_rows(item_issues, raws["items"])
    ids = items[spec.ITEM_ID]
    known = pd.Index(ids[ids != ""].unique())      # wrong-type and missing ids parse to ""
    kept = pd.Index(ids[~item_bad].unique())
    events, event_issues, cascade = check_events(raws["events"], known, kept,
                                                 raws["items"].name)
    if on_bad_rows == "quarantine":
        for i in np.flatnonzero(cascade):
            item = events[spec.ITEM_ID].iat[i]
            event_issues.entries.append((int(i), spec.ITEM_ID, "quarantined_item",
                                         f"item {item!r} was quarantined"))
    checked = {"items": (items, item_issues), "events": (events, event_issues)}
    if "users" in raws:
        checked["users"] = check_users(raws["users"])
    frames = {}
    for name in spec.TABLE_NAMES:
        if name not in checked:
            report.tables[name] = TableCounts(None)
            continue
        frames[name] = _apply_policy(name, raws[name], *checked[name], report)
    report.problems.sort(key=lambda p: (spec.TABLE_NAMES.index(p.table),
                                        files[p.table].order(p.file), p.line or 0))
    if on_bad_rows == "fail" and report.problems:
        raise DataContractError(report.problems)
    if pseudonyms is not None:
        _pseudonymise(frames, report, pseudonyms)
    if report_dir is not None:        # written even if nothing usable is left: it says why
        report.write(Path(report_dir))
    require_rows(report, {name: len(frame) for name, frame in frames.items()})
    users = frames.get("users", pd.DataFrame({spec.USER_ID: pd.Series(dtype=object)}))
    events = frames["events"].sort_values(spec.TIMESTAMP, kind="mergesort")
    return ShopTables(frames["items"].reset_index(drop=True), users.reset_index(drop=True),
                      events.reset_index(drop=True), report)


def _pseudonymise(frames: dict, report: ValidationReport, pseudonyms: Pseudonyms) -> None:
    """User ids -> pseudonyms in the kept frames and the quarantined rows' raw values."""
    for name in ("events", "users"):
        if name in frames:
            frames[name] = frames[name].assign(
                **{spec.USER_ID: pseudonyms.column(frames[name][spec.USER_ID])})
    for row in report.quarantined:
        if isinstance(row.raw, dict) and isinstance(row.raw.get(spec.USER_ID), str):
            row.raw = {**row.raw, spec.USER_ID: pseudonyms(row.raw[spec.USER_ID])}


def _read_tables(data_dir: Path, files: dict[str, TableFiles]) -> dict[str, RawTable]:
    """Read and column-check every table (its shards joined in name order); raise with all
    file-level problems at once."""
    raws: dict[str, RawTable] = {}
    problems: list[Problem] = []
    for name, table_files in files.items():
        shards, found = [], []
        for uri in table_files.uris:
            try:
                raw = read_table(Path(uri))
            except TableReadError as err:
                found.append(_file_problem(name, err))
                continue
            found.extend(column_problems(name, raw))
            shards.append(raw)
        if not found:
            try:
                raws[name] = concat_tables(shards, table_files.display)
            except TableReadError as err:
                found.append(_file_problem(name, err))
        problems.extend(found)
    if problems:
        raise DataContractError(problems, f"cannot use the shop data in {data_dir}")
    return raws


def _file_problem(name: str, err: TableReadError) -> Problem:
    line = err.line
    return Problem(name, err.file, line, "" if line is None else str(line), None,
                   "unreadable_file", err.message)


def column_problems(name: str, raw: RawTable) -> list[Problem]:
    """Missing required columns and (for items/events) unknown columns."""
    table = spec.TABLES[name]
    problems = []
    header_line = raw.column_lines.get(raw.columns[0]) if raw.fmt == "csv" else None
    where = "" if header_line is None else str(header_line)
    for column in table.required:
        if column not in raw.columns:
            problems.append(Problem(name, raw.name, header_line, where, column, "missing_column",
                                    f"required column is missing (required columns: "
                                    f"{', '.join(table.required)})"))
    if not table.free_columns:
        for column in raw.columns:
            if column in table.allowed:
                continue
            line = raw.column_lines.get(column)
            close = difflib.get_close_matches(column, table.allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(Problem(name, raw.name, line, "" if line is None else str(line),
                                    column, "unknown_column",
                                    f"unknown column{hint} (allowed columns: "
                                    f"{', '.join(table.allowed)})"))
    return problems


def _bad_rows(issues: RowIssues, raw: RawTable) -> np.ndarray:
    """Bool mask over raw.frame of rows with at least one problem."""
    return issues.bad_rows() if issues.entries else np.zeros(len(raw.frame), dtype=bool)


def _apply_policy(name: str, raw: RawTable, frame: pd.DataFrame, issues: RowIssues,
                  report: ValidationReport) -> pd.DataFrame:
    """Record problems and counts for one table; return its frame without bad rows."""
    problems, quarantined, bad = row_outcomes(name, raw, issues, report.policy)
    report.problems.extend(problems)
    report.quarantined.extend(quarantined)
    report.tables[name] = TableCounts(raw.name, raw.rows_read, int((~bad).sum()),
                                      int(bad.sum()) + len(raw.bad_records))
    return frame[~bad]


def row_outcomes(name: str, raw: RawTable, issues: RowIssues, policy: str):
    """(problems, quarantined rows (policy "quarantine" only), bad-row mask) of one table or
    one chunk of it: a problem per issue and per bad record, in file order per kind."""
    problems = []
    for pos, field, code, message in issues.entries:
        line = int(raw.lines[pos])
        problems.append(Problem(name, raw.file_of(pos), line, raw.location(line), field, code,
                                message))
    for record in raw.bad_records:
        problems.append(Problem(name, record.file or raw.name, record.line,
                                raw.location(record.line), None, "malformed_record",
                                record.message))
    bad = _bad_rows(issues, raw)
    quarantined = _quarantined_rows(name, raw, issues, bad) if policy == "quarantine" else []
    return problems, quarantined, bad


def _quarantined_rows(name: str, raw: RawTable, issues: RowIssues,
                      bad: np.ndarray) -> list[QuarantinedRow]:
    """One QuarantinedRow per bad row or bad record, in file order."""
    by_row: dict[int, list[tuple[str, str, str]]] = {}
    for pos, field, code, message in issues.entries:
        by_row.setdefault(pos, []).append((field, code, message))
    columns = {c: raw.frame[c].to_numpy(dtype=object) for c in raw.frame.columns}
    rows = []
    for pos in np.flatnonzero(bad):
        line = int(raw.lines[pos])
        entries = by_row[int(pos)]
        rows.append(QuarantinedRow(
            name, raw.file_of(int(pos)), line, raw.location(line),
            fields=[f for f, _, _ in entries], reasons=[c for _, c, _ in entries],
            messages=[m for _, _, m in entries],
            raw={c: values[pos] for c, values in columns.items()}))
    for record in raw.bad_records:
        rows.append(QuarantinedRow(name, record.file or raw.name, record.line,
                                   raw.location(record.line), [], ["malformed_record"],
                                   [record.message], record.raw))
    order = {} if raw.row_files is None else {
        file: i for i, file in enumerate(dict.fromkeys(raw.row_files))}
    return sorted(rows, key=lambda r: (order.get(r.file, 0), r.line))


def require_rows(report: ValidationReport, kept: dict[str, int]) -> None:
    """Items and events must keep at least one row (``kept``: rows per table), else nothing
    downstream can work."""
    empty = [Problem(name, report.tables[name].file, None, "", None, "no_rows",
                     "no usable rows" + (" left after quarantine"
                                         if report.tables[name].rows_read else ""))
             for name in ("items", "events") if kept[name] == 0]
    if empty:
        raise DataContractError(empty + report.problems)


def main(argv=None) -> int:
    """CLI: validate a shop folder, print a summary; exit 1 with the problems on failure."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.contract",
        description="Validate a shop data folder against the data contract (docs/data.md).")
    parser.add_argument("data_dir", help="folder with items.*, events.* and optionally users.*")
    parser.add_argument("--on-bad-rows", choices=POLICIES, default="fail",
                        help="fail: report every problem and stop (default); quarantine: "
                             "drop bad rows and continue")
    parser.add_argument("--report-dir", help="write quarantine.jsonl and "
                                             "quarantine_summary.json here")
    args = parser.parse_args(argv)
    try:
        shop = load_shop(args.data_dir, args.on_bad_rows, args.report_dir)
    except DataContractError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.data_dir}: OK ({args.on_bad_rows})")
    print(shop.report.summary_text())
    if args.report_dir:
        print(f"report written to {args.report_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
