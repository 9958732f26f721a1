"""TFRS multi-task ranking model (p(click), p(purchase), rating) and its TFX Trainer `run_fn`.

Pipeline wiring: `Trainer(run_fn="trainer.ranking.run_fn", examples=<transformed>,
transform_graph=..., custom_config=<RankingConfig keys>)`. Features (ids, history summary,
item features, query-word match, the frozen MiniLM item-text embedding, the cosines of the
candidate's text with the user's history texts and, with `external_features`, values computed
outside the model such as the candidate's retrieval score) go through DCN-v2 cross layers
(`tfrs.layers.dcn.Cross`), then deep ReLU layers, then one head per output
(`trainer.config.RANKING_OUTPUTS`): sigmoid click and purchase heads (cross-entropy on every
unit) and a linear rating head (squared error only on units with `has_rating`, masked
elsewhere; its bias starts at the train mean rating). Loss weights per head come from the
config. The embedding tables carry an L2 penalty (`embedding_l2`): without it the ids memorise
training impressions and eval AUC drops to chance. `ensemble_size` > 1 trains that many
models with consecutive seeds and exports their mean (`RankingEnsemble`).
"""
import dataclasses
from typing import Dict, Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tensorflow_transform as tft

from trainer import adversarial
from trainer import compression
from trainer import data
from trainer import distribute
from trainer import dp
from trainer import features as F
from trainer import numeric_inputs
from trainer import signatures
from trainer import training
from trainer import tuning
from trainer.config import (RANKING_HEADS, RANKING_OUTPUTS, RATING_HEAD, RATING_LABEL,
                            RATING_MASK, RankingConfig)
from trainer.layers import HistoryEncoder, as_column, global_batch_mean, mlp
from trainer.query_match import QueryMatch, item_match_text
from trainer.text.cache import gather_rows

# Text features of a batch. Training batches carry cache rows (added in the input pipeline by
# `add_text_rows`); evaluation and serving add the embeddings themselves (`RankingText`).
ITEM_TEXT_ROW = "ranking_item_text_row"          # [B] int32, -1 = no cached text
HISTORY_TEXT_ROW = "ranking_history_text_row"    # [B, L] int32 (L: the history length)
ITEM_TEXT = "ranking_item_text_embedding"        # [B, H]
HISTORY_TEXT = "ranking_history_text_embedding"  # [B, L, H]


def text_affinity(history_text: tf.Tensor, item_text: tf.Tensor) -> tf.Tensor:
    """Cosines of the candidate's text with the user's history texts: [B, 2] = (cosine with
    the mean history text, max cosine over history items); 0 without history or text.

    The text embeddings are L2-normalised (zero rows = missing), so dot products are cosines.
    This is the text-match part of the retrieval score, from the same cached embeddings.
    """
    present = tf.cast(tf.reduce_any(tf.not_equal(history_text, 0.0), axis=-1), tf.float32)
    cosines = tf.einsum("blh,bh->bl", history_text, item_text)            # [B, L]
    mean = tf.math.l2_normalize(tf.reduce_sum(history_text, axis=1), axis=-1)
    mean_cosine = tf.reduce_sum(mean * item_text, axis=-1)
    best = tf.reduce_max(tf.where(present > 0, cosines, -2.0), axis=1)
    best = tf.where(tf.reduce_any(present > 0, axis=1), best, 0.0)
    return tf.stack([mean_cosine, best], axis=1)


