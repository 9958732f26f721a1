"""trainer.compression: float16 / int8 exports keep every signature and score within the
stated tolerances of the full export (docs/DESIGN.md, "Compressed exports"), shrink, load
through TF Serving's loading path, and the option trains and exports."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.configs import load_config
from tests.trainer import shop_runs
from tests.trainer.conftest import RETRIEVAL_CONFIG
from trainer import compression
from trainer.config import RankingConfig, RetrievalConfig

# Largest score difference against the full export (docs/DESIGN.md, "Compressed exports";
# measured on these models: retrieval float16 1.2e-4, int8 2.1e-3).
RETRIEVAL_TOLERANCE = {"float16": 1e-3, "int8": 1e-2}
# The ranking score sums two probabilities; its MiniLM encoder runs for new item texts.
RANKING_TOLERANCE = {"float16": 5e-3, "int8": 5e-2}


def test_the_option_is_off_by_default_and_checked():
    assert RetrievalConfig().compression == "none" and RankingConfig().compression == "none"
    assert RetrievalConfig.from_custom_config({"compression": "int8"}).compression == "int8"
    with pytest.raises(ValueError, match=r"compression must be one of \['none', 'float16'"):
        RankingConfig.from_custom_config({"compression": "int4"})
    default = load_config()
    assert default.export_compression == "none"
    assert "compression" not in default.retrieval_custom_config()
    assert "compression" not in default.ranking_custom_config()
    config = load_config(export_compression="float16", ranking_config={"compression": "int8"})
    assert config.retrieval_custom_config()["compression"] == "float16"
    assert config.ranking_custom_config()["compression"] == "int8"
    with pytest.raises(ValueError, match="export_compression must be one of"):
        load_config(export_compression="bf16")


def test_int8_scales_per_row_and_per_channel():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 8)).astype(np.float32) * np.arange(1, 51)[:, None]
    table[3] = 0.0
    for per_row, axis in ((True, 1), (False, 0)):
        stored, scale = compression.quantize(table, "int8", per_row)
        assert stored.dtype == np.int8 and np.abs(stored).max() <= 127
        assert scale.shape == ((50, 1) if per_row else (1, 8))
        error = np.abs(compression.dequantize(stored, scale) - table)
        assert np.all(error <= scale / 2 + 1e-6)
        assert np.allclose(scale * 127, np.maximum(np.abs(table).max(axis=axis, keepdims=True),
                                                   127 * (scale == 1)))
    stored, scale = compression.quantize(table, "float16", False)
    assert stored.dtype == np.float16 and scale is None


def _signature_specs(path):
    from serving.standin.saved_model_servable import read_signature_defs  # pylint: disable=C0415
    return {name: ({k: (v.dtype, str(v.tensor_shape)) for k, v in sig.inputs.items()},
                   {k: (v.dtype, str(v.tensor_shape)) for k, v in sig.outputs.items()})
            for name, sig in read_signature_defs(path).items()}


def _retrieval_calls(model):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    strings = lambda *v: tf.constant(list(v))
    users = dict(user_id=strings("user_001", "stranger", ""),
                 history_item_ids=tf.constant([["hair_00", "zzz"], ["", ""], ["nails_00", ""]]),
                 query=strings("", "gel", "red polish"))
    return {
        "top_k": model.signatures["top_k"](**users),
        "query_embedding": model.signatures["query_embedding"](**users),
        "candidate_embedding": model.signatures["candidate_embedding"](
            item_id=strings("brand_new", "skin_00"), title=strings("shiny gel", ""),
            description=strings("", ""), brand=strings("", "Skin Co 1"),
            category=strings("Nails > Polish", "Skin > Face > Serum"),
            price=tf.constant([4.0, 20.0]), in_stock=tf.constant([1, 0], tf.int64)),
        "related_items": model.signatures["related_items"](item_id=strings("hair_00", "x")),
    }


@pytest.fixture(scope="module")
def compressed_retrieval(retrieval_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("compressed_retrieval")
    return {mode: (str(root / mode), compression.compress_saved_model(
        retrieval_run.export, str(root / mode), mode)) for mode in ("float16", "int8")}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["float16", "int8"])
def test_compressed_retrieval_keeps_signatures_and_scores(retrieval_run, compressed_retrieval,
                                                          mode):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    path, report = compressed_retrieval[mode]
    assert _signature_specs(path) == _signature_specs(retrieval_run.export)
    rewritten = {v["variable"] for v in report["rewritten"]}
    assert {"query_tower/user_embedding/embeddings", "embeddings"} <= rewritten, rewritten
    assert report["size_bytes"]["compressed"] < report["size_bytes"]["full"]
    with open(os.path.join(path, "assets.extra", compression.REPORT_FILE)) as f:
        assert json.load(f)["mode"] == mode
    assert os.path.isfile(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))
    full = _retrieval_calls(tf.saved_model.load(retrieval_run.export))
    small = _retrieval_calls(tf.saved_model.load(path))
    for signature, outputs in full.items():
        for key, value in outputs.items():
            other = small[signature][key]
            assert other.dtype == value.dtype and other.shape == value.shape, (signature, key)
            if value.dtype == tf.float32 and signature != "related_items":
                diff = float(tf.reduce_max(tf.abs(other - value)))
                assert diff <= RETRIEVAL_TOLERANCE[mode], (signature, key, diff)
            elif signature != "top_k" or key != "item_ids":
                # related-items tables stay float32 (data, not weights): exact
                np.testing.assert_array_equal(other.numpy(), value.numpy())
    # The top 5 keeps its items (near-ties may swap places)
    for a, b in zip(full["top_k"]["item_ids"].numpy(), small["top_k"]["item_ids"].numpy()):
        assert len(set(a[:5]) & set(b[:5])) >= 4


TF_SERVING_LOAD = r"""
import json, sys
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
scores = []
for path in sys.argv[1:]:
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.load(session, ["serve"], path)
        signature = meta_graph.signature_def["top_k"]
        feed = {signature.inputs["user_id"].name: np.array([b"user_001", b""]),
                signature.inputs["history_item_ids"].name: np.array([[b"hair_00"], [b""]]),
                signature.inputs["query"].name: np.array([b"", b"gel"])}
        scores.append(session.run(signature.outputs["scores"].name, feed).tolist())
