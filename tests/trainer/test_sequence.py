"""Transformer history encoder (trainer/sequence.py), its objectives
(trainer/sequence_objective.py), its config and its place in the retrieval model."""
import numpy as np
import pytest
import tensorflow as tf

from tests.trainer import shop_runs
from tests.trainer.conftest import RETRIEVAL_CONFIG
from tests.trainer.test_layers import BUCKETS, _batch
from trainer import features as F
from trainer.config import RetrievalConfig
from trainer.sequence import SequenceEncoder
from trainer.sequence_objective import SequenceObjective, mask_positions

L, DIM, TEXT = F.HISTORY_LENGTH, 8, 6


def _encoder(causal, dropout=0.0):
    tf.keras.utils.set_random_seed(1)
    items = tf.keras.layers.Embedding(30, DIM)
    projection = tf.keras.layers.Dense(DIM, use_bias=False)
    return SequenceEncoder(items, L, DIM, num_layers=2, num_heads=2, dropout=dropout,
                           causal=causal, text_projection=projection), items


def _history(*rows):
    return tf.constant([list(r) + [0] * (L - len(r)) for r in rows], tf.int64)


def _texts(history, seed=0):
    """Random text embeddings at the real positions, zeros at padding (as the cache gives)."""
    texts = np.random.default_rng(seed).normal(size=history.shape + (TEXT,))
    return tf.constant(texts * (history.numpy() != 0)[..., None], tf.float32)


@pytest.mark.parametrize("causal", [True, False])
def test_only_the_bidirectional_encoder_sees_more_recent_items(causal):
    encoder, _ = _encoder(causal)
    history = _history([3, 5, 7, 9, 11, 13], [4, 6, 8])
    changed = history.numpy().copy()
    changed[:, 1] = [20, 21]                         # the second most recent item of each row
    texts = _texts(history)
    before = encoder.sequence_outputs(history, texts).numpy()
    after = encoder.sequence_outputs(tf.constant(changed), texts).numpy()
    older = (slice(None), slice(2, None))
    if causal:
        np.testing.assert_allclose(after[older], before[older], atol=1e-6)
    else:
        assert np.abs(after[:, 2:3] - before[:, 2:3]).max() > 1e-3
    assert np.abs(after[:, :2] - before[:, :2]).max() > 1e-3  # itself and the newer one change
    summary_before = encoder(history, texts)[0].numpy()
    summary_after = encoder(tf.constant(changed), texts)[0].numpy()
    assert np.abs(summary_after - summary_before).max() > 1e-3


@pytest.mark.parametrize("causal", [True, False])
def test_padding_content_never_reaches_real_positions(causal):
    encoder, items = _encoder(causal)
    history = _history([3, 5, 7], [4], [])
    texts = _texts(history)
    outputs = encoder.sequence_outputs(history, texts).numpy()
    summary, text_summary = (t.numpy() for t in encoder(history, texts))
    table = items.embeddings.numpy()
    table[0] = 50.0                                        # the padding row
    items.embeddings.assign(table)
    noisy = texts.numpy() + 3.0 * (history.numpy() == 0)[..., None]   # texts at padding
    outputs_after = encoder.sequence_outputs(history, tf.constant(noisy)).numpy()
    real = history.numpy() != 0
    np.testing.assert_allclose(outputs_after[real], outputs[real], atol=1e-5)
    np.testing.assert_array_equal(outputs_after[~real], 0.0)
    np.testing.assert_allclose(encoder(history, tf.constant(noisy))[0].numpy(), summary,
                               atol=1e-5)
    assert np.isfinite(summary).all() and np.isfinite(text_summary).all()
    np.testing.assert_array_equal(summary[2], np.zeros(DIM))             # empty history
    np.testing.assert_allclose(text_summary[1], texts.numpy()[1, 0], atol=1e-6)
    np.testing.assert_allclose(summary[0], outputs[0, 0], atol=1e-6)  # most recent position


def test_mask_positions_masks_real_positions_at_the_rate_never_padding():
    lengths = np.random.default_rng(0).integers(0, L + 1, 4000)
    history = tf.constant([[1] * n + [0] * (L - n) for n in lengths], tf.int64)
    masked = mask_positions(history, 0.2, seed=5).numpy()
    real = history.numpy() != 0
    assert not masked[~real].any()
    assert masked[real].mean() == pytest.approx(0.2, abs=0.01)


