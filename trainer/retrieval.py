"""TFRS two-tower retrieval model and its TFX Trainer `run_fn`.

Query tower: user id, order-aware history (item ids and their MiniLM text; attention pooling or
a transformer, `history_encoder`), search text.
Candidate tower: item id, brand / category / price / stock, MiniLM text of "title | brand |
category path". Every part and the text mode are switchable (trainer/config.py); the text
features come from trainer/text/tower.py. Loss (`negatives`): in-batch softmax over (query,
clicked item) pairs with popularity (logQ) correction and removal of accidental hits, or a full
softmax over every catalog item (trainer/catalog_softmax.py); the transformer history encoders
add their next-item or masked-item objective (trainer/sequence_objective.py). The export also
serves the candidate stage's item-to-item tables (trainer/related_items.py): transitions and
co-occurrences of the train split and, in the BERT text modes, the text neighbours of the
frozen MiniLM item-text embeddings.

Pipeline wiring: `Trainer(run_fn="trainer.retrieval.run_fn", examples=<transformed>,
transform_graph=..., custom_config=<RetrievalConfig keys>)`.
"""
import dataclasses
import os
import time
from typing import Dict, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tensorflow_transform as tft

from trainer import adversarial
from trainer import catalog_softmax
from trainer import compression
from trainer import data
from trainer import distribute
from trainer import dp
from trainer import early_stopping
from trainer import features as F
from trainer import numeric_inputs
from trainer import related_items
from trainer import retrieval_eval
from trainer import signatures
from trainer.sequence import SequenceEncoder
from trainer.sequence_objective import SequenceObjective
from trainer.text import tower as text_tower
from trainer import training
from trainer import tuning
from trainer.config import RetrievalConfig
from trainer.layers import (HashedBagOfWords, HistoryEncoder, TextMatch, as_column,
                            global_batch_candidates, global_batch_mean, mlp)


def unknown_as_empty(ids: tf.Tensor, num_buckets: int) -> tf.Tensor:
    """Vocabulary indices with the out-of-vocabulary bucket (num_buckets - 1, a new user or
    item) mapped to 0, the "unknown" row that `id_dropout` trains."""
    return tf.where(tf.equal(ids, num_buckets - 1), tf.zeros_like(ids), ids)


def drop_ids(features: Dict[str, tf.Tensor], rate: float, seed: int) -> Dict[str, tf.Tensor]:
    """Training: each example's user id, item id and history (ids and texts) are replaced
    by "unknown" / empty, independently, with probability `rate`."""
    out = dict(features)
    for i, key in enumerate((F.USER_ID, F.ITEM_ID, F.HISTORY_ITEM_IDS)):
        ids = features[F.idx(key)]
        batch = tf.shape(ids)[:1]
        keep = tf.random.uniform(batch, seed=seed + i) >= rate                 # [B]
        mask = tf.reshape(keep, tf.concat([batch, tf.ones([tf.rank(ids) - 1], tf.int32)], 0))
        out[F.idx(key)] = tf.where(mask, ids, tf.zeros_like(ids))
        if key == F.HISTORY_ITEM_IDS and text_tower.HISTORY_TEXT in features:
            out[text_tower.HISTORY_TEXT] = features[text_tower.HISTORY_TEXT] * tf.cast(
                keep, tf.float32)[:, tf.newaxis, tf.newaxis]
    return out


def history_encoder(config: RetrievalConfig, item_embedding: tf.keras.layers.Embedding,
                    text_projection: Optional[tf.keras.layers.Dense],
                    history_length: int = F.HISTORY_LENGTH) -> tf.keras.layers.Layer:
    """The query tower's history encoder for `config.history_encoder`: HistoryEncoder
    (pooled) or SequenceEncoder (causal, bidirectional), named "history" either way, over
    histories of `history_length` (the transformed examples' width)."""
    if config.history_encoder == "pooled":
        return HistoryEncoder(item_embedding, history_length, config.embedding_dim,
                              text_projection, name="history")
    return SequenceEncoder(item_embedding, history_length, config.embedding_dim,
                           config.sequence_layers, config.sequence_heads,
                           config.sequence_dropout, causal=config.history_encoder == "causal",
                           text_projection=text_projection, name="history")


