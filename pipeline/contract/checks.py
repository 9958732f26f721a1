"""Row-level checks of the items, users and events tables; builds their canonical columns.

Each ``check_*`` takes a RawTable (see table_io) and returns the canonical frame for *all* its
well-formed rows (positionally aligned with ``raw.frame``; values of bad rows are placeholders)
plus a RowIssues listing what is wrong with which row and field.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.contract import spec
from pipeline.contract.fields import (Parsed, attribute_text, normalise_categories, parse_bool,
                                    parse_number, parse_text, parse_timestamp)
from pipeline.contract.tables import RawTable

VALUE_PREVIEW = 40   # characters of an offending value quoted in a message


def _preview(value) -> str:
    """Short repr of a raw value for messages."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= VALUE_PREVIEW else text[:VALUE_PREVIEW - 3] + "..."


class RowIssues:
    """Problems of one table's rows: (row position, field, code, message) entries."""

    def __init__(self, raw: RawTable):
        self.raw = raw
        self.entries: list[tuple[int, str, str, str]] = []

    def add(self, mask: np.ndarray, field: str, code: str, message: str,
            quote: bool = True) -> None:
        """Flag rows in mask; with quote, the message ends with the raw value."""
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            return
        column = self.raw.frame[field].to_numpy(dtype=object) \
            if quote and field in self.raw.frame else None
        for i in idx:
            text = message if column is None else f"{message} (got {_preview(column[i])})"
            self.entries.append((int(i), field, code, text))

    def add_parsed(self, field: str, parsed: Parsed, code: str | None = None) -> None:
        """Flag every issue a parser found, optionally under one reason code."""
        for issue in parsed.issues:
            self.add(issue.mask, field, code or issue.code, issue.message)

    def bad_rows(self) -> np.ndarray:
        """Bool mask over raw.frame rows with at least one problem."""
        mask = np.zeros(len(self.raw.frame), dtype=bool)
        mask[[e[0] for e in self.entries]] = True
        return mask


def _column(raw: RawTable, name: str) -> pd.Series:
    """The raw column, or an all-None column if the file does not have it."""
    if name in raw.frame:
        return raw.frame[name]
    return pd.Series([None] * len(raw.frame), index=raw.frame.index, dtype=object)


def _required_text(raw: RawTable, issues: RowIssues, name: str, code: str = "missing_value",
                   message: str = "required value is missing") -> Parsed:
    """Parse a text column whose value must be present."""
    parsed = parse_text(_column(raw, name))
    issues.add_parsed(name, parsed)
    issues.add(parsed.absent, name, code, message, quote=False)
    return parsed


def _flag_too_long(issues: RowIssues, name: str, values: pd.Series) -> None:
    """Flag canonical text values longer than the contract's cap for the column (too_long).

    The message gives the length, never the value: it may be megabytes.
    """
    limit = spec.MAX_CHARS[name]
    lengths = np.fromiter(map(len, values.to_numpy(dtype=object)), dtype=np.int64,
                          count=len(values))
    for i in np.flatnonzero(lengths > limit):
        issues.entries.append((int(i), name, "too_long",
                               f"must be at most {limit} characters, got {lengths[i]}"))


def _flag_duplicates(raw: RawTable, issues: RowIssues, name: str, ids: Parsed) -> None:
    """Flag every repeat of an id (the first occurrence is not flagged), naming the first line."""
    usable = ~ids.absent & ~ids.bad
    values = ids.values.where(usable)
    repeat = values.duplicated(keep="first").to_numpy() & usable
    if not repeat.any():
        return
    first_pos = pd.Series(np.arange(len(values)))[usable].groupby(values[usable].to_numpy()).min()
    for i in np.flatnonzero(repeat):
        key = values.iat[i]
        first = raw.location(int(raw.lines[first_pos[key]]))
        where = first if raw.fmt == "parquet" else f"line {first}"
        if raw.file_of(first_pos[key]) != raw.file_of(i):          # in an earlier shard
            where = f"{raw.file_of(first_pos[key])} {where}"
        issues.entries.append((int(i), name, "duplicate_id",
                               f"duplicate {name} {key!r} (first seen at {where})"))