def test_masked_positions_hide_their_items():
    encoder, _ = _encoder(causal=False)
    history = _history([3, 5, 7, 9], [4, 6])
    masked = tf.constant(np.arange(L)[None] == np.array([[1], [0]]))   # one real position each
    before = encoder.sequence_outputs(history, masked=masked).numpy()
    changed = history.numpy().copy()
    changed[0, 1], changed[1, 0] = 20, 21
    after = encoder.sequence_outputs(tf.constant(changed), masked=masked).numpy()
    np.testing.assert_allclose(after, before, atol=1e-6)
    assert np.abs(encoder.sequence_outputs(history).numpy() - before).max() > 1e-3
    causal, _ = _encoder(causal=True)
    with pytest.raises(ValueError, match="bidirectional"):
        causal.sequence_outputs(history, masked=masked)


@pytest.mark.parametrize("causal", [True, False])
def test_objective_is_a_finite_mean_that_trains_encoder_and_item_table(causal):
    encoder, items = _encoder(causal)
    objective = SequenceObjective(encoder, temperature=0.1, remove_accidental_hits=True,
                                  item_probability=tf.fill([30], 1 / 30), mask_rate=0.5,
                                  seed=2)
    history = tf.constant(np.random.default_rng(1).integers(1, 30, (16, L)))
    with tf.GradientTape() as tape:
        loss = objective(history, _texts(history), training=True)
    assert np.isfinite(float(loss)) and float(loss) > 0
    gradients = tape.gradient(loss, [items.embeddings] + encoder.trainable_weights)
    assert all(g is not None for g in gradients)
    assert float(tf.norm(tf.convert_to_tensor(gradients[0]))) > 0
    empty = tf.zeros([4, L], tf.int64)
    assert float(objective(empty, _texts(empty), training=True)) == 0.0


@pytest.mark.parametrize("causal", [True, False])
def test_objective_positions_keep_the_pairs_to_the_most_recent_items(causal):
    encoder, _ = _encoder(causal)
    objective = SequenceObjective(encoder, temperature=0.1, remove_accidental_hits=True,
                                  mask_rate=0.99, seed=2, positions=2)
    seen = {}

    def pair_loss(queries, targets, ids, pairs):
        seen.update(shape=tuple(queries.shape), ids=ids.numpy(), pairs=pairs.numpy())
        return tf.constant(0.0)

    objective.pair_loss = pair_loss
    history = _history([5, 6, 7, 8, 9, 10])
    objective(history, _texts(history), training=True)
    assert seen["shape"][:2] == (1, 2)              # [B, positions] slots only
    assert seen["ids"].tolist() == [[5, 6]]         # the two most recent items are targets
    if causal:                                      # both are pairs: 6 -> 5, 7 -> 6
        assert seen["pairs"].tolist() == [[True, True]]
    with pytest.raises(ValueError, match="positions must be >= 0"):
        SequenceObjective(encoder, 0.1, True, positions=-1)


def _sequence_catalog(text_rows=None):
    """Items 1..20 of 30 vocabulary buckets (padding 0, OOV 29); 21..28 are outside it."""
    from trainer import catalog_softmax  # pylint: disable=import-outside-toplevel
    return catalog_softmax.from_columns({F.idx(F.ITEM_ID): np.arange(1, 21)}, 30, text_rows)


def _softmax_loss(queries, candidates, labels, temperature=0.1):
    """numpy: mean over labels of -log softmax(cos(q, c) / T)[label]."""
    q = queries / np.linalg.norm(queries, axis=-1, keepdims=True)
    c = candidates / np.linalg.norm(candidates, axis=-1, keepdims=True)
    logits = q @ c.T / temperature
    logits -= logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.mean(log_softmax[np.arange(len(labels)), labels]))


