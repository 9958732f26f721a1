"""negatives="catalog": the full-catalog softmax loss, its wiring in the retrieval model,
and its validation (trainer/catalog_softmax.py)."""
import numpy as np
import pytest
import tensorflow as tf

from trainer import catalog_softmax
from trainer import features as F
from trainer import retrieval
from trainer.config import RetrievalConfig

L = F.HISTORY_LENGTH
NUM_ITEMS = 9                          # padding 0, items 1..7, OOV 8
BUCKETS = {F.USER_ID: 4, F.ITEM_ID: NUM_ITEMS, F.BRAND: 3, F.CATEGORY: 3, F.TOP_CATEGORY: 3}


def _catalog():
    """Items 1..7 and one catalog item unknown to the vocabulary (OOV index 8)."""
    index = np.array([1, 2, 3, 4, 5, 6, 7, 8], np.int64)
    n = len(index)
    return catalog_softmax.from_columns({
        F.idx(F.ITEM_ID): index, F.idx(F.BRAND): np.arange(n) % 2 + 1,
        F.idx(F.CATEGORY): np.arange(n) % 2 + 1, F.idx(F.TOP_CATEGORY): np.ones(n, np.int64),
        F.PRICE_Z: np.linspace(-1, 1, n).astype(np.float32), F.IN_STOCK: np.ones(n, np.int64),
        F.TITLE: np.array([f"item {i}".encode() for i in index], object)}, NUM_ITEMS)


def _batch(histories, clicked):
    """Transformed training features ("none" text mode, no user id)."""
    n = len(clicked)
    return {F.idx(F.USER_ID): tf.zeros([n], tf.int64),
            F.idx(F.HISTORY_ITEM_IDS): tf.constant(
                [list(h) + [0] * (L - len(h)) for h in histories], tf.int64),
            F.QUERY: tf.constant([""] * n),
            F.idx(F.ITEM_ID): tf.constant(clicked, tf.int64),
            F.idx(F.BRAND): tf.ones([n], tf.int64), F.idx(F.CATEGORY): tf.ones([n], tf.int64),
            F.idx(F.TOP_CATEGORY): tf.ones([n], tf.int64), F.PRICE_Z: tf.zeros([n]),
            F.IN_STOCK: tf.ones([n], tf.int64), F.TITLE: tf.constant(["x"] * n)}


def _model(**overrides):
    config = RetrievalConfig(**dict(dict(
        embedding_dim=8, hidden_units=(16,), text_mode="none", use_user_id=False,
        use_query_text=False, negatives="catalog", id_dropout=0.0, learning_rate=0.05,
        temperature=0.2, seed=1), **overrides))
    config.validate()
    tf.keras.utils.set_random_seed(1)
    return retrieval.build_model(config, BUCKETS, catalog=_catalog())


def test_catalog_rows_of_known_items_only():
    catalog = _catalog()
    assert catalog.size == 8
    np.testing.assert_array_equal(catalog.positions, [-1, 0, 1, 2, 3, 4, 5, 6, -1])
    layer = catalog_softmax.CatalogSoftmax(catalog, temperature=0.5)
    np.testing.assert_array_equal(layer.labels(tf.constant([7, 1, 0])).numpy(), [6, 0, -1])


def test_loss_is_the_softmax_cross_entropy_over_the_catalog():
    catalog = _catalog()
    layer = catalog_softmax.CatalogSoftmax(catalog, temperature=0.5)
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(3, 4)).astype(np.float32)
    candidates = rng.normal(size=(catalog.size, 4)).astype(np.float32)
    clicked = np.array([2, 7, 2])
    logits = queries @ candidates.T / 0.5
    rows = catalog.positions[clicked]
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(3), rows].sum()
    got = layer.loss_sum(tf.constant(queries), tf.constant(candidates), tf.constant(clicked))
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_model_loss_is_the_batch_mean_over_all_catalog_items():
    model = _model()
    batch = _batch([[1], [3, 1]], [2, 4])
    queries = model.query_tower(batch).numpy()
    candidates = model.candidate_tower(model.catalog.tower_features()).numpy()
    assert candidates.shape[0] == 8                   # the OOV catalog item is a negative too
    logits = queries @ candidates.T / 0.2
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -(log_softmax[0, 1] + log_softmax[1, 3]) / 2
    assert float(model.compute_loss(batch)) == pytest.approx(expected, rel=1e-5)