def _perturbed(tower, name, x):
    """x through the tower's adversarial.EmbeddingPerturbation (set on the model when
    adversarial training is on), else x."""
    return tower.perturb(name, x) if tower.perturb is not None else x


def _output(dense, parts, training):
    """L2-normalised MLP(concat(parts)): [B, D]."""
    return tf.math.l2_normalize(dense(tf.concat(parts, axis=1), training=training), axis=1)


class QueryTower(tf.keras.Model):
    """Query embedding from user_id_idx [B], history_item_ids_idx [B, L] and their text
    embeddings [B, L, H], and the search query (text embedding [B, H] in BERT modes, raw text
    [B] in "none" mode); each part switchable in the config. [B, D] L2-normalised, or
    [B, D + H] with the text match (search text if any, else pooled history texts)."""

    def __init__(self, config: RetrievalConfig, num_users: int,
                 item_embedding: tf.keras.layers.Embedding,
                 bag_of_words: Optional[HashedBagOfWords],
                 text_projection: Optional[tf.keras.layers.Dense],
                 history_text_projection: Optional[tf.keras.layers.Dense],
                 text_match: Optional[TextMatch], history_length: int = F.HISTORY_LENGTH):
        super().__init__(name="query_tower")
        dim, bert = config.embedding_dim, config.text_mode != "none"
        self.user_embedding = (tf.keras.layers.Embedding(num_users, dim, name="user_embedding")
                               if config.use_user_id else None)
        self.use_history_text = bert and config.use_history and config.use_history_text
        self.history_encoder = (
            history_encoder(config, item_embedding,
                            history_text_projection if self.use_history_text else None,
                            history_length)
            if config.use_history else None)
        self.bag_of_words = bag_of_words if config.use_query_text and not bert else None
        self.text_projection = text_projection if config.use_query_text and bert else None
        self.text_match = text_match
        self.dense = mlp(config.hidden_units, dim, name="query_dense")
        self.perturb = None                # adversarial.EmbeddingPerturbation, training only

    def call(self, features, training=False):
        parts, history_text, query_text = [], None, None
        if self.user_embedding is not None:
            parts.append(self.user_embedding(unknown_as_empty(
                features[F.idx(F.USER_ID)], self.user_embedding.input_dim)))
        if self.history_encoder is not None:
            history = features[F.idx(F.HISTORY_ITEM_IDS)]
            if self.use_history_text:
                summary, history_text = self.history_encoder(
                    history, features[text_tower.HISTORY_TEXT])
            else:
                summary = self.history_encoder(history)
            parts.append(summary)
        if self.bag_of_words is not None:      # tokens hashed in the input pipeline, or text
            parts.append(_perturbed(self, "query_text", self.bag_of_words(
                features.get(numeric_inputs.QUERY_TOKENS, features.get(F.QUERY)))))
        if self.text_projection is not None:
            query_text = _perturbed(self, "query_text", features[text_tower.QUERY_TEXT])
            parts.append(self.text_projection(query_text))
        x = _output(self.dense, parts, training)
        if self.text_match is None:
            return x
        return self.text_match(x, *_query_side_text(query_text, history_text))


def _query_side_text(query_text, history_text):
    """(text [B, H], is_search [B, 1]): the search text where there is one (non-zero), else
    the pooled history texts, L2-normalised; zeros when neither exists."""
    if history_text is not None:
        history_text = tf.math.l2_normalize(history_text, axis=1)
    if query_text is None:
        return history_text, tf.zeros_like(history_text[:, :1], tf.bool)
    has_query = tf.reduce_any(tf.not_equal(query_text, 0.0), axis=1, keepdims=True)
    if history_text is None:
        return query_text, has_query
    return tf.where(has_query, query_text, history_text), has_query


