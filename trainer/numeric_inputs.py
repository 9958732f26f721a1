"""A training step on numbers only, as a TPU runs it: the string ops of the trainers' inputs
move into the input pipeline (tf.data on the host), before the strategy hands each replica
its batch.

A TPU compiles the replicated training step with XLA, which has no string type: no string
tensor may enter the step and no string op may run in it. What the trainers' training steps
read as strings, and where it goes instead (docs/DESIGN.md, "Scale-out"):

* the vocabulary lookups (ids -> indices) are tf.Transform's, already in the transformed
  examples: the models read ``*_idx`` integers;
* the BERT text features (``text_mode`` frozen; the ranker's ``use_text_embedding``) are cache
  rows looked up from item ids and queries by ``dataset.map`` (``RowLookup.add_rows``,
  ``ranking.add_text_rows``) and the texts were tokenised once before training: numeric;
* the bag-of-words text of ``text_mode`` "none" (``HashedBagOfWords`` on the search query and
  the item title): tokenised and hashed here (``QUERY_TOKENS``, ``TITLE_TOKENS``), the layer
  then averages the embeddings of those ids;
* the ranker's query-word match (``QueryMatch`` on the query and the item text): computed
  here (``QUERY_MATCH``), the model reads the two numbers;
* every other string feature (raw ids, texts the step does not read) is dropped from the
  batch.

Batches then have one static size (``drop_remainder``): a TPU compiles one program per shape.
``RetrievalConfig.numeric_step`` / ``RankingConfig.numeric_step`` turn this on off-TPU too
(with ``jit_compile``, the CPU's XLA check of the same step); under ``TPUStrategy`` it is
always on. Evaluation and the exports are unchanged: they run outside the replicated step and
the exported signatures still take raw strings (the layers compute the same numbers from them).
"""
from typing import Callable, Dict, Mapping

import numpy as np
import tensorflow as tf

from trainer import distribute
from trainer import features as F
from trainer.layers import hashed_tokens
from trainer.query_match import QueryMatch, item_match_text

QUERY_TOKENS = "query_token_ids"   # [B, MAX_TOKENS] int64 hashed query tokens, -1 = padding
TITLE_TOKENS = "title_token_ids"   # [B, MAX_TOKENS] int64 hashed title tokens, -1 = padding
QUERY_MATCH = "query_match"        # [B, 2] float32: QueryMatch(query, item text)
# Tokens kept per text: a static width. Texts with more words lose the rest in training
# only (the exported layer reads every word); sample-shop titles have 3-8 words, Beauty's
# up to ~40 (docs/DESIGN.md).
MAX_TOKENS = 48

Features = Dict[str, tf.Tensor]


def enabled(config, strategy: tf.distribute.Strategy) -> bool:
    """Whether the run's training step takes numbers only: asked for in the config, or a
    TPU, which allows nothing else."""
    return bool(config.numeric_step) or distribute.is_tpu(strategy)


def jit_compile(config, strategy: tf.distribute.Strategy):
    """``Model.compile``'s jit_compile: True for a numeric step off-TPU (XLA compiles it on
    CPU/GPU as it would on a TPU; TPUStrategy compiles every step anyway), else None (Keras's
    default, unchanged)."""
    return True if config.numeric_step and not distribute.is_tpu(strategy) else None


def token_ids(text: tf.Tensor, num_buckets: int, max_tokens: int = MAX_TOKENS) -> tf.Tensor:
    """[B] strings -> [B, max_tokens] int64 hashed word tokens (HashedBagOfWords' tokens),
    -1 after the last one."""
    ragged = hashed_tokens(text, num_buckets)
    batch = tf.shape(ragged.row_splits, out_type=tf.int64)[0] - 1
    return ragged.to_tensor(default_value=-1, shape=tf.stack([batch, max_tokens]))


def numeric_only(features: Mapping[str, tf.Tensor]) -> Features:
    """``features`` without its string tensors."""
    return {key: value for key, value in features.items() if value.dtype != tf.string}


def retrieval_features(config) -> Callable[[Features], Features]:
    """The input-pipeline function of a retrieval run (RetrievalConfig): bag-of-words tokens
    for the towers that read them, then strings dropped."""
    bag_of_words = config.text_mode == "none"

    def convert(features):
        out = dict(features)
        if bag_of_words and config.use_query_text:
            out[QUERY_TOKENS] = token_ids(features[F.QUERY], config.text_buckets)
        if bag_of_words and config.use_text:
            out[TITLE_TOKENS] = token_ids(features[F.TITLE], config.text_buckets)
        return numeric_only(out)
    return convert


def ranking_features(config) -> Callable[[Features], Features]:
    """The input-pipeline function of a ranking run (RankingConfig): the query-word match
    when the model reads it, then strings dropped."""
    match = QueryMatch(name="host_query_match") if config.use_text else None

    def convert(features):
        out = dict(features)
        if match is not None:
            out[QUERY_MATCH] = match(features[F.QUERY], item_match_text(features))
        return numeric_only(out)
    return convert


def prepare(dataset: tf.data.Dataset, convert: Callable[[Features], Features],
            batch_size: int) -> tf.data.Dataset:
    """``dataset`` (batches of parsed examples) through ``convert`` and into batches of
    exactly ``batch_size`` (the last partial one dropped); raises when a string is left."""
    dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.rebatch(batch_size, drop_remainder=True)
    check_numeric(dataset)
    return dataset.prefetch(tf.data.AUTOTUNE)


def check_numeric(dataset: tf.data.Dataset) -> None:
    """ValueError naming the string features of ``dataset``'s elements, if any."""
    spec = dataset.element_spec
    specs = spec.items() if isinstance(spec, Mapping) else enumerate(tf.nest.flatten(spec))
    strings = sorted(str(key) for key, value in specs if value.dtype == tf.string)
    if strings:
        raise ValueError(f"the training step would receive strings {strings}: a TPU step "
                         "takes numbers only (trainer/numeric_inputs.py)")


def catalog_features(features: Mapping[str, np.ndarray], config) -> Dict[str, np.ndarray]:
    """The catalog softmax's candidate-tower inputs (trainer/catalog_softmax.py: every
    catalog item, constants of the step) with the titles tokenised here, once."""
    out = dict(features)
    if F.TITLE in out:
        titles = out.pop(F.TITLE)
        if config.text_mode == "none" and config.use_text:
            out[TITLE_TOKENS] = token_ids(tf.constant(titles), config.text_buckets).numpy()
    return {key: value for key, value in out.items()
            if np.asarray(value).dtype.kind not in "SUO"}
