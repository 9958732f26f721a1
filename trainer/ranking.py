"""TFRS multi-task ranking model (p(click), p(purchase)) and its TFX Trainer `run_fn`.

Pipeline wiring: `Trainer(run_fn="trainer.ranking.run_fn", examples=<transformed>,
transform_graph=..., custom_config=<RankingConfig keys>)`. Heads are listed in
`trainer.config.RANKING_HEADS`; adding one (rating, later) needs its label there, its loss
in `_head_loss` and its weights in the config. The feature interaction (`self.interaction`,
an MLP) is the slot for a DCN. The embedding tables carry an L2 penalty (`embedding_l2`):
without it the ids memorise training impressions and eval AUC drops to chance.
"""
from typing import Dict, Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tensorflow_transform as tft

from trainer import data
from trainer import features as F
from trainer import signatures
from trainer import training
from trainer.config import RANKING_HEADS, RankingConfig
from trainer.layers import HistoryEncoder, as_column, global_batch_mean, mlp
from trainer.query_match import QueryMatch

VOCAB_KEYS = (F.USER_ID, F.ITEM_ID, F.BRAND, F.CATEGORY, F.TOP_CATEGORY)


class RankingModel(tfrs.Model):
    """Per (user, item) unit: features -> shared MLP -> one sigmoid head per task.

    Inputs are transformed features ([B] each, history [B, HISTORY_LENGTH]); `call` returns
    {head: probability [B]}.
    """

    def __init__(self, config: RankingConfig, buckets: Dict[str, int]):
        super().__init__()
        dim = config.embedding_dim
        self.config = config
        self.item_embedding = tf.keras.layers.Embedding(buckets[F.ITEM_ID], dim,
                                                        name="item_embedding")
        self.user_embedding = (tf.keras.layers.Embedding(buckets[F.USER_ID], dim,
                                                         name="user_embedding")
                               if config.use_user_id else None)
        self.history_encoder = (
            HistoryEncoder(self.item_embedding, F.HISTORY_LENGTH, dim, name="history")
            if config.use_history else None)
        self.feature_embeddings = {}
        if config.use_item_features:
            self.feature_embeddings = {
                key: tf.keras.layers.Embedding(buckets[key], dim, name=key + "_embedding")
                for key in (F.BRAND, F.CATEGORY, F.TOP_CATEGORY)}
        self.query_match = QueryMatch(name="query_match") if config.use_text else None
        self.interaction = mlp(config.hidden_units, name="interaction")
        self.heads = {head: tf.keras.layers.Dense(1, activation="sigmoid", name=head)
                      for head in RANKING_HEADS}
        self.tasks = {head: tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(reduction=tf.keras.losses.Reduction.SUM),
            metrics=[tf.keras.metrics.AUC(name=head + "_auc")]) for head in RANKING_HEADS}
        self.loss_weight = config.loss_weight
        self.embedding_l2 = config.embedding_l2

    def _feature_vector(self, features):
        item = self.item_embedding(features[F.idx(F.ITEM_ID)])
        parts = [item] if self.config.use_item_id else []
        user_side = []
        if self.user_embedding is not None:
            user_side.append(self.user_embedding(features[F.idx(F.USER_ID)]))
        if self.history_encoder is not None:
            user_side.append(self.history_encoder(features[F.idx(F.HISTORY_ITEM_IDS)]))
        parts += user_side
        # Explicit user x item affinities (the MLP learns products slowly).
        parts += [u * item for u in user_side]
        for key, embedding in sorted(self.feature_embeddings.items()):
            parts.append(embedding(features[F.idx(key)]))
        if self.config.use_item_features:
            parts += [as_column(features[F.PRICE_Z]), as_column(features[F.IN_STOCK])]
        if self.query_match is not None:
            item_text = tf.strings.join(
                [features[F.TITLE], features[F.BRAND], features[F.CATEGORY]], separator=" ")
            parts.append(self.query_match(features[F.QUERY], item_text))
        return tf.concat(parts, axis=1)

    def call(self, features, training=False):
        x = self.interaction(self._feature_vector(features), training=training)
        return {head: tf.reshape(layer(x), [-1]) for head, layer in self.heads.items()}

    def compute_loss(self, features, training=False):
        predictions = self(features, training=training)
        losses = [self.loss_weight[head] * self._head_loss(head, features, predictions[head],
                                                           training)
                  for head in RANKING_HEADS]
        batch_size = tf.shape(features[F.idx(F.ITEM_ID)])[0]
        loss = global_batch_mean(tf.add_n(losses), batch_size)
        if self.embedding_l2:
            context = tf.distribute.get_replica_context()  # penalty once over all replicas
            replicas = context.num_replicas_in_sync if context is not None else 1
            loss += self.embedding_l2 * self._embedding_norms() / replicas
        return loss

    def _embedding_norms(self):
        """Sum of squares of the id and feature embedding tables."""
        tables = [self.item_embedding, self.user_embedding, *self.feature_embeddings.values()]
        return tf.add_n([tf.reduce_sum(tf.square(t.embeddings)) for t in tables
                         if t is not None])

    def _head_loss(self, head, features, prediction, training):
        labels = as_column(features[RANKING_HEADS[head]])
        return self.tasks[head](labels=labels, predictions=prediction[:, tf.newaxis],
                                training=training)


