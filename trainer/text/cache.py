"""Per-run text caches of the retrieval towers: which texts exist, and their encodings.

Built once per run: the item texts of the catalog split ("title | brand | category path", then
the description's first `description_chars` characters when the setting and the item have one) and
the search queries of the train split, each encoded once with the pretrained MiniLM
(trainer/text/encoder.py). The input pipeline maps strings to rows of these tables
(`RowLookup.add_rows`, host-side hash tables), so the towers only gather by integer row on any
device; strings absent from the cache get row -1 (trainer/text/tower.py encodes them live at
evaluation and serving time).
"""
import dataclasses
import time
from typing import Dict, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from trainer import data
from trainer import features as F
from trainer.text import embedding_store
from trainer.text import encoder as text_encoder

# Row features added by `RowLookup.add_rows` (-1 = no text: empty, padding or not cached).
ITEM_TEXT_ROW = "item_text_row"          # [B] int32: the candidate's item text
QUERY_TEXT_ROW = "query_text_row"        # [B] int32: the search query
HISTORY_TEXT_ROW = "history_text_row"    # [B, L] int32: each history item's text
ROW_KEYS = (ITEM_TEXT_ROW, QUERY_TEXT_ROW, HISTORY_TEXT_ROW)
_SEPARATOR = " | "


def item_text(title: tf.Tensor, brand: tf.Tensor, category: tf.Tensor,
              description: Optional[tf.Tensor] = None, description_chars: int = 0) -> tf.Tensor:
    """The text the encoder reads for an item: non-empty parts of title, brand, category path
    and (when `description_chars` > 0) the description's first `description_chars` characters,
    joined by " | ", e.g. "Velvet Lipstick | Rosa | Beauty > Makeup > Lips". The description
    comes last, so it is what the encoder's `text_seq_len` wordpieces cut first. [B] strings in,
    [B] out; "" when all parts are empty."""
    parts = [tf.strings.strip(tf.reshape(x, [-1])) for x in (title, brand, category)]
    if description is not None and description_chars > 0:
        description = tf.strings.substr(tf.strings.strip(tf.reshape(description, [-1])), 0,
                                        description_chars, unit="UTF8_CHAR")
        parts.append(tf.strings.strip(description))
    text = tf.strings.join(parts, separator=_SEPARATOR)
    text = tf.strings.regex_replace(text, r"( \| )+", _SEPARATOR)
    return tf.strings.regex_replace(text, r"^ \| | \| $", "")


def item_text_of(features, description_chars: int = 0) -> tf.Tensor:
    """`item_text` of a feature mapping (a batch, transformed or raw columns) with TITLE, BRAND,
    CATEGORY and, when `description_chars` > 0, DESCRIPTION."""
    description = features[F.DESCRIPTION] if description_chars > 0 else None
    return item_text(features[F.TITLE], features[F.BRAND], features[F.CATEGORY], description,
                     description_chars)


