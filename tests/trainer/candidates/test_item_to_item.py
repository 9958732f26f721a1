"""trainer/candidates/item_to_item.py: the transition and co-occurrence tables on sequences
whose counts are written out by hand."""
import numpy as np
import pytest
import scipy.sparse as sp

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


def test_units_give_the_counts_of_the_sequences_they_come_from():
    # A user's distinct engagements 0, 1, 2, 3 as units: each item with the items before it.
    histories, items = [[], [0], [0, 1], [0, 1, 2]], [0, 1, 2, 3]
    seqs = [np.array([0, 1, 2, 3])]
    earlier, later = item_to_item.unit_pairs(histories, items, 2)
    assert sorted(zip(earlier.tolist(), later.tolist())) == [(0, 1), (0, 2), (1, 2), (1, 3),
                                                             (2, 3)]
    pairs = item_to_item.unit_pairs(histories, items, 1)
    np.testing.assert_array_equal(
        item_to_item.transition_matrix((), 4, False, pairs).toarray(),
        item_to_item.transition_matrix(seqs, 4, False).toarray())
    np.testing.assert_array_equal(
        item_to_item.cooccurrence_matrix((), 4, 2, item_to_item.unit_pairs(histories, items,
                                                                           2)).toarray(),
        item_to_item.cooccurrence_matrix(seqs, 4, 2).toarray())
    with pytest.raises(ValueError, match="window"):
        item_to_item.unit_pairs(histories, items, 0)


def test_top_neighbours_round_trip_and_truncate():
    table = sp.csr_matrix(np.array([[0, 3, 1, 3], [0, 0, 0, 0], [2, 0, 0, 5], [1, 1, 1, 1]],
                                   np.float32))
    cols, weights = item_to_item.top_neighbours(table, 2)
    # Best first, ties by lower column; -1 / 0 padding for a row without entries.
    assert cols.tolist() == [[1, 3], [-1, -1], [3, 0], [0, 1]]
    assert weights.tolist() == [[3, 3], [0, 0], [5, 2], [1, 1]]
    full = item_to_item.from_neighbours(*item_to_item.top_neighbours(table, 4), 4)
    np.testing.assert_array_equal(full.toarray(), table.toarray())
    assert item_to_item.from_neighbours(cols, weights, 4).toarray()[0].tolist() == [0, 3, 0, 3]


@pytest.mark.parametrize("cols, weights, match", [
    ([[1]], [[1.0]], r"\[2, m\]"),
    ([[2], [0]], [[1.0], [1.0]], "< n_items"),
    ([[1], [0]], [[-1.0], [1.0]], ">= 0"),
    ([[1], [0]], [[np.nan], [1.0]], "finite"),
])
def test_from_neighbours_refuses_bad_tables(cols, weights, match):
    with pytest.raises(ValueError, match=match):
        item_to_item.from_neighbours(cols, weights, 2)


def test_tie_break_of_counts_scales_to_the_largest_count():
    np.testing.assert_allclose(item_to_item.tie_break_of_counts([0, 2, 4]),
                               item_to_item.TIE_BREAK * np.array([0, .5, 1]), rtol=1e-6)
    assert not item_to_item.tie_break_of_counts([]).size
