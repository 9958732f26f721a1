"""Vectorised parsing of raw column values (from CSV, JSON Lines or Parquet) into canonical types.

Each parser takes one raw column (a pandas Series of length N, any dtype) and returns a
``Parsed``: canonical values (length N), an ``absent`` mask (value missing or empty) and a list of
``Issue``s (masks of present-but-unusable values with a reason). Parsers never raise on bad data.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Latest accepted timestamp: 2200-01-01T00:00:00Z. Later values are treated as mistakes.
MAX_EPOCH_SECONDS = 7_258_118_400
MILLIS_HINT_FROM = 946_684_800   # 2000-01-01: a too-large value that /1000 lands after this
ISO_PATTERN = re.compile(
    r"^\d{4}-\d{2}-\d{2}"                        # date
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"  # optional time, seconds, fraction
    r"(?:Z|z|[+-]\d{2}(?::?\d{2})?)?)?$")         # optional UTC designator or offset
EPOCH_PATTERN = re.compile(r"^[+-]?\d+(?:\.\d*)?$")
TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})


@dataclass
class Issue:
    """Rows (bool mask) whose value is present but unusable, and why."""

    mask: np.ndarray
    code: str
    message: str


@dataclass
class Parsed:
    """Canonical values of one column plus which rows were absent or bad."""

    values: pd.Series
    absent: np.ndarray
    issues: list[Issue] = field(default_factory=list)

    @property
    def bad(self) -> np.ndarray:
        """Rows with any issue."""
        bad = np.zeros(len(self.values), dtype=bool)
        for issue in self.issues:
            bad |= issue.mask
        return bad

    def add(self, mask: np.ndarray, code: str, message: str) -> None:
        """Record an issue for the rows in mask (ignored if mask is empty)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.issues.append(Issue(mask, code, message))


def _kind_of_type(t: type) -> str:
    """Coarse kind of a Python value's type: str/int/float/bool/none/datetime/list/other."""
    if issubclass(t, str):
        return "str"
    if issubclass(t, (bool, np.bool_)):
        return "bool"
    if issubclass(t, (int, np.integer)):
        return "int"
    if issubclass(t, (float, np.floating)):
        return "float"
    if t is type(None) or t is type(pd.NA) or t is type(pd.NaT):
        return "none"
    if issubclass(t, (dt.date, np.datetime64)):
        return "datetime"
    if issubclass(t, (list, tuple, np.ndarray)):
        return "list"
    return "other"


def kinds(s: pd.Series) -> np.ndarray:
    """Kind (see _kind_of_type) of every value of s, as an object array of length N."""
    if s.dtype == object:
        types = s.map(type)
        table = {t: _kind_of_type(t) for t in types.unique()}
        return types.map(table).to_numpy()
    if pd.api.types.is_bool_dtype(s.dtype):
        return np.full(len(s), "bool", dtype=object)
    if pd.api.types.is_integer_dtype(s.dtype):
        return np.full(len(s), "int", dtype=object)
    if pd.api.types.is_float_dtype(s.dtype):
        return np.full(len(s), "float", dtype=object)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return np.where(s.isna().to_numpy(), "none", "datetime").astype(object)
    return np.full(len(s), "other", dtype=object)


def _is_nan(s: pd.Series, kind: np.ndarray) -> np.ndarray:
    """Float NaN values (typed nulls from Parquet/pandas, or JSON NaN)."""
    out = np.zeros(len(s), dtype=bool)
    floats = kind == "float"
    if floats.any():
        out[floats] = pd.isna(s.to_numpy()[floats])
    return out


def _type_names(kind: np.ndarray) -> str:
    """Readable list of value kinds, for wrong-type messages."""
    names = {"int": "integer", "float": "number", "bool": "boolean", "list": "list",
             "datetime": "date/time", "other": "object"}
    return "/".join(sorted({names.get(k, k) for k in kind}))


