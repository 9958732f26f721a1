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
        "score": ({"user_id": (S, [-1]), "history_item_ids": (S, [-1, -1]),
                   "item_id": (S, [-1]), "brand": (S, [-1]),
                   "category": (S, [-1]), "price": (F32, [-1]), "in_stock": (I64, [-1])},
                  {"click": (F32, [-1]), "purchase": (F32, [-1]), "score": (F32, [-1])}),
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
