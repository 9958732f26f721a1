"""Validate events posted to the API with the shop data contract's own row checks.

A JSON body (one object or a list of objects) becomes a raw events table and goes through
``pipeline.contract.checks.check_events`` -- the same rules, messages and reason codes as a
shop export (docs/data.md). Differences that belong to an API: ``timestamp`` may be left
out (absent or null = the time the server receives it), ``item_id`` may be left out for
``search`` events, and an unknown field is an error naming the closest allowed one. The
optional ``event_id`` (the contract's idempotency key) makes a retried event a no-op in the
event store. Text
longer than the contract's caps (``spec.MAX_CHARS``) is refused like in an export
(``too_long``); nothing a client sends is echoed unbounded (field names are cut to
``KEY_PREVIEW`` characters in errors).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract import spec
from pipeline.contract.checks import check_events
from pipeline.contract.tables import RawTable

CATALOG = "the catalog"
KEY_PREVIEW = 40          # characters of an unknown field's name quoted in an error


@dataclass(frozen=True)
class FieldProblem:
    """One problem of a posted event: where (FastAPI-style ``loc``), what and why."""

    loc: tuple
    message: str
    code: str

    def as_dict(self) -> dict:
        return {"loc": list(self.loc), "msg": self.message, "type": self.code}

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.loc)
        return f"{where}: {self.message}"


class EventValidationError(ValueError):
    """Posted events break the contract; ``problems`` lists every one."""

    def __init__(self, problems: list[FieldProblem]):
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:5])
        more = f"; ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        super().__init__(f"{len(problems)} invalid event field(s): {shown}{more}")


def validate_events(payload, known_items: pd.Index, now: int,
                    max_events: int) -> pd.DataFrame:
    """Canonical events frame (EVENT_COLUMNS + event_id, "" where none was given; in the
    posted order) or EventValidationError.

    ``payload`` is the decoded JSON body: an object (one event) or a list of objects.
    """
    single = isinstance(payload, dict)
    records = [payload] if single else payload
    if not isinstance(records, list):
        raise EventValidationError([FieldProblem(("body",), "expected an event object or a "
                                                 "list of event objects", "wrong_type")])
    if not records:
        raise EventValidationError([FieldProblem(("body",), "no events given", "empty")])
    if len(records) > max_events:
        raise EventValidationError([FieldProblem(
            ("body",), f"at most {max_events} events per request, got {len(records)}",
            "too_many")])

    def loc(i: int, *field: str) -> tuple:
        return ("body", *field) if single else ("body", i, *field)

    problems = _shape_problems(records, loc)
    if problems:
        raise EventValidationError(problems)
    columns = list(spec.EVENTS.allowed)
    frame = pd.DataFrame({c: pd.Series([r.get(c) for r in records], dtype=object)
                          for c in columns})
    absent_time = frame[spec.TIMESTAMP].isna().to_numpy()
    frame.loc[absent_time, spec.TIMESTAMP] = now
    raw = RawTable(Path("events"), "jsonl", columns, frame,
                   np.arange(1, len(records) + 1, dtype=np.int64))
    events, issues, _ = check_events(raw, known_items, known_items, CATALOG)
    if issues.entries:
        raise EventValidationError([FieldProblem(loc(pos, field), message, code)
                                    for pos, field, code, message in sorted(issues.entries)])
    return events[[*spec.EVENT_COLUMNS, spec.EVENT_ID]].reset_index(drop=True)


def _shape_problems(records: list, loc) -> list[FieldProblem]:
    """Non-object entries and unknown fields."""
    allowed = spec.EVENTS.allowed
    problems = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            problems.append(FieldProblem(loc(i), "expected a JSON object, got "
                                         f"{type(record).__name__}", "wrong_type"))
            continue
        for key in record:
            if key not in allowed:
                name = str(key)
                close = difflib.get_close_matches(name, allowed, n=1) \
                    if len(name) <= KEY_PREVIEW else []
                hint = f"; did you mean '{close[0]}'?" if close else ""
                problems.append(FieldProblem(loc(i, key_label(name)), f"unknown field{hint} "
                                             f"(allowed: {', '.join(allowed)})",
                                             "unknown_field"))
    return problems


def key_label(key: str) -> str:
    """A posted field name as it may be quoted back: at most KEY_PREVIEW characters, lone
    surrogates (invalid Unicode, unencodable in the JSON answer) as backslash escapes."""
    if len(key) > KEY_PREVIEW:
        key = key[:KEY_PREVIEW - 3] + "..."
    return key.encode("utf-8", "backslashreplace").decode("utf-8")