def build_model(config: RankingConfig, buckets: Dict[str, int],
                strategy: Optional[tf.distribute.Strategy] = None) -> RankingModel:
    """Builds and compiles the model under `strategy` (default: the current strategy)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = RankingModel(config, buckets)
        model.compile(optimizer=tf.keras.optimizers.Adam(config.effective_learning_rate))
    return model


def auc(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
    """Exact ROC AUC (ties count one half); None when only one class is present."""
    labels = np.asarray(labels) > 0
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    ranks = (upper - (counts - 1) / 2.0)[inverse]  # average 1-based rank of each score
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0)
                 / (positives * negatives))


def evaluate(model: RankingModel, eval_patterns, spec) -> Dict:
    """Per head on the eval split: AUC, label rate and mean prediction."""
    predictions = {head: [] for head in RANKING_HEADS}
    labels = {head: [] for head in RANKING_HEADS}
    for batch in data.make_dataset(eval_patterns, spec, 1024):
        outputs = model(batch, training=False)
        for head, label in RANKING_HEADS.items():
            predictions[head].append(outputs[head].numpy())
            labels[head].append(batch[label].numpy())
    if not predictions[next(iter(RANKING_HEADS))]:
        raise ValueError("the eval split is empty")
    metrics = {}
    for head in RANKING_HEADS:
        p, y = np.concatenate(predictions[head]), np.concatenate(labels[head])
        metrics[head] = {"auc": auc(y, p), "label_rate": float(np.mean(y > 0)),
                         "mean_prediction": float(np.mean(p))}
    metrics["num_eval_examples"] = int(len(y))
    return metrics


def run_fn(fn_args, strategy: Optional[tf.distribute.Strategy] = None) -> None:
    """TFX Trainer entry point: train on all train units, report eval AUC per head, export."""
    config = RankingConfig.from_custom_config(fn_args.custom_config)
    tf.keras.utils.set_random_seed(config.seed)
    tft_output = tft.TFTransformOutput(fn_args.transform_graph_path or fn_args.transform_output)
    spec = tft_output.transformed_feature_spec()
    buckets = {key: data.num_buckets(tft_output, key) for key in VOCAB_KEYS}
    logging.info("ranking: config %s, vocabulary buckets %s", config, buckets)

    model = build_model(config, buckets, strategy)
    train_ds = data.make_dataset(
        fn_args.train_files, spec, config.batch_size, shuffle_buffer=config.shuffle_buffer,
        seed=config.seed, repeat=bool(fn_args.train_steps))
    losses = training.fit(model, train_ds, config.epochs, fn_args.train_steps)

    metrics = evaluate(model, fn_args.eval_files, spec)
    metrics.update(training=training.loss_summary(losses), config=config.to_dict())
    training.write_report(fn_args.model_run_dir, metrics, losses, "ranking")
    signatures.export_ranking(fn_args.serving_model_dir, model, tft_output,
                              config.score_weight)
