"""An id-only SASRec-style sequential recommender (Kang & McAuley, ICDM 2018), tf-keras.

Causal self-attention over the last ``max_len`` items (left-padded, id 0 = padding), pre-norm
transformer blocks, item embeddings tied with the output layer. Trained with full softmax
cross-entropy over all items at every position of the train sequences (as in Klenitskiy &
Vasilev, RecSys 2023), early-stopped on validation NDCG@10 (unfiltered), best weights kept.

Device-agnostic: pass a ``tf.distribute.Strategy`` (or a name, see ``make_strategy``); nothing
assumes a CPU. Set ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported (tf-keras).
"""
import json
import math
import os
import time

import numpy as np
import tensorflow as tf

from benchmarks.registry import Fitted


def make_strategy(strategy):
    """A tf.distribute.Strategy from an object or a name: "default", "mirrored", or
    "one_device:/gpu:0" (any device string)."""
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy in (None, "default"):
        return tf.distribute.get_strategy()
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if isinstance(strategy, str) and strategy.startswith("one_device:"):
        return tf.distribute.OneDeviceStrategy(strategy.split(":", 1)[1])
    raise ValueError(f"unknown strategy {strategy!r}: use a tf.distribute.Strategy, "
                     f"'default', 'mirrored' or 'one_device:<device>'")


class TransformerBlock(tf.keras.layers.Layer):
    """Pre-norm causal self-attention + point-wise feed-forward; [B, L, d] -> [B, L, d]."""

    def __init__(self, hidden, heads, dropout, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = tf.keras.layers.LayerNormalization(epsilon=1e-8)
        self.attention = tf.keras.layers.MultiHeadAttention(heads, hidden // heads,
                                                            dropout=dropout)
        self.norm2 = tf.keras.layers.LayerNormalization(epsilon=1e-8)
        self.ffn1 = tf.keras.layers.Dense(hidden, activation="gelu")
        self.ffn2 = tf.keras.layers.Dense(hidden)
        self.drop = tf.keras.layers.Dropout(dropout)

    def call(self, x, attention_mask, training=False):
        h = self.norm1(x)
        x = x + self.drop(self.attention(h, h, attention_mask=attention_mask,
                                         training=training), training=training)
        h = self.ffn2(self.drop(self.ffn1(self.norm2(x)), training=training))
        return x + self.drop(h, training=training)


class SASRec(tf.keras.Model):
    """Input int [B, L] of item ids (index + 1, 0 = padding); output hidden states [B, L, d]."""

    def __init__(self, n_items, max_len=50, hidden=64, layers=2, heads=1, dropout=0.5):
        super().__init__()
        self.n_items, self.max_len = n_items, max_len
        self.item_embedding = tf.keras.layers.Embedding(n_items + 1, hidden)
        self.position_embedding = tf.keras.layers.Embedding(max_len, hidden)
        self.drop = tf.keras.layers.Dropout(dropout)
        self.blocks = [TransformerBlock(hidden, heads, dropout) for _ in range(layers)]
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-8)
        self.scale = math.sqrt(hidden)

    def call(self, seq, training=False):
        length = tf.shape(seq)[1]
        valid = tf.cast(seq > 0, tf.float32)[:, :, None]                    # [B, L, 1]
        x = self.item_embedding(seq) * self.scale + self.position_embedding(tf.range(length))
        x = self.drop(x, training=training) * valid
        causal = tf.linalg.band_part(tf.ones((length, length), tf.bool), -1, 0)
        mask = tf.logical_and(causal[None], (seq > 0)[:, None, :])          # [B, L, L]
        for block in self.blocks:
            x = block(x, attention_mask=mask, training=training) * valid
        return self.final_norm(x)

    def item_logits(self, hidden):
        """Scores of every item (index order) for hidden states [..., d] -> [..., n_items]."""
        return tf.matmul(hidden, self.item_embedding.embeddings[1:], transpose_b=True)

    def train_step(self, data):
        inputs, targets = data
        with tf.GradientTape() as tape:
            hidden = self(inputs, training=True)
            where = tf.where(targets > 0)
            logits = self.item_logits(tf.gather_nd(hidden, where))
            labels = tf.gather_nd(targets, where) - 1
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
            # Gradients are summed over replicas: scale so the update is the global mean.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
        grads = tape.gradient(scaled, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


def pad_left(sequences, max_len, shift=1):
    """int32 [N, max_len]: the last ``max_len`` entries of each sequence (+ shift), left-padded
    with 0."""
    out = np.zeros((len(sequences), max_len), dtype=np.int32)
    for i, seq in enumerate(sequences):
        tail = np.asarray(seq[-max_len:], dtype=np.int64) if len(seq) else np.zeros(0, int)
        if len(tail):
            out[i, max_len - len(tail):] = tail + shift
    return out


def training_examples(train, max_len):
    """(inputs, targets) [N, max_len]: each sequence predicts its next item at every step."""
    usable = [np.asarray(s) for s in train if len(s) > 1]
    if not usable:
        raise ValueError("SASRec needs train sequences of at least 2 items")
    return (pad_left([s[:-1] for s in usable], max_len),
            pad_left([s[1:] for s in usable], max_len))


def make_scorer(model, max_len, batch_size=1024):
    """scorer(histories) -> float32 [U, n_items] from the hidden state of the last position."""
    @tf.function(input_signature=[tf.TensorSpec([None, max_len], tf.int32)])
    def score(seq):
        return model.item_logits(model(seq, training=False)[:, -1, :])

    def scorer(histories):
        seq = pad_left(histories, max_len)
        return np.concatenate([score(tf.constant(seq[i:i + batch_size])).numpy()
                               for i in range(0, len(seq), batch_size)] or
                              [np.zeros((0, model.n_items), np.float32)])
    return scorer


def fit_sasrec(task, seed, max_len=50, hidden=64, layers=2, heads=1, dropout=0.5,
               learning_rate=1e-3, batch_size=128, max_epochs=200, patience=5,
               select="ndcg@10", strategy="default", deterministic=False,
               checkpoint_dir=None):
    """Train on ``task.train``; keep the epoch with the best unfiltered validation ``select``.

    ``deterministic`` turns on TensorFlow op determinism (process-wide, slower).
    ``checkpoint_dir``: save the training state after every epoch and resume from it (same
    options and data only; a resumed run's shuffling differs from an uninterrupted one).
    Checkpoints hold weights learned from the data: keep them outside the repository.
    """
    tf.keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(strategy)
    inputs, targets = training_examples(task.train, max_len)
    dataset = (tf.data.Dataset.from_tensor_slices((inputs, targets))
               .shuffle(len(inputs), seed=seed, reshuffle_each_iteration=True)
               .batch(batch_size * strategy.num_replicas_in_sync)
               .prefetch(tf.data.AUTOTUNE))
    with strategy.scope():
        model = SASRec(task.n_items, max_len, hidden, layers, heads, dropout)
        model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
        model(tf.zeros((1, max_len), tf.int32))
        model.optimizer.build(model.trainable_variables)
    scorer = make_scorer(model, max_len, task.batch_size)
    fingerprint = {"seed": seed, "n_items": task.n_items, "examples": int(len(inputs)),
                   "targets": int((targets > 0).sum()), "max_len": max_len, "hidden": hidden,
                   "layers": layers, "heads": heads, "dropout": dropout,
                   "learning_rate": learning_rate, "batch_size": batch_size, "select": select}
    state = TrainingState(checkpoint_dir, model, fingerprint)
    epochs = range(len(state.curve) + 1, max_epochs + 1)
    bar = task.progress(epochs) if task.progress else epochs
    for epoch in ([] if state.stopped(patience) else bar):
        start = time.time()
        loss = model.fit(dataset, epochs=1, verbose=0).history["loss"][-1]
        metric = task.validate(scorer, ("unfiltered",))["unfiltered"][select]
        state.record(epoch, float(loss), metric, time.time() - start)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss:.3f}", **{select: f"{metric:.4f}"},
                            best=state.best_epoch)
        if state.stopped(patience):
            break
    model.set_weights(state.best_weights)
    return Fitted(scorer, {"best_epoch": state.best_epoch,
                           f"validation_{select}": state.best_metric,
                           "epochs_trained": len(state.curve), "curve": state.curve,
                           "resumed_at_epoch": state.resumed_at,
                           "replicas": strategy.num_replicas_in_sync})


