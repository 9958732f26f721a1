"""The item-to-item tables of the candidate stage, fitted by the retrieval Trainer on the train
split and served by the retrieval export's ``related_items`` signature.

Fitting (``fit``): every engaged (clicked) train unit is an engaged item with the distinct
items the user engaged with before it (its ``history_item_ids``, most recent first); the
transitions count (last item before -> engaged item), the co-occurrences (each of the last
``cooccurrence_window`` items before, engaged item) in both orders
(trainer/candidates/sources.py ``fit_units``). Rows and columns are catalog items; history
items outside the catalog are left out and counted in the report.

Serving (``RelatedItems``): for item ids [N], each item's best ``neighbours`` transition and
co-occurrence partners (ids [N, M], "" padded; weights [N, M], 0 padded) and its engaged-unit
count [N] (the popularity tie-break). The tables live in the retrieval SavedModel, so a pushed
version always serves the tables fitted with its model; the API downloads them per version
like the catalog embeddings (serving/api/model_backend.py) and scores them with the same
numpy sources the benchmarks use.
"""
from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from trainer import data
from trainer import features as F
from trainer.candidates import CooccurrenceSource, TransitionSource, item_to_item

SIGNATURE = "related_items"
TRANSITION_IDS, TRANSITION_WEIGHTS = "transition_ids", "transition_weights"
COOCCURRENCE_IDS, COOCCURRENCE_WEIGHTS = "cooccurrence_ids", "cooccurrence_weights"
ENGAGEMENTS = "engagements"
OUTPUTS = (TRANSITION_IDS, TRANSITION_WEIGHTS, COOCCURRENCE_IDS, COOCCURRENCE_WEIGHTS,
           ENGAGEMENTS)


@dataclass
class Tables:
    """The fitted tables over ``catalog_ids`` (rows and columns) and the fit's counts."""

    catalog_ids: np.ndarray            # bytes [n]
    transitions: TransitionSource
    cooccurrences: CooccurrenceSource
    engagements: np.ndarray            # int64 [n]: engaged train units per item
    report: Dict[str, int]


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
        variables = {}
        for key, source in ((TRANSITION_IDS, tables.transitions),
                            (COOCCURRENCE_IDS, tables.cooccurrences)):
            cols, weights = item_to_item.top_neighbours(source.table, neighbours)
            variables[key] = tf.Variable(tf.constant(_neighbour_ids(tables.catalog_ids, cols),
                                                     tf.string), trainable=False, name=key)
            variables[key.replace("_ids", "_weights")] = tf.Variable(
                _pad(weights), trainable=False, name=key.replace("_ids", "_weights"))
        variables[ENGAGEMENTS] = tf.Variable(_pad(tables.engagements.astype(np.float32)),
                                             trainable=False, name=ENGAGEMENTS)
        self.tables = variables

    def __call__(self, item_ids: tf.Tensor) -> Dict[str, tf.Tensor]:
        rows = self.lookup.lookup(item_ids)
        return {key: tf.gather(self.tables[key], rows) for key in OUTPUTS}
