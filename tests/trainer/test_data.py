"""trainer.data: batches of whole contexts for the listwise ranking loss."""
import numpy as np
import pytest
import tensorflow as tf

from trainer import data

SPEC = {"context_id": tf.io.FixedLenFeature([], tf.string),
        "row": tf.io.FixedLenFeature([], tf.int64),
        "history": tf.io.FixedLenFeature([3], tf.int64)}


def _write(path, context_ids, gzip=True):
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
    with tf.io.TFRecordWriter(str(path), options) as writer:
        for row, context in enumerate(context_ids):
            feature = {
                "context_id": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[context.encode()])),
                "row": tf.train.Feature(int64_list=tf.train.Int64List(value=[row])),
                "history": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[row, row + 1, row + 2]))}
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())


def _contexts(sizes):
    return [f"c{c}" for c, size in enumerate(sizes) for _ in range(size)]


def _epoch(path, ids, **kwargs):
    ds = data.make_context_dataset([str(path)], SPEC, "context_id", 12, **kwargs)
    batches = [{k: v.numpy() for k, v in b.items()} for b in ds]
    return batches


def test_batches_hold_whole_contexts_flattened_with_their_segments(tmp_path):
    sizes = [4, 4, 2, 4, 3, 4, 4, 1, 4]           # largest 4: 3 contexts per batch of 12
    ids = _contexts(sizes)
    _write(tmp_path / "rows.gz", ids)
    batches = _epoch(tmp_path / "rows.gz", ids, shuffle_buffer=100, seed=3)
    seen = np.concatenate([b["row"] for b in batches])
    assert sorted(seen.tolist()) == list(range(len(ids)))        # every row once
    for batch in batches:
        assert len(set(batch[data.CONTEXT_SEGMENT].tolist())) <= 3
        np.testing.assert_array_equal(batch["history"][:, 0], batch["row"])   # rows aligned
        for segment in np.unique(batch[data.CONTEXT_SEGMENT]):
            rows = batch["row"][batch[data.CONTEXT_SEGMENT] == segment]
            context = {ids[r] for r in rows}
            assert len(context) == 1                             # one context per segment
            assert len(rows) == ids.count(context.pop())         # ... and all of its rows
        # segments count up from 0 in the order of the rows
        segments = batch[data.CONTEXT_SEGMENT]
        assert segments[0] == 0 and np.all(np.diff(segments) >= 0)


def test_contexts_are_shuffled_as_units_and_seeded(tmp_path):
    ids = _contexts([3] * 40)
    _write(tmp_path / "rows", ids, gzip=False)
    order = lambda seed: np.concatenate(
        [b["row"] for b in _epoch(tmp_path / "rows", ids, shuffle_buffer=60, seed=seed)])
    first, again, other = order(1), order(1), order(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, np.arange(len(ids)))
    # a context's rows stay consecutive and in file order
    for start in range(0, len(first), 3):
        assert first[start] % 3 == 0
        np.testing.assert_array_equal(first[start:start + 3], first[start] + np.arange(3))


def test_rows_of_a_context_must_be_contiguous(tmp_path):
    _write(tmp_path / "rows.gz", ["a", "a", "b", "a"])
    with pytest.raises(ValueError, match="not contiguous"):
        data.make_context_dataset([str(tmp_path / "rows.gz")], SPEC, "context_id", 8)
    _write(tmp_path / "ok.gz", ["a", "a", "b", "c", "c", "c"])
    np.testing.assert_array_equal(data.group_sizes([str(tmp_path / "ok.gz")], "context_id"),
                                  [2, 1, 3])
