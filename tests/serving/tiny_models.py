"""Tiny SavedModels for the serving tests (plain tf.Module + tf.function signatures).

Model ``tiny`` version ``v`` has three signatures:

* ``serving_default``: ``query`` string [B], ``x`` float32 [B, 3] ->
  ``score`` = v * sum(x) + len(query) (float32 [B]), ``label`` = upper(query) (string [B]),
  ``version`` = v (int64 [B]);
* ``embed``: ``ids`` int64 [B] -> ``embedding`` = [v * ids, -ids] (float32 [B, 2]);
* ``echo_bytes``: ``payload_bytes`` string [B] -> ``payload_bytes`` = payload + "!".

To run the client tests against a real TF Serving, export them with
``python -m tests.serving.tiny_models OUT_DIR`` and follow the printed instructions.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile

import tensorflow as tf

MODEL = "tiny"
VERSIONS = (1, 2)
LABELS = {"stable": 1, "canary": 2}


class TinyModel(tf.Module):
    def __init__(self, version: int):
        super().__init__()
        self.version = tf.Variable(version, dtype=tf.int64, trainable=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="query"),
                                  tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, query, x):
        v = tf.cast(self.version, tf.float32)
        score = v * tf.reduce_sum(x, axis=1) + tf.cast(tf.strings.length(query), tf.float32)
        return {"score": score, "label": tf.strings.upper(query),
                "version": tf.fill(tf.shape(query), self.version)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
    def embed(self, ids):
        ids_f = tf.cast(ids, tf.float32)
        v = tf.cast(self.version, tf.float32)
        return {"embedding": tf.stack([v * ids_f, -ids_f], axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="payload_bytes")])
    def echo_bytes(self, payload_bytes):
        return {"payload_bytes": tf.strings.join([payload_bytes, "!"])}


def write_version(base_path: str, version: int) -> str:
    """Save version ``version`` under ``base_path/<version>`` atomically (save + rename)."""
    os.makedirs(base_path, exist_ok=True)
    target = os.path.join(base_path, str(version))
    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base_path)
    module = TinyModel(version)
    tf.saved_model.save(module, staging, signatures={
        "serving_default": module.serve, "embed": module.embed,
        "echo_bytes": module.echo_bytes})
    os.rename(staging, target)
    return target


def write_broken_version(base_path: str, version: int) -> str:
    """A version directory whose saved_model.pb is not a SavedModel."""
    target = os.path.join(base_path, str(version))
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "saved_model.pb"), "wb") as f:
        f.write(b"\x00this is not a SavedModel\xff" * 4)
    return target


def model_config_text(base_path: str) -> str:
    """A ModelServerConfig serving both versions of ``tiny``, with labels."""
    labels = "".join(f"    version_labels {{ key: '{k}' value: {v} }}\n"
                     for k, v in LABELS.items())
    versions = "".join(f"versions: {v} " for v in VERSIONS)
    return ("model_config_list {\n  config {\n"
            f"    name: '{MODEL}'\n    base_path: '{base_path}'\n"
            "    model_platform: 'tensorflow'\n"
            f"    model_version_policy {{ specific {{ {versions}}} }}\n{labels}  }}\n}}\n")


def write_models(root: str, base_path_in_config: str | None = None) -> str:
    """Write ``root/tiny/{1,2}`` and ``root/models.config``; returns the config path."""
    base_path = os.path.join(root, MODEL)
    for version in VERSIONS:
        if os.path.exists(os.path.join(base_path, str(version))):
            shutil.rmtree(os.path.join(base_path, str(version)))
        write_version(base_path, version)
    config_path = os.path.join(root, "models.config")
    with open(config_path, "w") as f:
        f.write(model_config_text(base_path_in_config or base_path))
    return config_path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.serving.tiny_models OUT_DIR")
    out = os.path.abspath(sys.argv[1])
    write_models(out, base_path_in_config=f"/models/{MODEL}")
    print(f"wrote {out}/{MODEL}/{{1,2}} and {out}/models.config. Run TF Serving with:\n"
          f"  docker run --rm -p 8500:8500 -p 8501:8501 -v {out}:/models tensorflow/serving"
          " --model_config_file=/models/models.config"
          " --allow_version_labels_for_unavailable_models=true\n"
          "then: SHOPREC_TFSERVING_GRPC=localhost:8500 "
          "SHOPREC_TFSERVING_REST=http://localhost:8501 "
          ".venv/bin/python -m pytest tests/serving/client/test_clients.py")