@pytest.mark.parametrize("with_text", [False, True])
def test_catalog_objective_is_the_full_softmax_over_every_catalog_item(with_text):
    """Causal pairs (each prefix predicts the next more recent item) scored against all 20
    catalog items; an item outside the catalog (25) or OOV (29) is no target."""
    encoder, items = _encoder(True)
    table = np.random.default_rng(3).normal(size=(21, TEXT)).astype(np.float32)
    catalog = _sequence_catalog(np.arange(1, 21, dtype=np.int32) if with_text else None)
    objective = SequenceObjective(encoder, temperature=0.1, remove_accidental_hits=True,
                                  positions=0, catalog=catalog)
    history = _history([4, 7, 25, 2], [29, 3, 9], [11])     # most recent first
    rows = np.where(history.numpy() <= 20, history.numpy(), -1)
    texts = (tf.constant(table[np.maximum(rows, 0)] * (rows > 0)[..., None])
             if with_text else None)
    loss = objective(history, texts, training=True,
                     text_embeddings=tf.constant(table) if with_text else None)
    outputs = encoder.sequence_outputs(history, texts).numpy()
    catalog_ids = tf.constant(np.arange(1, 21)[None])
    vectors = encoder.item_vectors(
        catalog_ids, tf.constant(table[None, 1:21]) if with_text else None).numpy()[0]
    # pairs (row, query position, target item): 7 -> 4 (25 -> 7 too), 9 -> 3; 25 and 29 never
    pairs = [(0, 1, 4), (0, 2, 7), (1, 2, 3)]
    expected = _softmax_loss(np.stack([outputs[b, t] for b, t, _ in pairs]), vectors,
                             np.array([item - 1 for _, _, item in pairs]))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
    with tf.GradientTape() as tape:
        loss = objective(history, texts, training=True,
                         text_embeddings=tf.constant(table) if with_text else None)
    gradient = tape.gradient(loss, items.embeddings)
    # every catalog item's row is a negative, even one no pair names (item 20)
    assert float(tf.norm(tf.convert_to_tensor(gradient)[20])) > 0
    empty = tf.zeros([2, L], tf.int64)
    assert float(objective(empty, None if not with_text else tf.zeros([2, L, TEXT]),
                           training=True, text_embeddings=tf.constant(table))) == 0.0
    if with_text:
        with pytest.raises(ValueError, match="needs the catalog's text rows and the run's"):
            objective(history, texts, training=True)


@pytest.mark.parametrize("key, value, message", [
    ("sequence_objective_positions", -1, r"sequence_objective_positions must be >= 0"),
    ("history_encoder", "lstm", r"history_encoder must be one of \['pooled', 'causal'"),
    ("sequence_layers", 0, "sequence_layers and sequence_heads must be >= 1"),
    ("sequence_heads", 0, "sequence_layers and sequence_heads must be >= 1"),
    ("sequence_heads", 3, r"sequence_heads \(3\) must divide embedding_dim \(64\)"),
    ("sequence_dropout", 1.0, r"sequence_dropout must be in \[0, 1\)"),
    ("sequence_objective_weight", -1, "sequence_objective_weight must be >= 0"),
    ("sequence_mask_rate", 0, r"sequence_mask_rate must be in \(0, 1\)"),
    ("sequence_layers", 1.5, "sequence_layers must be an integer"),
    ("sequence_objective_negatives", "sampled",
     r"sequence_objective_negatives must be one of \['in_batch', 'catalog'\]"),
])
def test_bad_sequence_settings_name_the_field(key, value, message):
    given = {"history_encoder": "causal", key: value} if key != "history_encoder" else {
        key: value}
    with pytest.raises(ValueError, match=message):
        RetrievalConfig.from_custom_config(given)


def test_sequence_config_defaults_and_needs():
    config = RetrievalConfig()
    assert config.history_encoder == "pooled" and not config.uses_sequence_objective
    assert (config.sequence_layers, config.sequence_heads) == (2, 2)
    assert config.sequence_dropout == 0.2 and config.sequence_mask_rate == 0.2
    assert config.sequence_objective_positions == 10
    assert config.sequence_objective_negatives == "in_batch" and not config.uses_catalog
    assert RetrievalConfig(history_encoder="causal",
                           sequence_objective_negatives="catalog").uses_catalog
    assert not RetrievalConfig(sequence_objective_negatives="catalog").uses_catalog  # pooled
    assert RetrievalConfig(history_encoder="causal").uses_sequence_objective
    assert not RetrievalConfig(history_encoder="causal",
                               sequence_objective_weight=0).uses_sequence_objective
    assert RetrievalConfig.from_custom_config({"sequence_heads": 3}).sequence_heads == 3
    with pytest.raises(ValueError, match="history_encoder 'bidirectional' needs use_history"):
        RetrievalConfig.from_custom_config({"history_encoder": "bidirectional",
                                            "use_history": False})