class CandidateTower(tf.keras.Model):
    """Item embedding from item_id_idx, brand/category/top_category indices, price_z,
    in_stock (all [B]) and the item text (embedding [B, H] in BERT modes, raw title [B] in
    "none" mode); cold items rely on the features and the text. [B, D] L2-normalised, or
    [B, D + H] with the text match."""

    def __init__(self, config: RetrievalConfig, buckets: Dict[str, int],
                 item_embedding: tf.keras.layers.Embedding,
                 bag_of_words: Optional[HashedBagOfWords],
                 text_projection: Optional[tf.keras.layers.Dense],
                 text_match: Optional[TextMatch]):
        super().__init__(name="candidate_tower")
        dim, bert = config.embedding_dim, config.text_mode != "none"
        self.item_embedding = item_embedding if config.use_item_id else None
        self.feature_embeddings = {}
        if config.use_item_features:
            self.feature_embeddings = {
                key: tf.keras.layers.Embedding(buckets[key], dim, name=key + "_embedding")
                for key in (F.BRAND, F.CATEGORY, F.TOP_CATEGORY)}
        self.use_item_features = config.use_item_features
        self.bag_of_words = bag_of_words if config.use_text and not bert else None
        self.text_projection = text_projection if config.use_text and bert else None
        self.text_match = text_match
        self.dense = mlp(config.hidden_units, dim, name="candidate_dense")
        self.perturb = None                # adversarial.EmbeddingPerturbation, training only

    def call(self, features, training=False):
        parts = []
        if self.item_embedding is not None:
            parts.append(_perturbed(self, "item_id", self.item_embedding(unknown_as_empty(
                features[F.idx(F.ITEM_ID)], self.item_embedding.input_dim))))
        for key, embedding in sorted(self.feature_embeddings.items()):
            parts.append(embedding(features[F.idx(key)]))
        if self.use_item_features:
            parts += [as_column(features[F.PRICE_Z]), as_column(features[F.IN_STOCK])]
        if self.bag_of_words is not None:
            parts.append(_perturbed(self, "item_text", self.bag_of_words(
                features.get(numeric_inputs.TITLE_TOKENS, features.get(F.TITLE)))))
        item_text = None
        if self.text_projection is not None or self.text_match is not None:
            item_text = _perturbed(self, "item_text", features[text_tower.ITEM_TEXT])
        if self.text_projection is not None:
            parts.append(self.text_projection(item_text))
        x = _output(self.dense, parts, training)
        if self.text_match is None:
            return x
        return self.text_match(x, item_text)


