"""MiniLM text parts of the retrieval towers: the training-time text layer and the text
embedder used for evaluation and serving.

Both produce the features the towers read (trainer/retrieval.py); a zero vector means "no
text" (empty query, history padding, unknown history item):

- `ITEM_TEXT`    [B, H]  the candidate's "title | brand | category path"
- `QUERY_TEXT`   [B, H]  the search query
- `HISTORY_TEXT` [B, L, H] each history item's item text (pretrained, never fine-tuned)

H = 384 (MiniLM), L = the history length (features.history_length_of the examples' spec).
"""
import dataclasses
import time
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from trainer import features as F
from trainer.text import cache as text_cache
from trainer.text import embedding_store
from trainer.text import encoder as text_encoder
from trainer.config import RetrievalConfig
from trainer.text.savedmodel_layer import SavedModelLayer

ITEM_TEXT = "item_text_embedding"
QUERY_TEXT = "query_text_embedding"
HISTORY_TEXT = "history_text_embedding"


class TrainingText(tf.keras.layers.Layer):
    """Text embeddings of a training batch from its cache rows (text_cache.ROW_KEYS).

    frozen: gathers the cached embeddings. top_layers: runs the trainable top
    `text_top_layers` layers on the cached outputs of the frozen lower layers. full: runs the
    whole trainable encoder on the cached token ids. Texts repeated in a batch are encoded
    once. History items always use the cached pretrained embeddings.
    """

    def __init__(self, config: RetrievalConfig, tables: text_cache.TextTables,
                 paths: text_encoder.TextEncoderPaths, **kwargs):
        super().__init__(name="text", **kwargs)
        self.mode = config.text_mode
        self.use_item_text = config.use_text
        self.use_query_text = config.use_query_text
        self.use_history_text = config.use_history and config.use_history_text
        self.embeddings = tf.Variable(tables.embeddings, trainable=False,
                                      name="pretrained_text_embeddings")
        self.encoder = None          # the loaded encoder whose weights train
        self.trainable_text = None
        if self.mode in ("top_layers", "full"):
            if tables.token_ids is None:
                raise ValueError(f"text_mode {self.mode!r} needs the token-id cache: build the "
                                 f"tables with text_cache.encode_tables(..., mode={self.mode!r})")
            self.encoder = text_encoder.load_encoder(paths)
            self.padding_mask = tf.Variable(tables.padding_mask, trainable=False,
                                            name="text_padding_mask")
        if self.mode == "top_layers":
            if tables.lower_hidden is None:
                raise ValueError("text_mode 'top_layers' needs the cached lower-layer outputs")
            frozen = len(self.encoder.transformer_layers) - config.text_top_layers
            _, upper = text_encoder.encoder_stages(self.encoder, frozen)
            self.trainable_text = SavedModelLayer(upper, trainable=True, output_key="embedding",
                                                  name="top_layers")
            self.lower_hidden = tf.Variable(tables.lower_hidden, trainable=False,
                                            name="text_lower_hidden")
        elif self.mode == "full":
            self.trainable_text = SavedModelLayer(self.encoder, trainable=True,
                                                  output_key="embedding", name="encoder")
            self.token_ids = tf.Variable(tables.token_ids, trainable=False,
                                         name="text_token_ids")

    @property
    def encoder_weights(self) -> List[tf.Variable]:
        """The encoder weights that train (empty in frozen mode)."""
        return self.trainable_text.trainable_weights if self.trainable_text is not None else []

    def _encode_rows(self, rows: tf.Tensor, training) -> tf.Tensor:
        """Embeddings [n, H] of cache rows [n] (-1 -> zeros)."""
        if self.trainable_text is None:
            return text_cache.gather_rows(self.embeddings, rows)
        unique, position = tf.unique(rows)
        safe = tf.maximum(unique, 0)
        mask = tf.gather(self.padding_mask, safe)
        if self.mode == "top_layers":
            inputs = {"hidden": tf.cast(tf.gather(self.lower_hidden, safe), tf.float32),
                      "padding_mask": mask}
        else:
            inputs = {"token_ids": tf.gather(self.token_ids, safe), "padding_mask": mask}
        encoded = self.trainable_text(text_cache.trim_padding(inputs), training=training)
        present = tf.cast(unique >= 0, encoded.dtype)[:, tf.newaxis]
        return tf.gather(encoded * present, position)

    def call(self, features: Dict[str, tf.Tensor], training=None) -> Dict[str, tf.Tensor]:
        out, rows, keys = {}, [], []
        if self.use_item_text:
            rows.append(tf.reshape(features[text_cache.ITEM_TEXT_ROW], [-1]))
            keys.append(ITEM_TEXT)
        if self.use_query_text:
            rows.append(tf.reshape(features[text_cache.QUERY_TEXT_ROW], [-1]))
            keys.append(QUERY_TEXT)
        if rows:
            encoded = self._encode_rows(tf.concat(rows, axis=0), training)
            out.update(zip(keys, tf.split(encoded, len(rows), axis=0)))
        if self.use_history_text:
            out[HISTORY_TEXT] = text_cache.gather_rows(
                self.embeddings, features[text_cache.HISTORY_TEXT_ROW])
        return out


