"""Text caches and MiniLM text parts of the retrieval towers (trainer/text/cache.py,
trainer/text/tower.py): item texts, row lookups, cached vs live encodings, training modes."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tests.trainer.text.encoder_fixture import SEQ_LEN, encoder_cache
from trainer import features as F
from trainer.text import cache as text_cache
from trainer.text import tower as text_tower
from trainer.config import RetrievalConfig
from trainer.text.encoder import encode_texts, ensure_text_encoder

L = F.HISTORY_LENGTH
ITEM_TEXTS = ["Velora Red Matte Lipstick | Velora | Beauty > Makeup > Lips",
              "Trailhead Green 2-Person Dome Tent | Trailhead | Sports > Outdoor > Camping",
              "Mug"]
QUERIES = ["red lipstick", "a tent for two people to sleep in when camping in the rain"]


def _catalog():
    texts = np.array([t.encode() for t in ITEM_TEXTS + QUERIES], dtype=object)
    return text_cache.TextCatalog(texts, np.array([b"lip", b"tent", b"mug", b"mug2"], object),
                                  np.array([0, 1, 2, 2], np.int32), num_item_texts=3)


def test_item_text_joins_the_non_empty_parts():
    got = text_cache.item_text(tf.constant(["Red Lipstick", "", " Mug ", ""]),
                               tf.constant(["Lumi", "", "", "Brand"]),
                               tf.constant(["Beauty > Lips", "Home", "", ""]))
    assert got.numpy().tolist() == [b"Red Lipstick | Lumi | Beauty > Lips", b"Home", b"Mug",
                                    b"Brand"]
    assert text_cache.item_text(*[tf.constant([""])] * 3).numpy().tolist() == [b""]


def test_item_text_appends_the_descriptions_first_characters_when_asked():
    parts = [tf.constant(["Mug", "", "Tent"]), tf.constant(["", "", "Nord"]),
             tf.constant(["Home", "", ""])]
    described = tf.constant([" Holds 300 ml. ", "Only a description", "é" * 400])
    assert text_cache.item_text(*parts, described).numpy().tolist() == [b"Mug | Home", b"",
                                                                         b"Tent | Nord"]
    got = [t.decode() for t in text_cache.item_text(*parts, described, 300).numpy()]
    assert got == ["Mug | Home | Holds 300 ml.", "Only a description",
                   "Tent | Nord | " + "é" * 300]          # characters, not bytes
    features = {F.TITLE: parts[0], F.BRAND: parts[1], F.CATEGORY: parts[2]}
    assert text_cache.item_text_of(features).numpy().tolist() == [b"Mug | Home", b"",
                                                                  b"Tent | Nord"]
    features[F.DESCRIPTION] = described
    assert text_cache.item_text_of(features, 4).numpy().tolist() == [
        b"Mug | Home | Hold", b"Only", b"Tent | Nord | " + "é".encode() * 4]


def test_row_lookup_maps_texts_and_item_ids_to_rows():
    lookup = text_cache.RowLookup(_catalog())
    rows = lookup.text_rows(tf.constant([ITEM_TEXTS[1], QUERIES[0], "unknown", ""]))
    assert rows.dtype == tf.int32 and rows.numpy().tolist() == [1, 3, -1, -1]
    items = lookup.item_rows(tf.constant([["mug2", "lip", "", "nope"]]))
    assert items.numpy().tolist() == [[2, 0, -1, -1]]
    batch = lookup.add_rows({
        F.TITLE: tf.constant(["Mug", "Velora Red Matte Lipstick"]),
        F.BRAND: tf.constant(["", "Velora"]),
        F.CATEGORY: tf.constant(["", "Beauty > Makeup > Lips"]),
        F.QUERY: tf.constant(["", "red lipstick"]),
        F.HISTORY_ITEM_IDS: tf.constant([["tent"] + [""] * (L - 1), ["lip"] * L])})
    assert batch[text_cache.ITEM_TEXT_ROW].numpy().tolist() == [2, 0]
    assert batch[text_cache.QUERY_TEXT_ROW].numpy().tolist() == [-1, 3]
    assert batch[text_cache.HISTORY_TEXT_ROW].numpy()[0, :2].tolist() == [1, -1]


@pytest.mark.slow
def test_collect_texts_from_the_transformed_splits(transformed_shop):
    from tests.trainer.shop_runs import fn_args  # pylint: disable=import-outside-toplevel
    import tensorflow_transform as tft  # pylint: disable=import-outside-toplevel
    args = fn_args(transformed_shop, "/unused", {})
    spec = tft.TFTransformOutput(args.transform_output).transformed_feature_spec()
    catalog = text_cache.collect_texts(
        [args.train_files[0].replace("Split-train", "Split-catalog")], args.train_files, spec)
    items = {row[F.ITEM_ID]: row for row in transformed_shop.rows[F.CATALOG_SPLIT]}
    assert sorted(catalog.item_ids.astype(str)) == sorted(items)
    for item_id, row in zip(catalog.item_ids.astype(str), catalog.item_rows):
        item = items[item_id]
        expected = " | ".join(p for p in (item[F.TITLE], item[F.BRAND], item[F.CATEGORY]) if p)
        assert catalog.texts[row].decode() == expected
    queries = {row[F.QUERY] for row in transformed_shop.rows[F.TRAIN_SPLIT] if row[F.QUERY]}
    assert {t.decode() for t in catalog.texts[catalog.num_item_texts:]} == queries
    assert len(set(catalog.texts.tolist())) == catalog.size
    described = text_cache.collect_texts(
        [args.train_files[0].replace("Split-train", "Split-catalog")], args.train_files, spec,
        description_chars=12)
    assert described.description_chars == 12 == text_cache.RowLookup(described).description_chars
    for item_id, row in zip(described.item_ids.astype(str), described.item_rows):
        item = items[item_id]
        parts = (item[F.TITLE], item[F.BRAND], item[F.CATEGORY], item[F.DESCRIPTION][:12].strip())
        assert described.texts[row].decode() == " | ".join(p for p in parts if p)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return ensure_text_encoder(encoder_cache(tmp_path_factory), SEQ_LEN)


@pytest.fixture(scope="module")
def tables(paths):
    """top_layers tables (they hold the frozen and full ones too), 4 frozen layers."""
    return text_cache.encode_tables(_catalog().texts, paths, "top_layers", 4, batch_size=2)


@pytest.mark.slow
def test_cached_encodings_match_the_encoder(paths, tables):
    texts = [t.decode() for t in _catalog().texts]
    expected = encode_texts(texts, paths)
    np.testing.assert_allclose(tables.embeddings, expected, atol=1e-5)  # length-batched, cut
    assert tables.lower_hidden.shape == (len(texts), SEQ_LEN, 384)
    assert tables.lower_hidden.dtype == np.float16
    assert tables.token_ids.shape == tables.padding_mask.shape == (len(texts), SEQ_LEN)
    lengths = tables.padding_mask.sum(axis=1)
    assert lengths[2] == 3 and lengths[4] > lengths[3]                # [CLS] mug [SEP]
    frozen = text_cache.encode_tables(_catalog().texts, paths, "frozen")
    assert frozen.lower_hidden is None and frozen.token_ids is None


def _rows_batch():
    return {text_cache.ITEM_TEXT_ROW: tf.constant([0, 1, 0, -1], tf.int32),
            text_cache.QUERY_TEXT_ROW: tf.constant([3, -1, 4, 3], tf.int32),
            text_cache.HISTORY_TEXT_ROW: tf.constant([[1, 0] + [-1] * (L - 2)] * 4, tf.int32)}


@pytest.mark.slow
@pytest.mark.parametrize("mode, atol", [("frozen", 0.0), ("top_layers", 2e-3),
                                        ("full", 1e-5)])
def test_training_text_modes_start_from_the_pretrained_embeddings(paths, tables, mode, atol):
    config = RetrievalConfig(text_mode=mode, text_top_layers=2)
    layer = text_tower.TrainingText(config, tables, paths)
    out = layer(_rows_batch(), training=False)
    table = tables.embeddings
    np.testing.assert_allclose(out[text_tower.ITEM_TEXT], table[[0, 1, 0, 0]] * [[1], [1], [1],
                                                                             [0]], atol=atol)
    np.testing.assert_allclose(out[text_tower.QUERY_TEXT], table[[3, 0, 4, 3]] * [[1], [0], [1],
                                                                              [1]], atol=atol)
    history = out[text_tower.HISTORY_TEXT].numpy()
    assert history.shape == (4, L, 384)
    np.testing.assert_array_equal(history[:, 0], np.repeat(table[[1]], 4, axis=0))
    assert not history[:, 2:].any()
    trained = {"frozen": 0, "top_layers": 2 * 16, "full": 101}[mode]
    assert len(layer.encoder_weights) == trained
    if mode != "frozen":                                    # dropout: training changes outputs
        again = layer(_rows_batch(), training=True)[text_tower.ITEM_TEXT]
        assert float(tf.reduce_max(tf.abs(again - out[text_tower.ITEM_TEXT]))) > 1e-4


@pytest.mark.slow
def test_embedder_encodes_uncached_texts_live(paths, tables):
    config = RetrievalConfig()
    catalog = _catalog()
    embedder = text_tower.build_embedder(config, catalog, tables, paths)
    new = "Nova Berry Velvet Lip Stain | Nova | Beauty > Makeup > Lips"
    assert embedder.lookup.size == len(ITEM_TEXTS) == embedder.table.shape[0]  # no queries
    got = embedder.encode(tf.constant([QUERIES[1], new, "", new])).numpy()
    np.testing.assert_allclose(got[0], tables.embeddings[4], atol=1e-5)   # live = its cache row
    np.testing.assert_allclose(got[1], encode_texts([new], paths)[0], atol=1e-5)
    np.testing.assert_array_equal(got[2], np.zeros(384))
    np.testing.assert_array_equal(got[3], got[1])
    features = embedder.query_features({
        F.QUERY: tf.constant(["red lipstick"]),
        F.HISTORY_ITEM_IDS: tf.constant([["tent", "unknown"] + [""] * (L - 2)])})
    np.testing.assert_allclose(features[text_tower.QUERY_TEXT][0], tables.embeddings[3],
                               atol=1e-5)
    history = features[text_tower.HISTORY_TEXT].numpy()[0]
    np.testing.assert_array_equal(history[0], tables.embeddings[1])
    assert not history[1:].any()
    item = embedder.candidate_features({F.TITLE: tf.constant(["Mug"]),
                                        F.BRAND: tf.constant([""]),
                                        F.CATEGORY: tf.constant([""])})
    np.testing.assert_array_equal(item[text_tower.ITEM_TEXT][0], tables.embeddings[2])


@pytest.mark.slow
def test_embedder_reads_descriptions_as_its_catalog_was_built(paths, tables):
    """A cache built with description_chars: the exported embedder's live item texts take
    the description the same way (catalog items keep their cached row)."""
    catalog = dataclasses.replace(_catalog(), description_chars=9)
    embedder = text_tower.build_embedder(RetrievalConfig(description_chars=9), catalog, tables,
                                         paths)
    item = embedder.candidate_features({
        F.TITLE: tf.constant(["Mug", "Stoneware Mug"]), F.BRAND: tf.constant(["", ""]),
        F.CATEGORY: tf.constant(["", ""]),
        F.DESCRIPTION: tf.constant(["", "Holds 300 ml of tea"])})[text_tower.ITEM_TEXT]
    np.testing.assert_array_equal(item[0], tables.embeddings[2])
    np.testing.assert_allclose(item[1], encode_texts(["Stoneware Mug | Holds 300"], paths)[0],
                               atol=1e-5)


@pytest.mark.slow
def test_fine_tuned_embedder_re_encodes_the_cache(paths, tables):
    config = RetrievalConfig(text_mode="full")
    layer = text_tower.TrainingText(config, tables, paths)
    weight = layer.encoder_weights[-1]
    weight.assign(weight * 0.5)                              # "fine-tuned"
    embedder = text_tower.build_embedder(config, _catalog(), tables, paths, layer)
    tuned = layer(_rows_batch(), training=False)[text_tower.ITEM_TEXT].numpy()
    got = embedder.encode(tf.constant([ITEM_TEXTS[0], ITEM_TEXTS[1]])).numpy()
    np.testing.assert_allclose(got, tuned[:2], atol=1e-5)
    assert np.abs(got - tables.embeddings[:2]).max() > 1e-3
    history = embedder.query_features({F.QUERY: tf.constant([""]),
                                       F.HISTORY_ITEM_IDS: tf.constant([["lip"] * L])})
    np.testing.assert_array_equal(history[text_tower.HISTORY_TEXT][0, 0],
                                  tables.embeddings[0])         # history stays pretrained


BUCKETS = {F.USER_ID: 6, F.ITEM_ID: 10, F.BRAND: 4, F.CATEGORY: 4, F.TOP_CATEGORY: 4}


def _training_batch(n=8):
    rng = np.random.default_rng(0)
    batch = {
        F.idx(F.USER_ID): rng.integers(1, 5, n), F.idx(F.ITEM_ID): np.arange(1, n + 1) % 9,
        F.idx(F.HISTORY_ITEM_IDS): rng.integers(0, 9, (n, L)),
        F.idx(F.BRAND): rng.integers(0, 3, n), F.idx(F.CATEGORY): rng.integers(0, 3, n),
        F.idx(F.TOP_CATEGORY): rng.integers(0, 3, n),
        F.PRICE_Z: rng.normal(size=n).astype(np.float32), F.IN_STOCK: rng.integers(0, 2, n),
        text_cache.ITEM_TEXT_ROW: (np.arange(n) % 3).astype(np.int32),
        text_cache.QUERY_TEXT_ROW: np.array([3, -1, 4, -1] * (n // 4), np.int32),
        text_cache.HISTORY_TEXT_ROW: rng.integers(-1, 3, (n, L)).astype(np.int32)}
    return {k: tf.constant(v) for k, v in batch.items()}


@pytest.mark.slow
def test_top_layers_train_on_their_own_optimizer_under_a_strategy(paths, tables):
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    config = RetrievalConfig(text_mode="top_layers", text_top_layers=2, embedding_dim=8,
                             hidden_units=(8,), learning_rate=0.01, text_learning_rate=1e-3)
    resources = text_tower.TextResources(paths, _catalog(), tables)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    model = retrieval.build_model(config, BUCKETS, strategy, resources,
                                  np.full(BUCKETS[F.ITEM_ID], 0.1, np.float32))
    encoder = model.text.encoder
    lower = [v for stage in [encoder.embeddings] + list(encoder.transformer_layers[:4])
             for v in stage.trainable_variables]
    upper = [v for stage in encoder.transformer_layers[4:] for v in stage.trainable_variables]
    pretrained = [v.numpy() for v in lower]
    dataset = tf.data.Dataset.from_tensors(_training_batch()).repeat()
    model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0)         # builds the towers
    before = {v.ref(): v.numpy() for v in lower + upper + model.trainable_variables}
    history = model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    changed = lambda v: not np.array_equal(before[v.ref()], v.numpy())
    assert not any(changed(v) for v in lower)
    assert all(np.array_equal(p, v.numpy()) for p, v in zip(pretrained, lower))
    assert all(changed(v) for v in upper if "gamma" not in v.name) and upper
    assert {v.ref() for v in upper} <= {v.ref() for v in model.trainable_variables}
    steps = [float(np.abs(before[v.ref()] - v.numpy()).max()) for v in upper]
    assert max(steps) <= 2 * 2 * 1e-3 + 1e-6          # Adam: <= ~lr per step, 2 steps
    assert changed(model.query_tower.user_embedding.embeddings)
    assert all(strategy.extended.variable_created_in_scope(v)
               for v in model.trainable_variables)