class RetrievalModel(tfrs.Model):
    """Two towers trained with a softmax over (query, clicked item) pairs: in-batch negatives,
    or every catalog item (`negatives` "catalog").

    `text`: the run's TextResources (BERT modes); `item_probability` [item buckets]: the click
    share of each item in the train split, for the logQ correction (in-batch only);
    `catalog`: the catalog split's tower inputs (catalog_softmax.Catalog, "catalog" only);
    `history_length`: the width of the examples' histories (features.history_length_of).
    """

    def __init__(self, config: RetrievalConfig, buckets: Dict[str, int],
                 text: Optional[text_tower.TextResources] = None,
                 item_probability: Optional[np.ndarray] = None,
                 catalog: Optional[catalog_softmax.Catalog] = None,
                 history_length: int = F.HISTORY_LENGTH):
        super().__init__()
        dim = config.embedding_dim
        if config.uses_bert and text is None:
            raise ValueError(f"text_mode {config.text_mode!r} needs the run's TextResources "
                             "(text_tower.TextResources); use text_mode 'none' without them")
        if config.uses_logq and item_probability is None:
            raise ValueError("logq_correction needs item_probability (train click shares)")
        if config.uses_catalog and catalog is None:
            raise ValueError("negatives or sequence_objective_negatives 'catalog' needs the "
                             "catalog's tower inputs (catalog_softmax.load)")
        if (config.uses_catalog and config.uses_bert and catalog.text_rows is None
                and (config.use_text or config.use_history_text)):
            raise ValueError("a 'catalog' softmax with item texts needs the catalog's text rows "
                             "(catalog_softmax.load(..., lookup=text.lookup))")
        # One item-id table for history items (query side) and candidates.
        item_embedding = tf.keras.layers.Embedding(buckets[F.ITEM_ID], dim,
                                                   name="item_embedding")
        bag_of_words = projection = history_projection = text_match = None
        self.text = None
        if config.text_mode == "none":
            bag_of_words = HashedBagOfWords(config.text_buckets, dim, name="text")
        elif config.uses_bert:
            self.text = text_tower.TrainingText(config, text.tables, text.paths)
            # Item and search texts share one projection into the towers.
            projection = tf.keras.layers.Dense(dim, use_bias=False, name="text_projection")
            # History texts stay pretrained; share the projection only when items do too.
            history_projection = (projection if config.text_mode == "frozen" else
                                  tf.keras.layers.Dense(dim, use_bias=False,
                                                        name="history_text_projection"))
            if config.uses_text_match:
                text_match = TextMatch(name="text_match")
        self.query_tower = QueryTower(config, buckets[F.USER_ID], item_embedding, bag_of_words,
                                      projection, history_projection, text_match,
                                      history_length)
        self.candidate_tower = CandidateTower(config, buckets, item_embedding, bag_of_words,
                                              projection, text_match)
        self.remove_accidental_hits = config.remove_accidental_hits
        self.id_dropout, self.seed = config.id_dropout, config.seed
        self.item_probability = (tf.constant(item_probability, tf.float32)
                                 if config.uses_logq else None)
        self.catalog = (catalog_softmax.CatalogSoftmax(catalog, config.temperature)
                        if config.negatives == "catalog" else None)
        self.catalog_text = self.text is not None and config.use_text
        self.sequence_weight = config.sequence_objective_weight
        self.sequence_objective = (
            SequenceObjective(self.query_tower.history_encoder, config.temperature,
                              config.remove_accidental_hits, self.item_probability,
                              config.sequence_mask_rate, config.seed + 4,
                              config.sequence_objective_positions,
                              catalog=(catalog if config.sequence_objective_negatives
                                       == "catalog" else None),
                              name="sequence_objective")
            if config.uses_sequence_objective else None)
        self.text_optimizer = None
        self.adversarial = None
        if config.uses_adversarial:
            self.adversarial = dict(epsilon=config.adversarial_epsilon,
                                    weight=config.adversarial_weight,
                                    steps=config.adversarial_steps)
            self.perturbation = adversarial.EmbeddingPerturbation()
            self.query_tower.perturb = self.candidate_tower.perturb = self.perturbation
        self.dp_microbatches = config.dp_num_microbatches if config.uses_dp else None
        # Summed softmax cross-entropy (distribution-safe), averaged in compute_loss.
        self.task = tfrs.tasks.Retrieval(
            loss=tf.keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.SUM),
            temperature=config.temperature,
            remove_accidental_hits=config.remove_accidental_hits)
        # DP-SGD: the same softmax with per-example (unreduced) losses (example_losses).
        self.dp_task = tfrs.tasks.Retrieval(
            loss=tf.keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
            temperature=config.temperature,
            remove_accidental_hits=config.remove_accidental_hits) if config.uses_dp else None

    def compute_loss(self, features, training=False):
        item_ids = features[F.idx(F.ITEM_ID)]
        if self.text is not None:
            features = dict(features, **self.text(features, training=training))
        if training and self.id_dropout > 0:        # cold users and cold items learn too
            features = drop_ids(features, self.id_dropout, self.seed)
        if training and self.adversarial is not None:
            loss = adversarial.adversarial_loss(
                lambda: self.retrieval_loss(features, item_ids, training), self.perturbation,
                **self.adversarial)
        else:
            loss = self.retrieval_loss(features, item_ids, training)
        if training and self.sequence_objective is not None:
            history_text = (features[text_tower.HISTORY_TEXT]
                            if self.query_tower.use_history_text else None)
            loss += self.sequence_weight * self.sequence_objective(
                features[F.idx(F.HISTORY_ITEM_IDS)], history_text, training=training,
                text_embeddings=self.text.embeddings if self.text is not None else None)
        return loss

    def retrieval_loss(self, features, item_ids, training=False):
        """The two-tower softmax loss (global-batch mean) of a batch with its text features."""
        queries = self.query_tower(features, training=training)
        if self.catalog is not None:
            catalog = self.catalog.tower_features(
                self.text.embeddings if self.catalog_text else None,
                self.id_dropout if training else 0.0, self.seed + 3)
            candidates = self.candidate_tower(catalog, training=training)
            loss_sum = self.catalog.loss_sum(queries, candidates, item_ids)
            return global_batch_mean(loss_sum, tf.shape(queries)[0])
        candidates = self.candidate_tower(features, training=training)
        ids = item_ids if self.remove_accidental_hits else None
        probability = (tf.gather(self.item_probability, item_ids)
                       if self.item_probability is not None else None)
        candidates, ids, probability = global_batch_candidates(candidates, ids, probability)
        loss_sum = self.task(queries, candidates, candidate_sampling_probability=probability,
                             candidate_ids=ids, compute_metrics=False,
                             compute_batch_metrics=False)
        return global_batch_mean(loss_sum, tf.shape(queries)[0])

    def example_losses(self, features):
        """DP-SGD: each example's softmax cross-entropy [B] against the candidates of its own
        microbatch only (`dp_microbatches` consecutive blocks of the batch), so a microbatch's
        loss depends on its own examples alone and per-microbatch clipping bounds what one
        example changes (docs/DESIGN.md, "Adversarial training and DP-SGD")."""
        item_ids = features[F.idx(F.ITEM_ID)]
        if self.text is not None:
            features = dict(features, **self.text(features, training=True))
        if self.id_dropout > 0:
            features = drop_ids(features, self.id_dropout, self.seed)
        queries = self.query_tower(features, training=True)
        candidates = self.candidate_tower(features, training=True)
        block = tf.range(tf.shape(queries)[0]) // (
            tf.shape(queries)[0] // self.dp_microbatches)
        return self.dp_task(queries, candidates, candidate_ids=(
            item_ids if self.remove_accidental_hits else None), compute_metrics=False,
            compute_batch_metrics=False,
            score_mask=tf.equal(block[:, tf.newaxis], block[tf.newaxis, :]))

    def train_step(self, inputs):
        """tfrs.Model.train_step, with the encoder weights on their own optimizer (a small
        learning rate) when they train; DP-SGD's step (trainer/dp.py) when it is on."""
        if self.dp_microbatches is not None:
            return dp.train_step(self, inputs, self.example_losses)
        encoder_weights = self.text.encoder_weights if self.text is not None else []
        if not encoder_weights or self.text_optimizer is None:
            return super().train_step(inputs)
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = tf.reduce_sum([tf.reduce_sum(x) for x in self.losses])
            total_loss = loss + regularization_loss
        encoder_refs = {w.ref() for w in encoder_weights}
        others = [v for v in self.trainable_variables if v.ref() not in encoder_refs]
        gradients = tape.gradient(total_loss, others + list(encoder_weights))
        self.optimizer.apply_gradients(zip(gradients[:len(others)], others))
        self.text_optimizer.apply_gradients(zip(gradients[len(others):], encoder_weights))
        metrics = {metric.name: metric.result() for metric in self.metrics}
        metrics.update(loss=loss, regularization_loss=regularization_loss,
                       total_loss=total_loss)
        return metrics


