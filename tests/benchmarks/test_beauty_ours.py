"""The project's retrieval model on the Beauty task (benchmarks/beauty_ours.py): example
conversion and the zero-shot text baseline (the real-data smoke run of the retrieval trainer
is the product's: tests/benchmarks/test_beauty_product.py)."""
import os

import numpy as np
import pytest

from benchmarks import beauty_data, beauty_ours, folders, protocol, registry
from tests.benchmarks import planted

tf = pytest.importorskip("tensorflow")

def _items(n):
    return beauty_data.Items(
        item_id=[str(i + 1) for i in range(n)], asin=[f"A{i:04d}" for i in range(n)],
        title=[f"Item {i}" if i != 2 else "" for i in range(n)],
        brand=[f"Brand {i % 3}" for i in range(n)],
        categories=[["Beauty", f"Group {i // 10}"] for i in range(n)],
        price=np.asarray([np.nan if i == 1 else i + 0.5 for i in range(n)]))


def test_history_ids_most_recent_first_padded():
    asins = [f"A{i}" for i in range(20)]
    assert beauty_ours.history_ids(asins, [3, 5, 7], 5) == ["A7", "A5", "A3", "", ""]
    assert beauty_ours.history_ids(asins, list(range(12)), 4) == ["A11", "A10", "A9", "A8"]
    assert beauty_ours.history_ids(asins, []) == [""] * 10


def test_raw_examples_follow_the_pipeline_format(tmp_path):
    from pipeline import examples
    from trainer import features as F
    items = _items(30)
    split = protocol.leave_one_out([np.array([0, 1, 2, 3, 4]), np.array([5, 6, 7]),
                                    np.array([8, 9])], 30)
    task = registry.FitTask(split.train, items, 30, split.validation)
    counts = beauty_ours.write_raw_examples(task, str(tmp_path))
    # Train: users' train parts [0,1,2], [5], [8,9] -> 3 + 1 + 2 targets; eval: 2 users.
    assert counts == {"train": 6, "eval": 2, "catalog": 30}

    def read(split_name):
        path = os.path.join(tmp_path, f"Split-{split_name}", "data_tfrecord-00000.gz")
        return [examples.decode_example(r.numpy())
                for r in tf.data.TFRecordDataset(path, "GZIP")]
    train = read("train")
    third = train[2]                                        # target 2, history [0, 1]
    assert third[F.ITEM_ID] == "A0002" and third[F.CLICKED] == 1
    assert third[F.HISTORY_ITEM_IDS][:3] == ["A0001", "A0000", ""]
    assert third[F.NUM_HISTORY] == 2 and third[F.QUERY] == ""
    assert third[F.TITLE] == "Brand 2 Group 0"             # empty title filled as the export does
    assert third[F.CATEGORY] == "Beauty > Group 0" and third[F.TOP_CATEGORY] == "Beauty"
    assert train[0][F.NUM_HISTORY] == 0                     # first item: empty history
    # Timestamps increase within a user.
    assert train[0][F.TIMESTAMP] < train[1][F.TIMESTAMP] < train[2][F.TIMESTAMP]
    evals = read("eval")
    assert [e[F.ITEM_ID] for e in evals] == ["A0003", "A0006"]   # validation targets only
    assert evals[0][F.HISTORY_ITEM_IDS][:4] == ["A0002", "A0001", "A0000", ""]
    catalog = read("catalog")
    assert [c[F.ITEM_ID] for c in catalog] == items.asin
    assert catalog[1][F.PRICE] > 0                           # unknown price imputed


def test_work_dir_inside_the_repository_is_refused():
    task, _ = planted.planted_task(20)
    task.items = _items(planted.N_ITEMS)
    with pytest.raises(ValueError, match="inside the repository"):
        beauty_ours.fit_ours(task, 0, work_dir=os.path.join(folders.REPO, "runs", "x"))


def test_zero_shot_text_ranks_items_like_the_recent_history(monkeypatch):
    # Items of a group share a direction: the next item of the group is the nearest text.
    task, split = planted.planted_task(300)
    task.items = _items(planted.N_ITEMS)
    rng = np.random.default_rng(0)
    groups = rng.normal(size=(10, 16))
    emb = groups[np.arange(planted.N_ITEMS) // 10] + 0.3 * rng.normal(
        size=(planted.N_ITEMS, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    monkeypatch.setattr(beauty_ours, "text_embeddings",
                        lambda texts, seq_len=32: emb.astype(np.float32))
    fitted = beauty_ours.fit_zero_shot_text(task, 0, windows=(1, 3), decays=(0.5,))
    assert fitted.info["window"] in (1, 3)
    assert set(fitted.info["validation_ndcg@10"]) == {"window=1,decay=1.0",
                                                       "window=3,decay=0.5"}
    pop = registry.fit("popular", task, 0)[0].scorer
    text = protocol.evaluate(fitted.scorer, split.test, planted.N_ITEMS)["filtered"]["ndcg@10"]
    popular = protocol.evaluate(pop, split.test, planted.N_ITEMS)["filtered"]["ndcg@10"]
    assert text > popular
