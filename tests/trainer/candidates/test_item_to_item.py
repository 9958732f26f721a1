"""trainer/candidates/item_to_item.py: the transition and co-occurrence tables on sequences
whose counts are written out by hand."""
import numpy as np

from trainer.candidates import item_to_item


def test_history_matrix_is_binary():
    x = item_to_item.history_matrix([np.array([1, 1, 2]), np.array([], dtype=np.int32)], 4)
    assert x.toarray().tolist() == [[0, 1, 1, 0], [0, 0, 0, 0]]


def test_transition_matrix_counts_and_normalises():
    seqs = [np.array([0, 1, 2]), np.array([0, 1]), np.array([0, 2])]
    counts = item_to_item.transition_matrix(seqs, 3, normalize=False).toarray()
    assert counts.tolist() == [[0, 2, 1], [0, 0, 1], [0, 0, 0]]
    probs = item_to_item.transition_matrix(seqs, 3).toarray()
    np.testing.assert_allclose(probs[0], [0, 2 / 3, 1 / 3], rtol=1e-6)
    assert item_to_item.transition_matrix([np.array([4])], 5).nnz == 0   # nothing follows


def test_cooccurrence_counts_both_orders_within_the_window():
    seqs = [np.array([0, 1, 2, 3]), np.array([2, 0])]
    near = item_to_item.cooccurrence_matrix(seqs, 4, window=2).toarray()
    assert near.tolist() == [[0, 1, 2, 0], [1, 0, 1, 1], [2, 1, 0, 1], [0, 1, 1, 0]]
    assert item_to_item.cooccurrence_matrix(seqs, 4, window=1)[0, 2] == 1   # only [2, 0]


def test_popularity_tie_break_is_tiny_and_ordered_by_count():
    tie = item_to_item.popularity_tie_break([np.array([0, 1, 1]), np.array([1, 2])], 4)
    assert tie.dtype == np.float32
    np.testing.assert_allclose(tie, item_to_item.TIE_BREAK * np.array([1 / 3, 1, 1 / 3, 0]),
                               rtol=1e-6)
    assert not item_to_item.popularity_tie_break([], 3).any()
