"""Live price and stock changes (``POST /v1/catalog/updates``, issue #20 part 1).

A shop changes prices and stock all day; the catalog the API recommends from must follow
without a restart. An update names an item of the catalog and its new ``price`` (a number
>= 0, or null: no price) and/or ``in_stock``; it applies from the next request (the stock
filter of recommend, search and similar items, the price filters and sorts, the answers'
fields). Updates are validated as a whole (a bad one rejects the request, naming the line
and field, and nothing is applied).

They are kept in the event store's bookkeeping (``meta``), keyed by the fingerprint of the
shop export's items table: a restarted API re-applies them to the same export, and a new
export (the shop's newer truth) starts clean. Several API replicas each keep their own copy
in memory and see another replica's updates after a restart; a shared catalog for replicas
belongs with the shared store (issue #23).

Not here yet: new items and deletions (they change the catalog's rows, its embeddings and
the item-to-item tables together).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from dataclasses import dataclass

import pandas as pd

from pipeline.contract import spec
from serving.events.validation import FieldProblem

log = logging.getLogger("serving.api")
UNSET = object()


class CatalogUpdateError(ValueError):
    """Some updates break a rule; ``problems`` name the line and field of each."""

    def __init__(self, problems: list[FieldProblem]):
        super().__init__("; ".join(str(p) for p in problems[:5]))
        self.problems = problems


@dataclass(frozen=True)
class ItemUpdate:
    item_id: str
    price: object = UNSET        # float, None (no price) or UNSET (unchanged)
    in_stock: object = UNSET     # bool or UNSET

    def as_dict(self) -> dict:
        out = {"item_id": self.item_id}
        if self.price is not UNSET:
            out["price"] = self.price
        if self.in_stock is not UNSET:
            out["in_stock"] = self.in_stock
        return out


def parse_updates(body, catalog, max_updates: int) -> list[ItemUpdate]:
    """The updates of a request body (a JSON object or a list of them), every problem
    named (CatalogUpdateError), none dropped."""
    single = isinstance(body, dict)
    entries = [body] if single else body
    if not isinstance(entries, list) or not entries:
        raise CatalogUpdateError([FieldProblem(("body",), "expected an update object or a "
                                               "non-empty list of them", "type_error")])
    if len(entries) > max_updates:
        raise CatalogUpdateError([FieldProblem(("body",), f"{len(entries)} updates; at most "
                                               f"{max_updates} per request", "too_long")])
    problems, updates = [], []
    for i, entry in enumerate(entries):
        loc = ("body",) if single else ("body", i)

        def problem(field, message, kind="value_error", loc=loc):
            problems.append(FieldProblem(loc + (field,), message, kind))

        if not isinstance(entry, dict):
            problems.append(FieldProblem(loc, "expected an object", "type_error"))
            continue
        unknown = sorted(set(entry) - {"item_id", "price", "in_stock"})
        for field in unknown:
            problem(field, "unknown field (item_id, price and in_stock can be updated)",
                    "extra_forbidden")
        item_id = entry.get("item_id")
        if not isinstance(item_id, str) or not item_id:
            problem("item_id", "required, a non-empty string", "missing")
        elif catalog.row(item_id) is None:
            problem("item_id", f"no item {item_id!r} in the catalog")
        price = entry.get("price", UNSET)
        if price is not UNSET and price is not None and (
                isinstance(price, bool) or not isinstance(price, (int, float))
                or not math.isfinite(price) or price < 0):
            problem("price", f"must be a finite number >= 0 or null (no price), got {price!r}")
        in_stock = entry.get("in_stock", UNSET)
        if in_stock is not UNSET and not isinstance(in_stock, bool):
            problem("in_stock", f"must be true or false, got {in_stock!r}")
        if price is UNSET and in_stock is UNSET:
            problem("price", "an update needs price and/or in_stock", "missing")
        updates.append(ItemUpdate(item_id, float(price) if isinstance(price, (int, float))
                                  and not isinstance(price, bool) else price, in_stock))
    if problems:
        raise CatalogUpdateError(problems)
    return updates


def items_fingerprint(items: pd.DataFrame) -> str:
    """Content hash of a shop export's items table (which updates belong to)."""
    hashed = pd.util.hash_pandas_object(items[list(spec.ITEM_COLUMNS)], index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()[:24]


class CatalogUpdates:
    """Applies updates to a Catalog and keeps them in the event store (module docstring)."""

    def __init__(self, catalog, store, items: pd.DataFrame):
        self.catalog, self.store = catalog, store
        self.key = f"catalog_updates:{items_fingerprint(items)}"
        self._lock = threading.Lock()

    def restore(self) -> int:
        """Re-apply the updates kept for this export (after a restart); their number."""
        kept = json.loads(self.store.get_meta(self.key) or "{}")
        updates = [ItemUpdate(item_id, **{k: v for k, v in fields.items()})
                   for item_id, fields in kept.items() if self.catalog.row(item_id) is not None]
        if len(updates) < len(kept):
            log.warning("%d kept catalog updates name items no longer in the catalog",
                        len(kept) - len(updates))
        self.catalog.update_items(updates)
        return len(updates)

    def apply(self, updates: list[ItemUpdate]) -> None:
        """Keep, then apply (so what is answered is always what a restart would restore)."""
        with self._lock:
            kept = json.loads(self.store.get_meta(self.key) or "{}")
            for update in updates:
                fields = update.as_dict()
                fields.pop("item_id")
                kept.setdefault(update.item_id, {}).update(fields)
            self.store.set_meta(self.key, json.dumps(kept, sort_keys=True))
            self.catalog.update_items(updates)
