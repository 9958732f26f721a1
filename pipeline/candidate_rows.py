"""Two-stage ranking rows: the candidates the serving path would rank for a user context,
as raw examples with their candidate features, so the ranking model learns and is judged
on the order the API serves (docs/DESIGN.md, "Candidate rows").

A **context** is an engaged (clicked) impression unit: the user, the history as of that
moment, the session's search and the item chosen (the target). Its **pool** is what the
API's candidate stage gives for that history and search (trainer/candidates/pool.py, the
same function the API calls): the retrieval export's ``top_k`` first, then the item-to-item
sources of the same export (its ``related_items`` signature). Like the API (its
``filter_purchased`` setting), the pool leaves out what the user had bought before the
context (``Purchases``); no stock filter: the catalog's stock is today's, not the context's.

Rows of a context whose target is in the pool: ``"train"``: the target (the unit's labels)
and ``negatives`` other pool items (labels 0): first the pool items the user was **shown
and passed over** around the context (``Shown``: the split's units of that user with every
label 0 -- views, e.g. the API's impressions exported by serving/events/export.py -- dated
within ``spec.SESSION_GAP_SECONDS`` of it), then, with ``hard_negatives`` > 0, up to that many
drawn from the pool's first ``hard_window`` places (retrieval's best-scored items: the
ones that compete with the target for the top of the answer), then items drawn uniformly
without replacement;
``"eval"``: every pool item (the target with the unit's labels), so the evaluation ranks
the whole pool as the API does. A context whose target is not in the pool has nothing to
re-rank (no row; counted: the candidate stage's recall). Every row carries the candidate's
features (``retrieval_score``, ``transition_score``, ``cooccurrence_score``,
``history_brand_share``, ``last_item_same_brand``, and ``text_score`` when the retrieval
export has text neighbours), ``context_id`` and
``candidate_source``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline import examples
from pipeline.contract import spec
from trainer import features as F
from trainer.candidates import context_features, served_tables
from trainer.candidates.pool import Pool, build_pool

_USER_SIDE = (F.USER_ID, F.HISTORY_ITEM_IDS, F.NUM_HISTORY, F.QUERY, F.TIMESTAMP,
              examples.USER_ACTIVITY)
_NO_LABELS = {F.CLICKED: 0, F.ADDED_TO_CART: 0, F.PURCHASED: 0, F.RATING: 0.0,
              F.HAS_RATING: 0}
ROW_KINDS = ("train", "eval")
# Cutoffs of retrieval's own list at which the report counts the targets found: how the
# pool's retrieval part would change with the exported top K (``retrieval_top_k``).
RETRIEVAL_CUTOFFS = (10, 50, 100, 200, 300, 400, 500)


def shares_within(ranks, longest: int, cutoffs=RETRIEVAL_CUTOFFS) -> dict:
    """{k: share of ``ranks`` (0-based positions of each target in a ranked list; ``longest``
    or more when absent) below k}, for each cutoff up to ``longest`` (the lists' length,
    always a cutoff). {} without ranks or lists."""
    ranks = np.asarray(ranks, np.int64)
    if not len(ranks):
        return {}
    return {int(k): float(np.mean(ranks < k))
            for k in sorted(set(cutoffs) | {longest}) if 0 < k <= longest}


@dataclasses.dataclass
class RawCatalog:
    """The catalog split's raw examples (``examples.decode_example`` dicts) by row."""

    items: list
    ids: np.ndarray
    row: dict
    brand_codes: np.ndarray

    @classmethod
    def of(cls, items: list) -> "RawCatalog":
        if not items:
            raise ValueError("the catalog split has no items")
        ids = np.array([item[F.ITEM_ID] for item in items], dtype=object)
        return cls(items, ids, {item_id: i for i, item_id in enumerate(ids)},
                   context_features.brand_codes([item[F.BRAND] for item in items]))

    def rows_of(self, item_ids) -> np.ndarray:
        """Catalog rows of the known ids among ``item_ids`` ("" and unknown ids dropped)."""
        return np.array([self.row[i] for i in item_ids if i in self.row], np.int64)


