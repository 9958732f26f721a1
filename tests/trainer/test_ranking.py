"""trainer.ranking.run_fn end to end on the synthetic shop: training, report, export."""
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.trainer import shop_runs
from tests.trainer.conftest import RANKING_CONFIG
from trainer import features as F

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(ranking_run):
    return tf.saved_model.load(ranking_run.export)


@pytest.fixture(scope="module")
def degraded_run(transformed_shop, tmp_path_factory):
    from trainer import ranking  # pylint: disable=import-outside-toplevel
    args = shop_runs.fn_args(transformed_shop, str(tmp_path_factory.mktemp("ranking_degraded")),
                             dict(RANKING_CONFIG, degrade=True), train_steps=5)
    return shop_runs.run(ranking.run_fn, args)


def test_loss_decreases_and_heads_learn(ranking_run, transformed_shop):
    metrics = ranking_run.metrics
    assert metrics["training"]["loss_last"] < 0.8 * metrics["training"]["loss_first"]
    assert metrics["click"]["auc"] > 0.8          # planted: preferred category is clicked
    assert metrics["purchase"]["auc"] > 0.7       # planted: cheap clicked items are bought
    rows = transformed_shop.rows[F.EVAL_SPLIT]
    assert metrics["num_eval_examples"] == len(rows)
    assert metrics["click"]["label_rate"] == pytest.approx(np.mean([r[F.CLICKED] for r in rows]))
    with open(os.path.join(ranking_run.args.model_run_dir, "loss_curve.png"), "rb") as f:
        assert f.read(4) == b"\x89PNG"


def test_serving_default_scores_raw_examples(loaded, ranking_run, transformed_shop):
    assert set(loaded.signatures) == {"serving_default", "score", "score_with_query"}
    examples = shop_runs.raw_examples(transformed_shop, F.EVAL_SPLIT)
    out = loaded.signatures["serving_default"](examples=tf.constant(examples))
    assert set(out) == {"click", "purchase"}
    for head in ("click", "purchase"):
        assert out[head].shape == (len(examples),) and out[head].dtype == tf.float32
    rows = transformed_shop.rows[F.EVAL_SPLIT]
    clicked = np.array([r[F.CLICKED] for r in rows]) == 1
    assert out["click"].numpy()[clicked].mean() > out["click"].numpy()[~clicked].mean() + 0.2
    np.testing.assert_allclose(out["click"].numpy().mean(),
                               ranking_run.metrics["click"]["mean_prediction"], rtol=1e-4)


def test_score_signature_matches_serving_default_and_weights(loaded, transformed_shop):
    # `score` has no search context: compare on units without a query.
    keep = [i for i, r in enumerate(transformed_shop.rows[F.EVAL_SPLIT]) if not r[F.QUERY]][:16]
    rows = [transformed_shop.rows[F.EVAL_SPLIT][i] for i in keep]
    column = lambda key, dtype=tf.string: tf.constant([r[key] for r in rows], dtype)
    out = loaded.signatures["score"](
        user_id=column(F.USER_ID), history_item_ids=column(F.HISTORY_ITEM_IDS),
        item_id=column(F.ITEM_ID), brand=column(F.BRAND), category=column(F.CATEGORY),
        price=column(F.PRICE, tf.float32), in_stock=column(F.IN_STOCK, tf.int64))
    assert set(out) == {"click", "purchase", "score"}
    examples = shop_runs.raw_examples(transformed_shop, F.EVAL_SPLIT)
    expected = loaded.signatures["serving_default"](
        examples=tf.constant([examples[i] for i in keep]))
    for head in ("click", "purchase"):
        np.testing.assert_allclose(out[head].numpy(), expected[head].numpy(), atol=1e-5)
    weights = RANKING_CONFIG["score_weights"]
    np.testing.assert_allclose(
        out["score"].numpy(),
        weights["click"] * out["click"].numpy() + weights["purchase"] * out["purchase"].numpy(),
        atol=1e-5)


def test_score_with_query_adds_the_search_context(loaded, transformed_shop):
    rows = [r for r in transformed_shop.rows[F.EVAL_SPLIT] if r[F.QUERY]][:16]
    column = lambda key, dtype=tf.string: tf.constant([r[key] for r in rows], dtype)
    item = dict(user_id=column(F.USER_ID), history_item_ids=column(F.HISTORY_ITEM_IDS),
                item_id=column(F.ITEM_ID), brand=column(F.BRAND), category=column(F.CATEGORY),
                price=column(F.PRICE, tf.float32), in_stock=column(F.IN_STOCK, tf.int64))
    with_query = loaded.signatures["score_with_query"](
        query=column(F.QUERY), title=column(F.TITLE), **item)
    examples = [e for e, r in zip(shop_runs.raw_examples(transformed_shop, F.EVAL_SPLIT),
                                  transformed_shop.rows[F.EVAL_SPLIT]) if r[F.QUERY]][:16]
    expected = loaded.signatures["serving_default"](examples=tf.constant(examples))
    for head in ("click", "purchase"):   # the same model input as the Evaluator's
        np.testing.assert_allclose(with_query[head].numpy(), expected[head].numpy(), atol=1e-5)
    no_query = loaded.signatures["score_with_query"](
        query=tf.constant([""] * len(rows)), title=column(F.TITLE), **item)
    plain = loaded.signatures["score"](**item)
    np.testing.assert_allclose(no_query["score"].numpy(), plain["score"].numpy(), atol=1e-5)
    assert not np.allclose(with_query["click"].numpy(), plain["click"].numpy())


def test_unknown_user_and_item_are_scored(loaded):
    out = loaded.signatures["score"](
        user_id=tf.constant(["nobody", ""]), history_item_ids=tf.constant([["x", "y"], ["", ""]]),
        item_id=tf.constant(["new_item", "skin_01"]), brand=tf.constant(["", "New Brand"]),
        category=tf.constant(["Skin > Face > Serum", "Unknown"]),
        price=tf.constant([12.5, -1.0]), in_stock=tf.constant([0, 1], tf.int64))
    for value in out.values():
        assert value.shape == (2,) and np.all(np.isfinite(value.numpy()))


def test_degraded_model_is_worse_and_train_steps_are_honoured(degraded_run, ranking_run):
    assert degraded_run.metrics["training"]["steps"] == 5
    assert degraded_run.metrics["click"]["auc"] < ranking_run.metrics["click"]["auc"] - 0.2