def parse_text(s: pd.Series, join_lists: bool = False) -> Parsed:
    """Text (stripped str); integers become their decimal text, None/NaN/"" are absent.

    With join_lists, a list of strings is a category path and is joined with " > ".
    """
    kind = kinds(s)
    is_str = kind == "str"
    if is_str.all():
        values = s.astype(object).str.strip()
        return Parsed(values, (values == "").to_numpy())
    raw = s.to_numpy(dtype=object)
    values = np.full(len(s), "", dtype=object)
    values[is_str] = [v.strip() for v in raw[is_str]]
    ints = kind == "int"
    values[ints] = [str(int(v)) for v in raw[ints]]
    wrong = ~(is_str | ints | (kind == "none") | _is_nan(s, kind))
    if join_lists:
        for i in np.flatnonzero(kind == "list"):
            joined = _join_levels(raw[i])
            if joined is not None:
                values[i] = joined
                wrong[i] = False
    parsed = Parsed(pd.Series(values, index=s.index), (values == "") & ~wrong)
    parsed.add(wrong, "wrong_type", f"expected text, got {_type_names(kind[wrong])}")
    return parsed


def _join_levels(levels) -> str | None:
    """Join a list of category levels with " > "; None if any level is not text."""
    if not all(isinstance(level, str) for level in levels):
        return None
    return " > ".join(levels)


def normalise_categories(values: pd.Series) -> pd.Series:
    """Category paths rewritten as "Level1 > Level2 > ..." (levels stripped, empty ones dropped)."""
    needs = values.str.contains(">", regex=False) & (values != "")
    out = values.copy()
    if needs.any():
        out[needs] = [" > ".join(p for p in (part.strip() for part in v.split(">")) if p)
                      for v in values[needs]]
    return out


def parse_number(s: pd.Series) -> Parsed:
    """Float64 numbers from numbers or numeric text; absent -> NaN. NaN/inf text is an issue."""
    kind = kinds(s)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        values = s.astype(np.float64)
        parsed = Parsed(values, values.isna().to_numpy())
        parsed.add(np.isinf(values.to_numpy()), "not_finite", "must be a finite number")
        parsed.values = values.where(np.isfinite(values))
        return parsed
    raw = s.to_numpy(dtype=object)
    values = np.full(len(s), np.nan)
    absent = (kind == "none") | _is_nan(s, kind)
    numeric = (kind == "int") | ((kind == "float") & ~absent)
    values[numeric] = raw[numeric].astype(np.float64)
    is_str = kind == "str"
    text = pd.Series(raw[is_str], dtype=object).str.strip()
    empty = (text == "").to_numpy()
    str_idx = np.flatnonzero(is_str)
    absent[str_idx[empty]] = True
    converted = pd.to_numeric(text[~empty], errors="coerce").to_numpy(dtype=np.float64)
    lowered = text[~empty].str.lower().to_numpy(dtype=object)
    nan_words = np.isin(lowered, ["nan", "-nan", "+nan"])
    unparsable = np.isnan(converted) & ~nan_words
    values[str_idx[~empty]] = converted
    parsed = Parsed(pd.Series(values, index=s.index), absent)
    text_rows = str_idx[~empty]
    parsed.add(_rows(len(s), text_rows[unparsable]), "wrong_type", "not a number")
    parsed.add(_rows(len(s), text_rows[nan_words]), "not_finite", "NaN is not allowed")
    wrong = ~(numeric | is_str | absent)
    parsed.add(wrong, "wrong_type", f"expected a number, got {_type_names(kind[wrong])}")
    parsed.add(np.isinf(values), "not_finite", "must be a finite number")
    values[~np.isfinite(values)] = np.nan
    parsed.values = pd.Series(values, index=s.index)
    return parsed


def _rows(n: int, idx: np.ndarray) -> np.ndarray:
    """Bool mask of length n that is True at idx."""
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return mask


