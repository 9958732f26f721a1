"""Both exports load and serve in a process that imports only TensorFlow and the
tensorflow_text ops (as TF Serving, which links those ops; the ranking model encodes new item
texts with MiniLM in-graph)."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SCRIPT = r'''
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tokeniser ops (TF Serving links them)

retrieval = tf.saved_model.load(sys.argv[1])
ranking = tf.saved_model.load(sys.argv[2])

def example(**features):
    feature = {}
    for key, value in features.items():
        if isinstance(value, float):
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        elif isinstance(value, int):
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            values = value if isinstance(value, list) else [value]
            feature[key] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

# Only some features per example: the signatures fill the rest with defaults.
examples = tf.constant([
    example(user_id="user_001", item_id="hair_00", category="Hair > Care > Shampoo",
            price=5.0, in_stock=1, clicked=1,
            history_item_ids=["hair_01"] + [""] * 9),
    example(user_id="stranger", item_id="unknown_item", query="serum"),
])
strings = lambda *v: tf.constant(list(v))
calls = {
    "retrieval/top_k": retrieval.signatures["top_k"](
        user_id=strings("user_001", "stranger"),
        history_item_ids=tf.constant([["hair_00", "zzz"], ["", ""]]), query=strings("", "gel")),
    "retrieval/serving_default": retrieval.signatures["serving_default"](
        user_id=strings("x"), history_item_ids=tf.constant([["nails_00"]]), query=strings("")),
    "retrieval/query_embedding": retrieval.signatures["query_embedding"](
        user_id=strings("x"), history_item_ids=tf.constant([["nails_00"]]), query=strings("")),
    "retrieval/candidate_embedding": retrieval.signatures["candidate_embedding"](
        item_id=strings("brand_new", "skin_00"), title=strings("shiny gel", ""),
        description=strings("", ""), brand=strings("", "Skin Co 1"),
        category=strings("Nails > Polish", "Skin > Face > Serum"),
        price=tf.constant([4.0, 20.0]), in_stock=tf.constant([1, 0], tf.int64)),
    "retrieval/eval_hit_at_k": retrieval.signatures["eval_hit_at_k"](examples=examples),
    "ranking/serving_default": ranking.signatures["serving_default"](examples=examples),
    "ranking/score": ranking.signatures["score"](
        user_id=strings("user_001", "stranger"), history_item_ids=tf.constant([["hair_00"], [""]]),
        item_id=strings("hair_00", "new"), brand=strings("", ""),
        category=strings("Hair > Care > Shampoo", ""), price=tf.constant([5.0, 1.0]),
        in_stock=tf.constant([1, 1], tf.int64)),
    "ranking/rank_candidates": ranking.signatures["rank_candidates"](
        user_id=tf.constant("user_001"), history_item_ids=strings("hair_00", "nails_00"),
        query=tf.constant("shampoo"), item_id=strings("hair_00", "brand_new", "skin_00"),
        title=strings("", "shiny gel", ""), brand=strings("", "", ""),
        category=strings("Hair > Care > Shampoo", "Nails > Polish", ""),
        price=tf.constant([5.0, 4.0, 20.0]), in_stock=tf.constant([1, 1, 0], tf.int64)),
    "ranking/score_with_query": ranking.signatures["score_with_query"](
        user_id=strings("user_001"), history_item_ids=tf.constant([["hair_00"]]),
        query=strings("shampoo"), item_id=strings("hair_00"), title=strings("silky shampoo"),
        brand=strings(""), category=strings("Hair > Care > Shampoo"),
        price=tf.constant([5.0]), in_stock=tf.constant([1], tf.int64)),
}
result = {name: {key: [value.shape.as_list(), value.dtype.name] for key, value in out.items()}
          for name, out in calls.items()}
forbidden = ("tensorflow_recommenders", "tf_keras", "tfx", "tensorflow_transform",
             "tensorflow_model_analysis", "trainer")
result["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
print("RESULT " + json.dumps(result))
'''


def test_exports_serve_with_tensorflow_only(retrieval_run, ranking_run, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = ""  # nothing from the repo
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, retrieval_run.export, ranking_run.export],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    assert result.pop("imported") == []
    # history_used: the request's history as the model read it, the model's width (10)
    assert result["retrieval/top_k"] == {"item_ids": [[2, 20], "string"],
                                         "scores": [[2, 20], "float32"],
                                         "history_used": [[2, 10], "string"]}
    assert result["retrieval/serving_default"]["item_ids"] == [[1, 20], "string"]
    assert result["retrieval/query_embedding"] == {"embedding": [[1, 32], "float32"],
                                                   "history_used": [[1, 10], "string"]}
    assert result["retrieval/candidate_embedding"] == {"embedding": [[2, 32], "float32"]}
    assert result["retrieval/eval_hit_at_k"] == {"hit_at_k": [[2], "float32"]}
    assert result["ranking/serving_default"] == {"click": [[2], "float32"],
                                                 "purchase": [[2], "float32"],
                                                 "rating": [[2], "float32"],
                                                 "score": [[2], "float32"]}
    assert result["ranking/score"] == {"click": [[2], "float32"], "purchase": [[2], "float32"],
                                       "rating": [[2], "float32"], "score": [[2], "float32"]}
    assert result["ranking/rank_candidates"] == {
        key: [[3], "float32"] for key in ("click", "purchase", "rating", "score")}
    assert result["ranking/score_with_query"]["score"] == [[1], "float32"]
