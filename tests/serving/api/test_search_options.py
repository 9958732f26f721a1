"""Search filters, sort order and cursors (serving/api/search_options.py) on a small catalog."""
from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from serving.api.catalog import Catalog
from serving.api.search_options import (BadSearchOptions, SearchOptions, decode_cursor,
                                        encode_cursor)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(pd.DataFrame({
        "item_id": ["a", "b", "c", "d"],
        "title": ["red lipstick", "blue lipstick", "mascara", "novel"],
        "description": ["", "", "", ""],
        "brand": ["Acme", "acme ", "Other", ""],
        "categories": ["Beauty > Makeup > Lips", "Beauty > Makeup", "Beauty > Eyes", "Books"],
        "price": [12.0, None, 5.0, 30.0],
        "in_stock": [True, True, False, True]}))


def _kept(options, catalog):
    return [catalog.ids[r] for r in np.flatnonzero(options.matching(catalog))]


def test_filters_match_category_levels_brands_and_prices(catalog):
    assert SearchOptions().matching(catalog) is None          # nothing to filter
    assert _kept(SearchOptions(category="beauty >  makeup"), catalog) == ["a", "b"]
    assert _kept(SearchOptions(category="Beauty > Make"), catalog) == []   # whole levels
    assert _kept(SearchOptions(brand="ACME"), catalog) == ["a", "b"]
    # an item without a price never matches a price filter
    assert _kept(SearchOptions(min_price=5, max_price=12), catalog) == ["a", "c"]
    assert _kept(SearchOptions(max_price=100), catalog) == ["a", "c", "d"]


def test_price_sorts_are_stable_and_put_items_without_price_last(catalog):
    rows = np.array([1, 0, 3, 2])          # relevance order: b, a, d, c
    ascending = SearchOptions(sort="price_asc").order(catalog, rows)
    assert [catalog.ids[r] for r in rows[ascending]] == ["c", "a", "d", "b"]
    descending = SearchOptions(sort="price_desc").order(catalog, rows)
    assert [catalog.ids[r] for r in rows[descending]] == ["d", "a", "c", "b"]
    assert SearchOptions().order(catalog, rows).tolist() == [0, 1, 2, 3]
    # answers say "no price" rather than a price of 0
    assert catalog.describe(1)["price"] is None and catalog.describe(0)["price"] == 12.0


def test_cursor_round_trip_keeps_query_filters_sort_offset_and_versions():
    options = SearchOptions(category="Beauty", min_price=2.5, include_out_of_stock=True,
                            sort="price_desc", offset=20)
    cursor = encode_cursor("red lipstick", options, {"retrieval": 3, "ranking": 7})
    assert decode_cursor(cursor) == ("red lipstick", options, {"retrieval": 3, "ranking": 7})
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor   # URL-safe


@pytest.mark.parametrize("state", [
    {"v": 2, "q": "x", "f": {}, "s": "relevance", "o": 0, "m": {}},
    {"v": 1, "q": 3, "f": {}, "s": "relevance", "o": 0, "m": {}},
    {"v": 1, "q": "x", "f": {"colour": "red"}, "s": "relevance", "o": 0, "m": {}},
    {"v": 1, "q": "x", "f": {}, "s": "relevance", "o": -5, "m": {}},
    {"v": 1, "q": "x", "f": {"min_price": "cheap"}, "s": "relevance", "o": 0, "m": {}},
    {"v": 1, "q": "x", "f": {}, "s": "random", "o": 0, "m": {}},
    {"v": 1, "q": "x", "f": {}, "s": "relevance", "o": 0, "m": {"retrieval": "new"}},
    ["not", "an", "object"]])
def test_tampered_cursors_are_refused_naming_the_cursor(state):
    cursor = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
    with pytest.raises(BadSearchOptions) as raised:
        decode_cursor(cursor)
    assert raised.value.field == "cursor"


@pytest.mark.parametrize("kwargs, field", [
    ({"min_price": 3, "max_price": 2}, "min_price"), ({"max_price": float("nan")}, "max_price"),
    ({"sort": "name"}, "sort"), ({"offset": -1}, "offset"), ({"category": " > "}, "category"),
    ({"brand": " "}, "brand")])
def test_bad_options_name_their_field(kwargs, field):
    with pytest.raises(BadSearchOptions) as raised:
        SearchOptions(**kwargs)
    assert raised.value.field == field
