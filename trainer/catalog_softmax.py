"""Full-catalog softmax of the retrieval trainer (`RetrievalConfig.negatives = "catalog"`).

Every training step scores each query against every catalog item: the candidate tower runs
on the whole catalog split's transformed features (loaded once per run), logits
[B, n_catalog] / temperature, and the label is the clicked item's catalog row. Unlike the
in-batch softmax, every item is a negative at every step, including the query's own history
items, so the model learns to push those down. No logQ correction (there is no sampling) and
no accidental hits (each item is one row).

Items whose id is unknown to the vocabulary (out-of-vocabulary index) stay in the catalog as
negatives (their features and text still identify them) but cannot be labels; padding never
enters. A clicked train item that is not in the catalog is a `ValueError` (`check_labels`).
"""
import dataclasses
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from trainer import data
from trainer import features as F
from trainer.text import cache as text_cache
from trainer.text import tower as text_tower

# Transformed features the candidate tower may read (trainer/retrieval.py CandidateTower).
TOWER_KEYS = (F.idx(F.ITEM_ID), F.idx(F.BRAND), F.idx(F.CATEGORY), F.idx(F.TOP_CATEGORY),
              F.PRICE_Z, F.IN_STOCK, F.TITLE)


@dataclasses.dataclass
class Catalog:
    """The candidate-tower inputs of every distinct catalog item (one row each)."""

    features: Dict[str, np.ndarray]   # TOWER_KEYS present in the spec, [N] each
    positions: np.ndarray             # [item buckets] int32: row of each known item index, -1
    text_rows: Optional[np.ndarray] = None   # [N] int32 rows of the frozen text cache (-1: none)

    @property
    def size(self) -> int:
        return len(self.features[F.idx(F.ITEM_ID)])


def from_columns(columns: Dict[str, np.ndarray], num_items: int,
                 text_rows: Optional[np.ndarray] = None) -> Catalog:
    """A Catalog from transformed catalog columns ([N] arrays incl. the item-index column);
    `num_items` = item-id embedding buckets (padding 0, known 1..V, OOV V+1)."""
    index = np.asarray(columns[F.idx(F.ITEM_ID)]).astype(np.int64).reshape(-1)
    if not len(index):
        raise ValueError("negatives='catalog' needs catalog items: the catalog split is empty")
    if np.any(index <= 0) or np.any(index >= num_items):
        raise ValueError(f"catalog item indices must be in [1, {num_items - 1}], got "
                         f"{sorted(set(index[(index <= 0) | (index >= num_items)].tolist()))}")
    positions = np.full([num_items], -1, np.int32)
    known = np.nonzero(index < num_items - 1)[0]
    positions[index[known]] = known.astype(np.int32)
    features = {k: np.asarray(v).reshape(-1) for k, v in columns.items()}
    return Catalog(features, positions, text_rows)


def load(catalog_patterns: Sequence[str], spec: Dict, num_items: int,
         lookup: Optional[text_cache.RowLookup] = None) -> Catalog:
    """The transformed catalog split, deduplicated by item id (first row wins), with the text
    cache rows of the item texts when `lookup` is given (BERT modes)."""
    keys = [k for k in TOWER_KEYS if k in spec] + [F.ITEM_ID, F.BRAND, F.CATEGORY] + (
        [F.DESCRIPTION] if lookup is not None and lookup.description_chars > 0 else [])
    columns = data.load_columns(catalog_patterns, spec, sorted(set(keys)))
    _, first = np.unique(columns[F.ITEM_ID].reshape(-1), return_index=True)
    order = np.sort(first)
    columns = {k: v.reshape(len(v), -1)[order].reshape(len(order)) for k, v in columns.items()}
    rows = None
    if lookup is not None:
        rows = lookup.text_rows(text_cache.item_text_of(
            columns, lookup.description_chars)).numpy().astype(np.int32)
    tower = {k: columns[k] for k in TOWER_KEYS if k in columns}
    return from_columns(tower, num_items, rows)


def check_labels(catalog: Catalog, clicked: np.ndarray) -> None:
    """Raises ValueError when a clicked item index has no catalog row."""
    clicked = np.asarray(clicked).astype(np.int64).reshape(-1)
    bad = (clicked < 0) | (clicked >= len(catalog.positions))
    bad[~bad] = catalog.positions[clicked[~bad]] < 0
    if bad.any():
        raise ValueError(
            f"negatives='catalog': {int(bad.sum())} clicked train example(s) have an item that "
            f"is not in the catalog split (item indices {sorted(set(clicked[bad].tolist()))[:10]})"
            "; every clicked item must be a catalog item (or use negatives='in_batch')")


class CatalogSoftmax(tf.Module):
    """Catalog features as constants, and the summed softmax cross-entropy over the catalog."""

    def __init__(self, catalog: Catalog, temperature: float, name: str = "catalog_softmax"):
        super().__init__(name=name)
        self.size = catalog.size
        self.temperature = float(temperature)
        self._features = {k: tf.constant(v) for k, v in catalog.features.items()}
        self._positions = tf.constant(catalog.positions)
        self._text_rows = (tf.constant(catalog.text_rows) if catalog.text_rows is not None
                           else None)

    def tower_features(self, text_embeddings: Optional[tf.Tensor] = None,
                       id_dropout: float = 0.0, seed: int = 0) -> Dict[str, tf.Tensor]:
        """Candidate-tower inputs of the whole catalog; the frozen item-text embeddings
        gathered from `text_embeddings` [T, H]; with `id_dropout` each item's id index is
        replaced by 0 ("unknown") with that probability (trains the cold-item path)."""
        out = dict(self._features)
        if text_embeddings is not None:
            if self._text_rows is None:
                raise ValueError("catalog text embeddings need the catalog's text rows")
            out[text_tower.ITEM_TEXT] = text_cache.gather_rows(text_embeddings,
                                                               self._text_rows)
        if id_dropout > 0:
            ids = out[F.idx(F.ITEM_ID)]
            keep = tf.random.uniform(tf.shape(ids), seed=seed) >= id_dropout
            out[F.idx(F.ITEM_ID)] = tf.where(keep, ids, tf.zeros_like(ids))
        return out

    @property
    def item_indices(self) -> tf.Tensor:
        """The catalog's item-id indices [N], one per row."""
        return self._features[F.idx(F.ITEM_ID)]

    @property
    def has_text(self) -> bool:
        return self._text_rows is not None

    def labels(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Catalog rows [B] of clicked item indices [B] (-1 when absent)."""
        return tf.gather(self._positions, tf.reshape(tf.cast(item_ids, tf.int32), [-1]))

    def loss_sum(self, queries: tf.Tensor, candidates: tf.Tensor, item_ids: tf.Tensor,
                 weights: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Sum over the batch of -log softmax(q . c / temperature)[label]: queries [B, D],
        candidates [n_catalog, D] (the tower on `tower_features`), item_ids [B]. With
        `weights` [B] each term is weighted, and an item without a catalog row must weigh 0
        (its term is computed on row 0, then dropped)."""
        labels = self.labels(item_ids)
        if weights is not None:
            labels = tf.maximum(labels, 0)
        logits = tf.matmul(queries, candidates, transpose_b=True) / self.temperature
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return tf.reduce_sum(losses if weights is None else losses * weights)
