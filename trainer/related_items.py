"""The item-to-item tables of the candidate stage, fitted by the retrieval Trainer on the train
split and served by the retrieval export's ``related_items`` signature.

Fitting (``fit``): every engaged (clicked) train unit is an engaged item with the distinct
items the user engaged with before it (its ``history_item_ids``, most recent first); the
transitions count (last item before -> engaged item), the co-occurrences (each of the last
``cooccurrence_window`` items before, engaged item) in both orders
(trainer/candidates/sources.py ``fit_units``). Rows and columns are catalog items; history
items outside the catalog are left out and counted in the report. Runs with a BERT text
tower add the text neighbours (``with_texts``): each item's ``neighbours`` most similar
catalog items by the cosine of their frozen MiniLM item-text embeddings (the run's text
cache; ``TextNeighbourSource.fit_embeddings``); items without a cached text have none.

Serving (``RelatedItems``): for item ids [N], each item's best ``neighbours`` transition and
co-occurrence partners (ids [N, M], "" padded; weights [N, M], 0 padded), its engaged-unit
count [N] (the popularity tie-break) and, when the tables have them, its text neighbours
(``text_ids`` / ``text_weights`` [N, M], cosines, same padding). The tables live in the
retrieval SavedModel, so a pushed version always serves the tables fitted with its model;
the API downloads them per version like the catalog embeddings (serving/api/model_backend.py)
and scores them with the same numpy sources the benchmarks use
(trainer/candidates/served_tables.py; the text neighbours are a ``TextNeighbourSource``).
"""
import dataclasses
import time
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from trainer import data
from trainer import features as F
from trainer.candidates import (CooccurrenceSource, TextNeighbourSource, TransitionSource,
                                item_to_item)

SIGNATURE = "related_items"
TRANSITION_IDS, TRANSITION_WEIGHTS = "transition_ids", "transition_weights"
COOCCURRENCE_IDS, COOCCURRENCE_WEIGHTS = "cooccurrence_ids", "cooccurrence_weights"
ENGAGEMENTS = "engagements"
# Always served; the text neighbours only when the tables have them (a BERT text tower).
OUTPUTS = (TRANSITION_IDS, TRANSITION_WEIGHTS, COOCCURRENCE_IDS, COOCCURRENCE_WEIGHTS,
           ENGAGEMENTS)
TEXT_IDS, TEXT_WEIGHTS = "text_ids", "text_weights"


@dataclasses.dataclass
class Tables:
    """The fitted tables over ``catalog_ids`` (rows and columns) and the fit's counts."""

    catalog_ids: np.ndarray            # bytes [n]
    transitions: TransitionSource
    cooccurrences: CooccurrenceSource
    engagements: np.ndarray            # int64 [n]: engaged train units per item
    report: Dict[str, int]
    texts: Optional[TextNeighbourSource] = None     # the text neighbours (``with_texts``)


def units(histories: np.ndarray, items: np.ndarray, catalog_ids: Sequence[bytes]):
    """Engagement units in catalog rows: (histories oldest first, items, report). ``histories``
    [U, L] most recent first, b"" padded; ``items`` [U]. Units whose item is not in the
    catalog and history entries outside it are left out, and counted."""
    row = {item: i for i, item in enumerate(catalog_ids)}
    out_histories, out_items = [], []
    unknown_items = unknown_history = 0
    for history, item in zip(histories, items):
        r = row.get(item)
        if r is None:
            unknown_items += 1
            continue
        known = [row.get(h) for h in history if h]
        unknown_history += sum(k is None for k in known)
        out_histories.append(np.asarray([k for k in known if k is not None][::-1], np.int64))
        out_items.append(r)
    report = {"engaged_units": len(out_items), "units_item_not_in_catalog": unknown_items,
              "history_entries_not_in_catalog": unknown_history}
    return out_histories, np.asarray(out_items, np.int64), report


def fit(train_files: Sequence[str], spec: Dict, catalog_ids: np.ndarray,
        cooccurrence_window: int) -> Tables:
    """The tables of the clicked units in the (transformed) train split."""
    columns = data.load_columns(train_files, spec, [F.HISTORY_ITEM_IDS, F.ITEM_ID],
                                predicate=data.is_positive(F.CLICKED))
    catalog_ids = np.asarray(catalog_ids, dtype=object)
    histories, items, report = units(columns[F.HISTORY_ITEM_IDS],
                                     columns[F.ITEM_ID].reshape(-1), catalog_ids)
    n = len(catalog_ids)
    transitions = TransitionSource.fit_units(histories, items, n)
    cooccurrences = CooccurrenceSource.fit_units(histories, items, n, cooccurrence_window)
    report.update(transition_pairs=int(transitions.table.nnz),
                  cooccurrence_pairs=int(cooccurrences.table.nnz))
    return Tables(catalog_ids, transitions, cooccurrences,
                  np.bincount(items, minlength=n).astype(np.int64), report)


