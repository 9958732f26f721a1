"""Vectorised parsing of raw column values (from CSV, JSON Lines or Parquet) into canonical types.

Each parser takes one raw column (a pandas Series of length N, any dtype) and returns a
``Parsed``: canonical values (length N), an ``absent`` mask (value missing or empty) and a list of
``Issue``s (masks of present-but-unusable values with a reason). Parsers never raise on bad data.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.contract import spec

# Latest accepted timestamp: 2200-01-01T00:00:00Z. Later values are treated as mistakes.
MAX_EPOCH_SECONDS = 7_258_118_400
MILLIS_HINT_FROM = 946_684_800   # 2000-01-01: a too-large value that /1000 lands after this
ISO_PATTERN = re.compile(
    r"^\d{4}-\d{2}-\d{2}"                        # date
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"  # optional time, seconds, fraction
    r"(?:Z|z|[+-]\d{2}(?::?\d{2})?)?)?$")         # optional UTC designator or offset
EPOCH_PATTERN = re.compile(r"^[+-]?\d+(?:\.\d*)?$")
# kinds of raw values (see kinds())
STR, INT, FLOAT, BOOL, NONE, DATETIME, LIST, OTHER = range(8)
TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})
NAN_WORDS = frozenset({"nan", "-nan", "+nan"})
BAD_TEXT_MESSAGE = ("not valid Unicode text: contains a lone surrogate (an unpaired "
                    "\\ud800-\\udfff escape in JSON)")


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


def _kind_of_type(t: type) -> int:
    """Kind code of a Python value's type: STR, INT, FLOAT, BOOL, NONE, DATETIME, LIST or OTHER."""
    if issubclass(t, str):
        return STR
    if issubclass(t, (bool, np.bool_)):
        return BOOL
    if issubclass(t, (int, np.integer)):
        return INT
    if issubclass(t, (float, np.floating)):
        return FLOAT
    if t is type(None) or t is type(pd.NA) or t is type(pd.NaT):
        return NONE
    if issubclass(t, (dt.date, np.datetime64)):
        return DATETIME
    if issubclass(t, (list, tuple, np.ndarray)):
        return LIST
    return OTHER


def kinds(s: pd.Series) -> np.ndarray:
    """Kind code (STR, INT, ...; see _kind_of_type) of every value of s: int8 array, length N."""
    n = len(s)
    if s.dtype == object:
        if pd.api.types.infer_dtype(s, skipna=False) == "string":   # C loop; CSV columns
            return np.full(n, STR, dtype=np.int8)
        types = s.map(type)
        table = {t: _kind_of_type(t) for t in types.unique()}
        return types.map(table).to_numpy(dtype=np.int8)
    if pd.api.types.is_bool_dtype(s.dtype):
        return np.full(n, BOOL, dtype=np.int8)
    if pd.api.types.is_integer_dtype(s.dtype):
        return np.full(n, INT, dtype=np.int8)
    if pd.api.types.is_float_dtype(s.dtype):
        return np.full(n, FLOAT, dtype=np.int8)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return np.where(s.isna().to_numpy(), NONE, DATETIME).astype(np.int8)
    return np.full(n, OTHER, dtype=np.int8)


def _is_nan(s: pd.Series, kind: np.ndarray) -> np.ndarray:
    """Float NaN values (typed nulls from Parquet/pandas, or JSON NaN)."""
    out = np.zeros(len(s), dtype=bool)
    floats = kind == FLOAT
    if floats.any():
        out[floats] = pd.isna(s.to_numpy()[floats])
    return out


def _type_names(kind: np.ndarray) -> str:
    """Readable list of value kinds, for wrong-type messages."""
    names = {INT: "integer", FLOAT: "number", BOOL: "boolean", LIST: "list",
             DATETIME: "date/time", OTHER: "object", STR: "text", NONE: "null"}
    return "/".join(sorted({names[int(k)] for k in np.unique(kind)}))


