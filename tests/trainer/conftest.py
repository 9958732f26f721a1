"""Shared, expensive fixtures of the trainer tests: the synthetic shop after tf.Transform and
one trained retrieval and one trained ranking run on it (each built once per session)."""
import os
import types

import pytest

from pipeline.in_process import transform as run_transform
from tests.trainer import shop_runs, synthetic_shop
from trainer import features as F

# The cheap model without the pretrained text encoder ("none"): the BERT text modes have their
# own end-to-end run (tests/trainer/test_retrieval_text.py).
RETRIEVAL_CONFIG = {"embedding_dim": 32, "hidden_units": [64], "batch_size": 64, "epochs": 8,
                    "learning_rate": 0.01, "top_k": 20, "eval_ks": [10, 20], "seed": 3,
                    "text_mode": "none"}
RANKING_CONFIG = {"embedding_dim": 16, "hidden_units": [32], "batch_size": 64, "epochs": 6,
                  "learning_rate": 0.01, "seed": 3,
                  "score_weights": {"click": 0.25, "purchase": 2.0}}


# The history length of the `*_long` fixtures (PipelineConfig.history_length != the default):
# the synthetic shop's histories reach ~12 items, so some are cut at 10 but not at 20.
LONG_HISTORY = 20


def _transformed(tmp_path_factory, name, history_length):
    root = str(tmp_path_factory.mktemp(name))
    raw = os.path.join(root, "raw")
    rows = synthetic_shop.write(raw, history_length=history_length)
    graph_dir, examples_dir = run_transform(raw, root, F.raw_feature_spec(history_length))
    return types.SimpleNamespace(root=root, raw=raw, rows=rows, transform_graph=graph_dir,
                                 examples=examples_dir, history_length=history_length)


@pytest.fixture(scope="session")
def transformed_shop(tmp_path_factory):
    """Raw splits, Transform output and the generated rows of the synthetic shop."""
    return _transformed(tmp_path_factory, "shop", F.HISTORY_LENGTH)


@pytest.fixture(scope="session")
def transformed_shop_long(tmp_path_factory):
    """`transformed_shop` with histories of LONG_HISTORY items."""
    return _transformed(tmp_path_factory, "shop_long", LONG_HISTORY)


@pytest.fixture(scope="session")
def retrieval_run(transformed_shop, tmp_path_factory):
    """The retrieval run_fn trained once on the synthetic shop (RETRIEVAL_CONFIG)."""
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    out = str(tmp_path_factory.mktemp("retrieval"))
    return shop_runs.run(retrieval.run_fn,
                         shop_runs.fn_args(transformed_shop, out, RETRIEVAL_CONFIG))


@pytest.fixture(scope="session")
def ranking_run(transformed_shop, tmp_path_factory):
    """The ranking run_fn trained once on the synthetic shop (RANKING_CONFIG)."""
    from trainer import ranking  # pylint: disable=import-outside-toplevel
    out = str(tmp_path_factory.mktemp("ranking"))
    return shop_runs.run(ranking.run_fn,
                         shop_runs.fn_args(transformed_shop, out, RANKING_CONFIG))


@pytest.fixture(scope="session")
def retrieval_run_long(transformed_shop_long, tmp_path_factory):
    """The retrieval run_fn on `transformed_shop_long`, with the transformer history encoder
    (its position embeddings and causal mask have the history's width); few steps."""
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    out = str(tmp_path_factory.mktemp("retrieval_long"))
    config = dict(RETRIEVAL_CONFIG, history_encoder="causal", sequence_layers=1,
                  sequence_heads=2)
    return shop_runs.run(retrieval.run_fn,
                         shop_runs.fn_args(transformed_shop_long, out, config, train_steps=30))


@pytest.fixture(scope="session")
def ranking_run_long(transformed_shop_long, tmp_path_factory):
    """The ranking run_fn on `transformed_shop_long`; few steps."""
    from trainer import ranking  # pylint: disable=import-outside-toplevel
    out = str(tmp_path_factory.mktemp("ranking_long"))
    return shop_runs.run(ranking.run_fn,
                         shop_runs.fn_args(transformed_shop_long, out, RANKING_CONFIG,
                                           train_steps=30))
