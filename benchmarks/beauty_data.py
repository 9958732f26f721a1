"""Reader for the Amazon Beauty 5-core folder, and a converter into the shop data contract.

Folder layout (see the folder's PROVENANCE.md):

- ``sequential_data.txt``: one line per user, ``user_id item_id item_id ...`` (1-based P5 ids,
  items in chronological order, no timestamps);
- ``items.tsv``: tab-separated with a header; ``item_id`` runs 1..N in order; columns
  ``title``, ``brand``, ``categories`` (levels joined with ``|``, any depth, may be empty) and
  ``price`` (may be empty = unknown, even for every item); optional ``asin`` and
  ``description``. Other columns are ignored.

Inside the benchmark an item is its 0-based index ``item_id - 1``.

The Amazon data is licensed for research only: never write it, or anything derived from it,
into the repository. ``to_shop`` refuses an output folder inside the repository.

Usage: ``python -m benchmarks.beauty_data --data DIR --to-shop OUT [--max-users N] [--seed S]
[--hold-out-last N]``
"""
import argparse
import csv
import dataclasses
import datetime
import math
import os
import sys

import numpy as np
import pandas as pd

from benchmarks import folders
from pipeline.contract import fields, spec

SEQUENCES_FILE = "sequential_data.txt"
ITEMS_FILE = "items.tsv"
ITEM_COLUMNS = ("item_id", "title", "brand", "categories", "price")

# Synthetic clock of the shop export (the data has no timestamps, only per-user order).
# Every user's sequence ends on EXPORT_END_DAY; earlier items are one day apart, plus a fixed
# per-user offset of under an hour. So a time cut at "end - 12 h" selects exactly the last item
# of every user, which is the leave-one-out test split.
EXPORT_END_DAY = datetime.datetime(2014, 7, 1, tzinfo=datetime.timezone.utc)
DAY_SECONDS = 86_400
CATALOG_CREATED_AT = "2000-01-01T00:00:00Z"   # before every event


class BeautyDataError(ValueError):
    """The data folder is missing or malformed; the message names file and line."""


@dataclasses.dataclass
class Items:
    """The catalog, row i = item index i (P5 id i + 1)."""

    item_id: list       # P5 ids as strings ("1", "2", ...)
    asin: list
    title: list
    brand: list
    categories: list    # list of category levels per item
    price: np.ndarray   # float64, NaN when unknown
    description: list = None    # per item, "" when none; None (the default): "" for every item
    path: str = ITEMS_FILE      # the file read: errors name its lines (item i on line i + 2)

    def __post_init__(self):
        if self.description is None:
            self.description = [""] * len(self.item_id)

    def __len__(self):
        return len(self.item_id)


@dataclasses.dataclass
class BeautyData:
    """Users' chronological sequences of 0-based item indices, and the catalog."""

    user_ids: list
    sequences: list     # list of int32 arrays
    items: Items

    @property
    def n_items(self):
        return len(self.items)

    @property
    def n_interactions(self):
        return int(sum(len(s) for s in self.sequences))


def _require_file(folder, name):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise BeautyDataError(
            f"{path}: file not found. --data must be the amazon_beauty_2014_5core folder "
            f"(with {SEQUENCES_FILE} and {ITEMS_FILE}), "
            f"e.g. ../shared/data/amazon_beauty_2014_5core")
    return path