def build_model(config: RetrievalConfig, buckets: Dict[str, int],
                strategy: Optional[tf.distribute.Strategy] = None,
                text: Optional[text_tower.TextResources] = None,
                item_probability: Optional[np.ndarray] = None,
                catalog: Optional[catalog_softmax.Catalog] = None,
                history_length: int = F.HISTORY_LENGTH) -> RetrievalModel:
    """Builds and compiles the model under `strategy` (default: the current strategy).
    Without `item_probability` the logQ correction assumes uniform click shares.
    `history_length`: the transformed examples' history width."""
    strategy = strategy or tf.distribute.get_strategy()
    if config.uses_logq and item_probability is None:
        item_probability = np.full([buckets[F.ITEM_ID]], 1.0 / buckets[F.ITEM_ID], np.float32)
    with strategy.scope():
        model = RetrievalModel(config, buckets, text, item_probability, catalog,
                               history_length)
        if config.text_mode in ("top_layers", "full"):
            model.text_optimizer = tf.keras.optimizers.Adam(config.effective_text_learning_rate)
        # numeric_step off-TPU: XLA compiles the step, as a TPU would (a TPU always does)
        model.compile(optimizer=dp.optimizer(config) if config.uses_dp else
                      tf.keras.optimizers.Adam(config.effective_learning_rate),
                      jit_compile=numeric_inputs.jit_compile(config, strategy))
    return model


