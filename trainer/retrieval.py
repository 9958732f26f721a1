"""TFRS two-tower retrieval model and its TFX Trainer `run_fn`.

Pipeline wiring: `Trainer(run_fn="trainer.retrieval.run_fn", examples=<transformed>,
transform_graph=..., custom_config=<RetrievalConfig keys>)`.
"""
from typing import Dict, Optional

from absl import logging
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tensorflow_transform as tft

from trainer import data
from trainer import features as F
from trainer import retrieval_eval
from trainer import signatures
from trainer import training
from trainer.config import RetrievalConfig
from trainer.layers import (HashedBagOfWords, HistoryEncoder, as_column,
                            global_batch_mean, mlp)

# Vocabulary features the model embeds (sizes from the Transform output).
VOCAB_KEYS = (F.USER_ID, F.ITEM_ID, F.BRAND, F.CATEGORY, F.TOP_CATEGORY)


class QueryTower(tf.keras.Model):
    """Query embedding [B, D], L2-normalised, from user_id_idx [B], history_item_ids_idx
    [B, HISTORY_LENGTH] and query text [B] (each part switchable in the config)."""

    def __init__(self, config: RetrievalConfig, num_users: int,
                 item_embedding: tf.keras.layers.Embedding, text: HashedBagOfWords):
        super().__init__(name="query_tower")
        dim = config.embedding_dim
        self.user_embedding = (tf.keras.layers.Embedding(num_users, dim, name="user_embedding")
                               if config.use_user_id else None)
        self.history_encoder = (
            HistoryEncoder(item_embedding, F.HISTORY_LENGTH, dim, name="history")
            if config.use_history else None)
        self.text = text if config.use_text else None
        self.dense = mlp(config.hidden_units, dim, name="query_dense")

    def call(self, features, training=False):
        parts = []
        if self.user_embedding is not None:
            parts.append(self.user_embedding(features[F.idx(F.USER_ID)]))
        if self.history_encoder is not None:
            parts.append(self.history_encoder(features[F.idx(F.HISTORY_ITEM_IDS)]))
        if self.text is not None:
            parts.append(self.text(features[F.QUERY]))
        x = self.dense(tf.concat(parts, axis=1), training=training)
        return tf.math.l2_normalize(x, axis=1)


class CandidateTower(tf.keras.Model):
    """Item embedding [B, D], L2-normalised, from item_id_idx, brand/category/top_category
    indices, price_z, in_stock and title text (all [B]); cold items rely on the features."""

    def __init__(self, config: RetrievalConfig, buckets: Dict[str, int],
                 item_embedding: tf.keras.layers.Embedding, text: HashedBagOfWords):
        super().__init__(name="candidate_tower")
        dim = config.embedding_dim
        self.item_embedding = item_embedding if config.use_item_id else None
        self.feature_embeddings = {}
        if config.use_item_features:
            self.feature_embeddings = {
                key: tf.keras.layers.Embedding(buckets[key], dim, name=key + "_embedding")
                for key in (F.BRAND, F.CATEGORY, F.TOP_CATEGORY)}
        self.use_item_features = config.use_item_features
        self.text = text if config.use_text else None
        self.dense = mlp(config.hidden_units, dim, name="candidate_dense")

    def call(self, features, training=False):
        parts = []
        if self.item_embedding is not None:
            parts.append(self.item_embedding(features[F.idx(F.ITEM_ID)]))
        for key, embedding in sorted(self.feature_embeddings.items()):
            parts.append(embedding(features[F.idx(key)]))
        if self.use_item_features:
            parts += [as_column(features[F.PRICE_Z]), as_column(features[F.IN_STOCK])]
        if self.text is not None:
            parts.append(self.text(features[F.TITLE]))
        x = self.dense(tf.concat(parts, axis=1), training=training)
        return tf.math.l2_normalize(x, axis=1)


class RetrievalModel(tfrs.Model):
    """Two towers trained with in-batch softmax over (query, clicked item) pairs."""

    def __init__(self, config: RetrievalConfig, buckets: Dict[str, int]):
        super().__init__()
        dim = config.embedding_dim
        # One item-id table for history items (query side) and candidates.
        item_embedding = tf.keras.layers.Embedding(buckets[F.ITEM_ID], dim,
                                                   name="item_embedding")
        text = HashedBagOfWords(config.text_buckets, dim, name="text")
        self.query_tower = QueryTower(config, buckets[F.USER_ID], item_embedding, text)
        self.candidate_tower = CandidateTower(config, buckets, item_embedding, text)
        self.remove_accidental_hits = config.remove_accidental_hits
        # Summed softmax cross-entropy (distribution-safe), averaged in compute_loss.
        self.task = tfrs.tasks.Retrieval(
            loss=tf.keras.losses.CategoricalCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.SUM),
            temperature=config.temperature,
            remove_accidental_hits=config.remove_accidental_hits)

    def compute_loss(self, features, training=False):
        queries = self.query_tower(features, training=training)
        candidates = self.candidate_tower(features, training=training)
        ids = features[F.idx(F.ITEM_ID)] if self.remove_accidental_hits else None
        loss_sum = self.task(queries, candidates, candidate_ids=ids, compute_metrics=False,
                             compute_batch_metrics=False)
        return global_batch_mean(loss_sum, tf.shape(queries)[0])


def build_model(config: RetrievalConfig, buckets: Dict[str, int],
                strategy: Optional[tf.distribute.Strategy] = None) -> RetrievalModel:
    """Builds and compiles the model under `strategy` (default: the current strategy)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = RetrievalModel(config, buckets)
        model.compile(optimizer=tf.keras.optimizers.Adam(config.effective_learning_rate))
    return model


def run_fn(fn_args, strategy: Optional[tf.distribute.Strategy] = None) -> None:
    """TFX Trainer entry point: train, evaluate recall@K over the full catalog, export."""
    config = RetrievalConfig.from_custom_config(fn_args.custom_config)
    tf.keras.utils.set_random_seed(config.seed)
    tft_output = tft.TFTransformOutput(fn_args.transform_graph_path or fn_args.transform_output)
    spec = tft_output.transformed_feature_spec()
    catalog_files = data.catalog_patterns(fn_args.train_files)
    buckets = {key: data.num_buckets(tft_output, key) for key in VOCAB_KEYS}
    logging.info("retrieval: config %s, vocabulary buckets %s", config, buckets)

    model = build_model(config, buckets, strategy)
    train_ds = data.make_dataset(
        fn_args.train_files, spec, config.batch_size, predicate=data.is_positive(F.CLICKED),
        shuffle_buffer=config.shuffle_buffer, seed=config.seed, repeat=bool(fn_args.train_steps))
    losses = training.fit(model, train_ds, config.epochs, fn_args.train_steps)

    catalog_ids, catalog_embeddings = retrieval_eval.embed_catalog(
        model.candidate_tower, catalog_files, spec)
    metrics = retrieval_eval.evaluate(
        model.query_tower, catalog_ids, catalog_embeddings, fn_args.eval_files,
        fn_args.train_files, spec, config.eval_ks)
    metrics.update(training=training.loss_summary(losses), config=config.to_dict())
    training.write_report(fn_args.model_run_dir, metrics, losses, "retrieval")

    signatures.export_retrieval(fn_args.serving_model_dir, model, tft_output, catalog_ids,
                                catalog_embeddings, config.top_k)
