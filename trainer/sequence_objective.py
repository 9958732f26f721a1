"""Auxiliary training objectives of the transformer history encoder (trainer/sequence.py).

Added to the two-tower retrieval loss (trainer/retrieval.py) with weight
`RetrievalConfig.sequence_objective_weight`:

- causal (SASRec): every prefix predicts the item that came next. Position t's output (it sees
  positions >= t, the older items) predicts the item at position t - 1, for every pair of real
  positions; position 0's output is the query tower's history summary, trained by the main
  loss on the clicked item.
- bidirectional (Bert4Rec): a share `mask_rate` of the real history positions is replaced by
  the encoder's [MASK] vector in a second pass, and each masked position's output predicts its
  item. The retrieval readout always sees the unmasked history (the tower's own pass).

`positions` (RetrievalConfig.sequence_objective_positions) keeps the pairs to the most recent
positions: the encoder reads the whole history, the loss's cost stays that of a short one.

Negatives (`RetrievalConfig.sequence_objective_negatives`). "in_batch": both score against the
batch's target item vectors (`SequenceEncoder.item_vectors`: the shared
item-id embedding plus projected text, tied with the encoder's inputs) with the loss the main
task uses: TFRS `Retrieval` softmax over L2-normalised vectors at the same temperature, logQ
correction with the same train click shares (history items are engaged items, whose shares
follow the clicks) and removal of accidental hits. Negatives come from every replica's slots
(trainer/layers.py global_batch_candidates). Every [B, L] pair slot stays in the softmax
with a static shape (no boolean_mask, so it runs on any device and under XLA); slots that are
no pair carry weight 0 and are masked out as negatives. "catalog": every pair scores every
catalog item (the encoder's item vectors of the whole catalog split, frozen texts included) in a
full softmax at the same temperature, as SASRec's cross-entropy does (Klenitskiy & Vasilev,
RecSys 2023): no sampling, so no logQ and no accidental hits; a history item outside the
catalog (out-of-vocabulary) is no target. Cost: [pairs, catalog] logits a step, so it suits
catalogs of up to some 10^4-10^5 items.
"""
from typing import Optional

import tensorflow as tf
import tensorflow_recommenders as tfrs

from trainer import features as F
from trainer.catalog_softmax import Catalog, CatalogSoftmax
from trainer.layers import global_batch_candidates
from trainer.text import tower as text_tower
from trainer.sequence import SequenceEncoder


def mask_positions(history: tf.Tensor, rate: float, seed: Optional[int] = None) -> tf.Tensor:
    """bool [B, L]: each real history position (index != 0) independently with probability
    `rate`; padding never."""
    draw = tf.random.uniform(tf.shape(history), seed=seed) < rate
    return tf.logical_and(draw, tf.not_equal(history, 0))


