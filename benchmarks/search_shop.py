"""A search evaluation folder (``benchmarks/search_data.py``) as a shop export: the catalog,
and a search log built from the real judgments of the TRAIN queries only (issue #17).

    python -m benchmarks.search_shop --data DIR --to-shop OUT

Mapping (the shop data contract, docs/data.md):

- ``items.csv``: item_id = product_id; title, description, brand and category path as the
  folder has them ("" when it has none); price 0 when the folder has no prices (the contract
  requires one; every item then has the same price, so the feature carries nothing); in
  stock; created before every event.
- ``events.csv``: every judgment (query, product, grade) of a train query is one shopper
  session of its own: a ``search`` event with the query text, then the product shown
  (``view``), then ``click`` when grade >= 1 and ``purchase`` when the grade is the highest
  of the grade scale (2 on Home Depot). A grade-0 product is shown and not clicked: a
  negative with the query as context. One session per judgment (its own pseudonymous user)
  keeps every training unit in the situation a test query is scored in: an anonymous search
  with no history. Test queries never appear.
- Time: sessions are laid out one minute apart in an order fixed by a hash of the query id
  (independent of the query's text and of file order), all judgments of a query in one
  block, so a time split holds whole queries: ``split_times`` gives the config's
  ``rank_from`` / ``eval_from`` that put ``rank_share`` and ``eval_share`` of the train
  queries into the pipeline's rank and eval splits (its ranker rows and blessing gate).
"""
import argparse
import csv
import datetime
import hashlib
import os
import sys

from benchmarks import folders, search_data
from pipeline.contract import spec

START = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
CATALOG_CREATED_AT = "2019-12-01T00:00:00Z"     # before every event
SESSION_SECONDS = 60
RANK_SHARE, EVAL_SHARE = 0.1, 0.1


def query_order(queries):
    """Train queries in the export's time order: by SHA-256 of the query id."""
    return sorted(queries, key=lambda q: hashlib.sha256(q.query_id.encode()).hexdigest())


def _iso(seconds):
    return (START + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _item_rows(products):
    rows = []
    for i in range(len(products)):
        path = spec.CATEGORY_SEPARATOR.join(products.categories[i])
        texts = {spec.ITEM_ID: products.product_id[i], spec.TITLE: products.title[i],
                 spec.DESCRIPTION: products.description[i], spec.BRAND: products.brand[i],
                 spec.CATEGORIES: path}
        for column, text in texts.items():
            if len(text) > spec.MAX_CHARS[column]:
                raise search_data.SearchDataError(
                    f"{search_data.PRODUCTS_FILE}:{i + 2}: product {products.product_id[i]!r}: "
                    f"{column} has {len(text)} characters, the shop data contract allows at "
                    f"most {spec.MAX_CHARS[column]}; nothing is truncated")
        rows.append([texts[c] for c in (spec.ITEM_ID, spec.TITLE, spec.DESCRIPTION,
                                         spec.BRAND, spec.CATEGORIES)]
                    + ["0.00", 1, CATALOG_CREATED_AT])
    return rows


def _session_events(query, product_id, grade, top_grade, user, start):
    """The events of one judgment's session (see the module docstring)."""
    session = user
    events = [[user, "", spec.SEARCH, "", query.text, session, _iso(start)],
              [user, product_id, spec.VIEW, "", "", session, _iso(start + 1)]]
    if grade >= 1:
        events.append([user, product_id, spec.CLICK, "", "", session, _iso(start + 2)])
    if grade >= 1 and grade == top_grade:
        events.append([user, product_id, spec.PURCHASE, 1, "", session, _iso(start + 3)])
    return events


def to_shop(data, out_dir):
    """Write ``items.csv`` and ``events.csv`` into ``out_dir`` (outside the repository).
    Returns counts: items, train_queries, sessions, events per type, and the split times."""
    if folders.inside_repo(out_dir):
        raise search_data.SearchDataError(
            f"{out_dir}: inside the repository {folders.REPO}. The search data is "
            f"research-only; write the shop export outside the repository")
    train = query_order(data.split("train", counted_only=False))
    train = [q for q in train if q.grades.size]
    if not train:
        raise search_data.SearchDataError("no train query has a judgment: nothing to learn")
    top_grade = int(max(int(q.grades.max()) for q in data.queries if q.grades.size))
    items = _item_rows(data.products)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "items.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(spec.ITEM_COLUMNS)
        writer.writerows(items)
    counts = {t: 0 for t in (spec.SEARCH, spec.VIEW, spec.CLICK, spec.PURCHASE)}
    query_starts, clock, sessions = [], 0, 0
    with open(os.path.join(out_dir, "events.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(spec.EVENT_COLUMNS)
        for query in train:
            query_starts.append(clock)
            for n, (product, grade) in enumerate(zip(query.products, query.grades)):
                user = f"q{query.query_id}-{n}"
                for event in _session_events(query, data.products.product_id[product],
                                             int(grade), top_grade, user, clock):
                    writer.writerow(event)
                    counts[event[2]] += 1
                clock += SESSION_SECONDS
                sessions += 1
    return {"items": len(items), "train_queries": len(train), "sessions": sessions,
            "events": counts, "top_grade": top_grade,
            "split_times": split_times(query_starts, clock)}


def _split_firsts(n, rank_share=RANK_SHARE, eval_share=EVAL_SHARE):
    """(first rank-split query, first eval-split query) of ``n`` train queries in time order."""
    if n < 3:
        raise search_data.SearchDataError(f"{n} train queries with judgments: the pipeline "
                                          "needs at least 3 (train, rank and eval splits)")
    eval_first = min(n - 1, max(2, round(n * (1 - eval_share))))
    rank_first = min(eval_first - 1, max(1, round(n * (1 - eval_share - rank_share))))
    return rank_first, eval_first


def pipeline_splits(data):
    """{"train", "rank", "eval"}: the train queries (with a judgment) in the pipeline split
    their sessions fall in, as ``to_shop`` lays them out. The eval split's queries trained
    neither model (they only judge the blessing): what serving-side choices are tuned on."""
    train = [q for q in query_order(data.split("train", counted_only=False)) if q.grades.size]
    rank_first, eval_first = _split_firsts(len(train))
    return {"train": train[:rank_first], "rank": train[rank_first:eval_first],
            "eval": train[eval_first:]}


def split_times(query_starts, end, rank_share=RANK_SHARE, eval_share=EVAL_SHARE):
    """{"rank_from", "eval_from"} (ISO-8601) at query boundaries: the last ``eval_share`` of
    the train queries form the eval split, the ``rank_share`` before them the rank split."""
    rank_first, eval_first = _split_firsts(len(query_starts), rank_share, eval_share)
    return {"rank_from": _iso(query_starts[rank_first]),
            "eval_from": _iso(query_starts[eval_first]), "end": _iso(end)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a search evaluation folder")
    parser.add_argument("--to-shop", required=True, metavar="OUT",
                        help="write items.csv and events.csv here (outside the repository)")
    args = parser.parse_args(argv)
    try:
        counts = to_shop(search_data.load_search(args.data), args.to_shop)
    except search_data.SearchDataError as err:
        sys.exit(f"error: {err}")
    print(f"wrote {counts['items']} items and {sum(counts['events'].values())} events "
          f"({counts['events']}) of {counts['train_queries']} train queries "
          f"({counts['sessions']} sessions) to {args.to_shop}; split times "
          f"{counts['split_times']}")


if __name__ == "__main__":
    main()