def _text_rows(catalog_ids: Sequence[bytes], item_ids: Sequence[bytes],
               item_rows: Sequence[int]) -> np.ndarray:
    """The text cache row of each of ``catalog_ids`` (int64 [n]; -1: no cached text)."""
    row = {item: int(r) for item, r in zip(item_ids, item_rows)}
    return np.asarray([row.get(item, -1) for item in catalog_ids], np.int64).reshape(-1)


def text_embeddings(catalog_ids: Sequence[bytes], item_ids: Sequence[bytes],
                    item_rows: Sequence[int], embeddings: np.ndarray) -> np.ndarray:
    """The text embedding of each of ``catalog_ids`` [n] (float32 [n, H]) from a text cache
    (trainer/text/cache.py: ``TextCatalog.item_ids`` [M] with their ``item_rows`` [M] into
    ``embeddings`` [N, H], ``TextTables.embeddings``); zeros for items without a cached
    text (absent from the cache, or row -1)."""
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2:
        raise ValueError(f"text embeddings must be [N, H], got shape {embeddings.shape}")
    rows = _text_rows(catalog_ids, item_ids, item_rows)
    if len(rows) and rows.max() >= len(embeddings):
        raise ValueError(f"text rows must be < {len(embeddings)} (the embeddings' rows), got "
                         f"{rows.max()}")
    out = np.zeros((len(rows), embeddings.shape[1]), np.float32)
    out[rows >= 0] = embeddings[rows[rows >= 0]]
    return out


def text_table(catalog_ids: Sequence[bytes], item_ids: Sequence[bytes],
               item_rows: Sequence[int], embeddings: np.ndarray,
               neighbours: int) -> TextNeighbourSource:
    """The text neighbours over ``catalog_ids`` (rows and columns): each item's
    ``neighbours`` most similar other catalog items by text cosine, from a text cache
    (``text_embeddings``)."""
    return TextNeighbourSource.fit_embeddings(
        text_embeddings(catalog_ids, item_ids, item_rows, embeddings), neighbours)


def with_texts(tables: Tables, item_ids: Sequence[bytes], item_rows: Sequence[int],
               embeddings: np.ndarray, neighbours: int) -> Tables:
    """``tables`` plus the text neighbours of its catalog (``text_table``) and their counts
    in the report: ``text_items`` (catalog items with a cached text), ``text_pairs`` and
    ``text_fit_seconds``."""
    started = time.time()
    texts = text_table(tables.catalog_ids, item_ids, item_rows, embeddings, neighbours)
    with_text = int((_text_rows(tables.catalog_ids, item_ids, item_rows) >= 0).sum())
    report = dict(tables.report, text_items=with_text, text_pairs=int(texts.table.nnz),
                  text_fit_seconds=round(time.time() - started, 1))
    return dataclasses.replace(tables, texts=texts, report=report)


def _neighbour_ids(catalog_ids: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Item ids of neighbour columns (-1 -> b""), plus a last row of b"" for unknown items."""
    ids = np.append(np.asarray(catalog_ids, dtype=object), b"")
    return np.concatenate([ids[cols], np.full((1, cols.shape[1]), b"", dtype=object)])


def _pad(weights: np.ndarray) -> np.ndarray:
    return np.concatenate([weights, np.zeros((1,) + weights.shape[1:], weights.dtype)])


class RelatedItems(tf.Module):
    """The ``related_items`` signature's tables: each catalog item's ``neighbours`` best
    partners per table (module docstring)."""

    def __init__(self, tables: Tables, neighbours: int):
        super().__init__(name="related_items")
        if neighbours < 1:
            raise ValueError(f"related_items: neighbours must be >= 1, got {neighbours}")
        n = len(tables.catalog_ids)
        self.lookup = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(tables.catalog_ids), tf.string), tf.range(n, dtype=tf.int64)),
            default_value=n)
        pairs = [(TRANSITION_IDS, TRANSITION_WEIGHTS, tables.transitions),
                 (COOCCURRENCE_IDS, COOCCURRENCE_WEIGHTS, tables.cooccurrences)]
        if tables.texts is not None:
            pairs.append((TEXT_IDS, TEXT_WEIGHTS, tables.texts))
        variables = {}
        for ids_key, weights_key, source in pairs:
            cols, weights = item_to_item.top_neighbours(source.table, neighbours)
            variables[ids_key] = tf.Variable(tf.constant(
                _neighbour_ids(tables.catalog_ids, cols), tf.string), trainable=False,
                name=ids_key)
            variables[weights_key] = tf.Variable(_pad(weights), trainable=False,
                                                 name=weights_key)
        variables[ENGAGEMENTS] = tf.Variable(_pad(tables.engagements.astype(np.float32)),
                                             trainable=False, name=ENGAGEMENTS)
        self.tables = variables
        # The signature's outputs, fixed here: OUTPUTS, then the text pair if any.
        self.outputs = OUTPUTS + ((TEXT_IDS, TEXT_WEIGHTS) if tables.texts is not None else ())

    def __call__(self, item_ids: tf.Tensor) -> Dict[str, tf.Tensor]:
        rows = self.lookup.lookup(item_ids)
        return {key: tf.gather(self.tables[key], rows) for key in self.outputs}