@pytest.mark.parametrize("kind, negatives", [("causal", "in_batch"),
                                              ("bidirectional", "in_batch"),
                                              ("causal", "catalog")])
def test_retrieval_model_trains_with_the_sequence_encoder_under_a_strategy(kind, negatives):
    from trainer import catalog_softmax, retrieval  # pylint: disable=import-outside-toplevel
    config = RetrievalConfig(embedding_dim=8, hidden_units=(8,), text_mode="none",
                             history_encoder=kind, sequence_dropout=0.5,
                             sequence_objective_negatives=negatives)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    catalog = (catalog_softmax.from_columns({F.idx(F.ITEM_ID): np.arange(1, 9)},
                                            BUCKETS[F.ITEM_ID])
               if negatives == "catalog" else None)
    if catalog is not None:
        with pytest.raises(ValueError, match="sequence_objective_negatives 'catalog' needs"):
            retrieval.build_model(config, BUCKETS, strategy)
    model = retrieval.build_model(config, BUCKETS, strategy, catalog=catalog)
    assert (model.sequence_objective.catalog_items is not None) == (catalog is not None)
    assert isinstance(model.query_tower.history_encoder, SequenceEncoder)
    batch = _batch(16)
    history = model.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=2,
                        epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(strategy.extended.variable_created_in_scope(v)
               for v in model.trainable_variables)
    names = " ".join(v.name for v in model.trainable_variables)
    assert "block_1" in names and ("mask_vector" in names) == (kind == "bidirectional")
    queries = model.query_tower(batch).numpy()
    np.testing.assert_allclose(queries, model.query_tower(batch).numpy())   # inference
    assert not np.allclose(queries, model.query_tower(batch, training=True).numpy())  # dropout
    objective = float(model.sequence_objective(batch[F.idx(F.HISTORY_ITEM_IDS)], training=True))
    assert np.isfinite(objective) and objective > 0


def test_query_tower_reads_history_texts_through_the_sequence_encoder():
    """BERT text modes: the history texts enter every position and their mean feeds the text
    match (no encoder needed: the text features are given)."""
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    from trainer.layers import TextMatch  # pylint: disable=import-outside-toplevel
    from trainer.text import tower as text_tower  # pylint: disable=import-outside-toplevel
    config = RetrievalConfig(embedding_dim=8, hidden_units=(8,), text_mode="frozen",
                             history_encoder="causal")
    projection = tf.keras.layers.Dense(8, use_bias=False)
    tower = retrieval.QueryTower(config, BUCKETS[F.USER_ID],
                                 tf.keras.layers.Embedding(BUCKETS[F.ITEM_ID], 8), None,
                                 projection, projection, TextMatch())
    batch = _batch(4)
    history = batch[F.idx(F.HISTORY_ITEM_IDS)]
    batch[text_tower.HISTORY_TEXT] = _texts(history)
    batch[text_tower.QUERY_TEXT] = tf.zeros([4, TEXT])
    out = tower(batch).numpy()
    assert out.shape == (4, 8 + TEXT) and np.isfinite(out).all()
    batch[text_tower.HISTORY_TEXT] = _texts(history, seed=1)
    assert np.abs(tower(batch).numpy()[:, :8] - out[:, :8]).max() > 1e-4


def _routine_shop(n, seed, items=10, length=5):
    """Planted sequences: histories of `length` distinct-looking items (most recent first)
    whose most recent item was also bought earlier; the next item is the one that followed it
    then (a replenishment routine). Which item that is depends on where the repeat sits, so
    the answer needs the order and the items' relations, not a weighted bag of them."""
    rng = np.random.default_rng(seed)
    history = np.zeros((n, length), np.int64)
    target = np.zeros(n, np.int64)
    for i in range(n):
        history[i, 1:] = rng.permutation(np.arange(1, items + 1))[:length - 1]
        earlier = rng.integers(2, length)
        history[i, 0] = history[i, earlier]
        target[i] = history[i, earlier - 1]
    return history, target


