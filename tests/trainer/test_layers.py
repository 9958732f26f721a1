"""Model building blocks: history encoder, hashed text, loss scaling, models under a strategy."""
import numpy as np
import pytest
import tensorflow as tf

from trainer import features as F
from trainer.config import RankingConfig, RetrievalConfig
from trainer.layers import HashedBagOfWords, HistoryEncoder, global_batch_mean

L = F.HISTORY_LENGTH


def _encoder(dim=8):
    tf.keras.utils.set_random_seed(1)
    items = tf.keras.layers.Embedding(20, dim)
    return HistoryEncoder(items, L, dim), items


def _history(*rows):
    return tf.constant([list(r) + [0] * (L - len(r)) for r in rows], tf.int64)


def test_history_encoder_shapes_empty_history_and_order():
    encoder, _ = _encoder()
    out = encoder(_history([3, 5, 7], [], [5, 3, 7])).numpy()
    assert out.shape == (3, 8)
    np.testing.assert_array_equal(out[1], np.zeros(8))      # no history -> 0
    assert not np.allclose(out[0], out[2])                   # order matters


def test_history_encoder_ignores_padding_embedding():
    encoder, items = _encoder()
    history = _history([3, 5], [4])
    before = encoder(history).numpy()
    table = items.embeddings.numpy()
    table[0] = 100.0                                          # padding row
    items.embeddings.assign(table)
    np.testing.assert_allclose(encoder(history).numpy(), before, atol=1e-6)


def test_hashed_bag_of_words():
    tf.keras.utils.set_random_seed(1)
    text = HashedBagOfWords(64, 4)
    out = text(tf.constant(["Red Lipstick!", "red   lipstick", "", "crème"])).numpy()
    assert out.shape == (4, 4)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)   # case and punctuation ignored
    np.testing.assert_array_equal(out[2], np.zeros(4))
    assert np.abs(out[3]).sum() > 0                          # non-ASCII words are tokens


def test_global_batch_mean_without_strategy():
    assert float(global_batch_mean(tf.constant(12.0), 4)) == pytest.approx(3.0)