def global_pair_mean(loss_sum: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """Sum of per-pair losses on this replica -> its share of the mean over every replica's
    pairs (the count is summed over replicas; gradients are summed likewise)."""
    context = tf.distribute.get_replica_context()
    count = tf.cast(count, loss_sum.dtype)
    if context is not None:
        count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return loss_sum / tf.maximum(count, 1.0)


class SequenceObjective(tf.keras.layers.Layer):
    """The encoder's auxiliary loss on a training batch: mean softmax cross-entropy per pair.

    call(history [B, L] int, history_text [B, L, H] or None, text_embeddings) -> scalar; 0
    when the batch has no pair. `item_probability` [item buckets]: the logQ click shares (None:
    no correction). With `catalog` (catalog_softmax.Catalog) the negatives are every catalog
    item; `text_embeddings` [T, H] (the run's frozen text table) then gives the catalog items'
    texts when the history has texts.
    """

    def __init__(self, encoder: SequenceEncoder, temperature: float,
                 remove_accidental_hits: bool, item_probability: Optional[tf.Tensor] = None,
                 mask_rate: float = 0.2, seed: Optional[int] = None, positions: int = 0,
                 catalog: Optional[Catalog] = None, **kwargs):
        super().__init__(**kwargs)
        if positions < 0:
            raise ValueError(f"SequenceObjective: positions must be >= 0, got {positions}")
        self.encoder = encoder
        # Pairs only among the most recent `positions` positions (0: all of them): the
        # softmax holds every [B, P] slot, so its cost grows with P squared, while the
        # encoder still reads the whole history.
        self.positions = positions
        self.item_probability = item_probability
        self.remove_accidental_hits = remove_accidental_hits
        self.mask_rate, self.seed = mask_rate, seed
        self.task = tfrs.tasks.Retrieval(
            loss=tf.keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.SUM),
            temperature=temperature, remove_accidental_hits=remove_accidental_hits)
        self.catalog = (CatalogSoftmax(catalog, temperature, name="sequence_catalog")
                        if catalog is not None else None)

    def call(self, history, history_text=None, training=None, text_embeddings=None):
        real = tf.not_equal(history, 0)
        length = history.shape[1]
        if self.encoder.causal:
            p = length - 1 if not self.positions else min(self.positions, length - 1)
            outputs = self.encoder.sequence_outputs(history, history_text, training=training)
            queries, ids = outputs[:, 1:p + 1], history[:, :p]
            pairs = tf.logical_and(real[:, 1:p + 1], real[:, :p])
        else:
            p = length if not self.positions else min(self.positions, length)
            pairs = mask_positions(history[:, :p], self.mask_rate, self.seed)
            masked = tf.pad(pairs, [[0, 0], [0, length - p]])
            queries = self.encoder.sequence_outputs(history, history_text, masked=masked,
                                                    training=training)[:, :p]
            ids = history[:, :p]
        if self.catalog is not None:
            return self.catalog_loss(queries, ids, pairs, history_text is not None,
                                     text_embeddings)
        targets = self.encoder.item_vectors(history, history_text)[:, :p]
        return self.pair_loss(queries, targets, ids, pairs)

    @property
    def catalog_items(self) -> Optional[tf.Tensor]:
        """The catalog's item indices [N] when the negatives are the catalog, else None."""
        return self.catalog.item_indices if self.catalog is not None else None

    def catalog_vectors(self, with_text: bool, text_embeddings=None):
        """The encoder's item vector of every catalog item: [N, D]."""
        if with_text and (text_embeddings is None or not self.catalog.has_text):
            raise ValueError("sequence objective over the catalog with history texts needs "
                             "the catalog's text rows and the run's text embeddings")
        features = self.catalog.tower_features(text_embeddings if with_text else None)
        text = features[text_tower.ITEM_TEXT][tf.newaxis] if with_text else None
        return self.encoder.item_vectors(features[F.idx(F.ITEM_ID)][tf.newaxis], text)[0]

    def catalog_loss(self, queries, ids, pairs, with_text: bool, text_embeddings=None):
        """queries [B, P, D], ids and pairs [B, P] -> mean over the pairs of the softmax
        cross-entropy over every catalog item (label: the pair's item's catalog row)."""
        dim = tf.shape(queries)[-1]
        queries = tf.math.l2_normalize(tf.reshape(queries, [-1, dim]), axis=1)
        candidates = tf.math.l2_normalize(
            tf.cast(self.catalog_vectors(with_text, text_embeddings), queries.dtype), axis=1)
        ids = tf.reshape(ids, [-1])
        in_catalog = self.catalog.labels(ids) >= 0           # an OOV item is no target
        weight = tf.cast(tf.logical_and(tf.reshape(pairs, [-1]), in_catalog), queries.dtype)
        return global_pair_mean(self.catalog.loss_sum(queries, candidates, ids, weight),
                                tf.reduce_sum(weight))

    def pair_loss(self, queries, targets, ids, pairs):
        """queries, targets [B, P, D], ids and pairs [B, P] -> mean loss over the pairs."""
        dim = tf.shape(queries)[-1]
        queries = tf.math.l2_normalize(tf.reshape(queries, [-1, dim]), axis=1)
        targets = tf.math.l2_normalize(tf.reshape(targets, [-1, dim]), axis=1)
        ids, pairs = tf.reshape(ids, [-1]), tf.reshape(pairs, [-1])
        weight = tf.cast(pairs, queries.dtype)
        probability = (tf.gather(self.item_probability, ids)
                       if self.item_probability is not None else None)
        # Negatives: every pair slot of the global batch (all replicas), this replica's first.
        targets, candidate_ids, probability, candidate_pairs = global_batch_candidates(
            targets, ids, probability, tf.cast(pairs, tf.int32))
        score_mask = tf.broadcast_to(tf.cast(candidate_pairs, tf.bool)[tf.newaxis],
                                     [tf.size(pairs), tf.size(candidate_pairs)])
        loss_sum = self.task(queries, targets, sample_weight=weight,
                             candidate_sampling_probability=probability,
                             candidate_ids=candidate_ids if self.remove_accidental_hits else None,
                             compute_metrics=False, compute_batch_metrics=False,
                             score_mask=score_mask)
        return global_pair_mean(loss_sum, tf.reduce_sum(weight))