class TrainingState:
    """Learning curve and best weights so far; saved to / resumed from ``directory``."""

    def __init__(self, directory, model, fingerprint):
        self.directory, self.model, self.fingerprint = directory, model, fingerprint
        self.curve, self.best_metric, self.best_epoch = [], -1.0, 0
        self.best_weights, self.resumed_at = model.get_weights(), None
        if directory is None:
            return
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if os.path.commonpath([os.path.realpath(directory), repo]) == repo:
            raise ValueError(f"checkpoint_dir {directory} is inside the repository: "
                             f"checkpoints are derived from research-only data")
        os.makedirs(directory, exist_ok=True)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=1)
        path = os.path.join(directory, "state.json")
        if os.path.exists(path):
            self._resume(path)

    def _resume(self, path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        if saved["fingerprint"] != self.fingerprint:
            raise ValueError(f"{path}: saved for other options or data "
                             f"({saved['fingerprint']}); use another checkpoint_dir")
        self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        with np.load(os.path.join(self.directory, "best_weights.npz")) as best:
            self.best_weights = [best[f"w{i}"] for i in range(len(best.files))]
        self.curve, self.best_metric = saved["curve"], saved["best_metric"]
        self.best_epoch, self.resumed_at = saved["best_epoch"], len(saved["curve"]) + 1

    def record(self, epoch, loss, metric, seconds):
        select = self.fingerprint["select"]
        self.curve.append({"epoch": epoch, "loss": loss, select: metric,
                           "seconds": round(seconds, 1)})
        if metric > self.best_metric:
            self.best_metric, self.best_epoch = metric, epoch
            self.best_weights = self.model.get_weights()
            if self.directory:
                tmp = os.path.join(self.directory, "best_weights.tmp.npz")
                np.savez(tmp, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
                os.replace(tmp, os.path.join(self.directory, "best_weights.npz"))
        if self.directory:
            self.manager.save(checkpoint_number=epoch)
            tmp = os.path.join(self.directory, "state.json.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"fingerprint": self.fingerprint, "curve": self.curve,
                           "best_metric": self.best_metric, "best_epoch": self.best_epoch}, f)
            os.replace(tmp, os.path.join(self.directory, "state.json"))

    def stopped(self, patience):
        """True once ``patience`` epochs passed without a better validation metric."""
        return bool(self.curve) and len(self.curve) - self.best_epoch >= patience
