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


def test_tiny_sasrec_beats_random_and_resumes_from_checkpoint(tmp_path):
    task, split = planted.planted_task(n_users=300)
    options = dict(max_len=8, hidden=16, layers=1, dropout=0.1, learning_rate=1e-2,
                   batch_size=32, patience=10, checkpoint_dir=str(tmp_path / "ckpt"))
    fitted = sasrec.fit_sasrec(task, seed=0, max_epochs=4, **options)
    result = protocol.evaluate(fitted.scorer, split.test, planted.N_ITEMS)
    rand = protocol.evaluate(planted.random_scorer(), split.test, planted.N_ITEMS)
    assert result["unfiltered"]["ndcg@10"] > 2 * rand["unfiltered"]["ndcg@10"]
    info = fitted.info
    assert info["epochs_trained"] == 4 and info["resumed_at_epoch"] is None
    best = max(c["ndcg@10"] for c in info["curve"])
    assert info["validation_ndcg@10"] == best
    # The kept weights are those of the best epoch.
    assert task.validate(fitted.scorer)["unfiltered"]["ndcg@10"] == pytest.approx(best)

    resumed = sasrec.fit_sasrec(task, seed=0, max_epochs=5, **options)
    assert resumed.info["resumed_at_epoch"] == 5
    assert resumed.info["curve"][:4] == info["curve"]
    assert len(resumed.info["curve"]) == 5
    best = max(c["ndcg@10"] for c in resumed.info["curve"])
    assert task.validate(resumed.scorer)["unfiltered"]["ndcg@10"] == pytest.approx(best)

    with pytest.raises(ValueError, match="other options or data"):
        sasrec.fit_sasrec(task, seed=1, max_epochs=5, **options)


def test_patience_stops_training():
    state = sasrec.TrainingState(None, sasrec.SASRec(5, 4, 8, 1), {"select": "ndcg@10"})
    for epoch, metric in enumerate([0.1, 0.3, 0.2, 0.25], start=1):
        state.record(epoch, 1.0, metric, 0.0)
    assert state.best_epoch == 2 and not state.stopped(patience=3)
    state.record(5, 1.0, 0.29, 0.0)
    assert state.stopped(patience=3)


def test_checkpoints_refused_inside_the_repository():
    import os
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with pytest.raises(ValueError, match="inside the repository"):
        sasrec.TrainingState(os.path.join(repo, "ckpt"), sasrec.SASRec(5, 4, 8, 1), {})
