"""Keras layers shared by the retrieval and ranking models (tf-keras, TF_USE_LEGACY_KERAS=1)."""
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from trainer import autograph_setup  # noqa: F401  (fast first `fit`; see the module)

_NEG_INF = -1e9


class HistoryEncoder(tf.keras.layers.Layer):
    """Order-aware summary of an item history: [B, L] int indices (0 = padding) -> [B, D].

    Each position is its item embedding plus a learned position embedding (position 0 = most
    recent) plus, when given, the item's projected text embedding; an attention-pooling layer
    weights the real positions. An empty history gives 0. With `history_text` [B, L, H] the
    call returns (summary [B, D], text summary [B, H]): the history texts pooled with the
    same attention weights.
    """

    def __init__(self, item_embedding: tf.keras.layers.Embedding, history_length: int,
                 dim: int, text_projection: Optional[tf.keras.layers.Layer] = None, **kwargs):
        super().__init__(**kwargs)
        self.item_embedding = item_embedding
        self.history_length = history_length
        self.text_projection = text_projection
        self.position_embedding = tf.keras.layers.Embedding(history_length, dim,
                                                            name="position_embedding")
        self.attention_hidden = tf.keras.layers.Dense(dim, activation="tanh",
                                                      name="attention_hidden")
        self.attention_logit = tf.keras.layers.Dense(1, name="attention_logit")

    def call(self, history, history_text=None):
        mask = tf.not_equal(history, 0)                                   # [B, L]
        positions = self.position_embedding(tf.range(self.history_length))  # [L, D]
        x = self.item_embedding(history) + positions[tf.newaxis]          # [B, L, D]
        if history_text is not None:
            if self.text_projection is None:
                raise ValueError("HistoryEncoder got history_text but has no text_projection")
            x = x + self.text_projection(history_text)                    # [B, L, D]
        logits = tf.squeeze(self.attention_logit(self.attention_hidden(x)), -1)
        logits = tf.where(mask, logits, _NEG_INF)
        weights = tf.nn.softmax(logits, axis=-1) * tf.cast(mask, x.dtype)  # 0 if all masked
        summary = tf.einsum("bl,bld->bd", weights, x)
        if history_text is None:
            return summary
        return summary, tf.einsum("bl,blh->bh", weights, tf.cast(history_text, x.dtype))