def _routine_batch(history, target):
    n = len(target)
    zeros = tf.zeros([n], tf.int64)
    return {F.idx(F.USER_ID): zeros, F.idx(F.HISTORY_ITEM_IDS): tf.constant(history),
            F.idx(F.ITEM_ID): tf.constant(target), F.idx(F.BRAND): zeros,
            F.idx(F.CATEGORY): zeros, F.idx(F.TOP_CATEGORY): zeros,
            F.PRICE_Z: tf.zeros([n]), F.IN_STOCK: zeros, F.QUERY: tf.constant([""] * n),
            F.TITLE: tf.constant([""] * n)}


def test_causal_encoder_learns_planted_sequences_the_pooled_encoder_cannot():
    """Issue #15: on planted routines (see _routine_shop) the causal encoder, with its
    next-item objective as configured by default, finds the next item of held-out histories;
    attention pooling, trained the same way, cannot represent which item followed which."""
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    items, length = 10, 5
    buckets = dict(BUCKETS, **{F.ITEM_ID: items + 2})
    train = _routine_batch(*_routine_shop(600 * 64, seed=1, items=items, length=length))
    history, target = _routine_shop(1000, seed=2, items=items, length=length)
    catalog = np.arange(1, items + 1)
    accuracy = {}
    for kind in ("pooled", "causal"):
        config = RetrievalConfig(
            embedding_dim=32, hidden_units=(64,), text_mode="none", history_encoder=kind,
            use_user_id=False, use_query_text=False, use_item_features=False, use_text=False,
            id_dropout=0.0, logq_correction=False, sequence_dropout=0.0, seed=0)
        tf.keras.utils.set_random_seed(0)
        model = retrieval.build_model(config, buckets, history_length=length)
        model.fit(tf.data.Dataset.from_tensor_slices(train).batch(64), epochs=1, verbose=0)
        queries = model.query_tower(_routine_batch(history, target)).numpy()
        candidates = model.candidate_tower(_routine_batch(
            np.zeros((items, length), np.int64), catalog)).numpy()
        best = catalog[np.argmax(queries @ candidates.T, axis=1)]
        accuracy[kind] = float(np.mean(best == target))
    assert accuracy["causal"] >= 0.9, accuracy          # measured .98-1.0 over data seeds
    assert accuracy["pooled"] <= 0.5, accuracy          # measured .32-.35
    assert accuracy["causal"] - accuracy["pooled"] >= 0.4, accuracy


def test_pooled_default_keeps_the_attention_pooling_encoder():
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    from trainer.layers import HistoryEncoder  # pylint: disable=import-outside-toplevel
    model = retrieval.build_model(RetrievalConfig(embedding_dim=8, hidden_units=(8,),
                                                  text_mode="none"), BUCKETS)
    assert isinstance(model.query_tower.history_encoder, HistoryEncoder)
    assert model.sequence_objective is None


@pytest.mark.slow
def test_causal_run_trains_exports_and_serves_raw_histories(transformed_shop, tmp_path):
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    # The next-item objective over the whole catalog (the Beauty product's setting): run_fn
    # loads the catalog split with its item texts for it.
    config = dict(RETRIEVAL_CONFIG, history_encoder="causal", related_items=0,
                  sequence_objective_negatives="catalog")
    run = shop_runs.run(retrieval.run_fn, shop_runs.fn_args(
        transformed_shop, str(tmp_path), config, train_steps=6))
    assert run.metrics["training"]["steps"] == 6
    assert run.metrics["config"]["history_encoder"] == "causal"
    assert run.metrics["config"]["sequence_objective_negatives"] == "catalog"
    loaded = tf.saved_model.load(run.export)
    out = loaded.signatures["top_k"](
        user_id=tf.constant(["user_001", "never_seen_user", "user_002"]),
        history_item_ids=tf.constant([["hair_00", "hair_03", ""], ["not_an_item", "", ""],
                                      ["", "", ""]]),
        query=tf.constant(["", "shampoo", ""]))
    assert out["item_ids"].shape == (3, 20) and np.isfinite(out["scores"].numpy()).all()
    embedding = loaded.signatures["query_embedding"](
        user_id=tf.constant(["user_001"]), history_item_ids=tf.constant([["hair_00"] * 30]),
        query=tf.constant([""]))["embedding"].numpy()
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)
