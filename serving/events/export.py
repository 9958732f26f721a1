"""The feedback export: the event store as a shop export the next pipeline run takes.

``python -m serving.events.export --store URL --shop DIR --out DIR [--pseudonym-key-file F]``

Writes ``items.jsonl``, ``events.jsonl`` and (when the shop folder has one) ``users.jsonl``
in the data contract (docs/data.md), and ``export.json`` (what was written, from where):

* **items**: the shop folder's items with the live catalog changes the API keeps for that
  export (``catalog_updates:<fingerprint>`` in the store's meta: prices, stock, new items,
  changed texts; deleted items stay as rows, out of stock, so their events keep meaning);
* **events**: every event of the store (the shop's imported ones and those the API
  received; erased users' and expired ones are already gone) plus every **impression** as
  a ``view`` event: what the API showed, at the time it showed it. The pipeline's ranking
  examples (``pipeline/examples.py``) make one unit per (user, session, item): a view
  without a click, cart or purchase is a unit with every label 0, so the items shoppers were
  shown and passed over become the ranking trainer's real negatives (the two-stage rows of
  pipeline/candidate_rows.py take them first as a context's negatives);
* **users**: the shop folder's users table without the users erased from the store.

User ids: the store holds what the API stored -- keyed pseudonyms when the API runs with a
``pseudonym_key_file``. Give the export the same key: the users table is pseudonymised
too, so every id in the folder is a pseudonym, and run the pipeline on it **without** a key
(the ids are pseudonyms already; the API maps raw request ids to the same ones).
``python -m pipeline.contract OUT`` validates the folder; the retraining schedule is in
docs/serving.md ("Retraining from the event store").
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract import spec
from pipeline.contract.load import load_shop
from pipeline.contract.pseudonym import Pseudonyms
from serving.events.erasure import read_key_file
from serving.events.store import EventStore, open_event_store

log = logging.getLogger("serving.events.export")


def updated_items(items: pd.DataFrame, store: EventStore) -> tuple[pd.DataFrame, dict]:
    """The items with the live changes the API keeps for this export
    (serving/api/catalog_updates.py: prices, stock, new items, changed texts, deletions)
    applied; what changed. Deleted items stay as rows, out of stock: their past events keep
    their meaning for training, and nothing recommends an out-of-stock item."""
    from serving.api.catalog_updates import apply_to_items, items_fingerprint

    kept = json.loads(store.get_meta(f"catalog_updates:{items_fingerprint(items)}") or "{}")
    updated, texts, deleted = apply_to_items(items, kept)
    if deleted:
        updated.loc[updated[spec.ITEM_ID].isin(deleted), spec.IN_STOCK] = False
    return updated, {"changed": len(kept), "added_or_retexted": len(texts),
                     "deleted": len(deleted)}


def feedback_events(store: EventStore) -> tuple[pd.DataFrame, int]:
    """The store's events and its impressions as view events, in time order; how many
    impressions."""
    stored = store.events()
    shown = store.impressions()
    views = pd.DataFrame({
        spec.USER_ID: [i.user_id for i in shown], spec.ITEM_ID: [i.item_id for i in shown],
        spec.EVENT_TYPE: spec.VIEW, spec.VALUE: np.nan, spec.QUERY: "",
        spec.SESSION_ID: "", spec.TIMESTAMP: [int(i.timestamp) for i in shown]},
        columns=list(spec.EVENT_COLUMNS))
    events = pd.concat([stored, views], ignore_index=True) if len(views) else stored
    return events.sort_values(spec.TIMESTAMP, kind="stable").reset_index(drop=True), len(shown)


def _write_jsonl(frame: pd.DataFrame, path: Path) -> None:
    """One JSON object per row; missing values (NaN, None, "") left out."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in frame.to_dict("records"):
            clean = {}
            for key, value in row.items():
                if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
                    continue
                clean[key] = value.item() if isinstance(value, np.generic) else value
            f.write(json.dumps(clean, ensure_ascii=False) + "\n")


def export_feedback(store: EventStore, shop_dir, out_dir,
                    pseudonyms: Pseudonyms | None = None) -> dict:
    """Write the feedback export of ``store`` over the shop folder ``shop_dir`` into
    ``out_dir`` (module docstring); returns what export.json records."""
    started = time.perf_counter()
    shop = load_shop(shop_dir, on_bad_rows="quarantine")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items, changes = updated_items(shop.items, store)
    items = items[list(spec.ITEM_COLUMNS)]
    events, impressions = feedback_events(store)
    known = set(items[spec.ITEM_ID])
    unknown = ~events[spec.ITEM_ID].isin(known) & (events[spec.EVENT_TYPE] != spec.SEARCH)
    if unknown.any():            # items gone from this shop export: their events cannot stay
        log.warning("left out %d events of items not in %s", int(unknown.sum()), shop_dir)
        events = events[~unknown]
    _write_jsonl(items, out / "items.jsonl")
    _write_jsonl(events, out / "events.jsonl")
    summary = {"source_shop": str(shop_dir), "items": len(items), "item_changes": changes,
               "events": len(events), "impressions_as_views": impressions,
               "events_left_out_unknown_items": int(unknown.sum()),
               "user_ids": (f"pseudonymised (key id {pseudonyms.key_id})" if pseudonyms
                            else "as stored")}
    if shop.users is not None and len(shop.users):
        users = shop.users.copy()
        if pseudonyms is not None:
            users[spec.USER_ID] = pseudonyms.column(users[spec.USER_ID])
        erased = store.erasure_list() if store.erasure_records() else ()
        users = users[[u not in erased for u in users[spec.USER_ID]]]
        _write_jsonl(users, out / "users.jsonl")
        summary["users"] = len(users)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    with open(out / "export.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.events.export",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="event store URL (sqlite:///PATH, "
                                                  "redis://HOST:PORT/DB): the API's")
    p.add_argument("--shop", required=True, help="the shop folder the API serves (items, "
                                                 "users)")
    p.add_argument("--out", required=True, help="folder to write the export into")
    p.add_argument("--pseudonym-key-file", help="the API's pseudonym key: the users table "
                                                "becomes pseudonyms like the store's ids")
    p.add_argument("--erasure-key-file", help="the API's erasure_key_file, if it has one")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    pseudonyms = Pseudonyms.from_file(args.pseudonym_key_file) if args.pseudonym_key_file \
        else None
    store = open_event_store(args.store, erasure_key=read_key_file(args.erasure_key_file))
    try:
        summary = export_feedback(store, args.shop, args.out, pseudonyms)
    finally:
        store.close()
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