@dataclasses.dataclass
class Counts:
    """What one split's contexts gave (the component's report)."""

    contexts: int = 0
    clicked_units: int = 0          # the split's clicks (contexts: those used)
    target_in_pool: int = 0
    rows: int = 0
    pool_sizes: list = dataclasses.field(default_factory=list)
    target_sources: dict = dataclasses.field(default_factory=dict)
    target_positions: list = dataclasses.field(default_factory=list)  # 0-based, pool order
    shown_negatives: int = 0        # train negatives the user was shown and passed over
    hard_negatives: int = 0         # train negatives drawn from the pool's first places
    retrieval_ranks: list = dataclasses.field(default_factory=list)  # target's, per context
    retrieval_k: int = 0            # the longest top-K list retrieval returned

    def summary(self) -> dict:
        positions = np.asarray(self.target_positions)
        return {
            "clicked_units": self.clicked_units,
            "contexts": self.contexts, "contexts_with_target_in_pool": self.target_in_pool,
            "target_in_pool_share": self.target_in_pool / self.contexts if self.contexts
            else None,
            "rows": self.rows, "shown_negatives": self.shown_negatives,
            "hard_negatives": self.hard_negatives,
            "mean_pool_size": float(np.mean(self.pool_sizes)) if self.pool_sizes else None,
            "target_found_by": dict(sorted(self.target_sources.items())),
            # Retrieval's own list, before the other sources and the purchase filter: the
            # share of contexts whose target is within its first k, k up to the exported K.
            "target_in_retrieval_first_k": {
                str(k): v for k, v in shares_within(self.retrieval_ranks,
                                                    self.retrieval_k).items()},
            # The pool's own order (no ranker) on the contexts whose target is a candidate:
            # the baseline of the ranker's NDCG@10 on the same rows.
            "pool_order_recall_at_10": float((positions < 10).mean()) if len(positions)
            else None,
            "pool_order_ndcg_at_10": float(np.where(
                positions < 10, 1.0 / np.log2(positions + 2.0), 0.0).mean())
            if len(positions) else None}


class _Timeline:
    """Catalog rows per user in time order, from (user_id, item_id, timestamp) triples; items
    not in the catalog are ignored (they can never be candidates)."""

    def __init__(self, triples, catalog: RawCatalog):
        by_user: dict = {}
        for user, item, timestamp in triples:
            row = catalog.row.get(item)
            if row is not None:
                by_user.setdefault(user, []).append((int(timestamp), row))
        self._times, self._rows = {}, {}
        for user, found in by_user.items():
            found.sort()
            self._times[user] = np.array([t for t, _ in found], np.int64)
            self._rows[user] = np.array([r for _, r in found], np.int64)

    def _between(self, user_id: str, low: int | None, high: int) -> np.ndarray:
        """The user's rows with low <= timestamp < high (low None: from the first)."""
        times = self._times.get(user_id)
        if times is None:
            return np.zeros(0, np.int64)
        lo = 0 if low is None else np.searchsorted(times, int(low), side="left")
        return self._rows[user_id][lo:np.searchsorted(times, int(high), side="left")]

    def __len__(self) -> int:
        return sum(len(t) for t in self._times.values())


class Purchases(_Timeline):
    """What each user had bought before a moment, from the units' ``purchased`` labels: the
    items of the user's units labelled purchased whose timestamp (the unit's first event) is
    strictly before it. A unit that began earlier but whose purchase came later counts too
    (the units keep no purchase times); the API's store has the exact purchase events.
    ``purchases``: (user_id, item_id, timestamp) of every purchased unit."""

    def before(self, user_id: str, timestamp: int) -> np.ndarray:
        """Catalog rows the user bought before ``timestamp`` (may repeat)."""
        return self._between(user_id, None, timestamp)


class Shown(_Timeline):
    """Items each user was shown and passed over: the catalog rows of the units with every
    label 0 (views without a click, cart or purchase), by the unit's time."""

    def __init__(self, units, catalog: RawCatalog, window_s: int = spec.SESSION_GAP_SECONDS):
        super().__init__(((u[F.USER_ID], u[F.ITEM_ID], u[F.TIMESTAMP]) for u in units
                          if not (u[F.CLICKED] or u[F.ADDED_TO_CART] or u[F.PURCHASED])),
                         catalog)
        self.window_s = window_s

    def around(self, user_id: str, timestamp: int) -> np.ndarray:
        """Catalog rows the user passed over within ``window_s`` of ``timestamp``."""
        return self._between(user_id, int(timestamp) - self.window_s,
                             int(timestamp) + self.window_s + 1)


