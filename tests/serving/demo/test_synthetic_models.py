"""Synthetic models carry the exported signatures (trainer/signatures.py) and encode
categories, so API tests on them check real behaviour."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from serving.standin.saved_model_servable import read_signature_defs
from tests.serving.api.setup import api_serving_dir, api_shop  # noqa: F401

S, F32, I64 = tf.string.as_datatype_enum, tf.float32.as_datatype_enum, tf.int64.as_datatype_enum
QUERY_INPUTS = {"user_id": (S, [-1]), "history_item_ids": (S, [-1, -1]), "query": (S, [-1])}
ITEM_INPUTS = {"item_id": (S, [-1]), "brand": (S, [-1]), "category": (S, [-1]),
               "price": (F32, [-1]), "in_stock": (I64, [-1])}
RANKING_OUTPUTS = {"click": (F32, [-1]), "purchase": (F32, [-1]), "score": (F32, [-1])}
EXPECTED = {
    "retrieval": {
        "top_k": (QUERY_INPUTS, {"item_ids": (S, [-1, 40]), "scores": (F32, [-1, 40])}),
        "serving_default": (QUERY_INPUTS, {"item_ids": (S, [-1, 40]),
                                           "scores": (F32, [-1, 40])}),
        "query_embedding": (QUERY_INPUTS, {"embedding": (F32, [-1, 13])}),
        "candidate_embedding": (
            {"item_id": (S, [-1]), "title": (S, [-1]), "description": (S, [-1]),
             "brand": (S, [-1]), "category": (S, [-1]), "price": (F32, [-1]),
             "in_stock": (I64, [-1])}, {"embedding": (F32, [-1, 13])}),
    },
    "ranking": {
        "score": ({"user_id": (S, [-1]), "history_item_ids": (S, [-1, -1]), **ITEM_INPUTS},
                  RANKING_OUTPUTS),
        "score_with_query": ({"user_id": (S, [-1]), "history_item_ids": (S, [-1, -1]),
                              "query": (S, [-1]), "title": (S, [-1]), **ITEM_INPUTS},
                             RANKING_OUTPUTS),
        "rank_candidates": ({"user_id": (S, []), "history_item_ids": (S, [-1]),
                             "query": (S, []), "title": (S, [-1]), **ITEM_INPUTS},
                            RANKING_OUTPUTS),
    },
}


def _describe(tensors) -> dict:
    return {alias: (info.dtype, [d.size for d in info.tensor_shape.dim])
            for alias, info in tensors.items()}


@pytest.mark.parametrize("model", ["retrieval", "ranking"])
def test_signatures_match_the_exported_models(api_serving_dir, model):
    defs = read_signature_defs(str(api_serving_dir / model / "1"))
    defs.pop("__saved_model_init_op", None)
    assert set(defs) == set(EXPECTED[model])
    for name, (inputs, outputs) in EXPECTED[model].items():
        assert _describe(defs[name].inputs) == inputs, name
        assert _describe(defs[name].outputs) == outputs, name


def test_embeddings_encode_top_category_and_queries(api_serving_dir):
    model = tf.saved_model.load(str(api_serving_dir / "retrieval" / "1"))
    items = ["toy1", "toy2", "book1"]
    emb = model.signatures["candidate_embedding"](
        item_id=tf.constant(items), title=tf.constant([""] * 3),
        description=tf.constant([""] * 3), brand=tf.constant([""] * 3),
        category=tf.constant(["Toys > Building", "Toys > Building", "Books > Fiction"]),
        price=tf.constant([1.0] * 3), in_stock=tf.constant([1] * 3, tf.int64))["embedding"]
    emb = emb.numpy() / np.linalg.norm(emb.numpy(), axis=1, keepdims=True)
    assert emb[0] @ emb[1] > 0.8 > emb[0] @ emb[2]
    out = model.signatures["top_k"](user_id=tf.constant(["", ""]),
                                    history_item_ids=tf.constant([["toy1", ""], ["", ""]]),
                                    query=tf.constant(["", "mystery novel"]))
    ids = out["item_ids"].numpy().astype(str)
    assert all(i.startswith("toy") for i in ids[0][:10])
    assert all(i.startswith("book") for i in ids[1][:10])


def test_ranking_matches_query_words_and_rank_candidates_equals_score_with_query(
        api_serving_dir):
    model = tf.saved_model.load(str(api_serving_dir / "ranking" / "1"))
    items = {"item_id": ["toy1", "beauty1", "book1"],
             "title": ["Blue building blocks toy", "Blue velvet lipstick", "Blue mystery novel"],
             "brand": ["ToyCo", "BeautyCo", "BookCo"],
             "category": ["Toys > Building", "Beauty > Makeup", "Books > Fiction"],
             "price": [5.5, 6.5, 7.5], "in_stock": [1, 1, 1]}
    tensors = {k: tf.constant(v, tf.int64 if k == "in_stock" else None)
               for k, v in items.items()}
    history = ["book2", "book3", ""]
    ranked = model.signatures["rank_candidates"](
        user_id=tf.constant("u"), history_item_ids=tf.constant(history),
        query=tf.constant("velvet lipstick"), **tensors)["score"].numpy()
    assert ranked.argmax() == 1, "the query's words outweigh the history's category"
    rows = model.signatures["score_with_query"](
        user_id=tf.constant(["u"] * 3), history_item_ids=tf.constant([history] * 3),
        query=tf.constant(["velvet lipstick"] * 3), **tensors)["score"].numpy()
    np.testing.assert_allclose(ranked, rows, rtol=1e-6)
    tensors.pop("title")
    plain = model.signatures["score"](user_id=tf.constant(["u"] * 3),
                                      history_item_ids=tf.constant([history] * 3),
                                      **tensors)["score"].numpy()
    assert plain.argmax() == 2, "without a query the history decides"
    no_query = model.signatures["rank_candidates"](
        user_id=tf.constant("u"), history_item_ids=tf.constant(history), query=tf.constant(""),
        title=tf.constant(items["title"]), **tensors)["score"].numpy()
    np.testing.assert_allclose(no_query, plain, rtol=1e-6)


@pytest.mark.parametrize("model", ["retrieval", "ranking"])
def test_every_version_carries_warmup_requests_for_every_signature(api_serving_dir, model):
    from tensorflow_serving.apis import prediction_log_pb2

    path = api_serving_dir / model / "1" / "assets.extra" / "tf_serving_warmup_requests"
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(path))]
    signatures = {log.predict_log.request.model_spec.signature_name for log in logs}
    assert signatures == set(EXPECTED[model])
    assert {log.predict_log.request.model_spec.name for log in logs} == {model}
