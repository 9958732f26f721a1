"""trainer.retrieval.run_fn end to end on the synthetic shop: training, report, export."""
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.trainer import shop_runs
from tests.trainer.conftest import RETRIEVAL_CONFIG
from trainer import features as F

pytestmark = pytest.mark.slow

SIGNATURES = {"serving_default", "top_k", "query_embedding", "candidate_embedding",
              "eval_hit_at_k", "related_items"}


@pytest.fixture(scope="module")
def loaded(retrieval_run):
    return tf.saved_model.load(retrieval_run.export)


@pytest.fixture(scope="module")
def degraded_run(transformed_shop, tmp_path_factory):
    """degrade: true, 4 TrainArgs steps, K above the catalog size."""
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    config = dict(RETRIEVAL_CONFIG, degrade=True, top_k=100)
    args = shop_runs.fn_args(transformed_shop, str(tmp_path_factory.mktemp("degraded")),
                             config, train_steps=4)
    return shop_runs.run(retrieval.run_fn, args)


def _catalog(shop):
    return {row[F.ITEM_ID]: row for row in shop.rows[F.CATALOG_SPLIT]}


def test_loss_decreases_and_report_is_written(retrieval_run, transformed_shop):
    metrics = retrieval_run.metrics
    assert metrics["training"]["loss_last"] < 0.8 * metrics["training"]["loss_first"]
    with open(os.path.join(retrieval_run.args.model_run_dir, "loss_curve.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    eval_clicks = sum(row[F.CLICKED] for row in transformed_shop.rows[F.EVAL_SPLIT])
    assert metrics["num_eval_queries"] == eval_clicks
    assert metrics["num_catalog_items"] == len(_catalog(transformed_shop))
    assert metrics["config"]["top_k"] == 20


def test_model_beats_popularity_on_the_planted_preference(retrieval_run):
    model, popularity = retrieval_run.metrics["model"], retrieval_run.metrics["popularity"]
    assert model["recall@10"] > popularity["recall@10"] + 0.15
    assert model["recall@10_history_filtered"] > popularity["recall@10_history_filtered"]


def test_signatures_take_raw_features_and_unknown_ids(loaded, transformed_shop):
    assert set(loaded.signatures) == SIGNATURES
    catalog = _catalog(transformed_shop)
    out = loaded.signatures["top_k"](
        user_id=tf.constant(["user_001", "never_seen_user"]),
        history_item_ids=tf.constant([["hair_00", "hair_03", ""], ["not_an_item", "", ""]]),
        query=tf.constant(["", "shampoo"]))
    assert out["item_ids"].shape == (2, 20) and out["item_ids"].dtype == tf.string
    assert out["scores"].shape == (2, 20) and out["scores"].dtype == tf.float32
    assert {i.decode() for i in out["item_ids"].numpy().ravel()} <= set(catalog)
    assert np.all(np.diff(out["scores"].numpy(), axis=1) <= 1e-6)  # best first
    default = loaded.signatures["serving_default"](
        user_id=tf.constant(["user_001"]), history_item_ids=tf.constant([["hair_00"] * 30]),
        query=tf.constant([""]))  # longer than HISTORY_LENGTH: truncated
    assert default["item_ids"].shape == (1, 20)
    embedding = loaded.signatures["query_embedding"](
        user_id=tf.constant(["user_001"]), history_item_ids=tf.zeros([1, 0], tf.string),
        query=tf.constant([""]))["embedding"].numpy()
    assert embedding.shape == (1, 32)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, rtol=1e-5)


def test_index_agrees_with_the_candidate_embedding_signature(loaded, transformed_shop):
    rows = list(_catalog(transformed_shop).values())
    column = lambda key, dtype=tf.string: tf.constant([r[key] for r in rows], dtype)
    candidates = loaded.signatures["candidate_embedding"](
        item_id=column(F.ITEM_ID), title=column(F.TITLE), description=column(F.DESCRIPTION),
        brand=column(F.BRAND), category=column(F.CATEGORY), price=column(F.PRICE, tf.float32),
        in_stock=column(F.IN_STOCK, tf.int64))["embedding"].numpy()
    assert candidates.shape == (len(rows), 32)
    query = dict(user_id=tf.constant(["user_002"]), history_item_ids=tf.constant([["makeup_01"]]),
                 query=tf.constant(["lipstick"]))
    q = loaded.signatures["query_embedding"](**query)["embedding"].numpy()
    top = loaded.signatures["top_k"](**query)
    scores = (q @ candidates.T)[0]
    order = np.argsort(-scores)[:20]
    np.testing.assert_allclose(top["scores"].numpy()[0], scores[order], atol=1e-5)
    assert top["item_ids"].numpy()[0][0].decode() == rows[order[0]][F.ITEM_ID]


def test_eval_hit_at_k_on_raw_examples_equals_offline_recall(loaded, retrieval_run,
                                                             transformed_shop):
    examples = shop_runs.raw_examples(transformed_shop, F.EVAL_SPLIT)
    hits = loaded.signatures["eval_hit_at_k"](examples=tf.constant(examples))["hit_at_k"]
    assert hits.shape == (len(examples),) and hits.dtype == tf.float32
    clicked = np.array([row[F.CLICKED] for row in transformed_shop.rows[F.EVAL_SPLIT]])
    recall = float((hits.numpy() * clicked).sum() / clicked.sum())  # TFMA: weighted by clicked
    assert recall == pytest.approx(retrieval_run.metrics["model"]["recall@20"], abs=0.01)


def test_related_items_serve_the_counts_of_the_clicked_train_units(loaded, retrieval_run,
                                                                  transformed_shop):
    # Counted here from the generated rows: (last item before, clicked item) and, window 3,
    # (each of the last three items before, clicked item) in both orders.
    transitions, cooccurrences, engaged = {}, {}, {}
    for row in transformed_shop.rows[F.TRAIN_SPLIT]:
        if not row[F.CLICKED]:
            continue
        item, before = row[F.ITEM_ID], [h for h in row[F.HISTORY_ITEM_IDS] if h]
        engaged[item] = engaged.get(item, 0) + 1
        if before:
            transitions[(before[0], item)] = transitions.get((before[0], item), 0) + 1
        for h in before[:3]:
            for pair in ((h, item), (item, h)):
                cooccurrences[pair] = cooccurrences.get(pair, 0) + 1
    item = max(engaged, key=lambda i: (sum(v for (a, _), v in transitions.items() if a == i), i))
    out = loaded.signatures["related_items"](item_id=tf.constant([item, "not_an_item"]))
    assert not {"text_ids", "text_weights"} & set(out)       # no text tower: no text table
    assert out["engagements"].numpy().tolist() == [engaged[item], 0]
    for key, counts in (("transition", transitions), ("cooccurrence", cooccurrences)):
        ids = [i.decode() for i in out[f"{key}_ids"].numpy()[0]]
        weights = out[f"{key}_weights"].numpy()[0]
        assert len(ids) == 50 and not any(out[f"{key}_ids"].numpy()[1])
        expected = sorted((v, b) for (a, b), v in counts.items() if a == item)
        assert len(expected) < 50                     # nothing truncated: ties are exact
        assert sorted((w, i) for w, i in zip(weights, ids) if i) == expected
        assert np.all(np.diff(weights) <= 0)          # best first, 0-padded
    report = retrieval_run.metrics["related_items"]
    assert report["engaged_units"] == sum(engaged.values())
    assert report["neighbours"] == 50 and report["transition_pairs"] == len(transitions)
    assert not [key for key in report if key.startswith("text_")]


def test_history_steers_an_unknown_user(loaded):
    def top_categories(history):
        ids = loaded.signatures["top_k"](
            user_id=tf.constant(["brand_new_user"]), history_item_ids=tf.constant([history]),
            query=tf.constant([""]))["item_ids"].numpy()[0][:10]
        return [i.decode().split("_")[0] for i in ids]
    assert top_categories(["hair_00", "hair_02", "hair_05"]).count("hair") >= 6
    assert top_categories(["nails_01", "nails_00", "nails_04"]).count("nails") >= 6


def test_degraded_model_is_worse_and_train_steps_are_honoured(degraded_run, retrieval_run):
    assert degraded_run.metrics["training"]["steps"] == 4
    assert (degraded_run.metrics["model"]["recall@10"]
            < retrieval_run.metrics["model"]["recall@10"] - 0.15)


def test_top_k_covers_the_full_catalog_including_cold_items(degraded_run, transformed_shop):
    loaded = tf.saved_model.load(degraded_run.export)
    out = loaded.signatures["top_k"](user_id=tf.constant(["user_000"]),
                                     history_item_ids=tf.constant([["skin_00"]]),
                                     query=tf.constant([""]))
    returned = {i.decode() for i in out["item_ids"].numpy()[0]}
    catalog = _catalog(transformed_shop)
    assert returned == set(catalog)                 # K = min(top_k, catalog size)
    cold = {item[F.ITEM_ID] for item in transformed_shop.rows["items"] if item["cold"]}
    assert cold and cold <= returned


def _history_of(n):
    """n distinct catalog item ids (most recent first), cycling through the categories."""
    items = [f"{top}_{i:02d}" for i in range(12) for top in ("hair", "skin", "makeup", "nails")]
    return items[:n]


def test_a_history_length_setting_reaches_the_model_and_the_signatures(retrieval_run_long,
                                                                        transformed_shop_long):
    """history_length 20 (PipelineConfig.history_length): the transformed examples, the
    transformer encoder and the export have width 20; the signatures take raw histories of
    5, 20 and 30 items, a longer one cut to its 20 most recent, a shorter one padded."""
    from tests.trainer.conftest import LONG_HISTORY
    import tensorflow_transform as tft  # pylint: disable=import-outside-toplevel
    output = tft.TFTransformOutput(transformed_shop_long.transform_graph)
    assert F.history_length_of(output.transformed_feature_spec()) == LONG_HISTORY
    assert F.history_length_of(output.raw_feature_spec()) == LONG_HISTORY
    longest = max(sum(1 for h in row[F.HISTORY_ITEM_IDS] if h)
                  for row in transformed_shop_long.rows[F.TRAIN_SPLIT])
    assert 10 < longest <= LONG_HISTORY        # some histories use more than the default 10
    loaded = tf.saved_model.load(retrieval_run_long.export)
    used = loaded.signatures["top_k"].structured_outputs["history_used"]
    assert used.shape.as_list() == [None, LONG_HISTORY]      # clients read the width here

    def call(name, *histories):
        width = max(len(h) for h in histories)
        padded = [h + [""] * (width - len(h)) for h in histories]
        return loaded.signatures[name](
            user_id=tf.constant([""] * len(histories)), history_item_ids=tf.constant(padded),
            query=tf.constant([""] * len(histories)))

    h30 = _history_of(30)
    for name, key in (("query_embedding", "embedding"), ("top_k", "scores")):
        out = call(name, h30, h30[:20], h30[:5], h30[:5] + [""] * 15, h30[:10])
        values = out[key].numpy()
        np.testing.assert_allclose(values[0], values[1], atol=1e-6)    # 30 -> the first 20
        np.testing.assert_allclose(values[2], values[3], atol=1e-6)    # 5 -> padded to 20
        assert np.abs(values[1] - values[4]).max() > 1e-4      # items 11-20 are read
        history_used = out["history_used"].numpy().astype(str)
        assert history_used.shape == (5, LONG_HISTORY)
        assert list(history_used[0]) == h30[:20]
        assert list(history_used[2]) == h30[:5] + [""] * 15
    top = call("top_k", h30, h30[:20])
    assert (top["item_ids"].numpy()[0] == top["item_ids"].numpy()[1]).all()
    examples = shop_runs.raw_examples(transformed_shop_long, F.EVAL_SPLIT)
    hits = loaded.signatures["eval_hit_at_k"](examples=tf.constant(examples))["hit_at_k"]
    assert hits.shape == (len(examples),)     # raw examples of width 20 parse


def test_a_model_of_the_default_length_answers_50_items_as_its_10_most_recent(loaded):
    """The API sends up to max_history (50) items; a model exported with history_length 10
    (every model pushed so far) reads the 10 most recent, as if only those were sent."""
    used = loaded.signatures["top_k"].structured_outputs["history_used"]
    assert used.shape.as_list() == [None, F.HISTORY_LENGTH]
    h50 = (_history_of(48) + ["never_seen", ""])
    out = loaded.signatures["top_k"](
        user_id=tf.constant(["user_001"] * 2),
        history_item_ids=tf.constant([h50, h50[:10] + [""] * 40]),
        query=tf.constant(["", ""]))
    np.testing.assert_allclose(out["scores"].numpy()[0], out["scores"].numpy()[1], atol=1e-6)
    assert (out["item_ids"].numpy()[0] == out["item_ids"].numpy()[1]).all()
    assert list(out["history_used"].numpy()[0].astype(str)) == h50[:10]