class RankingModel(tfrs.Model):
    """Per (user, item) unit: features -> cross layers -> deep layers -> one head per output.

    Inputs are transformed features ([B] each, history [B, L], L = `history_length`, the
    examples' width) plus, with `use_text_embedding`, either the text rows (training) or the
    text embeddings; `call` returns {output: [B]} (click and purchase probabilities, rating
    in stars). `text_table` [N, H]: the cached item-text embeddings the rows index.
    """

    def __init__(self, config: RankingConfig, buckets: Dict[str, int],
                 text_table: Optional[np.ndarray] = None, rating_mean: float = 0.0,
                 history_length: int = F.HISTORY_LENGTH):
        super().__init__()
        dim = config.embedding_dim
        self.config = config
        if config.use_text_embedding and text_table is None:
            raise ValueError("use_text_embedding needs the cached item-text embeddings "
                             "(text_table); set use_text_embedding false to run without them")
        self.item_embedding = tf.keras.layers.Embedding(buckets[F.ITEM_ID], dim,
                                                        name="item_embedding")
        self.user_embedding = (tf.keras.layers.Embedding(buckets[F.USER_ID], dim,
                                                         name="user_embedding")
                               if config.use_user_id else None)
        self.history_encoder = (
            HistoryEncoder(self.item_embedding, history_length, dim, name="history")
            if config.use_history else None)
        self.feature_embeddings = {}
        if config.use_item_features:
            self.feature_embeddings = {
                key: tf.keras.layers.Embedding(buckets[key], dim, name=key + "_embedding")
                for key in (F.BRAND, F.CATEGORY, F.TOP_CATEGORY)}
        self.query_match = QueryMatch(name="query_match") if config.use_text else None
        self.text_table = self.text_projection = None
        if config.use_text_embedding:
            # A tf.Variable is shared as given (the members of a RankingEnsemble).
            self.text_table = text_table if isinstance(text_table, tf.Variable) else \
                tf.Variable(np.asarray(text_table, np.float32), trainable=False,
                            name="item_text_table")
            self.text_projection = tf.keras.layers.Dense(
                config.text_projection_dim, use_bias=False, name="text_projection")
        self.cross_layers = [
            tfrs.layers.dcn.Cross(projection_dim=config.cross_projection_dim or None,
                                  kernel_initializer="glorot_uniform", name=f"cross_{i}")
            for i in range(config.num_cross_layers)]
        self.deep = mlp(config.hidden_units, name="deep")
        # Binary heads output logits (sigmoid in `call`, after the wide score terms).
        self.heads = {head: tf.keras.layers.Dense(1, name=head) for head in RANKING_HEADS}
        # Features computed outside the model (config.external_features, e.g. earlier stages'
        # scores): a "wide" term w_hf * value_f added to each binary head h's logit (w starts
        # at 1), so the model starts from those scores' order and the deep part learns
        # corrections to it; the values are also in the cross features.
        # Keyed "head/feature" (tracked dicts need string keys to be saved).
        # `degrade` (a deliberately bad model for blessing tests) starts them at -1: the
        # earlier stages' order reversed.
        wide_start = -1.0 if config.degrade else 1.0
        self.wide_weights = {
            f"{head}/{key}": self.add_weight(name=f"{head}_{key}_weight", shape=(),
                                         initializer=tf.keras.initializers.Constant(wide_start))
            for head in RANKING_HEADS for key in config.external_features}
        self.heads[RATING_HEAD] = tf.keras.layers.Dense(
            1, name=RATING_HEAD,
            bias_initializer=tf.keras.initializers.Constant(float(rating_mean)))
        # Keras sums what a train step returns over the replicas (its "auto" reduction off
        # TPU): right for the loss (each replica returns its share of the global mean), wrong
        # for each replica's own AUC / RMSE, which would show as their sum. With several
        # replicas the progress line carries the loss only; metrics.json is computed on the
        # eval split after training either way.
        replicated = tf.distribute.get_strategy().num_replicas_in_sync > 1
        self.tasks = {head: tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(reduction=tf.keras.losses.Reduction.SUM),
            metrics=[] if replicated else [tf.keras.metrics.AUC(name=head + "_auc")])
            for head in RANKING_HEADS}
        self.tasks[RATING_HEAD] = tfrs.tasks.Ranking(
            loss=tf.keras.losses.MeanSquaredError(reduction=tf.keras.losses.Reduction.SUM),
            metrics=[] if replicated else [
                tf.keras.metrics.RootMeanSquaredError(name="rating_rmse")])
        self.loss_weight = config.loss_weight
        self.embedding_l2 = config.embedding_l2
        # Adversarial training (trainer/adversarial.py): the item-id and item-text embeddings.
        self.perturbation = (adversarial.EmbeddingPerturbation()
                             if config.uses_adversarial else None)
        if config.uses_dp:                  # per-example losses for DP-SGD (example_losses)
            none = tf.keras.losses.Reduction.NONE
            self.example_loss_fns = {
                head: tf.keras.losses.BinaryCrossentropy(reduction=none)
                for head in RANKING_HEADS}
            self.example_loss_fns[RATING_HEAD] = tf.keras.losses.MeanSquaredError(
                reduction=none)

    def _texts(self, features):
        """(item text [B, H], history texts [B, L, H]) from the embeddings or the cache rows."""
        if ITEM_TEXT in features:
            return features[ITEM_TEXT], features[HISTORY_TEXT]
        return (gather_rows(self.text_table, features[ITEM_TEXT_ROW]),
                gather_rows(self.text_table, features[HISTORY_TEXT_ROW]))

    def _perturbed(self, name, x):
        return self.perturbation(name, x) if self.perturbation is not None else x

    def _feature_vector(self, features):
        item = self._perturbed("item_id", self.item_embedding(features[F.idx(F.ITEM_ID)]))
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
        if self.query_match is not None:       # computed in the input pipeline, or here
            if numeric_inputs.QUERY_MATCH in features:
                parts.append(features[numeric_inputs.QUERY_MATCH])
            else:
                parts.append(self.query_match(features[F.QUERY], item_match_text(features)))
        if self.text_table is not None:
            item_text, history_text = self._texts(features)
            item_text = self._perturbed("item_text", item_text)
            parts.append(self.text_projection(item_text))
            parts.append(text_affinity(history_text, item_text))
        parts += [as_column(features[key]) for key in self.config.external_features]
        return tf.concat(parts, axis=1)

    def call(self, features, training=False):
        return _as_outputs(self._raw_outputs(features, training))

    def _raw_outputs(self, features, training):
        """{head: [B]}: the binary heads' logits, the rating in stars."""
        x0 = self._feature_vector(features)
        x = x0
        for cross in self.cross_layers:
            x = cross(x0, x)
        x = self.deep(x, training=training)
        out = {}
        for head, layer in self.heads.items():
            value = tf.reshape(layer(x), [-1])
            if head in RANKING_HEADS:
                for key in self.config.external_features:
                    value += self.wide_weights[f"{head}/{key}"] * tf.reshape(
                        tf.cast(features[key], tf.float32), [-1])
            out[head] = value
        return out

    def compute_loss(self, features, training=False):
        if training and self.perturbation is not None:
            c = self.config
            loss = adversarial.adversarial_loss(
                lambda: self._data_loss(features, training), self.perturbation,
                c.adversarial_epsilon, c.adversarial_weight, c.adversarial_steps)
        else:
            loss = self._data_loss(features, training)
        if self.embedding_l2:
            context = tf.distribute.get_replica_context()  # penalty once over all replicas
            replicas = context.num_replicas_in_sync if context is not None else 1
            loss += self.embedding_l2 * self._embedding_norms() / replicas
        return loss

    def _data_loss(self, features, training):
        """The weighted head losses, as a global-batch mean; with `listwise_weight` and
        batches of whole contexts (data.CONTEXT_SEGMENT) plus the weighted listwise terms,
        as a global mean over the contexts that hold a positive."""
        raw = self._raw_outputs(features, training)
        predictions = _as_outputs(raw)
        losses = [self.loss_weight[head] * self._head_loss(head, features, predictions[head],
                                                           training)
                  for head in RANKING_OUTPUTS if self.loss_weight[head] > 0]
        batch_size = tf.shape(features[F.idx(F.ITEM_ID)])[0]
        loss = global_batch_mean(tf.add_n(losses), batch_size)
        if self.config.listwise_weight and data.CONTEXT_SEGMENT in features:
            for head, label in RANKING_HEADS.items():
                weight = self.config.listwise_weight * self.loss_weight[head]
                if weight > 0:
                    total, contexts = listwise_loss(raw[head], features[label],
                                                    features[data.CONTEXT_SEGMENT])
                    loss += weight * global_batch_mean(total, contexts)
        return loss

    def example_losses(self, features):
        """DP-SGD: each unit's weighted head losses [B] (rating only where rated), plus the
        embedding L2 penalty on every example (data-independent, so clipping it with the
        example's gradient costs no privacy)."""
        predictions = self(features, training=True)
        losses = []
        for head in RANKING_OUTPUTS:
            if self.loss_weight[head] <= 0:
                continue
            label = RATING_LABEL if head == RATING_HEAD else RANKING_HEADS[head]
            value = self.example_loss_fns[head](
                as_column(features[label]), predictions[head][:, tf.newaxis])
            if head == RATING_HEAD:
                value *= tf.reshape(tf.cast(features[RATING_MASK], tf.float32), [-1])
            losses.append(self.loss_weight[head] * value)
        loss = tf.add_n(losses)
        if self.embedding_l2:
            loss += self.embedding_l2 * self._embedding_norms()
        return loss

    def train_step(self, inputs):
        if self.config.uses_dp:
            return dp.train_step(self, inputs, self.example_losses)
        return super().train_step(inputs)

    def _embedding_norms(self):
        """Sum of squares of the id and feature embedding tables."""
        tables = [self.item_embedding, self.user_embedding, *self.feature_embeddings.values()]
        return tf.add_n([tf.reduce_sum(tf.square(t.embeddings)) for t in tables
                         if t is not None])

    def _head_loss(self, head, features, prediction, training):
        if head == RATING_HEAD:
            # Squared error summed over rated units only; divided by the whole batch later,
            # like the other heads (rated units are rare: the weight sets its share).
            return self.tasks[head](labels=as_column(features[RATING_LABEL]),
                                    predictions=prediction[:, tf.newaxis],
                                    sample_weight=as_column(features[RATING_MASK]),
                                    training=training)
        labels = as_column(features[RANKING_HEADS[head]])
        return self.tasks[head](labels=labels, predictions=prediction[:, tf.newaxis],
                                training=training)