class TextMatch(tf.keras.layers.Layer):
    """Appends the pretrained-text vector to a tower output, so the dot product of a query
    and a candidate gains `w * text_q . text_c`. Two learned weights (softplus of a logit
    each): `search_weight` where the query side holds a search text, `history_weight` where
    it holds the pooled history texts. Searches state their intent explicitly and are a
    minority of training examples, so sharing one weight let the history examples set it
    (measured: anonymous searches then ranked desk lamps above matching lipsticks).
    One instance is shared by both towers; only the query side carries the weight.

    Query side: call(embedding [B, D], text [B, H], is_search [B, 1] bool) -> [B, D + H].
    Candidate side: call(embedding, text) -> [B, D + H] (text unscaled).
    """

    def __init__(self, search_weight: float = 2.0, history_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        logit = lambda w: tf.keras.initializers.Constant(float(np.log(np.expm1(w))))
        self.search_logit = self.add_weight(name="search_weight_logit", shape=(),
                                            trainable=True, initializer=logit(search_weight))
        self.history_logit = self.add_weight(name="history_weight_logit", shape=(),
                                             trainable=True, initializer=logit(history_weight))

    @property
    def search_weight(self) -> tf.Tensor:
        return tf.nn.softplus(self.search_logit)

    @property
    def history_weight(self) -> tf.Tensor:
        return tf.nn.softplus(self.history_logit)

    def call(self, embedding, text, is_search=None):
        text = tf.cast(text, embedding.dtype)
        if is_search is not None:
            weight = tf.where(is_search, self.search_weight, self.history_weight)
            text = tf.cast(weight, embedding.dtype) * text
        return tf.concat([embedding, text], axis=1)


def hashed_tokens(text: tf.Tensor, num_buckets: int) -> tf.RaggedTensor:
    """The hashed lower-cased word tokens of [B] strings: ragged [B, None] int64 in
    [0, num_buckets). Core TensorFlow string ops (host-side: not on a TPU)."""
    text = tf.strings.lower(tf.reshape(text, [-1]), encoding="utf-8")
    text = tf.strings.regex_replace(text, r"[^\p{L}\p{N}]+", " ")
    return tf.strings.to_hash_bucket_fast(tf.strings.split(text), num_buckets)


class HashedBagOfWords(tf.keras.layers.Layer):
    """Mean embedding of the hashed lower-cased word tokens of a text: [B] string -> [B, D].

    Empty text gives 0. Core TensorFlow string ops only, so exported models need nothing else.
    The input may instead be the tokens already hashed in the input pipeline
    (trainer/numeric_inputs.py: [B, T] int64 from `hashed_tokens`, -1 = padding): the same
    mean over the first T tokens, with numeric ops only (a TPU's training step).
    """

    def __init__(self, num_buckets: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.num_buckets = num_buckets
        self.embedding = tf.keras.layers.Embedding(num_buckets, dim, name="token_embedding")

    def call(self, text):
        if text.dtype != tf.string:
            return self._mean_of_ids(text)
        ids = hashed_tokens(text, self.num_buckets)                       # ragged [B, None]
        vectors = tf.ragged.map_flat_values(self.embedding, ids)          # [B, None, D]
        total = tf.reduce_sum(vectors, axis=1)
        count = tf.cast(tf.maximum(ids.row_lengths(), 1), total.dtype)
        return total / count[:, tf.newaxis]

    def _mean_of_ids(self, ids):
        """[B, T] token ids, -1 = padding -> [B, D]."""
        present = ids >= 0
        vectors = self.embedding(tf.where(present, ids, tf.zeros_like(ids)))   # [B, T, D]
        weights = tf.cast(present, vectors.dtype)[..., tf.newaxis]
        total = tf.reduce_sum(vectors * weights, axis=1)
        count = tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
        return total / count


def mlp(hidden_units: Sequence[int], output_dim: int = 0, name: str = "mlp",
        output_activation=None) -> tf.keras.Sequential:
    """ReLU dense layers, then an optional linear (or `output_activation`) output layer."""
    layers = [tf.keras.layers.Dense(u, activation="relu") for u in hidden_units]
    if output_dim:
        layers.append(tf.keras.layers.Dense(output_dim, activation=output_activation))
    return tf.keras.Sequential(layers, name=name)


def as_column(x, dtype=tf.float32):
    """[B] -> [B, 1] in `dtype` (dense numeric features next to embeddings)."""
    return tf.reshape(tf.cast(x, dtype), [-1, 1])


def global_batch_mean(loss_sum: tf.Tensor, local_batch_size) -> tf.Tensor:
    """Sum of per-example losses on this replica -> its share of the global-batch mean.

    Gradients are summed over replicas, so dividing by the global batch (the local batch
    sizes summed over replicas, which also holds for a last partial batch split unevenly)
    gives the mean loss under any tf.distribute strategy and batch size.
    """
    local = tf.cast(local_batch_size, loss_sum.dtype)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return loss_sum / local
    return loss_sum / tf.maximum(context.all_reduce(tf.distribute.ReduceOp.SUM, local), 1.0)


def global_batch_candidates(candidates: tf.Tensor, *aligned: Optional[tf.Tensor]):
    """In-batch softmax negatives from the whole global batch, not this replica's share.

    Under N replicas each one holds 1/N of the global batch, so an in-batch softmax computed
    per replica would score each query against 1/N of the candidates a single process sees:
    fewer, easier negatives, and a model that depends on how many machines trained it. Here
    every replica gathers all replicas' candidate rows and rotates them so that its own rows
    come first, in order: row i is still the positive of local query i (TFRS `Retrieval`
    labels the diagonal) and the other replicas' rows follow as extra negatives; the
    gradient of each row flows back to the replica that computed it. `aligned` tensors
    (candidate ids, sampling probabilities, pair masks; None passes through) get the same
    treatment. One replica (the default strategy): unchanged. Local batches may differ in
    size (a last partial batch).

    The gather is a sum all-reduce of zero-filled blocks: `ReplicaContext.all_gather` goes
    through a merge call whose destination is the tensor's device, which is unset inside
    Keras's train step under MultiWorkerMirroredStrategy (TF 2.16: "destinations can not be
    empty"), while all-reduce runs in the replica context on every strategy. The blocks'
    sizes are all-reduced too, except on a TPU, where every replica has the same static
    batch: there all shapes stay compile-time constants for XLA (`scatter_nd` places the
    block, `gather` rotates; not run here, no TPU). Elsewhere a replica's static shape says
    nothing about the others' (MirroredStrategy traces each replica with its own split)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return (candidates, *aligned)
    replicas = context.num_replicas_in_sync
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    on_tpu = isinstance(tf.distribute.get_strategy(), (
        tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))
    if on_tpu and candidates.shape[0] is not None:   # TPU: the same static batch everywhere
        local = int(candidates.shape[0])
        offset, total = replica * local, local * replicas
    else:
        local = tf.shape(candidates)[0]
        sizes = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                   tf.one_hot(replica, replicas, dtype=tf.int32) * local)
        offset, total = tf.reduce_sum(sizes[:replica]), tf.reduce_sum(sizes)
    rows = (offset + tf.range(local))[:, tf.newaxis]           # this replica's block
    own_first = (tf.range(total) + offset) % total              # then the later replicas'

    def gathered(x):
        block = tf.scatter_nd(rows, x, tf.concat([[total], tf.shape(x)[1:]], axis=0))
        return tf.gather(context.all_reduce(tf.distribute.ReduceOp.SUM, block), own_first)

    return (gathered(candidates), *[None if a is None else gathered(a) for a in aligned])
