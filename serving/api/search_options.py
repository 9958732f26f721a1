"""What a shopper narrows a search with: filters (category, brand, price range, stock), the
sort order and the page, and the cursor that carries them from one page to the next.

The search's result list is the ranked candidate pool (serving/api/recommender.py
``Recommender.search``); filters act before retrieval and BM25 (only matching items are
candidates), a price sort reorders the ranked list's items that matched the query's words
(BM25; the whole list when none did) in a stable sort (ties keep the relevance order; items
without a price come last), and a page is a slice of it.

Cursors: ``next_cursor`` of an answer is an opaque string (URL-safe base64 of JSON) holding
the query, the filters, the sort, the next offset and the model versions that ranked the
first page. A request with ``cursor`` gets the next page of the same list: the API pins
those versions, so pages neither repeat nor skip items while the models stay; once a model
version the cursor names is no longer the served one the API answers 409 (search again).
A cursor is no secret and not signed: everything in it is what the shopper could ask for
directly; it is validated like any other input.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np

from pipeline.contract import spec

SORTS = ("relevance", "price_asc", "price_desc")
MAX_CURSOR_CHARS = 4_000
CURSOR_VERSION = 1


class BadSearchOptions(ValueError):
    """A filter, sort, offset or cursor breaks a rule; ``field`` names the parameter."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def category_levels(path: str) -> tuple[str, ...]:
    """A category path's levels, trimmed and lower-cased: "Beauty > Makeup" ->
    ("beauty", "makeup")."""
    return tuple(level.strip().lower() for level in (path or "").split(spec.CATEGORY_SEPARATOR)
                 if level.strip())


@dataclass(frozen=True)
class SearchOptions:
    """Filters, sort and offset of one search page (module docstring). ``category``: a
    category path or its first levels ("Beauty" or "Beauty > Makeup"), matched level by
    level, case-insensitive; ``brand``: one brand, case-insensitive; ``min_price`` /
    ``max_price``: inclusive bounds (items without a price never match a price filter);
    ``include_out_of_stock``: also list items out of stock."""

    category: str | None = None
    brand: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    include_out_of_stock: bool = False
    sort: str = "relevance"
    offset: int = 0

    def __post_init__(self):
        for name in ("min_price", "max_price"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise BadSearchOptions(name, f"{name} must be a finite number >= 0, got {value}")
        if (self.min_price is not None and self.max_price is not None
                and self.min_price > self.max_price):
            raise BadSearchOptions("min_price", f"min_price ({self.min_price}) is above "
                                                f"max_price ({self.max_price})")
        if self.sort not in SORTS:
            raise BadSearchOptions("sort", f"sort must be one of {list(SORTS)}, got "
                                           f"{self.sort!r}")
        if not isinstance(self.offset, int) or self.offset < 0:
            raise BadSearchOptions("offset", f"offset must be an integer >= 0, got "
                                             f"{self.offset!r}")
        if self.category is not None and not category_levels(self.category):
            raise BadSearchOptions("category", "category must name at least one level")
        if self.brand is not None and not self.brand.strip():
            raise BadSearchOptions("brand", "brand must contain a non-space character")

    @property
    def filters(self) -> dict:
        """The filters set (for the answer and the cursor)."""
        out = {name: getattr(self, name) for name in ("category", "brand", "min_price",
                                                      "max_price")
               if getattr(self, name) is not None}
        if self.include_out_of_stock:
            out["include_out_of_stock"] = True
        return out

    def matching(self, catalog) -> np.ndarray | None:
        """bool [N]: the catalog items the filters keep (stock aside: the recommender's
        ``_allowed`` applies it); None when no filter is set."""
        if not any(getattr(self, n) is not None for n in ("category", "brand", "min_price",
                                                          "max_price")):
            return None
        keep = np.ones(len(catalog), dtype=bool)
        if self.category is not None:
            want = category_levels(self.category)
            keep &= np.fromiter((levels[:len(want)] == want
                                 for levels in catalog.category_levels), bool, len(catalog))
        if self.brand is not None:
            keep &= catalog.brand_keys == self.brand.strip().lower()
        if self.min_price is not None:
            keep &= catalog.has_price & (catalog.prices >= self.min_price)
        if self.max_price is not None:
            keep &= catalog.has_price & (catalog.prices <= self.max_price)
        return keep

    def order(self, catalog, rows: np.ndarray) -> np.ndarray:
        """Positions into ``rows`` (relevance order) in this sort's order."""
        if self.sort == "relevance" or not len(rows):
            return np.arange(len(rows))
        prices = catalog.prices[rows] * (1 if self.sort == "price_asc" else -1)
        return np.lexsort((np.arange(len(rows)), prices, ~catalog.has_price[rows]))

    def page(self, offset: int) -> "SearchOptions":
        return dataclasses.replace(self, offset=offset)


def encode_cursor(query: str, options: SearchOptions, versions: dict) -> str:
    """The opaque cursor of the page at ``options.offset`` of this search."""
    state = {"v": CURSOR_VERSION, "q": query, "f": options.filters, "s": options.sort,
             "o": options.offset, "m": {str(k): int(v) for k, v in (versions or {}).items()}}
    raw = json.dumps(state, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, SearchOptions, dict]:
    """(query, options with the page's offset, pinned model versions) of a cursor;
    BadSearchOptions("cursor") when it is not one this API wrote."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise BadSearchOptions("cursor", f"cursor is longer than {MAX_CURSOR_CHARS} characters")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        state = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadSearchOptions("cursor", "cursor is not a cursor this API returned "
                                         "(use next_cursor as given)") from None
    if (not isinstance(state, dict) or state.get("v") != CURSOR_VERSION
            or not isinstance(state.get("q"), str) or not isinstance(state.get("f"), dict)
            or not isinstance(state.get("m"), dict)
            or not all(isinstance(v, int) for v in state["m"].values())
            or set(state["f"]) - {"category", "brand", "min_price", "max_price",
                                  "include_out_of_stock"}):
        raise BadSearchOptions("cursor", "cursor is not a cursor this API returned "
                                         "(use next_cursor as given)")
    try:
        options = SearchOptions(**state["f"], sort=state.get("s"), offset=state.get("o"))
    except (TypeError, BadSearchOptions) as e:
        raise BadSearchOptions("cursor", f"cursor holds a bad value: {e}") from None
    return state["q"], options, state["m"]
