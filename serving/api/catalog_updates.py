"""Live catalog changes (``POST /v1/catalog/updates``, ``python -m serving.api.catalog_updates``;
issue #20 part 1): prices, stock, new items, changed texts and deletions, without a restart.

A shop changes its catalog all day; the catalog the API recommends from must follow at once.
An update names an item by ``item_id`` and carries any of:

* ``price`` (a number >= 0, or null: no price) and ``in_stock`` (true/false): applied in
  place from the next request (the stock filter of recommend, search and similar items, the
  price filters and sorts, the answers' fields);
* ``title``, ``description``, ``brand``, ``categories`` (strings, the data contract's
  lengths): an item the catalog does not hold is **added** (``title`` required; price null and
  in stock unless given); a held item's texts are **changed**. Either way the item is encoded
  at once with the served retrieval model's ``candidate_embedding`` (its text path: a new id
  is out of vocabulary, its title, brand and category are not) and becomes a *live* item:
  retrieval scores it with the request's ``query_embedding`` next to the model's own top K,
  so it can be recommended and found before any retraining (serving/api/recommender.py); BM25
  is rebuilt in the background (the previous index keeps answering meanwhile);
* ``deleted: true`` (alone): the item leaves every answer and its page (404) from the next
  request; its past events stay (history and popularity). Sending its fields again with
  ``title`` re-adds it.

Updates are validated as a whole (a bad one rejects the request, naming the line and field,
and nothing is applied). They are kept in the event store's bookkeeping (``meta``), keyed by
the fingerprint of the shop export's items table: a restarted API re-applies them to the same
export, and a new export (the shop's newer truth) starts clean. Several API replicas each
keep their own copy in memory and see another replica's updates after a restart; a shared
catalog for replicas belongs with the shared store (issue #23).

The command line posts a file of updates (JSON Lines, or a JSON list) to a running API in
batches: ``python -m serving.api.catalog_updates FILE --url http://host:8000
--api-key-file KEY`` (the operator key).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import threading
from dataclasses import dataclass, fields
from typing import Callable

import pandas as pd

from pipeline.contract import spec
from serving.events.validation import FieldProblem

log = logging.getLogger("serving.api")
UNSET = object()
TEXT_FIELDS = (spec.TITLE, spec.DESCRIPTION, spec.BRAND, spec.CATEGORIES)
FIELDS = ("item_id", "price", "in_stock", *TEXT_FIELDS, "deleted")


class CatalogUpdateError(ValueError):
    """Some updates break a rule; ``problems`` name the line and field of each."""

    def __init__(self, problems: list[FieldProblem]):
        super().__init__("; ".join(str(p) for p in problems[:5]))
        self.problems = problems


@dataclass(frozen=True)
class ItemUpdate:
    """One item's change; UNSET fields stay as they are."""
    item_id: str
    price: object = UNSET        # float, None (no price) or UNSET (unchanged)
    in_stock: object = UNSET     # bool or UNSET
    title: object = UNSET        # str or UNSET (likewise the other texts)
    description: object = UNSET
    brand: object = UNSET
    categories: object = UNSET
    deleted: object = UNSET      # True (delete) or UNSET

    def as_dict(self) -> dict:
        """The set fields, item_id included."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not UNSET}

    @property
    def changes_text(self) -> bool:
        return any(getattr(self, name) is not UNSET for name in TEXT_FIELDS)


def _check_entry(entry: dict, catalog, problem) -> ItemUpdate | None:
    """One update object's problems (reported through ``problem(field, message, kind)``);
    the ItemUpdate when it has none."""
    before = problem.count
    for field in sorted(set(entry) - set(FIELDS)):
        problem(field, f"unknown field (an update may carry {', '.join(FIELDS[1:])})",
                "extra_forbidden")
    item_id = entry.get("item_id")
    row = None
    if not isinstance(item_id, str) or not item_id.strip():
        problem("item_id", "required, a non-empty string", "missing")
    elif len(item_id) > spec.MAX_ID_CHARS:
        problem("item_id", f"longer than {spec.MAX_ID_CHARS} characters", "too_long")
    else:
        row = catalog.row(item_id)
    price = entry.get("price", UNSET)
    if price is not UNSET and price is not None and (
            isinstance(price, bool) or not isinstance(price, (int, float))
            or not math.isfinite(price) or price < 0):
        problem("price", f"must be a finite number >= 0 or null (no price), got {price!r}")
    in_stock = entry.get("in_stock", UNSET)
    if in_stock is not UNSET and not isinstance(in_stock, bool):
        problem("in_stock", f"must be true or false, got {in_stock!r}")
    texts = {}
    for name in TEXT_FIELDS:
        value = entry.get(name, UNSET)
        if value is UNSET:
            continue
        if not isinstance(value, str):
            problem(name, f"must be a string, got {value!r}", "type_error")
        elif len(value.strip()) > spec.MAX_CHARS[name]:
            problem(name, f"longer than {spec.MAX_CHARS[name]} characters", "too_long")
        else:
            texts[name] = value.strip()
    if spec.TITLE in texts and not texts[spec.TITLE]:
        problem(spec.TITLE, "must not be blank", "value_error")
    deleted = entry.get("deleted", UNSET)
    if deleted is not UNSET:
        if deleted is not True:
            problem("deleted", f"only true (delete the item) is accepted, got {deleted!r}")
        elif set(entry) - {"item_id", "deleted"}:
            problem("deleted", "a deletion carries only item_id and deleted")
    listed = row is not None and catalog.listed(row)
    if isinstance(item_id, str) and item_id.strip() and deleted is UNSET and not listed \
            and spec.TITLE not in entry:
        problem(spec.TITLE, f"required to add item {item_id!r} (the catalog "
                f"{'deleted it' if row is not None else 'does not hold it'}); "
                "send its title and other fields", "missing")
    if deleted is True and row is None and isinstance(item_id, str):
        problem("item_id", f"no item {item_id!r} in the catalog")
    if set(entry) <= {"item_id"}:
        problem("price", "an update needs at least one of price, in_stock, title, "
                "description, brand, categories, deleted", "missing")
    if problem.count > before:
        return None
    return ItemUpdate(item_id, float(price) if isinstance(price, (int, float))
                      and not isinstance(price, bool) else price, in_stock, deleted=deleted,
                      **texts)


class _Problems(list):
    """FieldProblems of one request; called per problem with a location prefix."""

    def at(self, loc: tuple) -> Callable:
        def problem(field, message, kind="value_error"):
            self.append(FieldProblem(loc + (field,), message, kind))
            problem.count = len(self)
        problem.count = len(self)
        return problem


def parse_updates(body, catalog, max_updates: int) -> list[ItemUpdate]:
    """The updates of a request body (a JSON object or a list of them), every problem
    named (CatalogUpdateError), none dropped. An item named twice is refused (which of two
    changes wins would otherwise depend on the order a client happened to send)."""
    single = isinstance(body, dict)
    entries = [body] if single else body
    if not isinstance(entries, list) or not entries:
        raise CatalogUpdateError([FieldProblem(("body",), "expected an update object or a "
                                               "non-empty list of them", "type_error")])
    if len(entries) > max_updates:
        raise CatalogUpdateError([FieldProblem(("body",), f"{len(entries)} updates; at most "
                                               f"{max_updates} per request", "too_long")])
    problems, updates, seen = _Problems(), [], {}
    for i, entry in enumerate(entries):
        loc = ("body",) if single else ("body", i)
        if not isinstance(entry, dict):
            problems.append(FieldProblem(loc, "expected an object", "type_error"))
            continue
        update = _check_entry(entry, catalog, problems.at(loc))
        if update is None:
            continue
        if update.item_id in seen:
            problems.at(loc)("item_id", f"item {update.item_id!r} is also updated by line "
                             f"{seen[update.item_id]}; send one update per item")
            continue
        seen[update.item_id] = i
        updates.append(update)
    if problems:
        raise CatalogUpdateError(list(problems))
    return updates


def items_fingerprint(items: pd.DataFrame) -> str:
    """Content hash of a shop export's items table (which updates belong to)."""
    hashed = pd.util.hash_pandas_object(items[list(spec.ITEM_COLUMNS)], index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()[:24]


def merged(kept: dict, updates: list[ItemUpdate]) -> dict:
    """``kept`` (item id -> changed fields) with ``updates`` folded in: a deletion replaces
    what was kept of the item, a re-addition replaces a deletion."""
    out = {item_id: dict(changes) for item_id, changes in kept.items()}
    for update in updates:
        changes = update.as_dict()
        changes.pop("item_id")
        if update.deleted is True or out.get(update.item_id, {}).get("deleted"):
            out[update.item_id] = changes
        else:
            out.setdefault(update.item_id, {}).update(changes)
    return out


def apply_to_items(items: pd.DataFrame, kept: dict) -> tuple[pd.DataFrame, set, set]:
    """The shop export's items with the ``kept`` changes: (items, ids whose texts changed
    or that were added, deleted ids). Deleted items stay as rows (their events keep
    meaning); the Catalog leaves them out of answers."""
    items = items.copy()
    index = {item_id: i for i, item_id in enumerate(items[spec.ITEM_ID])}
    added, texts, deleted = [], set(), set()
    for item_id, changes in kept.items():
        if changes.get("deleted"):
            if item_id in index:
                deleted.add(item_id)
            continue
        row = index.get(item_id)
        if row is None:
            if spec.TITLE not in changes:
                continue            # a price change of an item this export no longer has
            added.append({spec.ITEM_ID: item_id, spec.TITLE: "", spec.DESCRIPTION: "",
                          spec.BRAND: "", spec.CATEGORIES: "", spec.PRICE: None,
                          spec.IN_STOCK: True, spec.CREATED_AT: 0, **changes})
            texts.add(item_id)
            index[item_id] = -1
            continue
        for name, value in changes.items():
            items.iat[row, items.columns.get_loc(name)] = (
                float("nan") if name == spec.PRICE and value is None else value)
        if any(name in changes for name in TEXT_FIELDS):
            texts.add(item_id)
    if added:
        new = pd.DataFrame(added, columns=items.columns)
        new[spec.PRICE] = pd.to_numeric(new[spec.PRICE], errors="coerce")
        items = pd.concat([items, new.astype(items.dtypes.to_dict())], ignore_index=True)
    return items, texts, deleted


class CatalogUpdates:
    """Applies updates to the served Catalog and keeps them in the event store (module
    docstring). ``grow(updates)`` is called for updates that add items or change texts:
    it builds a catalog holding them (Services encodes the changed items with the served
    model) and returns the function that swaps it in; it raises to refuse them."""

    def __init__(self, catalog, store, items: pd.DataFrame):
        self.catalog, self.store = catalog, store
        self.key = f"catalog_updates:{items_fingerprint(items)}"
        self._lock = threading.Lock()

    def kept(self) -> dict:
        """item id -> its kept changes (for this shop export)."""
        return json.loads(self.store.get_meta(self.key) or "{}")

    def apply(self, updates: list[ItemUpdate], grow: Callable | None = None) -> None:
        """Prepare (a refused growth changes nothing), keep, then apply: an answer never
        shows a change a restart would lose."""
        with self._lock:
            swap = None
            if any(u.changes_text for u in updates):
                if grow is None:
                    raise ValueError("updates that add items or change texts need ``grow``")
                swap = grow(updates)
            self.store.set_meta(self.key, json.dumps(merged(self.kept(), updates),
                                                     sort_keys=True))
            if swap is not None:
                swap()
            else:
                self.catalog.update_items(updates)


# ---- command line: post a file of updates to a running API ----
def read_updates_file(path: str) -> list[dict]:
    """Updates from a JSON Lines file (one object per line) or a JSON list; a bad line is
    named (ValueError)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
    else:
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {number}: not valid JSON ({e.msg})") from e
    if not entries:
        raise ValueError(f"{path}: no updates")
    return entries


def post_updates(entries: list[dict], client, batch: int) -> int:
    """Post ``entries`` in batches of ``batch`` through ``client`` (an ``httpx.Client`` on
    the API's base URL, carrying the operator key); returns the number applied. Stops at the
    first refused batch (raising with the API's message: the batches before it are
    applied, it and those after are not)."""
    done = 0
    for start in range(0, len(entries), batch):
        part = entries[start:start + batch]
        answer = client.post("/v1/catalog/updates", json=part)
        if answer.status_code != 200:
            try:
                message = answer.json().get("error", answer.text)
            except ValueError:
                message = answer.text
            raise RuntimeError(
                f"updates {start + 1}..{start + len(part)} refused (HTTP "
                f"{answer.status_code}): {message} (body.N = update {start + 1} + N of the "
                f"file); the {done} updates before them were applied")
        done += answer.json()["updated"]
        log.info("applied %d of %d updates", done, len(entries))
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.api.catalog_updates",
        description="Post catalog updates (JSON Lines or a JSON list) to a running API.")
    parser.add_argument("file", help="updates: one JSON object per line, or a JSON list")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the API's base URL")
    parser.add_argument("--api-key-file", help="file holding an operator API key")
    parser.add_argument("--batch", type=int, default=500,
                        help="updates per request (at most the API's max_events_per_request)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    key = None
    if args.api_key_file:
        with open(args.api_key_file, encoding="utf-8") as f:
            key = f.read().strip()
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        entries = read_updates_file(args.file)
        with httpx.Client(base_url=args.url.rstrip("/"), headers=headers,
                          timeout=60.0) as client:
            done = post_updates(entries, client, args.batch)
    except (OSError, ValueError, RuntimeError, httpx.HTTPError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"applied {done} catalog updates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
