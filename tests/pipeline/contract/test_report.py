"""Tests for pipeline/contract/report.py: problem formatting, the error and report files."""
import datetime as dt
import json

import numpy as np

from pipeline.contract.report import (DataContractError, Problem, QuarantinedRow, TableCounts,
                                      ValidationReport, format_problems, jsonable)


def problem(line, field="price"):
    return Problem("items", "items.csv", line, str(line), field, "bad_price", "must be >= 0")


def test_problem_text_with_and_without_line_and_field():
    assert str(problem(3)) == "items.csv:3: field 'price': must be >= 0"
    assert str(Problem("items", "items.parquet", 2, "row 2", None, "x", "m")) == \
        "items.parquet:row 2: m"
    assert str(Problem("items", "items.csv", None, "", None, "x", "m")) == "items.csv: m"


def test_error_keeps_every_problem_and_caps_the_text():
    problems = [problem(i) for i in range(1, 8)]
    assert format_problems(problems, limit=3).splitlines()[-1] == "... and 4 more"
    err = DataContractError(problems[:1])
    assert str(err).startswith("shop data does not follow the data contract (1 problem):")
    assert err.problems == problems[:1] and isinstance(err, ValueError)


def test_report_files(tmp_path):
    report = ValidationReport("quarantine", {"items": TableCounts("items.csv", 3, 2, 1)})
    report.quarantined.append(QuarantinedRow("items", "items.csv", 4, "4", ["price"],
                                             ["bad_price"], ["must be >= 0"],
                                             {"price": np.float64(-1), "n": np.nan}))
    report.write(tmp_path / "r")
    line = json.loads((tmp_path / "r" / "quarantine.jsonl").read_text())
    assert line["raw"] == {"price": -1.0, "n": None} and line["reasons"] == ["bad_price"]
    summary = json.loads((tmp_path / "r" / "quarantine_summary.json").read_text())
    assert summary["tables"]["items"] == {"file": "items.csv", "rows_read": 3, "rows_kept": 2,
                                          "rows_quarantined": 1, "reasons": {"bad_price": 1}}


def test_jsonable():
    assert jsonable([np.int64(3), float("inf"), dt.datetime(2024, 1, 2), {"a": np.bool_(True)}]) \
        == [3, "inf", "2024-01-02T00:00:00", {"a": True}]
