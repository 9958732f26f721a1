"""trainer/numeric_inputs.py: the string ops of the training inputs, run in the input
pipeline instead of the TPU step, give the models the same numbers."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from trainer import features as F
from trainer import numeric_inputs
from trainer.config import RankingConfig, RetrievalConfig
from trainer.layers import HashedBagOfWords
from trainer.query_match import QueryMatch, item_match_text

TEXTS = ["Silk Serum 50ml", "", "serum, SILK & argan-oil!", "Ünïcode café crème",
         "one two three four five six"]


def _batch():
    n = len(TEXTS)
    return {F.QUERY: tf.constant(["silk serum", "", "argan", "café", "nothing here"]),
            F.TITLE: tf.constant(TEXTS), F.BRAND: tf.constant(["Silk", "", "", "", "x"]),
            F.CATEGORY: tf.constant(["Beauty > Skin"] * n), F.ITEM_ID: tf.constant(["a"] * n),
            F.idx(F.ITEM_ID): tf.constant([1, 2, 3, 4, 5], tf.int64),
            F.PRICE_Z: tf.zeros([n]), F.HISTORY_ITEM_IDS: tf.constant([["a", ""]] * n)}


def test_hashed_tokens_on_the_host_give_the_layers_bag_of_words():
    layer = HashedBagOfWords(64, 8)
    ids = numeric_inputs.token_ids(tf.constant(TEXTS), 64)
    assert ids.shape == (len(TEXTS), numeric_inputs.MAX_TOKENS) and ids.dtype == tf.int64
    assert ids.numpy()[1].tolist() == [-1] * numeric_inputs.MAX_TOKENS, "empty text: padding"
    np.testing.assert_allclose(layer(ids).numpy(), layer(tf.constant(TEXTS)).numpy(),
                               atol=1e-6)
    assert not np.any(layer(ids).numpy()[1]), "empty text gives 0"
    short = numeric_inputs.token_ids(tf.constant(TEXTS), 64, max_tokens=2)
    assert short.shape == (len(TEXTS), 2), "longer texts keep their first tokens"


def test_the_retrieval_batch_keeps_numbers_and_the_tokens_the_towers_read():
    config = RetrievalConfig(text_mode="none", batch_size=2)
    out = numeric_inputs.retrieval_features(config)(_batch())
    assert {numeric_inputs.QUERY_TOKENS, numeric_inputs.TITLE_TOKENS} <= set(out)
    assert all(v.dtype != tf.string for v in out.values())
    assert F.idx(F.ITEM_ID) in out and F.TITLE not in out and F.HISTORY_ITEM_IDS not in out
    frozen = numeric_inputs.retrieval_features(dataclasses.replace(config, text_mode="frozen"))
    assert numeric_inputs.QUERY_TOKENS not in frozen(_batch()), "BERT modes read cache rows"
    no_query = dataclasses.replace(config, use_query_text=False)
    assert numeric_inputs.QUERY_TOKENS not in numeric_inputs.retrieval_features(no_query)(_batch())


def test_the_ranking_batch_carries_the_query_match_the_model_would_compute():
    batch = _batch()
    out = numeric_inputs.ranking_features(RankingConfig())(batch)
    expected = QueryMatch()(batch[F.QUERY], item_match_text(batch))
    np.testing.assert_allclose(out[numeric_inputs.QUERY_MATCH].numpy(), expected.numpy())
    assert out[numeric_inputs.QUERY_MATCH].numpy()[0].tolist() == [1.0, 1.0]
    assert all(v.dtype != tf.string for v in out.values())
    assert numeric_inputs.QUERY_MATCH not in numeric_inputs.ranking_features(
        RankingConfig(use_text=False))(batch)


def test_prepare_gives_static_numeric_batches_and_refuses_strings():
    config = RetrievalConfig(text_mode="none")
    ds = tf.data.Dataset.from_tensor_slices(_batch()).batch(2)        # batches 2, 2, 1
    out = numeric_inputs.prepare(ds, numeric_inputs.retrieval_features(config), 2)
    assert out.element_spec[F.idx(F.ITEM_ID)].shape == (2,), "static batch size"
    assert out.element_spec[numeric_inputs.QUERY_TOKENS].shape == (2, numeric_inputs.MAX_TOKENS)
    assert [b[F.idx(F.ITEM_ID)].numpy().tolist() for b in out] == [[1, 2], [3, 4]]
    with pytest.raises(ValueError, match=r"strings \['history_item_ids', 'title'\]"):
        numeric_inputs.prepare(ds, lambda f: {k: f[k] for k in (F.TITLE, F.HISTORY_ITEM_IDS,
                                                                 F.PRICE_Z)}, 2)


def test_the_catalog_softmax_constants_are_tokenised_once():
    config = RetrievalConfig(text_mode="none", text_buckets=64)
    features = {F.idx(F.ITEM_ID): np.array([1, 2]), F.TITLE: np.array([b"silk serum", b""]),
                F.PRICE_Z: np.zeros(2, np.float32)}
    out = numeric_inputs.catalog_features(features, config)
    assert sorted(out) == sorted([F.idx(F.ITEM_ID), F.PRICE_Z, numeric_inputs.TITLE_TOKENS])
    np.testing.assert_array_equal(
        out[numeric_inputs.TITLE_TOKENS],
        numeric_inputs.token_ids(tf.constant(["silk serum", ""]), 64).numpy())
    assert F.TITLE not in numeric_inputs.catalog_features(
        features, dataclasses.replace(config, use_text=False))


def test_numeric_step_is_on_under_a_tpu_and_refuses_the_trained_encoders():
    assert not numeric_inputs.enabled(RetrievalConfig(), tf.distribute.get_strategy())
    assert numeric_inputs.enabled(RetrievalConfig(numeric_step=True),
                                  tf.distribute.get_strategy())
    assert numeric_inputs.jit_compile(RankingConfig(numeric_step=True),
                                      tf.distribute.get_strategy()) is True
    assert numeric_inputs.jit_compile(RankingConfig(), tf.distribute.get_strategy()) is None
    for mode in ("top_layers", "full"):
        with pytest.raises(ValueError, match="numeric_step"):
            RetrievalConfig.from_custom_config({"numeric_step": True, "text_mode": mode})