def parse_text(s: pd.Series, join_lists: bool = False) -> Parsed:
    """Text (stripped str); integers become their decimal text, None/NaN/"" are absent.

    With join_lists, a list of strings is a category path and is joined with " > ".
    """
    kind = kinds(s)
    is_str = kind == STR
    raw = s.to_numpy(dtype=object)
    if is_str.all():
        values = strip_all(raw)
        invalid = invalid_unicode(values)
        values[invalid] = ""
        parsed = Parsed(pd.Series(values, index=s.index), (values == "") & ~invalid)
        parsed.add(invalid, "bad_text", BAD_TEXT_MESSAGE)
        return parsed
    values = np.full(len(s), "", dtype=object)
    values[is_str] = strip_all(raw[is_str])
    invalid = invalid_unicode(values)
    values[invalid] = ""
    ints = kind == INT
    values[ints] = [str(int(v)) for v in raw[ints]]
    wrong = ~(is_str | ints | (kind == NONE) | _is_nan(s, kind))
    if join_lists:
        for i in np.flatnonzero(kind == LIST):
            joined = _join_levels(raw[i])
            if joined is not None:
                values[i] = joined
                wrong[i] = False
    parsed = Parsed(pd.Series(values, index=s.index), (values == "") & ~wrong & ~invalid)
    parsed.add(wrong, "wrong_type", f"expected text, got {_type_names(kind[wrong])}")
    parsed.add(invalid, "bad_text", BAD_TEXT_MESSAGE)
    return parsed


def invalid_unicode(values: np.ndarray) -> np.ndarray:
    """Bool mask: which strings of an object array cannot be encoded as UTF-8.

    Only lone surrogates can (JSON escapes such as "\\ud800" decode to them); such text
    cannot be stored, sent to a model or answered, so it is a row problem like any other.
    """
    try:
        "".join(values).encode("utf-8")          # one pass in C for the usual, valid case
        return np.zeros(len(values), dtype=bool)
    except UnicodeEncodeError:
        return np.fromiter((not _encodable(v) for v in values), dtype=bool, count=len(values))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def as_float(values: np.ndarray) -> np.ndarray:
    """Object array of numbers -> float64; integers beyond the float range become +-inf
    (so they are flagged as not finite instead of raising OverflowError)."""
    try:
        return values.astype(np.float64)
    except OverflowError:
        return np.array([_int_to_float(v) for v in values], dtype=np.float64)


def _int_to_float(value) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def strip_all(values: np.ndarray) -> np.ndarray:
    """Object array of str -> the same strings without surrounding whitespace."""
    out = np.empty(len(values), dtype=object)
    out[:] = [v.strip() for v in values]
    return out


def matches(values: np.ndarray, pattern: str) -> np.ndarray:
    """Bool mask: which strings of an object array match a regular expression (RE2, vectorised)."""
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    hits = pc.match_substring_regex(pa.array(values, type=pa.string()), pattern)
    return hits.to_numpy(zero_copy_only=False).astype(bool)


def _join_levels(levels) -> str | None:
    """Join a list of category levels with " > "; None if any level is not text."""
    if not all(isinstance(level, str) for level in levels):
        return None
    return spec.CATEGORY_SEPARATOR.join(levels)


def normalise_categories(values: pd.Series) -> pd.Series:
    """Category paths rewritten as "Level1 > Level2 > ..." (levels stripped, empty ones dropped)."""
    out = values.to_numpy(dtype=object).copy()
    needs = np.fromiter((">" in v for v in out), dtype=bool, count=len(out))
    out[needs] = [spec.CATEGORY_SEPARATOR.join(
        p for p in (part.strip() for part in v.split(">")) if p) for v in out[needs]]
    return pd.Series(out, index=values.index)


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
    absent = (kind == NONE) | _is_nan(s, kind)
    numeric = (kind == INT) | ((kind == FLOAT) & ~absent)
    values[numeric] = as_float(raw[numeric])
    is_str = kind == STR
    text = strip_all(raw[is_str])
    empty = text == ""
    str_idx = np.flatnonzero(is_str)
    absent[str_idx[empty]] = True
    converted = pd.to_numeric(pd.Series(text[~empty], dtype=object),
                              errors="coerce").to_numpy(dtype=np.float64)
    nan_words = np.isnan(converted)
    nan_words[nan_words] = [v.lower() in NAN_WORDS for v in text[~empty][nan_words]]
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
    absent = (kind == NONE) | _is_nan(s, kind)
    bools = kind == BOOL
    values[bools] = raw[bools].astype(bool).astype(np.float64)
    nums = ((kind == INT) | (kind == FLOAT)) & ~absent
    num_values = as_float(raw[nums])
    ok_num = (num_values == 0) | (num_values == 1)
    values[np.flatnonzero(nums)[ok_num]] = num_values[ok_num]
    is_str = kind == STR
    words = {**{w: 1.0 for w in TRUE_WORDS}, **{w: 0.0 for w in FALSE_WORDS}}
    text = [v.strip().lower() for v in raw[is_str]]
    str_idx = np.flatnonzero(is_str)
    absent[str_idx[np.array([t == "" for t in text], dtype=bool)]] = True
    values[str_idx] = [words.get(t, np.nan) for t in text]
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
    absent = kind == NONE
    early: list[Issue] = []
    numeric = (kind == INT) | (kind == FLOAT)
    if pd.api.types.is_float_dtype(s.dtype):
        absent = absent | _is_nan(s, kind)   # a typed null, not a NaN the user wrote
        numeric &= ~absent
    values[numeric] = as_float(raw[numeric])
    nan_given = numeric & np.isnan(values)
    dates = kind == DATETIME
    if dates.any():
        stamps = pd.to_datetime(pd.Series(raw[dates]), utc=True, errors="coerce")
        values[dates] = _ns_to_seconds(stamps).to_numpy()
    is_str = kind == STR
    invalid = np.zeros(len(s), dtype=bool)
    invalid[is_str] = invalid_unicode(raw[is_str])
    early.append(Issue(invalid, "bad_text", BAD_TEXT_MESSAGE))
    is_str &= ~invalid
    if is_str.any():
        _parse_timestamp_text(raw, is_str, values, absent, early)
    wrong = ~(numeric | is_str | dates | absent | invalid)
    early.append(Issue(wrong, "wrong_type",
                       f"expected a timestamp, got {_type_names(kind[wrong])}"))
    early.append(Issue(nan_given, "bad_timestamp", "NaN is not a timestamp"))
    flagged = np.zeros(len(s), dtype=bool)
    for issue in early:
        flagged |= issue.mask
    lost = ~absent & ~flagged & np.isnan(values)       # safety net: nothing passes as NaN
    early.append(Issue(lost, "bad_timestamp", "unparsable timestamp"))
    flagged |= lost
    values[flagged] = np.nan
    return _epoch_checks(pd.Series(values, index=s.index), absent, early, skip=flagged)