print("RESULT " + json.dumps(scores))
"""


@pytest.mark.slow
def test_compressed_exports_load_through_tf_servings_loading_path(retrieval_run,
                                                                  compressed_retrieval):
    """tf.compat.v1.saved_model.load imports the MetaGraphDef and runs its restore op, as
    TF Serving's C++ loader does (the object graph tf.saved_model.load reads is not used)."""
    paths = [retrieval_run.export] + [compressed_retrieval[m][0] for m in ("float16", "int8")]
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", TF_SERVING_LOAD, *paths], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    full, half, int8 = (np.array(s) for s in json.loads(
        out.stdout.strip().splitlines()[-1][len("RESULT "):]))
    assert np.abs(half - full).max() <= RETRIEVAL_TOLERANCE["float16"]
    assert np.abs(int8 - full).max() <= RETRIEVAL_TOLERANCE["int8"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["float16", "int8"])
def test_compressed_ranking_with_minilm_keeps_scores(ranking_run, tmp_path, mode):
    """The ranking export holds the MiniLM encoder (new item texts are encoded in-graph): its
    weights are rewritten too and the scores stay within the tolerance."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    path = str(tmp_path / mode)
    report = compression.compress_saved_model(ranking_run.export, path, mode)
    assert _signature_specs(path) == _signature_specs(ranking_run.export)
    assert report["values_rewritten"] > 20_000_000, report["values_rewritten"]  # MiniLM
    assert report["size_bytes"]["compressed"] < report["size_bytes"]["full"] * (
        0.55 if mode == "float16" else 0.35)
    strings = lambda *v: tf.constant(list(v))
    args = dict(user_id=tf.constant("user_001"), history_item_ids=strings("hair_00", "nails_00"),
                query=tf.constant("shampoo"), item_id=strings("hair_00", "brand_new", "skin_00"),
                title=strings("", "shiny gel", ""), brand=strings("", "", ""),
                category=strings("Hair > Care > Shampoo", "Nails > Polish", ""),
                price=tf.constant([5.0, 4.0, 20.0]), in_stock=tf.constant([1, 1, 0], tf.int64))
    full = tf.saved_model.load(ranking_run.export).signatures["rank_candidates"](**args)
    small = tf.saved_model.load(path).signatures["rank_candidates"](**args)
    for key, value in full.items():
        diff = float(tf.reduce_max(tf.abs(small[key] - value)))
        tolerance = RANKING_TOLERANCE[mode] * (5.0 if key == "rating" else 1.0)  # stars
        assert diff <= tolerance, (key, diff)


@pytest.mark.slow
def test_the_retrieval_trainer_exports_compressed_when_configured(transformed_shop, tmp_path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    run = shop_runs.run(retrieval.run_fn, shop_runs.fn_args(
        transformed_shop, str(tmp_path), dict(RETRIEVAL_CONFIG, compression="int8"),
        train_steps=5))
    extra = os.path.join(run.export, "assets.extra")
    with open(os.path.join(extra, compression.REPORT_FILE)) as f:
        report = json.load(f)
    assert report["mode"] == "int8" and report["variables_rewritten"] > 0
    assert os.path.isfile(os.path.join(extra, "tf_serving_warmup_requests"))
    reader = tf.train.load_checkpoint(os.path.join(run.export, "variables", "variables"))
    dtypes = reader.get_variable_to_dtype_map()
    assert dtypes[report["rewritten"][0]["key"]] == tf.int8
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".compress-")]
    out = tf.saved_model.load(run.export).signatures["top_k"](
        user_id=tf.constant(["user_001"]), history_item_ids=tf.constant([["hair_00"]]),
        query=tf.constant([""]))
    assert out["scores"].dtype == tf.float32 and out["item_ids"].shape[1] == 20