def parse_bool(s: pd.Series) -> Parsed:
    """Booleans from true/false/1/0/yes/no (any case), JSON booleans or 0/1 numbers.

    values: float64 1.0/0.0, NaN where absent or bad.
    """
    kind = kinds(s)
    raw = s.to_numpy(dtype=object)
    values = np.full(len(s), np.nan)
    absent = (kind == "none") | _is_nan(s, kind)
    bools = kind == "bool"
    values[bools] = raw[bools].astype(bool).astype(np.float64)
    nums = ((kind == "int") | (kind == "float")) & ~absent
    num_values = raw[nums].astype(np.float64)
    ok_num = (num_values == 0) | (num_values == 1)
    values[np.flatnonzero(nums)[ok_num]] = num_values[ok_num]
    is_str = kind == "str"
    text = pd.Series(raw[is_str], dtype=object).str.strip().str.lower()
    str_idx = np.flatnonzero(is_str)
    absent[str_idx[(text == "").to_numpy()]] = True
    values[str_idx[text.isin(TRUE_WORDS).to_numpy()]] = 1.0
    values[str_idx[text.isin(FALSE_WORDS).to_numpy()]] = 0.0
    parsed = Parsed(pd.Series(values, index=s.index), absent)
    parsed.add(np.isnan(values) & ~absent, "bad_boolean",
               "expected a boolean: true/false, 1/0 or yes/no")
    return parsed


def parse_timestamp(s: pd.Series) -> Parsed:
    """Epoch seconds (float64, NaN where absent/bad) from ISO-8601 text or epoch seconds.

    ISO-8601 without an offset is taken as UTC. Accepted range: 1970-01-01 .. 2200-01-01 UTC.
    """
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        stamps = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        return _epoch_checks(_ns_to_seconds(stamps), stamps.isna().to_numpy(), [])
    kind = kinds(s)
    raw = s.to_numpy(dtype=object)
    values = np.full(len(s), np.nan)
    absent = kind == "none"
    early: list[Issue] = []
    numeric = (kind == "int") | (kind == "float")
    if pd.api.types.is_float_dtype(s.dtype):
        absent = absent | _is_nan(s, kind)   # a typed null, not a NaN the user wrote
        numeric &= ~absent
    values[numeric] = raw[numeric].astype(np.float64)
    nan_given = numeric & np.isnan(values)
    dates = kind == "datetime"
    if dates.any():
        stamps = pd.to_datetime(pd.Series(raw[dates]), utc=True, errors="coerce")
        values[dates] = _ns_to_seconds(stamps).to_numpy()
    is_str = kind == "str"
    if is_str.any():
        _parse_timestamp_text(raw, is_str, values, absent, early)
    wrong = ~(numeric | is_str | dates | absent)
    early.append(Issue(wrong, "wrong_type",
                       f"expected a timestamp, got {_type_names(kind[wrong])}"))
    early.append(Issue(nan_given, "bad_timestamp", "NaN is not a timestamp"))
    flagged = np.zeros(len(s), dtype=bool)
    for issue in early:
        flagged |= issue.mask
    values[flagged] = np.nan
    return _epoch_checks(pd.Series(values, index=s.index), absent, early, skip=flagged)