class TextEmbedder(tf.Module):
    """Raw strings -> the text features, for evaluation and the exported signatures.

    Cached texts (catalog item texts, train queries) are looked up in `table`; any other
    non-empty text is tokenised and encoded in-graph (tensorflow_text ops), so new items and
    any search text work. History items are looked up by item id in `history_table`.
    """

    def __init__(self, config: RetrievalConfig, lookup: text_cache.RowLookup, table,
                 history_table, tokenizer, encoder, name: str = "text_embedder"):
        super().__init__(name=name)
        self.use_item_text = config.use_text
        self.use_query_text = config.use_query_text
        self.use_history_text = config.use_history and config.use_history_text
        self.lookup = lookup
        self.table = _variable(table, "text_table")
        self.history_table = (self.table if history_table is table
                              else _variable(history_table, "history_text_table"))
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.dim = int(self.table.shape[-1])

    def _live(self, texts: tf.Tensor) -> tf.Tensor:
        tokens = text_cache.trim_padding(self.tokenizer(texts))
        return self.encoder(tokens, training=False)["embedding"]

    def encode(self, texts: tf.Tensor) -> tf.Tensor:
        """Strings [B] -> embeddings [B, H]; "" -> zeros; uncached texts encoded once each."""
        texts = tf.reshape(texts, [-1])
        rows = self.lookup.text_rows(texts)
        cached = text_cache.gather_rows(self.table, rows)
        missing = tf.logical_and(rows < 0, tf.not_equal(texts, ""))
        unique, position = tf.unique(tf.boolean_mask(texts, missing))
        live = tf.cond(tf.size(unique) > 0, lambda: self._live(unique),
                       lambda: tf.zeros([0, self.dim], tf.float32))
        return tf.tensor_scatter_nd_update(cached, tf.where(missing),
                                           tf.gather(live, position))

    def query_features(self, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """Transformed query-side features -> the same plus QUERY_TEXT and HISTORY_TEXT."""
        out = dict(features)
        if self.use_query_text:
            out[QUERY_TEXT] = self.encode(features[F.QUERY])
        if self.use_history_text:
            out[HISTORY_TEXT] = text_cache.gather_rows(
                self.history_table, self.lookup.item_rows(features[F.HISTORY_ITEM_IDS]))
        return out

    def candidate_features(self, features: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """Transformed item features -> the same plus ITEM_TEXT."""
        out = dict(features)
        if self.use_item_text:
            out[ITEM_TEXT] = self.encode(text_cache.item_text_of(
                features, self.lookup.description_chars))
        return out


def _variable(value, name: str) -> tf.Variable:
    if isinstance(value, tf.Variable):
        return value
    return tf.Variable(np.asarray(value, np.float32), trainable=False, name=name)


def build_embedder(config: RetrievalConfig, catalog: text_cache.TextCatalog,
                   tables: text_cache.TextTables, paths: text_encoder.TextEncoderPaths,
                   training_text: Optional[TrainingText] = None,
                   batch_size: int = 64) -> TextEmbedder:
    """The evaluation / serving embedder after training.

    Only the item texts are kept: the train queries, cached for training speed, are left
    out of what gets exported (search texts are personal data, docs/privacy.md), so every
    query is encoded live, with the same encoder and weights as its cached row.

    frozen: the cached pretrained table and a fresh pretrained encoder for live texts.
    top_layers, full: every cached item text re-encoded with the fine-tuned encoder (same
    weights as training) for the table, that encoder for live texts; history keeps the
    pretrained table the model was trained with.
    """
    catalog = catalog.items_only()
    tables = dataclasses.replace(tables, **{
        name: None if getattr(tables, name) is None else getattr(tables, name)[:catalog.size]
        for name in ("embeddings", "lower_hidden", "token_ids", "padding_mask")})
    tokenizer = text_encoder.load_tokenizer(paths)
    if training_text is None or training_text.encoder is None:
        encoder = text_encoder.load_encoder(paths)
        table = _variable(tables.embeddings, "text_table")
        return TextEmbedder(config, text_cache.RowLookup(catalog), table, table, tokenizer,
                            encoder)
    encoder = training_text.encoder

    @tf.function(input_signature=[{"token_ids": tf.TensorSpec([None, None], tf.int32),
                                   "padding_mask": tf.TensorSpec([None, None], tf.int32)}])
    def encode(tokens):
        return encoder(text_cache.trim_padding(tokens), training=False)["embedding"]

    table = np.zeros_like(tables.embeddings)
    order = np.argsort(tables.padding_mask.sum(axis=1), kind="stable")
    for begin in range(0, catalog.size, batch_size):
        rows = order[begin:begin + batch_size]
        table[rows] = encode({"token_ids": tables.token_ids[rows],
                              "padding_mask": tables.padding_mask[rows]}).numpy()
    return TextEmbedder(config, text_cache.RowLookup(catalog), table, tables.embeddings,
                        tokenizer, encoder)


@dataclasses.dataclass
class TextResources:
    """What a run prepares once for the BERT text parts (the retrieval towers, the ranking
    model's item-text feature): the encoder export, the cached texts, their encodings and the
    string -> row lookup of the input pipeline."""

    paths: text_encoder.TextEncoderPaths
    catalog: text_cache.TextCatalog
    tables: text_cache.TextTables
    seconds: float = 0.0

    def __post_init__(self):
        self.lookup = text_cache.RowLookup(self.catalog)

    @classmethod
    def prepare(cls, config: RetrievalConfig, catalog_patterns, train_patterns, spec,
                item_texts_only: bool = False) -> "TextResources":
        """Exports the encoder if needed (cached), collects and encodes the run's texts
        (`item_texts_only`: the catalog's item texts without the train queries)."""
        start = time.time()
        paths = text_encoder.ensure_text_encoder(
            config.encoder_cache_dir(), config.text_seq_len,
            backbone=config.text_backbone or None, seed=config.seed)
        catalog = text_cache.collect_texts(catalog_patterns, train_patterns, spec,
                                           config.description_chars)
        if item_texts_only:
            catalog = catalog.items_only()
        frozen_layers = (paths.info()["num_layers"] - config.text_top_layers
                         if config.text_mode == "top_layers" else 0)
        store = (embedding_store.EmbeddingStore.of(paths) if config.reuse_text_embeddings
                 else None)
        tables = text_cache.encode_tables(catalog.texts, paths, config.text_mode,
                                          frozen_layers, store=store,
                                          stored_texts=catalog.num_item_texts)
        return cls(paths, catalog, tables, time.time() - start)

    def item_embeddings(self, item_ids) -> np.ndarray:
        """The frozen (pretrained, L2-normalised) text embedding of each of ``item_ids``
        [N, H]; zeros for an item without a cached text."""
        row_of = dict(zip(self.catalog.item_ids.tolist(), self.catalog.item_rows.tolist()))
        rows = np.array([row_of.get(i, -1) for i in np.asarray(item_ids).tolist()], np.int64)
        out = self.tables.embeddings[np.maximum(rows, 0)].copy()
        out[rows < 0] = 0.0
        return out

    def summary(self) -> Dict[str, float]:
        """Sizes and times for the run report."""
        return {"cached_texts": self.catalog.size,
                "cached_item_texts": self.catalog.num_item_texts,
                "cached_queries": self.catalog.size - self.catalog.num_item_texts,
                "stored_texts_read": self.tables.stored_rows,
                "encode_seconds": round(self.tables.seconds, 1),
                "prepare_seconds": round(self.seconds, 1),
                "encoder": self.paths.root}
