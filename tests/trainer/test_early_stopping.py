"""trainer.early_stopping: the eval-split check, Keras' stopping rule, the restored weights,
and run_fn with early stopping on the synthetic shop."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.trainer import shop_runs
from tests.trainer.conftest import RETRIEVAL_CONFIG
from trainer import early_stopping, training
from trainer.config import RetrievalConfig


def _model():
    model = tf.keras.Sequential([tf.keras.Input([1]), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")
    return model


def _data():
    return tf.data.Dataset.from_tensors(([[1.0]], [[2.0]])).repeat()


def test_stops_after_patience_and_restores_the_best_checks_weights():
    model = _model()
    values = iter([0.10, 0.30, 0.20, 0.25, 0.40, 0.50])
    weights = []                       # the kernel when each check measured

    def measure():
        weights.append(model.get_weights()[0].copy())
        return next(values)

    stopper = early_stopping.EarlyStopping(
        RetrievalConfig(early_stopping_patience=2), measure)
    losses = training.fit(model, _data(), epochs=6, train_steps=30,
                          callbacks=stopper.callbacks, steps_per_epoch=5)
    report = stopper.report()
    # check 2 is best; checks 3 and 4 are not better: patience 2 ends training at check 4
    assert [c["epoch"] for c in report["checks"]] == [1, 2, 3, 4]
    assert [c["steps"] for c in report["checks"]] == [5, 10, 15, 20]
    assert len(losses) == 20
    assert report["best_epoch"] == 2 and report["best_steps"] == 10
    assert report["best_value"] == pytest.approx(0.30)
    assert report["stopped_early"] is True
    np.testing.assert_array_equal(model.get_weights()[0], weights[1])
    assert not np.array_equal(weights[1], weights[3])     # training did move the weights


def test_a_budget_that_ends_first_keeps_the_best_weights_too():
    model = _model()
    values = iter([0.2, 0.5, 0.4])
    weights = []

    def measure():
        weights.append(model.get_weights()[0].copy())
        return next(values)

    stopper = early_stopping.EarlyStopping(
        RetrievalConfig(early_stopping_patience=5), measure)
    training.fit(model, _data(), epochs=1, train_steps=9, callbacks=stopper.callbacks,
                 steps_per_epoch=3)
    report = stopper.report()
    assert report["stopped_early"] is False and report["best_epoch"] == 2
    np.testing.assert_array_equal(model.get_weights()[0], weights[1])


def test_the_budget_is_rounded_up_to_whole_checks():
    model = _model()
    stopper = early_stopping.EarlyStopping(
        RetrievalConfig(early_stopping_patience=9), lambda: 0.0)
    losses = training.fit(model, _data(), epochs=1, train_steps=10,
                          callbacks=stopper.callbacks, steps_per_epoch=4)
    assert len(losses) == 12
    assert [c["steps"] for c in stopper.report()["checks"]] == [4, 8, 12]


def test_steps_between_checks():
    config = RetrievalConfig(early_stopping_patience=1, batch_size=10)
    counted = []
    examples = lambda: counted.append(1) or 95
    assert early_stopping.steps_between_checks(config, None, examples) is None
    assert early_stopping.steps_between_checks(config, 100, examples) == 9   # 95 // 10
    assert early_stopping.steps_between_checks(config, 5, examples) == 5     # the budget
    every = RetrievalConfig(early_stopping_patience=1, early_stopping_every_steps=7)
    counted.clear()
    assert early_stopping.steps_between_checks(every, 100, examples) == 7
    assert not counted                                     # no need to count the split


def test_metric_names():
    assert early_stopping.metric_k("ndcg@10") == 10
    assert early_stopping.metric_k("recall@50_history_filtered") == 50
    with pytest.raises(ValueError, match="ndcg@x"):
        early_stopping.metric_k("ndcg@x")


@pytest.mark.parametrize("values, message", [
    ({"early_stopping_patience": -1}, "early_stopping_patience"),
    ({"early_stopping_every_steps": -5}, "early_stopping_every_steps"),
    ({"early_stopping_metric": "auc"}, "early_stopping_metric"),
    ({"early_stopping_metric": "ndcg@0"}, "early_stopping_metric"),
    ({"early_stopping_metric": "recall@10_filtered"}, "early_stopping_metric"),
])
def test_config_rejects_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        RetrievalConfig.from_custom_config(values)


def test_off_by_default():
    assert not RetrievalConfig().uses_early_stopping
    assert RetrievalConfig(early_stopping_patience=2).uses_early_stopping


@pytest.mark.slow
def test_run_fn_exports_the_best_checks_model(transformed_shop, tmp_path):
    """run_fn with early stopping: the report's best check is the weights evaluated and
    exported afterwards (same eval split, same metric), and the curve is drawn."""
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    config = dict(RETRIEVAL_CONFIG, epochs=6, early_stopping_patience=2,
                  early_stopping_metric="recall@10")
    run = shop_runs.run(retrieval.run_fn,
                        shop_runs.fn_args(transformed_shop, str(tmp_path), config))
    report = run.metrics["early_stopping"]
    assert 1 <= len(report["checks"]) <= 6
    assert report["best_value"] == max(c["value"] for c in report["checks"])
    assert run.metrics["model"]["recall@10"] == pytest.approx(report["best_value"], abs=1e-6)
    # the checks are whole passes over the train split
    steps = [c["steps"] for c in report["checks"]]
    assert steps == [steps[0] * (i + 1) for i in range(len(steps))]
    assert run.metrics["training"]["steps"] == steps[-1]
    with open(os.path.join(run.args.model_run_dir, early_stopping.CURVE_FILE), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(run.args.model_run_dir, training.METRICS_FILE)) as f:
        assert json.load(f)["early_stopping"]["metric"] == "recall@10"


@pytest.mark.slow
def test_run_fn_with_a_step_budget_checks_every_n_steps(transformed_shop, tmp_path):
    from trainer import retrieval  # pylint: disable=import-outside-toplevel
    config = dict(RETRIEVAL_CONFIG, early_stopping_patience=10, early_stopping_every_steps=8)
    run = shop_runs.run(retrieval.run_fn, shop_runs.fn_args(
        transformed_shop, str(tmp_path), config, train_steps=20))
    report = run.metrics["early_stopping"]
    assert [c["steps"] for c in report["checks"]] == [8, 16, 24]
    assert run.metrics["model"]["ndcg@10"] == pytest.approx(report["best_value"], abs=1e-6)