def gather_rows(table: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """Rows of `table` [N, H] for int `rows` of any shape S -> [*S, H]; row -1 gives zeros."""
    out = tf.cast(tf.gather(table, tf.maximum(rows, 0)), tf.float32)
    return out * tf.cast(rows >= 0, tf.float32)[..., tf.newaxis]

@dataclasses.dataclass
class TextCatalog:
    """The cached texts: unique item texts first, then train queries that are no item text."""

    texts: np.ndarray          # [N] bytes
    item_ids: np.ndarray       # [M] bytes: catalog item ids
    item_rows: np.ndarray      # [M] int32: row of each catalog item's text in `texts`
    num_item_texts: int        # texts[:num_item_texts] are item texts
    description_chars: int = 0  # how the item texts were built (item_text_of); 0 = no description

    @property
    def size(self) -> int:
        return len(self.texts)

    def items_only(self) -> "TextCatalog":
        """The same catalog without the train queries (what an export may keep: shoppers'
        searches are personal data, docs/privacy.md)."""
        n = self.num_item_texts
        return TextCatalog(self.texts[:n], self.item_ids, self.item_rows, n,
                           self.description_chars)


def collect_texts(catalog_patterns: Sequence[str], train_patterns: Sequence[str],
                  spec: Dict, description_chars: int = 0) -> TextCatalog:
    """Item texts of the transformed catalog split and non-empty queries of the train split."""
    keys = [F.ITEM_ID, F.TITLE, F.BRAND, F.CATEGORY] + (
        [F.DESCRIPTION] if description_chars > 0 else [])
    catalog = data.load_columns(catalog_patterns, spec, keys)
    if not len(catalog[F.ITEM_ID]):
        raise ValueError(f"the catalog split {list(catalog_patterns)} has no items to encode")
    texts = item_text_of(catalog, description_chars).numpy()
    _, first = np.unique(catalog[F.ITEM_ID], return_index=True)
    order = np.sort(first)
    item_ids, item_texts = catalog[F.ITEM_ID][order], texts[order]
    unique_items = list(dict.fromkeys(t for t in item_texts.tolist() if t))
    queries = data.load_columns(train_patterns, spec, [F.QUERY])[F.QUERY]
    known = set(unique_items)
    extra = sorted({q for q in queries.tolist() if q and q not in known})
    all_texts = np.array(unique_items + extra, dtype=object)
    row = {t: i for i, t in enumerate(unique_items)}
    item_rows = np.array([row.get(t, -1) for t in item_texts.tolist()], np.int32)
    return TextCatalog(all_texts, item_ids, item_rows, len(unique_items), description_chars)


class RowLookup(tf.Module):
    """Strings -> rows of the cached text tables (-1 when absent), with static hash tables."""

    def __init__(self, catalog: TextCatalog, name: str = "text_rows"):
        super().__init__(name=name)
        self.size = catalog.size
        self.description_chars = catalog.description_chars     # item_text_of's setting
        self._text_rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(catalog.texts.astype(bytes), tf.string),
                tf.range(catalog.size, dtype=tf.int64)), default_value=-1)
        self._item_rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(catalog.item_ids.astype(bytes), tf.string),
                tf.constant(catalog.item_rows, tf.int64)), default_value=-1)

    def text_rows(self, texts: tf.Tensor) -> tf.Tensor:
        """Any-shape strings -> int32 rows of the same shape ("" and unknown -> -1)."""
        rows = self._text_rows.lookup(texts)
        return tf.cast(tf.where(tf.equal(texts, ""), tf.constant(-1, tf.int64), rows), tf.int32)

    def item_rows(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Any-shape item ids -> int32 rows of their catalog text (padding, unknown -> -1)."""
        rows = self._item_rows.lookup(item_ids)
        return tf.cast(tf.where(tf.equal(item_ids, ""), tf.constant(-1, tf.int64), rows),
                       tf.int32)

    def add_rows(self, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """Transformed-feature batch -> the same batch plus the ROW_KEYS features."""
        out = dict(features)
        out[ITEM_TEXT_ROW] = self.text_rows(item_text_of(features, self.description_chars))
        out[QUERY_TEXT_ROW] = self.text_rows(tf.reshape(features[F.QUERY], [-1]))
        out[HISTORY_TEXT_ROW] = self.item_rows(features[F.HISTORY_ITEM_IDS])
        return out


@dataclasses.dataclass
class TextTables:
    """Encodings of every cached text (row i = `TextCatalog.texts[i]`)."""

    embeddings: np.ndarray                 # [N, H] float32: pretrained, mean-pooled, L2-normed
    lower_hidden: Optional[np.ndarray] = None   # [N, L, H] float16 after the frozen layers
    token_ids: Optional[np.ndarray] = None      # [N, L] int32 (top_layers, full)
    padding_mask: Optional[np.ndarray] = None   # [N, L] int32 (top_layers, full)
    seconds: float = 0.0
    stored_rows: int = 0                   # embeddings read from the store, not encoded


def trim_padding(inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """Encoder inputs ([n, L, ...] tensors with "padding_mask" [n, L]) cut to the longest
    real text of the batch: the same outputs (padding is masked), less compute."""
    length = tf.maximum(tf.reduce_max(tf.reduce_sum(inputs["padding_mask"], axis=1)), 1)
    return {key: value[:, :length] for key, value in inputs.items()}


def same_length_batches(lengths: np.ndarray, batch_size: int):
    """Positions of ``lengths`` in batches of at most ``batch_size`` texts of one length
    (shortest first). With every batch padded to ``batch_size`` rows and cut to its length,
    each text is encoded with the same shapes and so the same float32 operations whatever the
    other texts are: a text encoded today alone equals the same text encoded yesterday with
    the whole catalog, bit for bit (what the embedding store relies on)."""
    order = np.argsort(lengths, kind="stable")
    for length in np.unique(lengths):
        same = order[lengths[order] == length]
        for begin in range(0, len(same), batch_size):
            yield same[begin:begin + batch_size]


def encode_tables(texts: np.ndarray, paths: text_encoder.TextEncoderPaths, mode: str,
                  num_frozen_layers: int = 0, batch_size: int = 64,
                  store: Optional[embedding_store.EmbeddingStore] = None,
                  stored_texts: Optional[int] = None) -> TextTables:
    """Encodes `texts` once with the pretrained encoder for `mode` (frozen | top_layers | full):
    always the final embeddings; top_layers also the outputs of the first
    `num_frozen_layers` layers; top_layers and full also the token ids. Texts are batched by
    their length (same_length_batches), so no padding is encoded.

    `store` (trainer/text/embedding_store.py): final embeddings already stored are read, not
    encoded, and the ones encoded here are added. top_layers encodes every text all the same
    (the lower layers' outputs are not stored) but takes stored embeddings where it finds
    them, so every mode reads one embedding per text. `stored_texts`: only `texts[:k]` use
    the store (a TextCatalog's item texts: its search queries are personal data and never
    stored, docs/privacy.md); None = all."""
    start = time.time()
    texts = np.asarray(texts, dtype=object)
    info = paths.info()
    length, width = info["seq_len"], info["hidden_dim"]
    n = len(texts)
    embeddings = np.zeros([n, width], np.float32)
    stored = np.zeros([n], bool)
    storable = n if stored_texts is None else min(int(stored_texts), n)
    if store is not None:
        embeddings[:storable], stored[:storable] = store.lookup(texts[:storable])
    new = np.flatnonzero(~stored)
    # top_layers needs every text's lower-layer outputs; frozen and full only the new texts'
    encode_rows = np.arange(n) if mode == "top_layers" else new
    token_rows = np.arange(n) if mode in ("top_layers", "full") else new
    token_ids = np.zeros([n, length], np.int32)
    padding_mask = np.zeros([n, length], np.int32)
    if len(token_rows):
        tokenizer = text_encoder.load_tokenizer(paths)
        for begin in range(0, len(token_rows), 1024):
            rows = token_rows[begin:begin + 1024]
            tokens = tokenizer(tf.constant(texts[rows].tolist(), tf.string))
            token_ids[rows] = tokens["token_ids"].numpy()
            padding_mask[rows] = tokens["padding_mask"].numpy()
    lower_hidden = np.zeros([n, length, width], np.float16) if mode == "top_layers" else None
    if len(encode_rows):
        lower, upper = text_encoder.encoder_stages(text_encoder.load_encoder(paths),
                                                   num_frozen_layers)

        @tf.function(input_signature=[{"token_ids": tf.TensorSpec([None, None], tf.int32),
                                       "padding_mask": tf.TensorSpec([None, None], tf.int32)}])
        def encode(tokens):
            stage = lower(trim_padding(tokens), training=False)
            return stage["hidden"], upper(stage, training=False)["embedding"]

        fresh = ~stored
        for rows in same_length_batches(padding_mask[encode_rows].sum(axis=1), batch_size):
            rows = encode_rows[rows]
            # every batch [batch_size, its texts' length]: a text's encoding is then the
            # same whichever texts share its batch (see same_length_batches)
            padded = np.concatenate([rows, np.repeat(rows[:1], batch_size - len(rows))])
            hidden, embedding = encode({"token_ids": token_ids[padded],
                                        "padding_mask": padding_mask[padded]})
            hidden, embedding = hidden.numpy()[:len(rows)], embedding.numpy()[:len(rows)]
            keep = fresh[rows]
            embeddings[rows[keep]] = embedding[keep]
            if lower_hidden is not None:
                lower_hidden[rows, :hidden.shape[1]] = hidden.astype(np.float16)
    to_store = new[new < storable]
    if store is not None and len(to_store):
        store.add(texts[to_store], embeddings[to_store])
    tables = TextTables(embeddings=embeddings, lower_hidden=lower_hidden,
                        stored_rows=int(stored.sum()))
    if mode in ("top_layers", "full"):
        tables.token_ids, tables.padding_mask = token_ids, padding_mask
    tables.seconds = time.time() - start
    logging.info("text cache: %d texts (%d from the embedding store, %d encoded; %s mode) in "
                 "%.1f s", n, tables.stored_rows, len(encode_rows), mode, tables.seconds)
    return tables
