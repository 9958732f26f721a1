"""tf.Transform `preprocessing_fn` of the shoprec pipeline (Transform component).

Index convention of every vocabulary feature (`features.idx(key)`): 0 = "" (missing /
padding), 1..V = the vocabulary (analysed on the train split), V+1 = out of vocabulary.
`trainer.data.num_buckets` gives V + 2.

The history width L (PipelineConfig.history_length) comes from the Transform component's
``custom_config`` ({"history_length": L}; TFX binds it to ``preprocessing_fn``'s
``custom_config`` argument) and is checked against the raw schema's fixed width when the
history arrives dense; without either, features.HISTORY_LENGTH.
"""
import tensorflow as tf
import tensorflow_transform as tft

from trainer import features as F

# Vocabulary features analysed on their own values (the item-id vocabulary also takes the
# history ids: built separately); their vocabularies are named by the raw key.
_OWN_VOCAB_KEYS = tuple(key for key in F.VOCAB_KEYS if key != F.ITEM_ID)
# Raw strings kept for text encoders, for returning ids and for evaluation.
_PASSTHROUGH_STRINGS = (F.ITEM_ID, F.TITLE, F.DESCRIPTION, F.BRAND, F.CATEGORY, F.QUERY)


def _to_dense(x, default, width=1):
    """A raw feature ([B,1] or [B,n] dense, or sparse) as a dense [B, width] tensor."""
    if isinstance(x, tf.RaggedTensor):
        x = x.to_tensor(default_value=default)
    elif isinstance(x, tf.sparse.SparseTensor):
        x = tf.sparse.to_dense(x, default_value=default)
    x = x[:, :width]
    return tf.pad(x, [[0, 0], [0, width - tf.shape(x)[1]]], constant_values=default)


def _scalar(x, default):
    """A raw single-valued feature as [B]."""
    return tf.reshape(_to_dense(x, default), [-1])


def _vocabulary(values, name):
    """Vocabulary of the non-empty strings of `values` (any shape), saved as `name`."""
    non_empty = tf.sparse.from_dense(tf.reshape(values, [-1, 1]))  # drops ""
    return tft.vocabulary(non_empty, vocab_filename=name)


def _indices(values, vocab):
    """Index convention of the module docstring: "" -> 0, known -> 1..V, OOV -> V+1."""
    looked_up = tft.apply_vocabulary(values, vocab, num_oov_buckets=1) + 1
    return tf.where(tf.equal(values, ""), tf.zeros_like(looked_up), looked_up)


def history_width(history, custom_config=None) -> int:
    """The history width L of the run (module docstring): ``custom_config["history_length"]``
    and/or the static width of a dense raw history [B, L]; ValueError when they disagree."""
    configured = (custom_config or {}).get("history_length")
    if configured is not None:
        configured = F.check_history_length(configured, "custom_config['history_length']")
    static = None
    if isinstance(history, tf.Tensor) and history.shape.rank == 2:
        static = history.shape[1]
    if configured is not None and static is not None and configured != static:
        raise ValueError(f"preprocessing_fn: custom_config['history_length'] is {configured} "
                         f"but the raw schema's {F.HISTORY_ITEM_IDS!r} has {static} entries "
                         "(the examples were written with another history_length)")
    return configured or static or F.HISTORY_LENGTH


def preprocessing_fn(inputs, custom_config=None):
    """Raw features (SchemaGen shapes: [B,1], history [B,L]) -> model features.

    Outputs: `*_idx` int64 indices ([B], history [B,L]), `price_z` float32 [B]
    (z-scored log1p price), `in_stock` int64 [B], raw strings [B] (item_id, title,
    description, brand, category, query) and history_item_ids [B,L], labels [B],
    and float32 [B] `retrieval_score` when the raw schema has it. L: `history_width`.
    """
    out = {}
    item_id = _scalar(inputs[F.ITEM_ID], "")
    width = history_width(inputs[F.HISTORY_ITEM_IDS], custom_config)
    history = _to_dense(inputs[F.HISTORY_ITEM_IDS], "", width)
    history = tf.reshape(history, [-1, width])  # static width for the schema

    # Items seen as targets or in histories share one vocabulary.
    item_vocab = _vocabulary(
        tf.concat([tf.reshape(item_id, [-1, 1]), history], axis=1), F.vocab_name(F.ITEM_ID))
    out[F.idx(F.ITEM_ID)] = _indices(item_id, item_vocab)
    out[F.idx(F.HISTORY_ITEM_IDS)] = _indices(history, item_vocab)
    out[F.HISTORY_ITEM_IDS] = history

    for key in _OWN_VOCAB_KEYS:
        values = _scalar(inputs[key], "")
        out[F.idx(key)] = _indices(values, _vocabulary(values, F.vocab_name(key)))

    price = tf.cast(_scalar(inputs[F.PRICE], 0.0), tf.float32)
    out[F.PRICE_Z] = tft.scale_to_z_score(tf.math.log1p(tf.maximum(price, 0.0)))
    out[F.IN_STOCK] = tf.cast(_scalar(inputs[F.IN_STOCK], 0), tf.int64)
    out[F.NUM_HISTORY] = tf.cast(_scalar(inputs[F.NUM_HISTORY], 0), tf.int64)

    for key in _PASSTHROUGH_STRINGS:
        out[key] = _scalar(inputs[key], "")
    for key in F.LABEL_KEYS:
        default = 0.0 if key in F.FLOAT_FEATURES else 0
        out[key] = _scalar(inputs[key], default)
    # Optional features pass through only when the raw schema has them (two-stage data).
    for key in F.OPTIONAL_FLOAT_FEATURES:
        if key in inputs:
            out[key] = tf.cast(_scalar(inputs[key], 0.0), tf.float32)
    return out