def _parse_timestamp_text(raw: np.ndarray, is_str: np.ndarray, values: np.ndarray,
                          absent: np.ndarray, issues: list[Issue]) -> None:
    """Fill values/absent/issues for the text rows (epoch digits or ISO-8601)."""
    idx = np.flatnonzero(is_str)
    text = strip_all(raw[is_str])
    empty = text == ""
    absent[idx[empty]] = True
    epoch = matches(text, EPOCH_PATTERN.pattern)
    values[idx[epoch]] = pd.to_numeric(pd.Series(text[epoch], dtype=object),
                                       errors="coerce").to_numpy()
    iso = matches(text, ISO_PATTERN.pattern)
    years = np.array([int(v[:4]) for v in text[iso]], dtype=np.int64)
    in_range = (years >= 1970) & (years < 2200)
    iso_idx = np.flatnonzero(iso)
    stamps = pd.to_datetime(pd.Series([v.replace(",", ".") for v in text[iso_idx[in_range]]],
                                      dtype=object), utc=True, errors="coerce")
    seconds = _ns_to_seconds(stamps).to_numpy()
    values[idx[iso_idx[in_range]]] = seconds
    n = len(raw)
    issues.append(Issue(_rows(n, idx[iso_idx[~in_range & (years < 1970)]]), "bad_timestamp",
                        "before 1970-01-01 (negative epoch time)"))
    issues.append(Issue(_rows(n, idx[iso_idx[~in_range & (years >= 2200)]]), "bad_timestamp",
                        "after year 2200; check the value"))
    issues.append(Issue(_rows(n, idx[iso_idx[in_range][np.isnan(seconds)]]), "bad_timestamp",
                        "not a valid date/time"))
    other = ~(epoch | iso | empty)
    nan_text = other.copy()
    nan_text[other] = [v.lower() in NAN_WORDS for v in text[other]]
    issues.append(Issue(_rows(n, idx[nan_text]), "bad_timestamp", "NaN is not a timestamp"))
    issues.append(Issue(_rows(n, idx[other & ~nan_text]), "bad_timestamp",
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
    if (kind == STR).all():
        return pd.Series(strip_all(s.to_numpy(dtype=object)), index=s.index)
    out = []
    for value, k in zip(s.to_numpy(dtype=object), kind):
        if k == STR:
            out.append(value.strip())
        elif k == NONE or (k == FLOAT and np.isnan(value)):
            out.append("")
        elif k == BOOL:
            out.append("true" if value else "false")
        elif k == LIST:
            out.append(json.dumps([_plain(v) for v in value]))
        elif k == OTHER and isinstance(value, dict):
            out.append(json.dumps(value, sort_keys=True, default=str))
        else:
            out.append(str(value))
    return pd.Series(out, index=s.index, dtype=object)


def _plain(value):
    """A numpy scalar as the matching Python value (for json.dumps)."""
    return value.item() if isinstance(value, np.generic) else value
