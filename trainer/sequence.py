"""Transformer history encoder of the retrieval query tower (SASRec / Bert4Rec style, issue #15).

`SequenceEncoder` reads the same inputs as trainer/layers.py `HistoryEncoder` (history item
indices [B, L], 0 = padding, position 0 = most recent; optionally the items' text embeddings
[B, L, H]) and replaces its attention pooling by `num_layers` self-attention blocks. Its
objectives (next item on every prefix, masked items) are in trainer/sequence_objective.py.
"""
from typing import Optional

import tensorflow as tf

from trainer import autograph_setup  # noqa: F401  (fast first `fit`; see the module)


class SequenceEncoder(tf.keras.layers.Layer):
    """Self-attention over an item history: [B, L] int indices (0 = padding) -> [B, D].

    Each position's input is its item vector (`item_vectors`: the shared item-id embedding
    plus, when given, the projected text embedding) plus a learned position embedding, then
    `num_layers` pre-LayerNorm blocks (multi-head self-attention, feed-forward, residual
    dropout) and a final LayerNorm. Padding is never attended to (key mask).

    Order: the input order is kept, so position 0 is always the most recent item, as in
    `HistoryEncoder`: the readout position and its position embedding then mean "now" for
    every user whatever the history length (SASRec gets the same by left-padding an
    oldest-first sequence). `causal`: position t attends only to itself and older items
    (positions >= t), so its output summarises the prefix that ends at t and can be trained
    to predict the item at t - 1, the next more recent one. Otherwise every position sees the
    whole history (Bert4Rec).

    The user representation (`call`, `readout`) is the output at the most recent real
    position in both modes: in causal mode it is the prefix that holds the whole history, in
    bidirectional mode one position that sees everything (no extra [CLS] input needed). An
    empty history gives 0, as in `HistoryEncoder`. With `history_text` [B, L, H] the call
    returns (summary [B, D], text summary [B, H]): the mean of the real positions' texts
    (for the text-match term; self-attention has no single weight per position to pool with).

    `masked` (bool [B, L], bidirectional mode): those positions' item vectors are replaced by
    a learned [MASK] vector (their position embedding stays), for the masked-item objective.
    """

    def __init__(self, item_embedding: tf.keras.layers.Embedding, history_length: int,
                 dim: int, num_layers: int = 2, num_heads: int = 2, dropout: float = 0.2,
                 causal: bool = True, text_projection: Optional[tf.keras.layers.Layer] = None,
                 **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"SequenceEncoder: dim {dim} is not divisible by {num_heads} heads")
        self.item_embedding = item_embedding
        self.history_length = history_length
        self.causal = causal
        self.text_projection = text_projection
        self.position_embedding = tf.keras.layers.Embedding(history_length, dim,
                                                            name="position_embedding")
        self.input_dropout = tf.keras.layers.Dropout(dropout)
        self.blocks = [_Block(dim, num_heads, dropout, name=f"block_{i}")
                       for i in range(num_layers)]
        self.output_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="output_norm")
        self.mask_vector = (None if causal else self.add_weight(
            name="mask_vector", shape=(dim,), trainable=True,
            initializer=tf.keras.initializers.TruncatedNormal(stddev=0.02)))

    def item_vectors(self, history, history_text=None):
        """Each position's item vector without its position: [B, L, D]. The inputs of the
        encoder and the targets of its objectives."""
        x = self.item_embedding(history)
        if history_text is not None:
            if self.text_projection is None:
                raise ValueError("SequenceEncoder got history_text but has no text_projection")
            x = x + self.text_projection(history_text)
        return x

    def attention_mask(self, history):
        """[B, L, L] bool: query position t may attend to key position s. Real keys only (and
        in causal mode s >= t); every position attends to itself, so no row is empty."""
        real = tf.not_equal(history, 0)[:, tf.newaxis, :]                 # [B, 1, L]
        ones = tf.ones([self.history_length, self.history_length])
        allowed = real
        if self.causal:
            allowed = tf.logical_and(allowed, tf.linalg.band_part(ones, 0, -1) > 0)
        return tf.logical_or(allowed, tf.linalg.band_part(ones, 0, 0) > 0)

    def sequence_outputs(self, history, history_text=None, masked=None, training=None):
        """Every position's output [B, L, D] (0 at padding). In causal mode position t's
        output depends only on positions >= t."""
        x = self.item_vectors(history, history_text)
        if masked is not None:
            if self.mask_vector is None:
                raise ValueError("SequenceEncoder: masked positions need bidirectional mode")
            x = tf.where(masked[..., tf.newaxis], tf.cast(self.mask_vector, x.dtype), x)
        x = x + self.position_embedding(tf.range(self.history_length))[tf.newaxis]
        x = self.input_dropout(x, training=training)
        mask = self.attention_mask(history)
        for block in self.blocks:
            x = block(x, mask, training=training)
        x = self.output_norm(x)
        return x * tf.cast(tf.not_equal(history, 0), x.dtype)[..., tf.newaxis]

    @staticmethod
    def readout(outputs, history):
        """The output at the most recent real position: [B, D]; 0 for an empty history."""
        real = tf.not_equal(history, 0)
        first = tf.argmax(tf.cast(real, tf.int32), axis=1, output_type=tf.int32)
        summary = tf.gather(outputs, first, axis=1, batch_dims=1)
        return summary * tf.cast(tf.reduce_any(real, axis=1, keepdims=True), outputs.dtype)

    def call(self, history, history_text=None, training=None):
        outputs = self.sequence_outputs(history, history_text, training=training)
        summary = self.readout(outputs, history)
        if history_text is None:
            return summary
        real = tf.cast(tf.not_equal(history, 0), tf.float32)[..., tf.newaxis]  # [B, L, 1]
        text = tf.reduce_sum(tf.cast(history_text, tf.float32) * real, axis=1)
        return summary, text / tf.maximum(tf.reduce_sum(real, axis=1), 1.0)


class _Block(tf.keras.layers.Layer):
    """One pre-LayerNorm transformer block: x + MHA(LN(x)), then x + FFN(LN(x)); dropout on
    the attention weights and on both residual branches. FFN: dim -> 4 dim (GELU) -> dim."""

    def __init__(self, dim: int, num_heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6,
                                                                 name="attention_norm")
        self.attention = tf.keras.layers.MultiHeadAttention(
            num_heads, dim // num_heads, dropout=dropout, name="attention")
        self.feed_forward_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6,
                                                                    name="feed_forward_norm")
        self.feed_forward = tf.keras.Sequential(
            [tf.keras.layers.Dense(4 * dim, activation="gelu"), tf.keras.layers.Dense(dim)],
            name="feed_forward")
        self.attention_dropout = tf.keras.layers.Dropout(dropout)
        self.feed_forward_dropout = tf.keras.layers.Dropout(dropout)

    def call(self, x, mask, training=None):
        h = self.attention_norm(x)
        h = self.attention(h, h, attention_mask=mask, training=training)
        x = x + self.attention_dropout(h, training=training)
        h = self.feed_forward(self.feed_forward_norm(x), training=training)
        return x + self.feed_forward_dropout(h, training=training)