def check_items(raw: RawTable, duplicates: bool = True) -> tuple[pd.DataFrame, RowIssues]:
    """Canonical items columns and the problems of each row (``duplicates=False``: repeated
    item ids are left to the caller, e.g. across the chunks of a Beam read)."""
    issues = RowIssues(raw)
    item_id = _required_text(raw, issues, spec.ITEM_ID)
    title = _required_text(raw, issues, spec.TITLE, "empty_title", "title must not be empty")
    texts = {}
    for name in (spec.DESCRIPTION, spec.BRAND, spec.CATEGORIES):
        texts[name] = parse_text(_column(raw, name), join_lists=name == spec.CATEGORIES)
        issues.add_parsed(name, texts[name])
    price = parse_number(_column(raw, spec.PRICE))
    issues.add_parsed(spec.PRICE, price, code="bad_price")
    issues.add(price.absent, spec.PRICE, "bad_price", "required number is missing", quote=False)
    issues.add(price.values.to_numpy() < 0, spec.PRICE, "bad_price", "must be >= 0")
    in_stock = parse_bool(_column(raw, spec.IN_STOCK))
    issues.add_parsed(spec.IN_STOCK, in_stock)
    created = parse_timestamp(_column(raw, spec.CREATED_AT))
    issues.add_parsed(spec.CREATED_AT, created, code="bad_timestamp")
    if duplicates:
        _flag_duplicates(raw, issues, spec.ITEM_ID, item_id)
    categories = normalise_categories(texts[spec.CATEGORIES].values)
    for name, values in ((spec.ITEM_ID, item_id.values), (spec.TITLE, title.values),
                         (spec.DESCRIPTION, texts[spec.DESCRIPTION].values),
                         (spec.BRAND, texts[spec.BRAND].values), (spec.CATEGORIES, categories)):
        _flag_too_long(issues, name, values)
    frame = pd.DataFrame({
        spec.ITEM_ID: item_id.values,
        spec.TITLE: title.values,
        spec.DESCRIPTION: texts[spec.DESCRIPTION].values,
        spec.BRAND: texts[spec.BRAND].values,
        spec.CATEGORIES: categories,
        spec.PRICE: price.values.astype(np.float64),
        spec.IN_STOCK: in_stock.values.fillna(1.0).astype(bool),      # absent: in stock
        spec.CREATED_AT: created.values.fillna(0).astype(np.int64),   # absent: 0 = unknown
    })
    return frame, issues


def check_users(raw: RawTable, duplicates: bool = True) -> tuple[pd.DataFrame, RowIssues]:
    """Canonical users columns (user_id + free attributes as text) and row problems
    (``duplicates``: as check_items)."""
    issues = RowIssues(raw)
    user_id = _required_text(raw, issues, spec.USER_ID)
    _flag_too_long(issues, spec.USER_ID, user_id.values)
    if duplicates:
        _flag_duplicates(raw, issues, spec.USER_ID, user_id)
    data = {spec.USER_ID: user_id.values}
    for name in raw.columns:
        if name != spec.USER_ID:
            data[name] = attribute_text(raw.frame[name])
    return pd.DataFrame(data, index=raw.frame.index), issues