def _scores(model, histories):
    queries = model.query_tower(_batch(histories, [1] * len(histories)))
    return (queries @ tf.transpose(model.candidate_tower(
        model.catalog.tower_features()))).numpy()


def test_history_items_are_pushed_down():
    """History items that are never clicked are never in-batch negatives (with "in_batch"
    this setup ends with one query's history item scored up, 0.00 -> 0.43, and another query
    ranking a wrong item first); in the catalog softmax they are negatives at every step."""
    model = _model()
    histories, clicked = [[1], [3], [5]], [2, 4, 6]     # history items are never clicked
    before = _scores(model, histories)
    data = tf.data.Dataset.from_tensors(_batch(histories, clicked)).repeat(30)
    model.fit(data, verbose=0)
    after = _scores(model, histories)
    for q, (h, c) in enumerate(zip(histories, clicked)):
        history_row, clicked_row = h[0] - 1, c - 1
        assert after[q, history_row] < before[q, history_row]
        assert after[q, clicked_row] > after[q, history_row]
        assert np.argmax(after[q]) == clicked_row


def test_id_dropout_replaces_catalog_item_ids_with_unknown():
    layer = catalog_softmax.CatalogSoftmax(_catalog(), temperature=0.1)
    tf.random.set_seed(0)
    ids = layer.tower_features(id_dropout=0.5, seed=3)[F.idx(F.ITEM_ID)].numpy()
    assert 0 < np.sum(ids == 0) < len(ids)
    np.testing.assert_array_equal(ids[ids != 0], np.flatnonzero(ids) + 1)


def test_bad_values_are_rejected():
    with pytest.raises(ValueError, match="negatives must be one of"):
        RetrievalConfig.from_custom_config({"negatives": "sampled"})
    with pytest.raises(ValueError, match="needs text_mode 'none' or 'frozen'"):
        RetrievalConfig.from_custom_config({"negatives": "catalog", "text_mode": "full"})
    config = RetrievalConfig(text_mode="none", negatives="catalog")
    with pytest.raises(ValueError, match="needs the catalog's tower inputs"):
        retrieval.build_model(config, BUCKETS)
    assert not config.uses_logq and RetrievalConfig().uses_logq


def test_clicked_items_missing_from_the_catalog_are_an_error():
    catalog = catalog_softmax.from_columns(
        {F.idx(F.ITEM_ID): np.array([1, 2, 3])}, NUM_ITEMS)
    catalog_softmax.check_labels(catalog, np.array([1, 3, 3]))
    with pytest.raises(ValueError, match=r"2 clicked train example\(s\).*\[5, 8\]"):
        catalog_softmax.check_labels(catalog, np.array([1, 5, 8]))
    with pytest.raises(ValueError, match="must be in"):
        catalog_softmax.from_columns({F.idx(F.ITEM_ID): np.array([0, 1])}, NUM_ITEMS)


def test_catalog_mode_trains_under_a_distribution_strategy():
    config = RetrievalConfig(embedding_dim=8, hidden_units=(8,), text_mode="none",
                             negatives="catalog", use_user_id=False, use_query_text=False)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    model = retrieval.build_model(config, BUCKETS, strategy, catalog=_catalog())
    data = tf.data.Dataset.from_tensors(_batch([[1], [3, 1], []], [2, 4, 7])).repeat()
    history = model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(strategy.extended.variable_created_in_scope(v)
               for v in model.trainable_variables)