def _parse_timestamp_text(raw: np.ndarray, is_str: np.ndarray, values: np.ndarray,
                          absent: np.ndarray, issues: list[Issue]) -> None:
    """Fill values/absent/issues for the text rows (epoch digits or ISO-8601)."""
    idx = np.flatnonzero(is_str)
    text = pd.Series(raw[is_str], dtype=object).str.strip()
    empty = (text == "").to_numpy()
    absent[idx[empty]] = True
    epoch = text.str.match(EPOCH_PATTERN.pattern).to_numpy() & ~empty
    values[idx[epoch]] = text[epoch].astype(np.float64).to_numpy()
    iso = text.str.match(ISO_PATTERN.pattern).to_numpy() & ~empty
    years = text[iso].str[:4].astype(np.int64).to_numpy()
    in_range = (years >= 1970) & (years < 2200)
    iso_idx = np.flatnonzero(iso)
    stamps = pd.to_datetime(text[iso_idx[in_range]].str.replace(",", ".", regex=False),
                            utc=True, errors="coerce")
    seconds = _ns_to_seconds(stamps).to_numpy()
    values[idx[iso_idx[in_range]]] = seconds
    n = len(raw)
    issues.append(Issue(_rows(n, idx[iso_idx[~in_range & (years < 1970)]]), "bad_timestamp",
                        "before 1970-01-01 (negative epoch time)"))
    issues.append(Issue(_rows(n, idx[iso_idx[~in_range & (years >= 2200)]]), "bad_timestamp",
                        "after year 2200; check the value"))
    issues.append(Issue(_rows(n, idx[iso_idx[in_range][np.isnan(seconds)]]), "bad_timestamp",
                        "not a valid date/time"))
    nan_text = text.str.lower().isin(["nan", "-nan", "+nan"]).to_numpy()
    issues.append(Issue(_rows(n, idx[nan_text]), "bad_timestamp", "NaN is not a timestamp"))
    other = ~(epoch | iso | empty | nan_text)
    issues.append(Issue(_rows(n, idx[other]), "bad_timestamp",
                        "unparsable; use ISO-8601 (2024-05-01T12:30:00Z) or epoch seconds"))


def _ns_to_seconds(stamps: pd.Series) -> pd.Series:
    """UTC datetime Series -> float64 epoch seconds (NaN for NaT)."""
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
    ns[stamps.isna().to_numpy()] = np.nan
    return pd.Series(ns / 1e9, index=stamps.index)


def _epoch_checks(values: pd.Series, absent: np.ndarray, issues: list[Issue],
                  skip: np.ndarray | None = None) -> Parsed:
    """Range-check epoch seconds: >= 0 and before 2200; bad values become NaN; floor to seconds."""
    v = values.to_numpy(dtype=np.float64).copy()
    checked = ~np.isnan(v) if skip is None else (~np.isnan(v) & ~skip)
    negative = checked & (v < 0)
    late = checked & (v >= MAX_EPOCH_SECONDS)
    millis = late & (v / 1000.0 < MAX_EPOCH_SECONDS) & (v / 1000.0 >= MILLIS_HINT_FROM)
    parsed = Parsed(pd.Series(v, index=values.index), absent, [i for i in issues if i.mask.any()])
    parsed.add(negative, "bad_timestamp", "negative epoch seconds")
    parsed.add(millis, "bad_timestamp", "after year 2200; looks like epoch milliseconds, "
               "give seconds")
    parsed.add(late & ~millis, "bad_timestamp", "after year 2200; check the value")
    v[negative | late] = np.nan
    parsed.values = pd.Series(np.floor(v), index=values.index)
    return parsed


def attribute_text(s: pd.Series) -> pd.Series:
    """Free user attributes as str: None/NaN -> "", booleans -> true/false, lists -> JSON."""
    kind = kinds(s)
    if (kind == "str").all():
        return s.astype(object).str.strip()
    out = []
    for value, k in zip(s.to_numpy(dtype=object), kind):
        if k == "str":
            out.append(value.strip())
        elif k == "none" or (k == "float" and np.isnan(value)):
            out.append("")
        elif k == "bool":
            out.append("true" if value else "false")
        elif k == "list":
            out.append(json.dumps([_plain(v) for v in value]))
        elif k == "other" and isinstance(value, dict):
            out.append(json.dumps(value, sort_keys=True, default=str))
        else:
            out.append(str(value))
    return pd.Series(out, index=s.index, dtype=object)


def _plain(value):
    """A numpy scalar as the matching Python value (for json.dumps)."""
    return value.item() if isinstance(value, np.generic) else value
