"""Small pieces: split paths, recall@K, AUC, raw-feature filling for the signatures."""
import os

import numpy as np
import pytest
import tensorflow as tf

from trainer import data
from trainer import features as F
from trainer import retrieval_eval
from trainer import signatures
from trainer.ranking import auc


def test_catalog_patterns_follow_the_train_split(tmp_path):
    for split in ("Split-train", "Split-catalog"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "part-0.gz").write_bytes(b"")
    train = os.path.join(str(tmp_path), "Split-train", "*")
    assert data.catalog_patterns([train]) == [os.path.join(str(tmp_path), "Split-catalog", "*")]


def test_missing_catalog_split_is_a_clear_error(tmp_path):
    (tmp_path / "Split-train").mkdir()
    with pytest.raises(ValueError, match=r"'catalog' split is missing.*Split-catalog"):
        data.catalog_patterns([str(tmp_path / "Split-train" / "*")])
    with pytest.raises(ValueError, match="expected a 'Split-train' directory"):
        data.catalog_patterns([str(tmp_path / "train" / "*")])


def test_recalls_with_and_without_history_filter():
    # 4 catalog items; item scores are the same for every query: 3 > 2 > 1 > 0.
    scores = lambda rows: np.tile(np.array([3.0, 2.0, 1.0, 0.0]), (len(rows), 1))
    targets = np.array([1, 2, 0, -1])               # the last target is not in the catalog
    history = np.array([[0, -1], [-1, -1], [0, 1], [-1, -1]])
    # pylint: disable-next=protected-access
    out, lists = retrieval_eval._recalls(scores, targets, history, ks=(1, 2))
    # The lists the beyond-accuracy metrics see: top 10 (of 4 items) without the history.
    assert lists.tolist() == [[1, 2, 3, -1] + [-1] * 6, [0, 1, 2, 3] + [-1] * 6,
                              [2, 3] + [-1] * 8, [0, 1, 2, 3] + [-1] * 6]
    assert out["recall@1"] == 1 / 4                 # only query 2 (target 0) hits at 1
    assert out["recall@2"] == 2 / 4
    # Filtered: q0 ranks [1, 2, 3] -> hit@1; q1 unchanged -> miss@2 (rank 3);
    # q2's target is in its history -> removed, a miss.
    assert out["recall@1_history_filtered"] == 1 / 4
    assert out["recall@2_history_filtered"] == 1 / 4
    # Without the lists (early stopping's checks): the same metrics, no lists
    # pylint: disable-next=protected-access
    same, none = retrieval_eval._recalls(scores, targets, history, ks=(1, 2), with_lists=False)
    assert same == out and none.shape == (4, 0)


def test_auc_exact_with_ties_and_degenerate_labels():
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert auc([1, 1], [0.2, 0.3]) is None


RAW_SPEC = {
    F.USER_ID: tf.io.FixedLenFeature([1], tf.string),
    F.HISTORY_ITEM_IDS: tf.io.FixedLenFeature([3], tf.string),
    F.PRICE: tf.io.FixedLenFeature([1], tf.float32),
    F.CLICKED: tf.io.FixedLenFeature([1], tf.int64),
    "tags": tf.io.VarLenFeature(tf.string),
}


def test_fill_raw_features_pads_truncates_and_defaults():
    out = signatures.fill_raw_features(RAW_SPEC, {
        F.USER_ID: tf.constant(["u1", "u2"]),
        F.HISTORY_ITEM_IDS: tf.constant([["a", "b", "c", "d"], ["e", "", "", ""]]),
    })
    assert out[F.USER_ID].numpy().tolist() == [[b"u1"], [b"u2"]]
    assert out[F.HISTORY_ITEM_IDS].numpy().tolist() == [[b"a", b"b", b"c"], [b"e", b"", b""]]
    assert out[F.PRICE].numpy().tolist() == [[0.0], [0.0]]
    assert out[F.CLICKED].dtype == tf.int64 and out[F.CLICKED].shape == (2, 1)
    assert isinstance(out["tags"], tf.SparseTensor) and out["tags"].dense_shape[0] == 2
    short = signatures.fill_raw_features(RAW_SPEC, {
        F.USER_ID: tf.constant(["u"]), F.HISTORY_ITEM_IDS: tf.zeros([1, 0], tf.string)})
    assert short[F.HISTORY_ITEM_IDS].numpy().tolist() == [[b"", b"", b""]]


def test_lenient_parse_spec_accepts_examples_without_labels():
    example = tf.train.Example(features=tf.train.Features(feature={
        F.USER_ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"u1"]))}))
    spec = signatures.lenient_parse_spec(
        {k: v for k, v in RAW_SPEC.items() if k != "tags"})
    parsed = tf.io.parse_example([example.SerializeToString()], spec)
    assert parsed[F.CLICKED].numpy().tolist() == [[0]]
    assert parsed[F.HISTORY_ITEM_IDS].numpy().tolist() == [[b"", b"", b""]]


def test_top_category_is_the_first_level():
    got = signatures.top_category_of(tf.constant(["Skin > Face > Serum", "Nails", ""]))
    assert got.numpy().tolist() == [b"Skin", b"Nails", b""]


def test_fit_logs_progress_and_runs_exactly_the_train_steps():
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
    from trainer import training  # pylint: disable=import-outside-toplevel
    model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    data = tf.data.Dataset.from_tensors(([[1.0]], [[2.0]])).repeat()
    messages = []
    handler = lambda msg, *args: messages.append(msg % args)
    original, absl_logging.info = absl_logging.info, handler
    try:
        losses = training.fit(model, data, epochs=1, train_steps=40)
    finally:
        absl_logging.info = original
    assert len(losses) == 40
    progress = [m for m in messages if m.startswith("train step ")]
    assert [m.split()[2] for m in progress] == [f"{i}/40" for i in range(2, 41, 2)]