def pool_of(unit: dict, top_ids, top_scores, catalog: RawCatalog, tables,
            counts=(50, 50, 50), purchased=None) -> Pool | None:
    """The API's pool for a context: ``top_ids`` / ``top_scores``: the retrieval export's
    ``top_k`` answer for it; ``tables``: ``served_tables.ItemToItem`` or None; ``counts``:
    the transition, co-occurrence and text neighbour candidates (the API's settings of
    those names); ``purchased``: catalog rows the user had bought (left out, as the API's
    ``filter_purchased`` does) or None. None when retrieval returned no allowed catalog
    item. The pool reads the unit's whole history (the run's ``history_length`` most
    recent items), as the API's pool reads the served retrieval model's width."""
    allowed = None
    if purchased is not None and len(purchased):
        allowed = np.ones(len(catalog.ids), dtype=bool)
        allowed[np.asarray(purchased, np.int64)] = False
    found = [(catalog.row[i], s) for i, s in zip(top_ids, top_scores) if i in catalog.row]
    if allowed is not None:
        found = [(r, s) for r, s in found if allowed[r]]
    if not found:
        return None
    history = catalog.rows_of(unit[F.HISTORY_ITEM_IDS][:unit[F.NUM_HISTORY]])[::-1]
    return build_pool(history, [r for r, _ in found], [s for _, s in found],
                      len(catalog.ids), catalog.brand_codes, allowed,
                      tables.sources if tables is not None else None,
                      tables.counts(*counts) if tables is not None else ())


def context_rows(unit: dict, pool: Pool, catalog: RawCatalog, kind: str, context_id: str,
                 negatives: int, rng: np.random.Generator, counts: Counts,
                 shown=None, hard_negatives: int = 0, hard_window: int = 50) -> list:
    """The rows of one context (module docstring); updates ``counts``. ``shown``: catalog
    rows the user passed over around the context (train negatives first);
    ``hard_negatives``: then up to that many from the pool's first ``hard_window`` places."""
    if kind not in ROW_KINDS:
        raise ValueError(f"kind must be one of {ROW_KINDS}, got {kind!r}")
    counts.contexts += 1
    counts.pool_sizes.append(len(pool))
    target = catalog.row.get(unit[F.ITEM_ID], -1)
    where = np.flatnonzero(pool.rows == target)
    if not len(where):
        return []
    position = int(where[0])
    counts.target_in_pool += 1
    counts.target_positions.append(position)
    source = pool.sources[pool.source[position]].name
    counts.target_sources[source] = counts.target_sources.get(source, 0) + 1
    others = np.delete(np.arange(len(pool)), position)
    if kind == "train":
        passed = others[np.isin(pool.rows[others], shown)] if shown is not None and len(
            shown) else others[:0]
        if len(passed):          # (no draw without: runs without views draw as before)
            passed = rng.permutation(passed)[:negatives]
        hard = others[:0]
        if hard_negatives:       # (no draw when off: runs without it draw as before)
            hard = np.setdiff1d(others[others < hard_window], passed)
            hard = rng.permutation(hard)[:min(hard_negatives, negatives - len(passed))]
        rest = np.setdiff1d(others, np.concatenate([passed, hard]))
        drawn = rng.choice(rest, size=min(negatives - len(passed) - len(hard), len(rest)),
                           replace=False)
        chosen = np.concatenate([passed, hard, drawn]).astype(np.int64)
        counts.shown_negatives += len(passed)
        counts.hard_negatives += len(hard)
        picked = np.concatenate([[position], np.sort(chosen)]).astype(np.int64)
    else:
        picked = np.arange(len(pool))
    user = {key: unit[key] for key in _USER_SIDE}
    labels = {key: unit[key] for key in _NO_LABELS}
    rows = []
    for p in picked:
        row = dict(catalog.items[pool.rows[p]], **user)
        row.update(labels if p == position else _NO_LABELS)
        row.update({name: float(values[p]) for name, values in pool.features.items()})
        row[examples.ITEM_NOVELTY] = ""           # the catalog split has no item ages
        row[F.CONTEXT_ID] = context_id
        row[F.CANDIDATE_SOURCE] = pool.sources[pool.source[p]].name
        rows.append(row)
    counts.rows += len(rows)
    return rows


