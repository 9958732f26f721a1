"""Baselines: exact pieces on toy inputs, and each one beats random on planted data (the
item-to-item tables the transitions baselines use: tests/trainer/candidates)."""
import numpy as np
import pytest

from benchmarks import baselines, protocol, registry
from tests.benchmarks import planted


@pytest.fixture(scope="module")
def planted_data():
    task, split = planted.planted_task()
    rand = protocol.evaluate(planted.random_scorer(), split.test, planted.N_ITEMS)
    return task, split, rand["unfiltered"]["ndcg@10"]


@pytest.mark.parametrize("name", ["popular", "transitions", "transitions3", "ease",
                                  "ease_filtered"])
def test_baseline_beats_random_on_planted_data(planted_data, name):
    task, split, random_ndcg = planted_data
    fitted, _ = registry.fit(name, task, seed=0)
    result = protocol.evaluate(fitted.scorer, split.test, planted.N_ITEMS)
    assert result["unfiltered"]["ndcg@10"] > 2 * random_ndcg
    assert result["filtered"]["ndcg@10"] > 2 * random_ndcg


def test_transitions_beat_popularity_on_planted_chains(planted_data):
    task, split, _ = planted_data
    ndcg = {name: protocol.evaluate(registry.fit(name, task, 0)[0].scorer, split.test,
                                    planted.N_ITEMS)["unfiltered"]["ndcg@10"]
            for name in ("popular", "transitions")}
    assert ndcg["transitions"] > ndcg["popular"]


def test_popular_scores_are_train_counts():
    task = registry.FitTask([np.array([0, 1, 1]), np.array([2, 1])], None, 4,
                            protocol.EvalSet([], np.zeros(0)))
    scores = baselines.fit_popular(task, 0)([np.array([0]), np.array([3])])
    assert scores.tolist() == [[1, 3, 1, 0], [1, 3, 1, 0]]


def test_transitions3_weights_recent_items_by_decay():
    # 0 -> 5 and 1 -> 6 and 2 -> 7, each once; history [...0, 1, 2] with decay 0.5.
    task = registry.FitTask([np.array([0, 5]), np.array([1, 6]), np.array([2, 7])], None, 8,
                            protocol.EvalSet([np.array([0])], np.array([5])))
    fitted = baselines.fit_transitions3(task, 0, window=3, decays=(0.5,), normalize=True)
    assert fitted.info["decay"] == 0.5
    scores = fitted.scorer([np.array([4, 0, 1, 2])])
    np.testing.assert_allclose(scores[0, [7, 6, 5]], [1.0, 0.5, 0.25], atol=1e-5)
    assert np.argsort(-scores[0])[:3].tolist() == [7, 6, 5]


def test_transitions3_selects_decay_on_validation(planted_data):
    task, _, _ = planted_data
    fitted = baselines.fit_transitions3(task, 0, decays=(0.1, 0.9))
    curve = fitted.info["validation_ndcg@10_by_decay"]
    assert fitted.info["decay"] == float(max(curve, key=curve.get))


def test_ease_weights_match_closed_form():
    rng = np.random.default_rng(1)
    x = (rng.random((60, 300)) < 0.05).astype(np.float64)
    gram = x.T @ x
    p = np.linalg.inv(gram + 10.0 * np.eye(len(gram)))
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    got = baselines.ease_weights(gram, 10.0)
    assert got.flags.c_contiguous
    assert np.allclose(got, expected, atol=1e-4)
    assert np.all(np.diag(got) == 0)


def test_mirror_upper_to_lower_across_blocks():
    upper = np.triu(np.arange(49, dtype=np.float32).reshape(7, 7))
    a = upper + np.tril(np.full((7, 7), -1.0, dtype=np.float32), -1)
    baselines.mirror_upper_to_lower(a, block=3)
    assert np.array_equal(a, a.T)
    assert np.array_equal(np.triu(a), upper)


def test_ease_selects_lambda_on_validation(planted_data):
    task, _, _ = planted_data
    for variant in ("unfiltered", "filtered"):
        fitted = baselines.fit_ease(task, 0, lambdas=(1.0, 1000.0), variant=variant)
        curve = fitted.info["validation_ndcg@10_by_lambda"][variant]
        assert set(curve) == {"1.0", "1000.0"}
        assert fitted.info["lambda"] == float(max(curve, key=curve.get))