def _batch(n=8):
    rng = np.random.default_rng(0)
    return {
        F.idx(F.USER_ID): tf.constant(rng.integers(1, 5, n)),
        F.idx(F.HISTORY_ITEM_IDS): tf.constant(rng.integers(0, 9, (n, L))),
        F.idx(F.ITEM_ID): tf.constant(np.arange(1, n + 1) % 9),
        F.idx(F.BRAND): tf.constant(rng.integers(0, 3, n)),
        F.idx(F.CATEGORY): tf.constant(rng.integers(0, 3, n)),
        F.idx(F.TOP_CATEGORY): tf.constant(rng.integers(0, 3, n)),
        F.PRICE_Z: tf.constant(rng.normal(size=n), tf.float32),
        F.IN_STOCK: tf.constant(rng.integers(0, 2, n)),
        F.QUERY: tf.constant(["serum"] * (n // 2) + [""] * (n - n // 2)),
        F.TITLE: tf.constant([f"item {i}" for i in range(n)]),
        F.BRAND: tf.constant(["Acme"] * n),
        F.CATEGORY: tf.constant(["Skin > Serum"] * n),
        F.CLICKED: tf.constant(rng.integers(0, 2, n)),
        F.PURCHASED: tf.constant(rng.integers(0, 2, n)),
        F.HAS_RATING: tf.constant(rng.integers(0, 2, n)),
        F.RATING: tf.constant(rng.integers(1, 6, n), tf.float32),
    }


BUCKETS = {F.USER_ID: 6, F.ITEM_ID: 10, F.BRAND: 4, F.CATEGORY: 4, F.TOP_CATEGORY: 4}


@pytest.mark.parametrize("kind", ["retrieval", "ranking"])
def test_models_train_under_a_distribution_strategy(kind):
    from trainer import ranking, retrieval  # pylint: disable=import-outside-toplevel
    module, config = ((retrieval, RetrievalConfig(embedding_dim=8, hidden_units=(8,),
                                                  text_mode="none"))
                      if kind == "retrieval" else
                      (ranking, RankingConfig(embedding_dim=8, hidden_units=(8,),
                                              use_text_embedding=False)))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    model = module.build_model(config, BUCKETS, strategy)
    dataset = tf.data.Dataset.from_tensors(_batch()).repeat()
    history = model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.trainable_variables
    assert all(strategy.extended.variable_created_in_scope(v)
               for v in model.trainable_variables)


@pytest.mark.parametrize("parts", [
    {"use_user_id": False}, {"use_history": False}, {"use_text": False},
    {"use_query_text": False}, {"use_item_id": False}, {"use_item_features": False}])
def test_retrieval_tower_parts_switch_off(parts):
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    config = RetrievalConfig.from_custom_config(dict(embedding_dim=8, hidden_units=[],
                                                     text_mode="none", **parts))
    model = retrieval.build_model(config, BUCKETS)
    queries = model.query_tower(_batch()).numpy()
    candidates = model.candidate_tower(_batch()).numpy()
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(candidates, axis=1), 1.0, rtol=1e-5)
    names = " ".join(v.name for v in model.trainable_variables)
    assert ("user_embedding" in names) == config.use_user_id
    assert ("brand_embedding" in names) == config.use_item_features
    assert ("token_embedding" in names) == (config.use_text or config.use_query_text)


def test_ranking_outputs_probabilities_per_head():
    from trainer import ranking  # pylint: disable=import-outside-toplevel
    model = ranking.build_model(RankingConfig(embedding_dim=8, hidden_units=(8,),
                                              use_text_embedding=False), BUCKETS)
    out = model(_batch(5))
    assert set(out) == {"click", "purchase", "rating"}
    for value in (out["click"], out["purchase"]):
        assert value.shape == (5,) and np.all((value.numpy() > 0) & (value.numpy() < 1))
    assert np.isfinite(float(model.compute_loss(_batch(5))))


def test_history_encoder_pools_texts_with_its_weights():
    encoder, _ = _encoder(dim=4)
    encoder.text_projection = tf.keras.layers.Dense(4, use_bias=False)
    history = _history([3, 5], [])
    texts = tf.random.stateless_normal([2, L, 6], seed=[1, 2])
    summary, text = encoder(history, texts)
    assert summary.shape == (2, 4) and text.shape == (2, 6)
    np.testing.assert_array_equal(text.numpy()[1], np.zeros(6))       # empty history
    assert not np.allclose(summary.numpy()[0], encoder(history).numpy()[0])  # texts count
    real = texts.numpy()[0, :2]                                        # the 2 real positions
    coefficients, *_ = np.linalg.lstsq(real.T, text.numpy()[0], rcond=None)
    assert coefficients.sum() == pytest.approx(1.0, abs=1e-4)          # attention weights
    assert np.all(coefficients > 0)
    plain, _ = _encoder(dim=4)
    with pytest.raises(ValueError, match="no text_projection"):
        plain(history, texts)


def test_text_match_adds_a_weighted_text_cosine_per_query_kind():
    from trainer.layers import TextMatch  # pylint: disable=import-outside-toplevel
    match = TextMatch(search_weight=2.0, history_weight=1.0)
    assert float(match.search_weight) == pytest.approx(2.0)
    assert float(match.history_weight) == pytest.approx(1.0)
    text = tf.constant([[0.6, 0.8, 0.0], [0.6, 0.8, 0.0]])
    q = match(tf.constant([[1.0, 0.0], [1.0, 0.0]]), text,
              is_search=tf.constant([[True], [False]]))
    c = match(tf.constant([[0.0, 1.0]]), tf.constant([[0.6, 0.8, 0.0]]))
    assert q.shape == (2, 5) and c.shape == (1, 5)
    np.testing.assert_allclose(tf.reduce_sum(q * c, axis=1).numpy(), [2.0, 1.0], rtol=1e-5)
    match.history_logit.assign(np.log(np.exp(3.0) - 1.0))               # history weight 3
    q = match(tf.constant([[1.0, 0.0]]), tf.constant([[0.6, 0.8, 0.0]]),
              is_search=tf.constant([[False]]))
    assert float(tf.reduce_sum(q * c)) == pytest.approx(3.0, rel=1e-5)
    assert {w.name.split("/")[-1].split(":")[0] for w in match.trainable_weights} == {
        "search_weight_logit", "history_weight_logit"}