def _parse_price(text, where):
    if text.strip() == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise BeautyDataError(f"{where}: price {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise BeautyDataError(f"{where}: price {text!r} must be a finite number >= 0")
    return value


def read_items(path):
    """Read ``items.tsv``; ``item_id`` must run 1..N in file order.

    Item index i is on line i + 2 of the file (line 1 is the header). Without an ``asin``
    column the ASIN is the item id; without a ``description`` column every description is "".
    """
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        missing = [c for c in ITEM_COLUMNS if c not in header]
        if missing:
            raise BeautyDataError(f"{path}:1: header lacks column(s) {', '.join(missing)}; "
                                  f"found {header}")
        col = {name: header.index(name) for name in header}
        rows = {name: [] for name in ("item_id", "asin", "title", "brand", "categories",
                                      "description")}
        prices = []
        for lineno, line in enumerate(f, start=2):
            where = f"{path}:{lineno}"
            fields = line.rstrip("\n").split("\t")
            if len(fields) != len(header):
                raise BeautyDataError(f"{where}: expected {len(header)} tab-separated fields, "
                                      f"found {len(fields)}")
            expected = str(len(prices) + 1)
            if fields[col["item_id"]] != expected:
                raise BeautyDataError(f"{where}: item_id {fields[col['item_id']]!r}, expected "
                                      f"{expected} (ids must run 1..N in order)")
            rows["item_id"].append(expected)
            rows["asin"].append(fields[col["asin"]] if "asin" in col else expected)
            rows["title"].append(fields[col["title"]])
            rows["brand"].append(fields[col["brand"]])
            cats = fields[col["categories"]]
            rows["categories"].append([c for c in cats.split("|") if c] if cats else [])
            rows["description"].append(fields[col["description"]] if "description" in col
                                       else "")
            prices.append(_parse_price(fields[col["price"]], where))
    if not prices:
        raise BeautyDataError(f"{path}: no items after the header")
    return Items(price=np.asarray(prices, dtype=np.float64), path=path, **rows)


def read_sequences(path, n_items):
    """Read ``sequential_data.txt`` into (user ids, 0-based item index arrays)."""
    user_ids, sequences, seen = [], [], {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            tokens = line.split()
            if not tokens:
                raise BeautyDataError(f"{where}: empty line; expected 'user_id item_id ...'")
            if len(tokens) < 2:
                raise BeautyDataError(f"{where}: user {tokens[0]!r} has no items")
            user = tokens[0]
            if user in seen:
                raise BeautyDataError(f"{where}: user {user!r} already on line {seen[user]}")
            seen[user] = lineno
            try:
                ids = np.asarray([int(t) for t in tokens[1:]], dtype=np.int64)
            except ValueError:
                bad = next(t for t in tokens[1:] if not t.lstrip("-").isdigit())
                raise BeautyDataError(f"{where}: item id {bad!r} is not an integer") from None
            out_of_range = ids[(ids < 1) | (ids > n_items)]
            if out_of_range.size:
                raise BeautyDataError(f"{where}: item id {out_of_range[0]} outside 1..{n_items} "
                                      f"(the ids of {ITEMS_FILE})")
            user_ids.append(user)
            sequences.append((ids - 1).astype(np.int32))
    if not sequences:
        raise BeautyDataError(f"{path}: no users")
    return user_ids, sequences


def load_beauty(folder, max_users=None, seed=0):
    """Load the folder; with ``max_users``, a seeded random subset of users (file order kept).

    The catalog always holds every item, so ranking stays over the full catalog.
    """
    if not os.path.isdir(folder):
        raise BeautyDataError(f"{folder}: not a directory. --data must be the "
                              f"amazon_beauty_2014_5core folder")
    items = read_items(_require_file(folder, ITEMS_FILE))
    user_ids, sequences = read_sequences(_require_file(folder, SEQUENCES_FILE), len(items))
    if max_users is not None:
        if max_users < 1:
            raise BeautyDataError(f"max_users must be >= 1, got {max_users}")
        if max_users < len(user_ids):
            keep = np.sort(np.random.RandomState(seed).choice(len(user_ids), max_users,
                                                              replace=False))
            user_ids = [user_ids[i] for i in keep]
            sequences = [sequences[i] for i in keep]
    return BeautyData(user_ids=user_ids, sequences=sequences, items=items)


def describe(folder, data):
    """Name the data set a run used: ``{"title", "path", "users", "items", "interactions",
    "sha256"}``.

    title: the first Markdown heading of ``PROVENANCE.md`` in ``folder`` (without the
    leading "# "), else the folder's base name. users/items/interactions count ``data`` (a
    ``--max-users`` subsample counts its users); sha256 is of the whole files
    ``sequential_data.txt`` and ``items.tsv``.
    """
    path = os.path.abspath(folder)
    return {
        "title": folders.provenance_title(path) or os.path.basename(os.path.normpath(path)),
        "path": path,
        "users": len(data.user_ids), "items": data.n_items,
        "interactions": data.n_interactions,
        "sha256": {name: folders.sha256(_require_file(path, name))
                   for name in (SEQUENCES_FILE, ITEMS_FILE)},
    }


def _iso(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def event_timestamps(sequence_length, user_index):
    """Synthetic epoch seconds for one user's events: strictly increasing, end-aligned."""
    end = int(EXPORT_END_DAY.timestamp()) + (user_index * 7919) % 3600
    return [end - (sequence_length - 1 - pos) * DAY_SECONDS for pos in range(sequence_length)]


def shop_prices(items):
    """Prices for the shop export, which requires one: unknown prices are imputed with the
    median price of items with the same category path (else of all items; 0.0 when no item
    has a price). Returns (prices, how many were imputed)."""
    price = items.price.copy()
    known = ~np.isnan(price)
    paths = np.asarray([spec.CATEGORY_SEPARATOR.join(c) for c in items.categories],
                       dtype=object)
    medians = {}
    for path in set(paths[~known]):
        same = known & (paths == path)
        medians[path] = float(np.median(price[same])) if same.any() else None
    fallback = float(np.median(price[known])) if known.any() else 0.0
    for i in np.flatnonzero(~known):
        price[i] = medians[paths[i]] if medians[paths[i]] is not None else fallback
    return price, int((~known).sum())


def shop_title(items, i):
    """The title, or (the shop export requires one) "brand leaf-category", else the ASIN."""
    if items.title[i].strip():
        return items.title[i]
    fallback = " ".join(p for p in (items.brand[i], (items.categories[i] or [""])[-1]) if p)
    return fallback or items.asin[i]


def _shop_item_rows(items):
    """The ``items.csv`` rows, how many prices were imputed and how many titles filled.

    Fails (naming the items.tsv line) on a text longer than the contract's cap: nothing is
    truncated silently.
    """
    prices, imputed = shop_prices(items)
    paths = [spec.CATEGORY_SEPARATOR.join(c) for c in items.categories]
    # Lengths as the contract counts them: trimmed, category paths normalised as it does.
    checked_paths = fields.normalise_categories(pd.Series([p.strip() for p in paths])).tolist()
    rows, filled = [], 0
    for i in range(len(items)):
        title = shop_title(items, i)
        filled += title != items.title[i]
        texts = {spec.ITEM_ID: items.asin[i], spec.TITLE: title,
                 spec.DESCRIPTION: items.description[i], spec.BRAND: items.brand[i],
                 spec.CATEGORIES: paths[i]}
        for column, text in texts.items():
            checked = checked_paths[i] if column == spec.CATEGORIES else text.strip()
            length, limit = len(checked), spec.MAX_CHARS[column]
            if length > limit:
                raise BeautyDataError(
                    f"{items.path}:{i + 2}: item_id {items.item_id[i]}: {column} has {length} "
                    f"characters, the shop data contract allows at most {limit} "
                    f"(spec.MAX_CHARS); shorten it in {ITEMS_FILE} (to_shop does not truncate)")
        rows.append([items.asin[i], title, items.description[i], items.brand[i],
                     texts[spec.CATEGORIES], f"{prices[i]:.2f}", 1, CATALOG_CREATED_AT])
    return rows, imputed, int(filled)


def _check_hold_out(hold_out_last):
    if (isinstance(hold_out_last, bool) or not isinstance(hold_out_last, (int, np.integer))
            or hold_out_last < 0):
        raise ValueError(f"hold_out_last must be an integer >= 0, got {hold_out_last!r}")
    return int(hold_out_last)


def to_shop(data, out_dir, hold_out_last=0):
    """Write ``items.csv`` and ``events.csv`` (the shop data contract) into ``out_dir``.

    Mapping: item_id = ASIN; description from ``items.tsv`` ("" without that column);
    categories joined with " > " (any depth; none -> ""); unknown prices imputed and empty
    titles filled (see ``shop_prices``, ``shop_title``); in_stock 1 (unknown); created_at a
    fixed date before every event. A text longer than the contract's cap
    (``spec.MAX_CHARS``) fails naming its items.tsv line; nothing is truncated. Each review
    becomes one ``purchase`` event (value = quantity 1, no query, its own session) with a
    synthetic timestamp from the user's sequence position (see ``event_timestamps``): the
    data has no real timestamps.

    ``hold_out_last`` = n > 0: each user's last n items are not written (the export as the
    shop knew it before those purchases; a user with at most n items has no events). The
    events written keep exactly the timestamps and session ids of the full export, so the
    two agree event by event.

    Returns counts: items, events (written), users (with an event written), held_out
    (events not written), imputed_prices, filled_titles.
    """
    hold_out_last = _check_hold_out(hold_out_last)
    if folders.inside_repo(out_dir):
        raise BeautyDataError(f"{out_dir}: inside the repository {folders.REPO}. The Amazon data is "
                              f"research-only; write the shop export outside the repository")
    items = data.items
    rows, imputed, filled = _shop_item_rows(items)   # before writing: a failure leaves no files
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "items.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(spec.ITEM_COLUMNS)
        writer.writerows(rows)
    events = users = 0
    with open(os.path.join(out_dir, "events.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(spec.EVENT_COLUMNS)
        for u, (user, seq) in enumerate(zip(data.user_ids, data.sequences)):
            stamps = event_timestamps(len(seq), u)       # of the full sequence
            kept = max(len(seq) - hold_out_last, 0)
            for pos, (item, ts) in enumerate(zip(seq[:kept], stamps[:kept])):
                writer.writerow([user, items.asin[item], spec.PURCHASE, 1, "", f"{user}-{pos}",
                                 _iso(ts)])
            events += kept
            users += kept > 0
    return {"items": len(items), "events": events, "users": users,
            "held_out": data.n_interactions - events, "imputed_prices": imputed,
            "filled_titles": filled}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="the amazon_beauty_2014_5core folder")
    parser.add_argument("--to-shop", required=True, metavar="OUT",
                        help="write items.csv and events.csv here (outside the repository)")
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the user subsample")
    parser.add_argument("--hold-out-last", type=int, default=0, metavar="N",
                        help="leave out each user's last N items (the export as the shop knew "
                             "it before them); default 0")
    args = parser.parse_args(argv)
    if args.hold_out_last < 0:
        parser.error(f"--hold-out-last must be >= 0, got {args.hold_out_last}")
    try:
        data = load_beauty(args.data, args.max_users, args.seed)
        counts = to_shop(data, args.to_shop, hold_out_last=args.hold_out_last)
    except BeautyDataError as err:
        sys.exit(f"error: {err}")
    held = (f" ({counts['held_out']} held out: each user's last {args.hold_out_last})"
            if args.hold_out_last else "")
    print(f"wrote {counts['items']} items ({counts['imputed_prices']} prices imputed, "
          f"{counts['filled_titles']} empty titles filled) and {counts['events']} purchase "
          f"events{held} of {counts['users']} users to {args.to_shop}")


if __name__ == "__main__":
    main()