def check_events(raw: RawTable, known_items: pd.Index, kept_items: pd.Index,
                 items_file: str) -> tuple[pd.DataFrame, RowIssues, np.ndarray]:
    """Canonical events columns, row problems, and the rows whose item was quarantined.

    The frame has EVENT_ID (after the EVENT_COLUMNS) only when ``raw`` has that column.

    known_items: ids present in the items file; kept_items: ids of items that survive validation.
    """
    issues = RowIssues(raw)
    user_id = _required_text(raw, issues, spec.USER_ID)
    etype = parse_text(_column(raw, spec.EVENT_TYPE))
    issues.add_parsed(spec.EVENT_TYPE, etype)
    issues.add(etype.absent, spec.EVENT_TYPE, "missing_value", "required value is missing",
               quote=False)
    types = etype.values.to_numpy(dtype=object)
    valid_type = etype.values.isin(spec.EVENT_TYPES).to_numpy()
    if not valid_type.all():                       # accept any letter case: "Purchase"
        types[~valid_type] = [t.lower() for t in types[~valid_type]]
        valid_type = pd.Series(types).isin(spec.EVENT_TYPES).to_numpy()
        etype.values = pd.Series(types, index=etype.values.index)
    issues.add(~valid_type & ~etype.absent & ~etype.bad, spec.EVENT_TYPE, "bad_event_type",
               f"must be one of {', '.join(spec.EVENT_TYPES)}")
    search = types == spec.SEARCH
    item_side = valid_type & ~search

    item_id = parse_text(_column(raw, spec.ITEM_ID))
    issues.add_parsed(spec.ITEM_ID, item_id)
    has_item = ~item_id.absent & ~item_id.bad
    issues.add(item_side & item_id.absent, spec.ITEM_ID, "missing_item_id",
               "required for every event type except search", quote=False)
    issues.add(search & has_item, spec.ITEM_ID, "unexpected_item_id",
               "must be empty for search events")
    ids = item_id.values
    known = ids.isin(known_items).to_numpy()
    issues.add(item_side & has_item & ~known, spec.ITEM_ID, "unknown_item",
               f"no item with this item_id in {items_file}")
    cascade = item_side & has_item & known & ~ids.isin(kept_items).to_numpy()

    value = _check_value(raw, issues, types)
    query = parse_text(_column(raw, spec.QUERY))
    issues.add_parsed(spec.QUERY, query)
    issues.add(search & query.absent, spec.QUERY, "missing_query",
               "search events need a non-empty query", quote=False)
    session = parse_text(_column(raw, spec.SESSION_ID))
    issues.add_parsed(spec.SESSION_ID, session)
    stamp = parse_timestamp(_column(raw, spec.TIMESTAMP))
    issues.add_parsed(spec.TIMESTAMP, stamp, code="bad_timestamp")
    issues.add(stamp.absent, spec.TIMESTAMP, "bad_timestamp", "required timestamp is missing",
               quote=False)
    texts = [(spec.USER_ID, user_id), (spec.ITEM_ID, item_id), (spec.QUERY, query),
             (spec.SESSION_ID, session)]
    event_id = None
    if spec.EVENT_ID in raw.frame:              # optional idempotency key; "" = none
        event_id = parse_text(raw.frame[spec.EVENT_ID])
        issues.add_parsed(spec.EVENT_ID, event_id)
        texts.append((spec.EVENT_ID, event_id))
    for name, parsed in texts:
        _flag_too_long(issues, name, parsed.values)
    frame = pd.DataFrame({
        spec.USER_ID: user_id.values,
        spec.ITEM_ID: ids.where(~search, ""),
        spec.EVENT_TYPE: etype.values,
        spec.VALUE: value,
        spec.QUERY: query.values,
        spec.SESSION_ID: session.values,
        spec.TIMESTAMP: stamp.values.fillna(0).astype(np.int64),
    })
    if event_id is not None:
        frame[spec.EVENT_ID] = event_id.values
    return frame, issues, cascade


def _check_value(raw: RawTable, issues: RowIssues, types: np.ndarray) -> pd.Series:
    """Event values: ratings in 1..5 (required), quantities whole >= 1 (default 1), else free."""
    value = parse_number(_column(raw, spec.VALUE))
    issues.add_parsed(spec.VALUE, value, code="bad_value")
    v = value.values.to_numpy(dtype=np.float64).copy()
    present = ~np.isnan(v)
    rating = types == spec.RATING
    low, high = spec.RATING_RANGE
    issues.add(rating & value.absent, spec.VALUE, "bad_rating",
               f"rating events need a value between {low:g} and {high:g}", quote=False)
    issues.add(rating & present & ((v < low) | (v > high)), spec.VALUE, "bad_rating",
               f"rating must be between {low:g} and {high:g}")
    quantity = np.isin(types, spec.QUANTITY_TYPES)
    issues.add(quantity & present & ((v < 1) | (v != np.floor(v))), spec.VALUE, "bad_quantity",
               "quantity must be a whole number >= 1")
    v[quantity & value.absent] = 1.0
    return pd.Series(v, index=raw.frame.index)
