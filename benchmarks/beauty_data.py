"""Reader for the Amazon Beauty 5-core folder, and a converter into the shop data contract.

Folder layout (see the folder's PROVENANCE.md):

- ``sequential_data.txt``: one line per user, ``user_id item_id item_id ...`` (1-based P5 ids,
  items in chronological order, no timestamps);
- ``items.tsv``: tab-separated with a header; ``item_id`` runs 1..N in order.

Inside the benchmark an item is its 0-based index ``item_id - 1``.

The Amazon data is licensed for research only: never write it, or anything derived from it,
into the repository. ``to_shop`` refuses an output folder inside the repository.

Usage: ``python -m benchmarks.beauty_data --data DIR --to-shop OUT [--max-users N] [--seed S]``
"""
import argparse
import csv
import dataclasses
import datetime
import math
import os
import sys

import numpy as np

from pipeline.contract import spec

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
    """Read ``items.tsv``; ``item_id`` must run 1..N in file order."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        missing = [c for c in ITEM_COLUMNS if c not in header]
        if missing:
            raise BeautyDataError(f"{path}:1: header lacks column(s) {', '.join(missing)}; "
                                  f"found {header}")
        col = {name: header.index(name) for name in header}
        rows = {name: [] for name in ("item_id", "asin", "title", "brand", "categories")}
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
            prices.append(_parse_price(fields[col["price"]], where))
    if not prices:
        raise BeautyDataError(f"{path}: no items after the header")
    return Items(price=np.asarray(prices, dtype=np.float64), **rows)


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


def _iso(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def event_timestamps(sequence_length, user_index):
    """Synthetic epoch seconds for one user's events: strictly increasing, end-aligned."""
    end = int(EXPORT_END_DAY.timestamp()) + (user_index * 7919) % 3600
    return [end - (sequence_length - 1 - pos) * DAY_SECONDS for pos in range(sequence_length)]


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def shop_prices(items):
    """Prices for the shop export, which requires one: unknown prices are imputed with the
    median price of items with the same category path (else of all items)."""
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


def to_shop(data, out_dir):
    """Write ``items.csv`` and ``events.csv`` (the shop data contract) into ``out_dir``.

    Mapping: item_id = ASIN; description "" (the data has none); categories joined with " > ";
    unknown prices imputed and empty titles filled (see ``shop_prices``, ``shop_title``);
    in_stock 1 (unknown); created_at a fixed date before every event. Each review becomes one
    ``purchase`` event (value = quantity 1, no query, its own session) with a synthetic
    timestamp from the user's sequence position (see ``event_timestamps``): the data has no
    real timestamps. Returns counts, incl. how many prices were imputed and titles filled.
    """
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if _inside(out_dir, repo):
        raise BeautyDataError(f"{out_dir}: inside the repository {repo}. The Amazon data is "
                              f"research-only; write the shop export outside the repository")
    os.makedirs(out_dir, exist_ok=True)
    items = data.items
    prices, imputed = shop_prices(items)
    filled = 0
    with open(os.path.join(out_dir, "items.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(spec.ITEM_COLUMNS)
        for i in range(len(items)):
            title = shop_title(items, i)
            filled += title != items.title[i]
            writer.writerow([items.asin[i], title, "", items.brand[i],
                             spec.CATEGORY_SEPARATOR.join(items.categories[i]),
                             f"{prices[i]:.2f}", 1,
                             CATALOG_CREATED_AT])
    with open(os.path.join(out_dir, "events.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(spec.EVENT_COLUMNS)
        for u, (user, seq) in enumerate(zip(data.user_ids, data.sequences)):
            for pos, (item, ts) in enumerate(zip(seq, event_timestamps(len(seq), u))):
                writer.writerow([user, items.asin[item], spec.PURCHASE, 1, "", f"{user}-{pos}",
                                 _iso(ts)])
    return {"items": len(items), "events": data.n_interactions, "users": len(data.user_ids),
            "imputed_prices": imputed, "filled_titles": int(filled)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="the amazon_beauty_2014_5core folder")
    parser.add_argument("--to-shop", required=True, metavar="OUT",
                        help="write items.csv and events.csv here (outside the repository)")
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the user subsample")
    args = parser.parse_args(argv)
    try:
        data = load_beauty(args.data, args.max_users, args.seed)
        counts = to_shop(data, args.to_shop)
    except BeautyDataError as err:
        sys.exit(f"error: {err}")
    print(f"wrote {counts['items']} items ({counts['imputed_prices']} prices imputed, "
          f"{counts['filled_titles']} empty titles filled) and {counts['events']} purchase "
          f"events of {counts['users']} users to {args.to_shop}")


if __name__ == "__main__":
    main()
