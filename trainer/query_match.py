"""How well an item's text answers the unit's search query, as dense ranking features."""
import tensorflow as tf

from trainer import features as F


def _token_sets(text: tf.Tensor) -> tf.SparseTensor:
    """[B] strings -> sparse [B, n] sets of lower-cased word tokens."""
    text = tf.strings.lower(tf.reshape(text, [-1]), encoding="utf-8")
    text = tf.strings.regex_replace(text, r"[^\p{L}\p{N}]+", " ")
    return tf.strings.split(text).to_sparse()


class QueryMatch(tf.keras.layers.Layer):
    """[B] query, [B] item text -> [B, 2]: (has a query, share of query words in the item text).

    Clicks after a search follow the words the item matches: on the sample shop this share
    alone ranks eval clicks better than ids or categories (docs/DESIGN.md, "Models and
    BERT").
    """

    def call(self, query, item_text):
        query_tokens = _token_sets(query)
        item_tokens = _token_sets(item_text)
        # tf.sets ops need the same batch dimension on both sides, so pin it.
        batch = tf.shape(tf.reshape(query, [-1]), out_type=tf.int64)[0]
        query_tokens = tf.sparse.reset_shape(query_tokens, [batch, query_tokens.dense_shape[1]])
        item_tokens = tf.sparse.reset_shape(item_tokens, [batch, item_tokens.dense_shape[1]])
        num_query = tf.cast(tf.sets.size(query_tokens), tf.float32)
        shared = tf.cast(tf.sets.size(tf.sets.intersection(query_tokens, item_tokens)),
                         tf.float32)
        has_query = tf.cast(num_query > 0, tf.float32)
        out = tf.stack([has_query, shared / tf.maximum(num_query, 1.0)], axis=1)
        return tf.reshape(out, [-1, 2])                  # static width for Dense layers


def item_match_text(features) -> tf.Tensor:
    """The item text the query is matched in: "title brand category" ([B] strings)."""
    return tf.strings.join([features[F.TITLE], features[F.BRAND], features[F.CATEGORY]],
                           separator=" ")
