"""The catalog the API recommends from: item features, candidate embeddings, popularity.

Rows are positions in the shop's items table. Embeddings come from the retrieval model's
``candidate_embedding`` signature (see model_backend) and are kept L2-normalised, so
similarities are cosines; the item-to-item tables from its ``related_items``. Popularity =
engagement counts, updated as events arrive.

Live changes (serving/api/catalog_updates.py): price, stock and deletions change the arrays
in place (copy-on-write: a request that already read them keeps a consistent view); new
items and changed texts make a new Catalog (``grown``) that Services swaps in. Rows only
ever get appended, so a row number means the same item in every generation of the catalog.
*Live* rows (added or re-texted since the served model was trained) keep their raw
candidate embeddings (``live_embeddings``): retrieval scores them next to the model's top K.
"""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd

from pipeline.contract import spec
from serving.api.catalog_updates import UNSET
from serving.api.search_options import category_levels
from trainer import features as F
from trainer.candidates import brand_codes


class Catalog:
    """Item columns as arrays + id lookup + embeddings + popularity (thread-safe updates)."""

    def __init__(self, items: pd.DataFrame, live=(), deleted=()):
        """``live``: ids of items added or re-texted live; ``deleted``: ids deleted live."""
        if len(items) == 0:
            raise ValueError("the catalog is empty")
        self.items = items
        self.ids = items[spec.ITEM_ID].to_numpy(dtype=object)
        self.index = pd.Index(self.ids)
        self._row = {item_id: i for i, item_id in enumerate(self.ids)}
        self.titles = items[spec.TITLE].to_numpy(dtype=object)
        self.descriptions = items[spec.DESCRIPTION].to_numpy(dtype=object)
        self.brands = items[spec.BRAND].to_numpy(dtype=object)
        self.categories = items[spec.CATEGORIES].to_numpy(dtype=object)
        self.top_categories = np.array([spec.top_category(c) for c in self.categories],
                                       dtype=object)
        self.has_price = items[spec.PRICE].notna().to_numpy(dtype=bool)
        self.prices = items[spec.PRICE].fillna(0.0).to_numpy(dtype=np.float64)
        # search filters (serving/api/search_options.py): levels and brands as they match
        self.category_levels = [category_levels(c) for c in self.categories]
        self.brand_keys = np.array([str(b or "").strip().lower() for b in self.brands],
                                   dtype=object)
        self.in_stock = items[spec.IN_STOCK].to_numpy(dtype=bool)
        self.active = ~items[spec.ITEM_ID].isin(set(deleted)).to_numpy(dtype=bool)
        self.live_rows = np.flatnonzero(items[spec.ITEM_ID].isin(set(live)).to_numpy())
        self.live_ids = list(self.ids[self.live_rows])      # fixed for this catalog's life
        self.live_id_set = frozenset(self.live_ids)
        self.live_embeddings: np.ndarray | None = None   # raw [len(live_rows), D]
        # retrieval's index in the API (serving/api/ann.py) over the raw embeddings of the
        # rows it was built with, and the retrieval version they came from (None: the
        # served model's top_k answers)
        self.ann = None
        self.ann_version: int | None = None
        self.brand_codes = brand_codes(self.brands)
        self.item_to_item = None      # trainer.candidates.served_tables.ItemToItem, from the model
        self.tables_version: int | None = None   # the retrieval version they were asked of
        self.tables_answers: dict | None = None  # its related_items answers (rows in order)
        # The served retrieval version's history width: the candidate stage reads that many
        # of the user's most recent items, as the pipeline's two-stage rows did.
        self.history_length = F.HISTORY_LENGTH
        self.popularity = np.zeros(len(self.ids), dtype=np.float64)
        self._popular_order: np.ndarray | None = None
        self._embeddings: np.ndarray | None = None
        self.embeddings_version: int | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, item_id: str) -> int | None:
        """Row of an item id, None if unknown."""
        return self._row.get(item_id)

    def listed(self, row: int) -> bool:
        """False for an item deleted live (its row stays: events still name it)."""
        return bool(self.active[row])

    def rows(self, item_ids) -> np.ndarray:
        """Rows of the known ids, in order (unknown ids are skipped)."""
        found = (self._row.get(i) for i in item_ids)
        return np.fromiter((r for r in found if r is not None), dtype=np.int64)

    # ---- model inputs ----
    def candidate_inputs(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Inputs of the retrieval model's candidate_embedding signature."""
        return {F.ITEM_ID: _text(self.ids[rows]), F.TITLE: _text(self.titles[rows]),
                F.DESCRIPTION: _text(self.descriptions[rows]), F.BRAND: _text(self.brands[rows]),
                F.CATEGORY: _text(self.categories[rows]),
                F.PRICE: self.prices[rows].astype(np.float32),
                F.IN_STOCK: self.in_stock[rows].astype(np.int64)}

    def ranking_inputs(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Item-side inputs of the ranking model's score signature."""
        return {F.ITEM_ID: _text(self.ids[rows]), F.BRAND: _text(self.brands[rows]),
                F.CATEGORY: _text(self.categories[rows]),
                F.PRICE: self.prices[rows].astype(np.float32),
                F.IN_STOCK: self.in_stock[rows].astype(np.int64)}

    # ---- live changes ----
    def update_items(self, updates) -> None:
        """Apply price / stock updates and deletions (``catalog_updates.ItemUpdate``, ids
        known). The arrays are replaced, not changed in place: a request that already read
        them keeps a consistent view."""
        if not updates:
            return
        with self._lock:
            in_stock, prices, has_price, active = (
                self.in_stock.copy(), self.prices.copy(), self.has_price.copy(),
                self.active.copy())
            for update in updates:
                row = self._row[update.item_id]
                if update.deleted is True:
                    active[row] = False
                    continue
                if update.in_stock is not UNSET:
                    in_stock[row] = bool(update.in_stock)
                if update.price is not UNSET:
                    has_price[row] = update.price is not None
                    prices[row] = 0.0 if update.price is None else float(update.price)
            self.in_stock, self.prices, self.has_price, self.active = (
                in_stock, prices, has_price, active)

    def current_items(self) -> pd.DataFrame:
        """The items table as served now (live prices and stock included)."""
        items = self.items.copy()
        items[spec.PRICE] = np.where(self.has_price, self.prices, np.nan)
        items[spec.IN_STOCK] = self.in_stock
        return items

    def grown(self, items: pd.DataFrame, live, deleted, encode) -> "Catalog":
        """A new Catalog over ``items`` (this catalog's rows first, in order, then new ones)
        with ``live`` ids (every live one: this catalog's and the new) and ``deleted`` ids,
        carrying over popularity, the embeddings, the item-to-item tables (new rows have no
        partners until the next retrieval version) and the history width. ``encode(catalog,
        rows)`` gives the raw candidate embeddings of the new catalog's ``rows`` (the live
        ones that are new or changed), from the version this catalog's came from; not called
        before the model server answered (the watcher then encodes everything)."""
        from trainer.candidates import served_tables

        n = len(self)
        if len(items) < n or list(items[spec.ITEM_ID][:n]) != list(self.ids):
            raise ValueError("a grown catalog must keep every row of the old one in order")
        out = Catalog(items, live=live, deleted=deleted)
        out.popularity[:n] = self.popularity
        out.history_length = self.history_length
        # the index keeps answering over the rows it holds; new and re-texted rows are live
        out.ann, out.ann_version = self.ann, self.ann_version
        if self._embeddings is not None:
            known = {}
            if self.live_embeddings is not None:
                known = {self.ids[row]: vector
                         for row, vector in zip(self.live_rows, self.live_embeddings)}
            changed = [r for r in out.live_rows
                       if out.ids[r] not in known or self._text_changed(out, r)]
            if changed:
                for row, vector in zip(changed, encode(out, np.asarray(changed, np.int64))):
                    known[out.ids[row]] = vector
            live_raw = np.stack([known[out.ids[r]] for r in out.live_rows]).astype(
                np.float32) if len(out.live_rows) else np.zeros(
                    (0, self._embeddings.shape[1]), np.float32)
            vectors = np.zeros((len(out), self._embeddings.shape[1]), np.float32)
            vectors[:n] = self._embeddings
            vectors[out.live_rows] = live_raw
            out.set_embeddings(vectors, self.embeddings_version, live_raw=live_raw)
        if self.tables_answers is not None:
            answers = {key: _padded(value, len(out))
                       for key, value in self.tables_answers.items()}
            out.set_item_to_item(served_tables.build(out.ids, answers, self.tables_version),
                                 self.tables_version, answers)
        else:
            out.set_item_to_item(self.item_to_item, self.tables_version)
        return out

    # ---- embeddings ----
    def set_ann(self, index, version: int | None) -> None:
        """Install retrieval's index (serving/api/ann.py) built from ``version``'s raw
        candidate embeddings of this catalog's rows."""
        with self._lock:
            self.ann, self.ann_version = index, version

    def _text_changed(self, other: "Catalog", row: int) -> bool:
        """Whether ``other`` (grown from this catalog) holds other texts for ``row``."""
        return row >= len(self) or any(
            mine[row] != theirs[row] for mine, theirs in (
                (self.titles, other.titles), (self.descriptions, other.descriptions),
                (self.brands, other.brands), (self.categories, other.categories)))

    def set_embeddings(self, embeddings: np.ndarray, version: int | None,
                       live_raw: np.ndarray | None = None) -> None:
        """Install [N, D] candidate embeddings (normalised here) computed by model `version`;
        the live rows' raw ones are kept (``live_raw``, else taken from ``embeddings``)."""
        if embeddings.shape[0] != len(self):
            raise ValueError(f"expected {len(self)} embeddings, got {embeddings.shape[0]}")
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        normalised = (embeddings / np.maximum(norms, 1e-12)).astype(np.float32)
        live = np.asarray(embeddings[self.live_rows] if live_raw is None else live_raw,
                          np.float32)
        with self._lock:
            self._embeddings, self.embeddings_version = normalised, version
            self.live_embeddings = live

    def set_item_to_item(self, tables, version: int | None = None,
                         answers: dict | None = None) -> None:
        """Install the item-to-item sources (``trainer.candidates.served_tables.ItemToItem``)
        of retrieval ``version``, or None when it has none; ``answers``: the related_items
        answers they were built from (a grown catalog pads them)."""
        with self._lock:
            self.item_to_item, self.tables_version = tables, version
            self.tables_answers = answers

    def set_history_length(self, length: int) -> None:
        """Install the served retrieval version's history width (``history_length``)."""
        with self._lock:
            self.history_length = int(length)

    @property
    def embeddings(self) -> np.ndarray | None:
        """[N, D] unit-length candidate embeddings, None until computed."""
        return self._embeddings

    def neighbours(self, row: int, k: int, allowed: np.ndarray) -> list[tuple[int, float]]:
        """The k rows most similar (cosine) to `row` among `allowed` (bool [N]), best first."""
        emb = self._embeddings
        sims = emb @ emb[row]
        sims = np.where(allowed, sims, -np.inf)
        sims[row] = -np.inf
        k = min(k, int(np.isfinite(sims).sum()))
        if k <= 0:
            return []
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(r), float(sims[r])) for r in top]

    # ---- popularity ----
    def set_popularity(self, counts: dict[str, int]) -> None:
        """Replace engagement counts (ids not in the catalog are ignored)."""
        popularity = np.zeros(len(self), dtype=np.float64)
        for item_id, n in counts.items():
            r = self._row.get(item_id)
            if r is not None:
                popularity[r] = n
        with self._lock:
            self.popularity, self._popular_order = popularity, None

    def add_engagements(self, item_ids) -> None:
        """Count new engagement events."""
        rows = self.rows(item_ids)
        with self._lock:
            np.add.at(self.popularity, rows, 1.0)
            self._popular_order = None

    def popular(self, n: int, allowed: np.ndarray) -> np.ndarray:
        """Up to n allowed rows by descending popularity (ties: catalog order)."""
        with self._lock:
            order = self._popular_order
            if order is None:
                order = np.lexsort((np.arange(len(self)), -self.popularity))
                self._popular_order = order
        return order[allowed[order]][:max(n, 0)]

    def describe(self, row: int) -> dict:
        """Public fields of one item."""
        return {"item_id": self.ids[row], "title": self.titles[row], "brand": self.brands[row],
                "category": self.categories[row],
                "price": float(self.prices[row]) if self.has_price[row] else None,
                "in_stock": bool(self.in_stock[row])}


def _padded(values: np.ndarray, n: int) -> np.ndarray:
    """``values`` [M, ...] with rows of "" / 0 appended up to n (new items: no partners)."""
    values = np.asarray(values)
    pad = np.zeros((n - len(values),) + values.shape[1:], dtype=values.dtype)
    if values.dtype == object or values.dtype.kind in "SU":
        pad = np.full((n - len(values),) + values.shape[1:], b"" if values.dtype.kind == "S"
                      else "", dtype=values.dtype)
    return np.concatenate([values, pad])


def _text(values: np.ndarray) -> np.ndarray:
    """Object array of str (what the gRPC client sends as DT_STRING)."""
    return np.asarray(values, dtype=object)
