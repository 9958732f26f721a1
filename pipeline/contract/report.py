"""Problems found in shop data, the error that lists them, and the validation/quarantine report."""
from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MESSAGE_LIMIT = 50   # problems spelled out in an exception message; the rest are counted


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data, at a file location (``line`` None = whole file)."""

    table: str
    file: str
    line: int | None
    location: str          # "12", "row 12" (Parquet) or "" for the whole file
    field: str | None
    code: str              # short reason key, e.g. "bad_timestamp" (used for counting)
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.location}" if self.location else self.file
        what = f"field '{self.field}': {self.message}" if self.field else self.message
        return f"{where}: {what}"


def format_problems(problems: list[Problem], limit: int = MESSAGE_LIMIT) -> str:
    """Problems one per line, at most ``limit`` of them, then "... and N more"."""
    lines = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return "\n".join(lines)


class DataContractError(ValueError):
    """Shop data breaks the data contract; ``problems`` holds every problem found."""

    def __init__(self, problems: list[Problem], header: str = "shop data does not follow the "
                 "data contract"):
        self.problems = list(problems)
        count = f"{len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        super().__init__(f"{header} ({count}):\n{format_problems(self.problems)}")


@dataclass
class TableCounts:
    """Rows of one table: read from its file, kept, and quarantined (read = kept + quarantined)."""

    file: str | None
    rows_read: int = 0
    rows_kept: int = 0
    rows_quarantined: int = 0


@dataclass
class QuarantinedRow:
    """One removed row: where it was, which fields were wrong, why, and its raw values."""

    table: str
    file: str
    line: int
    location: str
    fields: list[str]
    reasons: list[str]
    messages: list[str]
    raw: object

    def to_json(self) -> str:
        """One JSON Lines record."""
        return json.dumps({"table": self.table, "file": self.file, "line": self.line,
                           "location": self.location, "fields": self.fields,
                           "reasons": self.reasons, "messages": self.messages,
                           "raw": jsonable(self.raw)}, ensure_ascii=False)


@dataclass
class ValidationReport:
    """Outcome of loading a shop: counts per table, all problems, and quarantined rows."""

    policy: str
    tables: dict[str, TableCounts] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    quarantined: list[QuarantinedRow] = field(default_factory=list)

    def reason_counts(self) -> dict[str, dict[str, int]]:
        """Per table, how many quarantined rows carry each reason (a row may carry several)."""
        counts: dict[str, Counter] = {name: Counter() for name in self.tables}
        for row in self.quarantined:
            counts.setdefault(row.table, Counter()).update(set(row.reasons))
        return {name: dict(sorted(c.items())) for name, c in counts.items()}

    def summary(self) -> dict:
        """JSON-ready summary: policy, and per table file, rows read/kept/quarantined, reasons."""
        reasons = self.reason_counts()
        return {"policy": self.policy,
                "tables": {name: {"file": c.file, "rows_read": c.rows_read,
                                  "rows_kept": c.rows_kept,
                                  "rows_quarantined": c.rows_quarantined,
                                  "reasons": reasons.get(name, {})}
                           for name, c in self.tables.items()}}

    def summary_text(self) -> str:
        """Human-readable summary, one line per table plus reason counts."""
        out = []
        reasons = self.reason_counts()
        for name, c in self.tables.items():
            if c.file is None:
                out.append(f"{name}: no file (optional)")
                continue
            out.append(f"{name} ({c.file}): {c.rows_read} read, {c.rows_kept} kept, "
                       f"{c.rows_quarantined} quarantined")
            out.extend(f"    {code}: {n}" for code, n in reasons.get(name, {}).items())
        return "\n".join(out)

    def write(self, report_dir: Path) -> None:
        """Write quarantine.jsonl (one line per removed row) and quarantine_summary.json."""
        report_dir = Path(report_dir)
        report_dir.mkdir(parents=True, exist_ok=True)
        with open(report_dir / "quarantine.jsonl", "w", encoding="utf-8") as handle:
            for row in self.quarantined:
                handle.write(row.to_json() + "\n")
        with open(report_dir / "quarantine_summary.json", "w", encoding="utf-8") as handle:
            json.dump(self.summary(), handle, indent=2, sort_keys=True)
            handle.write("\n")


def jsonable(value):
    """A raw cell or row as plain JSON values (numpy scalars, NaN -> None, dates -> ISO text)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