def _as_outputs(raw: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """`RankingModel._raw_outputs` -> outputs: probabilities of the binary heads."""
    return {head: tf.sigmoid(value) if head in RANKING_HEADS else value
            for head, value in raw.items()}


def listwise_loss(logits: tf.Tensor, labels: tf.Tensor, segments: tf.Tensor):
    """Softmax cross-entropy of each context's rows: logits, labels (>= 0, e.g. clicked) and
    segments (the row's context) [N]. Per context with a positive label, -sum_i p_i *
    log softmax(logits)_i, p = labels / their sum (ListNet's loss, what TF-Ranking calls
    softmax loss). Returns (sum over those contexts, their count); contexts without a
    positive add nothing."""
    logits = tf.reshape(tf.cast(logits, tf.float32), [-1])
    labels = tf.reshape(tf.cast(labels, tf.float32), [-1])
    segments = tf.reshape(tf.cast(segments, tf.int32), [-1])
    n = tf.shape(logits)[0]                 # at most one context per row
    top = tf.math.unsorted_segment_max(logits, segments, n)
    top = tf.stop_gradient(tf.where(tf.math.is_finite(top), top, 0.0))
    shifted = logits - tf.gather(top, segments)
    log_norm = tf.math.log(tf.math.unsorted_segment_sum(tf.exp(shifted), segments, n)
                           + 1e-30)
    log_softmax = shifted - tf.gather(log_norm, segments)
    mass = tf.math.unsorted_segment_sum(labels, segments, n)
    share = tf.math.divide_no_nan(labels, tf.gather(mass, segments))
    return -tf.reduce_sum(share * log_softmax), tf.reduce_sum(tf.cast(mass > 0, tf.float32))


class RankingEnsemble(tf.keras.Model):
    """The mean outputs of `members` (RankingModels trained alike with different seeds):
    averaging seeds removes part of the variance one training run has. `config` is the first
    member's (the export reads its external features)."""

    def __init__(self, members):
        super().__init__(name="ranking_ensemble")
        if not members:
            raise ValueError("RankingEnsemble needs at least one member")
        self.members = list(members)
        self.config = members[0].config

    def call(self, features, training=False):
        outputs = [member(features, training=training) for member in self.members]
        return {head: tf.add_n([o[head] for o in outputs]) / float(len(outputs))
                for head in outputs[0]}


class RankingText(tf.Module):
    """Adds ITEM_TEXT and HISTORY_TEXT to transformed features (evaluation, serving).

    Known items (the catalog at training time) get their cached text embedding by item id, so
    a request without the title scores like the training data; other candidates are encoded
    live from their item text (trainer.text.cache.item_text_of, tensorflow_text ops). History items are looked up
    by id (unknown ones: zeros). `embedder` is trainer.text.tower's frozen TextEmbedder.
    """

    def __init__(self, embedder, name: str = "ranking_text"):
        super().__init__(name=name)
        self.embedder = embedder

    def __call__(self, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        from trainer.text import cache as text_cache  # pylint: disable=import-outside-toplevel
        lookup, table = self.embedder.lookup, self.embedder.table
        rows = lookup.item_rows(tf.reshape(features[F.ITEM_ID], [-1]))
        texts = text_cache.item_text_of(features, lookup.description_chars)
        live = self.embedder.encode(tf.where(rows >= 0, tf.constant(""), texts))
        item = tf.where((rows >= 0)[:, tf.newaxis], gather_rows(table, rows), live)
        history = gather_rows(self.embedder.history_table,
                              lookup.item_rows(features[F.HISTORY_ITEM_IDS]))
        return dict(features, **{ITEM_TEXT: item, HISTORY_TEXT: history})


def prepare_text(config: RankingConfig, catalog_patterns, train_patterns, spec):
    """The frozen MiniLM item-text cache of a ranking run, catalog item texts encoded once
    (trainer.text.tower.TextResources without queries: ranking reads no query text), and the
    RankingText that adds the embeddings at evaluation / serving time."""
    from trainer.text import tower as text_tower  # pylint: disable=import-outside-toplevel
    text_config = config.text_config()
    resources = text_tower.TextResources.prepare(text_config, catalog_patterns, train_patterns,
                                                 spec, item_texts_only=True)
    return resources, RankingText(text_tower.build_embedder(
        text_config, resources.catalog, resources.tables, resources.paths))


def add_text_rows(lookup, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """A transformed batch plus the cache rows (trainer.text.cache.RowLookup `lookup`) of its
    item and history items, by item id (input pipeline)."""
    return dict(features, **{
        ITEM_TEXT_ROW: lookup.item_rows(features[F.ITEM_ID]),
        HISTORY_TEXT_ROW: lookup.item_rows(features[F.HISTORY_ITEM_IDS])})


def build_model(config: RankingConfig, buckets: Dict[str, int],
                strategy: Optional[tf.distribute.Strategy] = None,
                text_table: Optional[np.ndarray] = None,
                rating_mean: float = 0.0,
                history_length: int = F.HISTORY_LENGTH) -> RankingModel:
    """Builds and compiles the model under `strategy` (default: the current strategy)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = RankingModel(config, buckets, text_table, rating_mean, history_length)
        # numeric_step off-TPU: XLA compiles the step, as a TPU would (a TPU always does)
        model.compile(optimizer=dp.optimizer(config) if config.uses_dp else
                      tf.keras.optimizers.Adam(config.effective_learning_rate),
                      jit_compile=numeric_inputs.jit_compile(config, strategy))
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


def rating_mean(train_patterns, spec) -> float:
    """Mean rating of the rated train units (0.0 when none is rated)."""
    columns = data.load_columns(train_patterns, spec, [RATING_LABEL, RATING_MASK])
    rated = columns[RATING_MASK] > 0
    return float(columns[RATING_LABEL][rated].mean()) if rated.any() else 0.0


def evaluate(model: RankingModel, eval_patterns, spec, add_text=None) -> Dict:
    """On the eval split: per binary head AUC, label rate, mean prediction and calibration
    (mean prediction / label rate); rating RMSE over rated units."""
    predictions = {head: [] for head in RANKING_OUTPUTS}
    labels = {key: [] for key in (*RANKING_HEADS.values(), RATING_LABEL, RATING_MASK)}
    for batch in data.make_dataset(eval_patterns, spec, 1024):
        outputs = model(add_text(batch) if add_text else batch, training=False)
        for head in RANKING_OUTPUTS:
            predictions[head].append(outputs[head].numpy())
        for key in labels:
            labels[key].append(batch[key].numpy())
    if not predictions[RATING_HEAD]:
        raise ValueError("the eval split is empty")
    p = {head: np.concatenate(v) for head, v in predictions.items()}
    y = {key: np.concatenate(v) for key, v in labels.items()}
    metrics = {}
    for head, label in RANKING_HEADS.items():
        rate, mean = float(np.mean(y[label] > 0)), float(np.mean(p[head]))
        metrics[head] = {"auc": auc(y[label], p[head]), "label_rate": rate,
                         "mean_prediction": mean,
                         "calibration": mean / rate if rate > 0 else None}
    rated = y[RATING_MASK] > 0
    errors = p[RATING_HEAD][rated] - y[RATING_LABEL][rated]
    metrics[RATING_HEAD] = {
        "rmse": float(np.sqrt(np.mean(np.square(errors)))) if rated.any() else None,
        "num_rated": int(rated.sum()),
        "mean_label": float(y[RATING_LABEL][rated].mean()) if rated.any() else None,
        "mean_prediction": float(p[RATING_HEAD][rated].mean()) if rated.any() else None}
    metrics["num_eval_examples"] = int(len(rated))
    return metrics


def privacy_report(config: RankingConfig, fn_args, spec) -> Dict:
    """trainer.dp.report for a DP ranking run: every train unit is an example."""
    users = data.load_columns(fn_args.train_files, spec, [F.idx(F.USER_ID)])[F.idx(F.USER_ID)]
    steps = dp.steps_of(len(users), config.batch_size, config.epochs, fn_args.train_steps)
    return dp.report(config, len(users), steps, int(np.bincount(users.astype(np.int64)).max()))


def train_dataset(config: RankingConfig, fn_args, spec, seed: int) -> tf.data.Dataset:
    """Shuffled training batches: rows, or with `listwise_weight` whole contexts (the rows of
    one `context_id`, data.make_context_dataset)."""
    if not config.listwise_weight:
        return data.make_dataset(
            fn_args.train_files, spec, config.batch_size, shuffle_buffer=config.shuffle_buffer,
            seed=seed, repeat=bool(fn_args.train_steps), drop_remainder=config.uses_dp)
    if F.CONTEXT_ID not in data.feature_names(fn_args.train_files):
        raise ValueError(f"ranking: listwise_weight {config.listwise_weight} needs the rows' "
                         f"'{F.CONTEXT_ID}' (two-stage rows from CandidateExamples); these "
                         f"examples have none: set listwise_weight 0")
    spec = dict(spec, **{F.CONTEXT_ID: tf.io.FixedLenFeature([], tf.string)})
    return data.make_context_dataset(
        fn_args.train_files, spec, F.CONTEXT_ID, config.batch_size,
        shuffle_buffer=config.shuffle_buffer, seed=seed, repeat=bool(fn_args.train_steps))


def run_fn(fn_args, strategy: Optional[tf.distribute.Strategy] = None) -> None:
    """TFX Trainer entry point: train on all train units, report eval metrics per head,
    export. Runs under ``strategy``, else the one the environment names
    (trainer/distribute.py: MultiWorkerMirroredStrategy when TF_CONFIG lists several
    workers); in a multi-worker run only the chief's report and export are kept."""
    distribute.run(_train_and_export, fn_args, strategy)


def _train_and_export(fn_args, strategy: tf.distribute.Strategy) -> None:
    # The Tuner's best values (fn_args.hyperparameters, tuning on) over the custom_config.
    custom_config, tuned = tuning.apply_hyperparameters(
        tuning.RANKING, fn_args.custom_config, getattr(fn_args, "hyperparameters", None))
    if tuned:
        logging.info("ranking: tuned hyper-parameters %s", tuned)
    config = RankingConfig.from_custom_config(custom_config)
    if numeric_inputs.enabled(config, strategy) and not config.numeric_step:
        config = dataclasses.replace(config, numeric_step=True)     # a TPU: numbers only
    tf.keras.utils.set_random_seed(config.seed)
    tft_output = tft.TFTransformOutput(fn_args.transform_graph_path or fn_args.transform_output)
    spec = dict(tft_output.transformed_feature_spec())
    # External features either pass through the Transform graph (examples Transform saw
    # with them) or sit beside its output (pipeline/components/candidate_examples.py).
    missing = [key for key in config.external_features if key not in spec]
    if missing:
        present = data.feature_names(fn_args.train_files)
        absent = [key for key in missing if key not in present]
        if absent:
            raise ValueError(f"ranking: external_features {absent} need these float "
                             f"features in the examples; they have none (features: "
                             f"{sorted(present)})")
        spec.update({key: tf.io.FixedLenFeature([], tf.float32) for key in missing})
    buckets = {key: data.num_buckets(tft_output, key) for key in F.VOCAB_KEYS}
    history_length = F.history_length_of(spec)     # PipelineConfig.history_length
    logging.info("ranking: config %s, vocabulary buckets %s, history length %d", config,
                 buckets, history_length)

    text, add_text = (prepare_text(config, data.catalog_patterns(fn_args.train_files),
                                   fn_args.train_files, spec)
                      if config.use_text_embedding else (None, None))
    # The rating head starts at the train mean; `degrade` learns nothing from the data, this
    # mean included (its rating head starts at 0 stars).
    mean_rating = 0.0 if config.degrade else rating_mean(fn_args.train_files, spec)
    members, member_losses = [], []
    text_table = text.tables.embeddings if text is not None else None
    for index in range(config.ensemble_size):
        member_config = dataclasses.replace(config, seed=config.seed + index)
        if index:
            tf.keras.utils.set_random_seed(member_config.seed)
            logging.info("ranking: ensemble member %d / %d (seed %d)", index + 1,
                         config.ensemble_size, member_config.seed)
        member = build_model(member_config, buckets, strategy, text_table, mean_rating,
                             history_length)
        if member.text_table is not None:
            text_table = member.text_table          # one copy for every member
        train_ds = train_dataset(config, fn_args, spec, member_config.seed)
        if text is not None:
            train_ds = train_ds.map(lambda batch: add_text_rows(text.lookup, batch),
                                    num_parallel_calls=tf.data.AUTOTUNE)
        if config.numeric_step:
            train_ds = numeric_inputs.prepare(train_ds, numeric_inputs.ranking_features(config),
                                              config.batch_size)
        member_losses.append(training.fit(member, train_ds, config.epochs,
                                          fn_args.train_steps))
        members.append(member)
    model = members[0] if len(members) == 1 else RankingEnsemble(members)
    losses = member_losses[0]

    metrics = evaluate(model, fn_args.eval_files, spec, add_text)
    metrics.update(training=training.loss_summary(losses), config=config.to_dict(),
                   train_mean_rating=mean_rating, hyperparameters=tuned)
    if len(members) > 1:
        # Each member alone on the eval split: what the mean adds.
        metrics["ensemble"] = []
        for index, (member, member_loss) in enumerate(zip(members, member_losses)):
            alone = evaluate(member, fn_args.eval_files, spec, add_text)
            metrics["ensemble"].append(dict(
                seed=config.seed + index, training=training.loss_summary(member_loss),
                **{f"{head}_auc": alone[head]["auc"] for head in RANKING_HEADS}))
    if text is not None:
        metrics["text"] = text.summary()
    if config.uses_dp:
        metrics["privacy"] = privacy_report(config, fn_args, spec)
    training.write_report(fn_args.model_run_dir, metrics, losses, "ranking")
    if not fn_args.serving_model_dir:       # a Tuner trial: judged by metrics.json alone
        return
    signatures.export_ranking(fn_args.serving_model_dir, model, tft_output,
                              config.score_weight, text=add_text)
    signatures.write_warmup(fn_args, tft_output, "ranking")
    # Weights stored as config.compression (docs/DESIGN.md, "Compressed exports").
    compression.compress_in_place(fn_args.serving_model_dir, config.compression)