def clicked_items(train_patterns: Sequence[str], spec: Dict) -> np.ndarray:
    """Item index of every clicked train example: [n] int."""
    return data.load_columns(train_patterns, spec, [F.idx(F.ITEM_ID)],
                             predicate=data.is_positive(F.CLICKED))[F.idx(F.ITEM_ID)]


def item_click_probability(train_patterns: Sequence[str], spec: Dict,
                           num_items: int) -> np.ndarray:
    """Share of the train split's clicks that went to each item index: [num_items] float32."""
    clicked = clicked_items(train_patterns, spec)
    counts = np.bincount(clicked.astype(np.int64), minlength=num_items)[:num_items]
    return (counts / max(counts.sum(), 1)).astype(np.float32)


class TowerWithText:
    """A tower called on transformed features, text features added first (eval, export)."""

    def __init__(self, tower: tf.keras.Model, add_text=None):
        self.tower = tower
        self.add_text = add_text

    def __call__(self, features, training=False):
        if self.add_text is not None:
            features = self.add_text(features)
        return self.tower(features, training=training)


class EvalTowers:
    """The trained towers as evaluation and export call them: each with the text features of
    the evaluation embedder (frozen MiniLM: built once; a trained encoder: rebuilt per call,
    its item table re-encoded with the current weights). Call -> (embedder, query, candidate)."""

    def __init__(self, config: RetrievalConfig, model, text):
        self.config, self.model, self.text = config, model, text
        self.embedder = None

    def __call__(self):
        embedder = self.embedder
        if embedder is None and self.text is not None:
            embedder = text_tower.build_embedder(self.config, self.text.catalog,
                                                 self.text.tables, self.text.paths,
                                                 self.model.text)
            if self.config.text_mode == "frozen":
                self.embedder = embedder
        return (embedder,
                TowerWithText(self.model.query_tower, embedder and embedder.query_features),
                TowerWithText(self.model.candidate_tower,
                              embedder and embedder.candidate_features))


def _early_stopping(config: RetrievalConfig, towers: EvalTowers, catalog_files,
                    eval_set: retrieval_eval.EvalSet, spec) -> early_stopping.EarlyStopping:
    """Checks `config.early_stopping_metric` of the eval split over the full catalog."""
    k = early_stopping.metric_k(config.early_stopping_metric)

    def measure() -> float:
        _, query_fn, candidate_fn = towers()
        ids, embeddings = retrieval_eval.embed_catalog(candidate_fn, catalog_files, spec)
        return eval_set.model_metrics(query_fn, ids, embeddings, [k])[
            config.early_stopping_metric]

    return early_stopping.EarlyStopping(config, measure)


