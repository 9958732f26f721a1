"""Which files hold a shop's tables: one home for the naming rules of docs/data.md.

A table is ``<table>.<ext>`` or shards ``<table>-*.<ext>`` (as Spark, BigQuery or Beam
exports write them), all in one format (csv, parquet, jsonl). ``find_shop_files(data_dir,
match)`` lists them with ``match`` (a glob -> sorted paths function): ``local_match`` for a
local folder (load_shop), Beam's FileSystems for any filesystem Beam supports
(pipeline/contract/beam_read.py).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Callable

from pipeline.contract import spec
from pipeline.contract.report import DataContractError, Problem
from pipeline.contract.tables import FORMATS

Match = Callable[[str], list]


@dataclass(frozen=True)
class TableFiles:
    """One table's files (sorted URIs, one format) and how messages name them."""

    table: str
    fmt: str
    uris: tuple

    @property
    def display(self) -> str:
        names = [basename(u) for u in self.uris]
        if len(names) == 1:
            return names[0]
        return f"{self.table}-*.{extension(self.fmt)} ({len(names)} files)"

    def order(self, file: str) -> int:
        """Position of a file (by name) among the table's files; unknown names sort last."""
        names = [basename(u) for u in self.uris]
        return names.index(file) if file in names else len(names)


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def extension(fmt: str) -> str:
    return {v: k for k, v in FORMATS.items()}[fmt].lstrip(".")


def local_match(pattern: str) -> list:
    """Sorted regular files matching ``pattern`` on the local filesystem."""
    return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))


def find_shop_files(data_dir: str, match: Match = local_match) -> dict:
    """Every table's files in ``data_dir`` -> {table: TableFiles}.

    Raises DataContractError naming every file-level problem: the folder or a required
    table missing (hinting at files of unsupported formats), a table in several formats.
    """
    data_dir = str(data_dir).rstrip("/")
    if "://" not in data_dir and not os.path.isdir(data_dir):
        raise DataContractError([Problem("", data_dir, None, "", None, "missing_file",
                                         "shop data folder does not exist")])
    found, problems = {}, []
    for name, table in spec.TABLES.items():
        by_fmt = {}
        for ext, fmt in FORMATS.items():
            uris = match(f"{data_dir}/{name}{ext}") + match(f"{data_dir}/{name}-*{ext}")
            if uris:
                by_fmt[fmt] = tuple(uris)
        if len(by_fmt) > 1:
            names = ", ".join(basename(u) for uris in by_fmt.values() for u in uris[:3])
            problems.append(Problem(name, f"{name}.*", None, "", None, "unreadable_file",
                                    f"table '{name}' is given in several formats ({names}); "
                                    "keep one format per table"))
        elif by_fmt:
            fmt, uris = next(iter(by_fmt.items()))
            found[name] = TableFiles(name, fmt, uris)
        elif table.required_file:
            others = sorted({basename(u) for pattern in (f"{name}.*", f"{name}-*")
                             for u in match(f"{data_dir}/{pattern}")
                             if os.path.splitext(u)[1].lower() not in FORMATS})
            problems.append(missing_file_problem(data_dir, name, others))
    if problems:
        raise DataContractError(problems, f"cannot use the shop data in {data_dir}")
    return found


def missing_file_problem(data_dir, name: str, others: list) -> Problem:
    """Problem for a required table without a file (``others``: its unsupported files)."""
    hint = f" (found {', '.join(others)}: unsupported format)" if others else ""
    return Problem(name, f"{name}.csv|parquet|jsonl", None, "", None, "missing_file",
                   f"required file is missing from {data_dir}{hint}")