class RetrievalExport:
    """The retrieval SavedModel the Trainer exported, called in-process: ``top_k`` for
    batches of contexts and ``related_items`` for the item-to-item tables."""

    def __init__(self, path: str):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        self._tf = tf
        self.path = path
        self.signatures = tf.saved_model.load(path).signatures

    def top_k(self, units: list) -> tuple[list, np.ndarray]:
        """(item ids [B, K] as str, scores [B, K]) for a batch of contexts."""
        tf = self._tf
        out = self.signatures["top_k"](
            user_id=tf.constant([u[F.USER_ID] for u in units]),
            history_item_ids=tf.constant([u[F.HISTORY_ITEM_IDS] for u in units]),
            query=tf.constant([u[F.QUERY] for u in units]))
        ids = [[i.decode("utf-8") for i in row] for row in out["item_ids"].numpy()]
        return ids, out["scores"].numpy().astype(np.float64)

    def tables(self, catalog: RawCatalog, batch_size: int = 256):
        """``served_tables.ItemToItem`` of the export (None without ``related_items``)."""
        if served_tables.SIGNATURE not in self.signatures:
            return None
        fn, parts = self.signatures[served_tables.SIGNATURE], {}
        for start in range(0, len(catalog.ids), batch_size):
            out = fn(item_id=self._tf.constant(list(catalog.ids[start:start + batch_size])))
            for key, value in out.items():
                parts.setdefault(key, []).append(value.numpy())
        return served_tables.build(catalog.ids, {k: np.concatenate(v) for k, v in parts.items()},
                                   version=None)


def split_rows(units, export: RetrievalExport, catalog: RawCatalog, tables, kind: str,
               negatives: int, seed: int, counts_by_source=(50, 50, 50), batch_size: int = 256,
               progress=None, max_contexts: int = 0, purchases: Purchases | None = None,
               shown_negatives: bool = True, hard_negatives: int = 0, hard_window: int = 50):
    """Yield the rows of every clicked unit of ``units`` (one split, in order) and return
    its ``Counts`` as the generator's value (``yield from``). ``max_contexts`` > 0: at most
    that many contexts, a seeded uniform sample kept in split order (``Counts.sampled_from``
    says of how many). ``purchases``: leave each user's earlier purchases out of the pools
    (None: keep them). ``shown_negatives``: train negatives are first the pool items the
    user passed over around the context (``Shown`` over ``units``); ``hard_negatives`` /
    ``hard_window``: ``context_rows``."""
    rng = np.random.default_rng(seed)
    counts = Counts()
    shown = Shown(units, catalog) if shown_negatives and kind == "train" else None
    contexts = [u for u in units if u[F.CLICKED]]
    counts.clicked_units = len(contexts)
    if 0 < max_contexts < len(contexts):
        keep = np.sort(rng.choice(len(contexts), size=max_contexts, replace=False))
        contexts = [contexts[i] for i in keep]
    for start in range(0, len(contexts), batch_size):
        batch = contexts[start:start + batch_size]
        ids, scores = export.top_k(batch)
        for j, unit in enumerate(batch):
            counts.retrieval_k = max(counts.retrieval_k, len(ids[j]))
            counts.retrieval_ranks.append(next(
                (r for r, item in enumerate(ids[j]) if item == unit[F.ITEM_ID]), len(ids[j])))
            bought = (purchases.before(unit[F.USER_ID], unit[F.TIMESTAMP])
                      if purchases is not None else None)
            pool = pool_of(unit, ids[j], scores[j], catalog, tables, counts_by_source, bought)
            if pool is None:
                counts.contexts += 1
                continue
            passed = (shown.around(unit[F.USER_ID], unit[F.TIMESTAMP])
                      if shown is not None else None)
            yield from context_rows(unit, pool, catalog, kind, f"{kind}-{start + j}",
                                    negatives, rng, counts, passed, hard_negatives,
                                    hard_window)
        if progress is not None:
            progress(min(start + batch_size, len(contexts)), len(contexts))
    return counts