def with_base_model(config: RetrievalConfig, base_model: Optional[str]) -> RetrievalConfig:
    """The Trainer's `base_model` (a DomainPretraining output: `<dir>/backbone` is a keras-hub
    preset of adapted MiniLM weights) becomes the text backbone, unless the config names one."""
    if not base_model or not config.uses_bert or config.text_backbone:
        return config
    from trainer.text.domain_pretraining import BACKBONE_DIR  # pylint: disable=import-outside-toplevel
    backbone = os.path.join(base_model, BACKBONE_DIR)
    if not tf.io.gfile.exists(os.path.join(backbone, "config.json")):
        raise ValueError(f"retrieval: base_model {base_model!r} holds no keras-hub preset at "
                         f"{backbone!r} (expected a DomainPretraining output)")
    logging.info("retrieval: text backbone from base_model %s", backbone)
    return dataclasses.replace(config, text_backbone=backbone)


def run_fn(fn_args, strategy: Optional[tf.distribute.Strategy] = None) -> None:
    """TFX Trainer entry point: train, evaluate recall@K over the full catalog, export.
    Runs under ``strategy``, else the one the environment names (trainer/distribute.py:
    MultiWorkerMirroredStrategy when TF_CONFIG lists several workers); in a multi-worker run
    only the chief's report and export are kept."""
    distribute.run(_train_and_export, fn_args, strategy)


