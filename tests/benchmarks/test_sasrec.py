"""SASRec: input shaping, strategies, and a tiny model that learns planted transitions."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from benchmarks import protocol, sasrec  # noqa: E402
from tests.benchmarks import planted  # noqa: E402


def test_pad_left_keeps_the_most_recent_items_shifted_by_one():
    out = sasrec.pad_left([np.array([4, 5, 6, 7]), np.array([2]), np.array([], int)], 3)
    assert out.tolist() == [[6, 7, 8], [0, 0, 3], [0, 0, 0]]


def test_training_examples_predict_the_next_item():
    inputs, targets = sasrec.training_examples([np.array([0, 1, 2]), np.array([5])], 4)
    assert inputs.tolist() == [[0, 0, 1, 2]]       # single-item sequences are skipped
    assert targets.tolist() == [[0, 0, 2, 3]]
    with pytest.raises(ValueError, match="at least 2 items"):
        sasrec.training_examples([np.array([1])], 4)


def test_make_strategy_names():
    assert sasrec.make_strategy("default") is tf.distribute.get_strategy()
    one = sasrec.make_strategy("one_device:/cpu:0")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert sasrec.make_strategy(one) is one
    with pytest.raises(ValueError, match="unknown strategy"):
        sasrec.make_strategy("tpu-please")


def test_model_is_causal():
    model = sasrec.SASRec(n_items=10, max_len=5, hidden=8, layers=1, heads=1, dropout=0.0)
    a = model(tf.constant([[0, 1, 2, 3, 4]]))
    b = model(tf.constant([[0, 1, 2, 3, 9]]))       # change only the last item
    np.testing.assert_allclose(a[:, :4].numpy(), b[:, :4].numpy(), atol=1e-6)
    assert not np.allclose(a[:, 4].numpy(), b[:, 4].numpy())


def test_tiny_sasrec_beats_random_and_records_early_stopping():
    task, split = planted.planted_task(n_users=300)
    fitted = sasrec.fit_sasrec(task, seed=0, max_len=8, hidden=16, layers=1, dropout=0.1,
                               learning_rate=1e-2, batch_size=32, max_epochs=6, patience=2)
    result = protocol.evaluate(fitted.scorer, split.test, planted.N_ITEMS)
    rand = protocol.evaluate(planted.random_scorer(), split.test, planted.N_ITEMS)
    assert result["unfiltered"]["ndcg@10"] > 2 * rand["unfiltered"]["ndcg@10"]
    info = fitted.info
    assert 1 <= info["best_epoch"] <= info["epochs_trained"] <= 6
    best = max(c["ndcg@10"] for c in info["curve"])
    assert info["validation_ndcg@10"] == best
    # The kept weights are those of the best epoch.
    assert task.validate(fitted.scorer)["unfiltered"]["ndcg@10"] == pytest.approx(best)