def _train_and_export(fn_args, strategy: tf.distribute.Strategy) -> None:
    # The Tuner's best values (fn_args.hyperparameters, tuning on) over the custom_config.
    custom_config, tuned = tuning.apply_hyperparameters(
        tuning.RETRIEVAL, fn_args.custom_config, getattr(fn_args, "hyperparameters", None))
    if tuned:
        logging.info("retrieval: tuned hyper-parameters %s", tuned)
    config = with_base_model(RetrievalConfig.from_custom_config(custom_config),
                             getattr(fn_args, "base_model", None))
    if numeric_inputs.enabled(config, strategy) and not config.numeric_step:
        config = dataclasses.replace(config, numeric_step=True)     # a TPU: numbers only
        config.validate()
    tf.keras.utils.set_random_seed(config.seed)
    tft_output = tft.TFTransformOutput(fn_args.transform_graph_path or fn_args.transform_output)
    spec = tft_output.transformed_feature_spec()
    catalog_files = data.catalog_patterns(fn_args.train_files)
    buckets = {key: data.num_buckets(tft_output, key) for key in F.VOCAB_KEYS}
    history_length = F.history_length_of(spec)     # PipelineConfig.history_length
    logging.info("retrieval: config %s, vocabulary buckets %s, history length %d", config,
                 buckets, history_length)

    text = (text_tower.TextResources.prepare(config, catalog_files, fn_args.train_files, spec)
            if config.uses_bert else None)
    probability = (item_click_probability(fn_args.train_files, spec, buckets[F.ITEM_ID])
                   if config.uses_logq else None)
    catalog = None
    if config.uses_catalog:
        catalog = catalog_softmax.load(catalog_files, spec, buckets[F.ITEM_ID],
                                       text.lookup if text is not None else None)
        if config.negatives == "catalog":
            catalog_softmax.check_labels(catalog, clicked_items(fn_args.train_files, spec))
        logging.info("retrieval: full softmax over %d catalog items (%s)", catalog.size,
                     ", ".join(name for name, value in (
                         ("retrieval loss", config.negatives),
                         ("sequence objective", config.sequence_objective_negatives
                          if config.uses_sequence_objective else "")) if value == "catalog"))
        if config.numeric_step:
            catalog = dataclasses.replace(
                catalog, features=numeric_inputs.catalog_features(catalog.features, config))
    model = build_model(config, buckets, strategy, text, probability, catalog, history_length)
    train_ds = data.make_dataset(
        fn_args.train_files, spec, config.batch_size, predicate=data.is_positive(F.CLICKED),
        shuffle_buffer=config.shuffle_buffer, seed=config.seed, repeat=bool(fn_args.train_steps),
        drop_remainder=config.uses_dp)
    if text is not None:
        train_ds = train_ds.map(text.lookup.add_rows, num_parallel_calls=tf.data.AUTOTUNE)
    if config.numeric_step:
        train_ds = numeric_inputs.prepare(train_ds, numeric_inputs.retrieval_features(config),
                                          config.batch_size)
        logging.info("retrieval: numeric training step (strings tokenised on the host)")
    timer = training.StepTimer()
    towers = EvalTowers(config, model, text)
    stopper = steps_per_check = eval_set = None
    if config.uses_early_stopping:      # the eval split, read once for the checks and report
        eval_set = retrieval_eval.EvalSet.load(fn_args.eval_files, spec)
        stopper = _early_stopping(config, towers, catalog_files, eval_set, spec)
        steps_per_check = early_stopping.steps_between_checks(
            config, fn_args.train_steps, lambda: len(clicked_items(fn_args.train_files, spec)))
    losses = training.fit(model, train_ds, config.epochs, fn_args.train_steps,
                          [timer] + (stopper.callbacks if stopper else []), steps_per_check)

    started = time.time()
    embedder, query_fn, candidate_fn = towers()
    catalog_ids, catalog_embeddings = retrieval_eval.embed_catalog(candidate_fn, catalog_files,
                                                                   spec)
    metrics = retrieval_eval.evaluate(
        query_fn, catalog_ids, catalog_embeddings, fn_args.eval_files,
        fn_args.train_files, spec, config.eval_ks, catalog_files,
        text.item_embeddings(catalog_ids) if text is not None else None, eval_set)
    metrics["eval_seconds"] = round(time.time() - started, 1)
    metrics.update(training=dict(training.loss_summary(losses),
                                 **timer.summary(config.batch_size)),
                   config=config.to_dict(), hyperparameters=tuned)
    if stopper is not None:
        metrics["early_stopping"] = stopper.report()
        stopper.plot(fn_args.model_run_dir)
    if config.uses_dp:          # the privacy unit: one clicked train unit
        users = data.load_columns(fn_args.train_files, spec, [F.idx(F.USER_ID)],
                                  predicate=data.is_positive(F.CLICKED))[F.idx(F.USER_ID)]
        metrics["privacy"] = dp.report(
            config, len(users), dp.steps_of(len(users), config.batch_size, config.epochs,
                                            fn_args.train_steps),
            int(np.bincount(users.astype(np.int64)).max()))
    if text is not None:
        metrics["text"] = text.summary()
        match = model.candidate_tower.text_match
        if match is not None:
            metrics["text"]["match_weight_search"] = round(float(match.search_weight), 4)
            metrics["text"]["match_weight_history"] = round(float(match.history_weight), 4)

    related = None
    if config.related_items:
        started = time.time()
        tables = related_items.fit(fn_args.train_files, spec, catalog_ids,
                                   config.cooccurrence_window)
        fit_seconds = round(time.time() - started, 1)
        if text is not None:        # the text neighbours of the frozen MiniLM item texts
            tables = related_items.with_texts(tables, text.catalog.item_ids,
                                              text.catalog.item_rows, text.tables.embeddings,
                                              config.related_items)
        metrics["related_items"] = dict(tables.report, neighbours=config.related_items,
                                        cooccurrence_window=config.cooccurrence_window,
                                        fit_seconds=fit_seconds)
        logging.info("retrieval: item-to-item tables %s", metrics["related_items"])
        related = related_items.RelatedItems(tables, config.related_items)
    training.write_report(fn_args.model_run_dir, metrics, losses, "retrieval")
    if not fn_args.serving_model_dir:       # a Tuner trial: judged by metrics.json alone
        return

    started = time.time()
    signatures.export_retrieval(fn_args.serving_model_dir, model, tft_output, catalog_ids,
                                catalog_embeddings, config.top_k, text=embedder,
                                related=related)
    signatures.write_warmup(fn_args, tft_output, "retrieval")
    # Weights stored as config.compression (docs/DESIGN.md, "Compressed exports").
    compression.compress_in_place(fn_args.serving_model_dir, config.compression)
    logging.info("retrieval: exported in %.1f s", time.time() - started)
