"""trainer/candidates/sources.py: each source's scores, feature and explanation on sequences
small enough to follow by hand; saving the fitted tables; a TensorFlow-free import."""
import os
import subprocess
import sys

import numpy as np
import pytest

from trainer import features as F
from trainer.candidates import (CooccurrenceSource, RetrievalSource, TextNeighbourSource,
                                TextSimilaritySource, TransitionSource, item_to_item)

# Transitions 0 -> 1 (twice), 1 -> 2, 0 -> 2, 3 -> 2; counts 0: 3, 1: 2, 2: 3, 3: 1.
SEQUENCES = [np.array([0, 1, 2]), np.array([0, 1]), np.array([0, 2]), np.array([3, 2])]


def test_transitions_weight_the_recent_items_by_decay():
    source = TransitionSource.fit(SEQUENCES, 4, window=2, decay=0.5, tie_break=False)
    assert source.name == F.TRANSITION_SCORE
    # Last item 3 (weight 1): 3 -> 2 once; item 0 before it (weight 0.5): 0 -> 1 twice, 0 -> 2.
    np.testing.assert_allclose(source.scores([np.array([0, 3])]), [[0, 1.0, 1.5, 0]])
    np.testing.assert_allclose(source.scores([np.array([1, 0, 3])]), [[0, 1.0, 1.5, 0]])
    one = TransitionSource.fit(SEQUENCES, 4, window=1, decay=0.5, tie_break=False)
    np.testing.assert_allclose(one([np.array([0, 3]), np.array([], np.int64)]),
                               [[0, 0, 1, 0], [0, 0, 0, 0]])
    tied = TransitionSource.fit(SEQUENCES, 4, window=2, decay=0.5)     # + popularity
    scores = tied.scores([np.array([0, 3])])[0]
    np.testing.assert_allclose(scores, [0, 1.0, 1.5, 0], atol=2e-6)
    np.testing.assert_array_equal(scores[[0, 3]],                    # no transition: popularity
                                  item_to_item.popularity_tie_break(SEQUENCES, 4)[[0, 3]])
    assert 0 < scores[3] < scores[0]
    normalised = TransitionSource.fit(SEQUENCES, 4, window=1, normalize=True, tie_break=False)
    np.testing.assert_allclose(normalised.scores([np.array([0])]), [[0, 2 / 3, 1 / 3, 0]],
                               rtol=1e-6)


def test_transitions_feature_and_reason():
    source = TransitionSource.fit(SEQUENCES, 4, window=2, decay=0.5, tie_break=False)
    np.testing.assert_allclose(source.feature(np.array([[0.0, 1.5]])), [[0, np.log(2.5)]])
    # Item 1 comes from item 0 (0.5 * 2), item 2 from item 3 (1 > 0.5 * 1), item 3 from none.
    np.testing.assert_array_equal(source.because(np.array([0, 3]), [1, 2, 3]), [0, 3, -1])
    assert source.reason.format(item="Rose soap") == "Often chosen next after Rose soap"


def test_cooccurrence_sums_the_history_items_counts():
    seqs = [np.array([0, 1, 2, 3]), np.array([2, 0])]
    near = item_to_item.cooccurrence_matrix(seqs, 4, window=2).toarray()
    source = CooccurrenceSource.fit(seqs, 4, window=2)
    assert source.name == F.COOCCURRENCE_SCORE
    scores = source.scores([np.array([0, 3])])
    np.testing.assert_allclose(scores[0], near[0] + near[3], atol=1e-5)   # + tie-break
    exact = CooccurrenceSource.fit(seqs, 4, window=2, tie_break=False)
    np.testing.assert_array_equal(exact([np.array([0, 3])]), [near[0] + near[3]])
    # Item 1: once with 0 and once with 3 (the more recent wins); item 2: twice with 0.
    np.testing.assert_array_equal(exact.because(np.array([0, 3]), [1, 2]), [3, 0])
    np.testing.assert_allclose(exact.feature(np.array([[2.0]])), [[np.log(3.0)]])
    assert "{item}" in exact.reason


def test_text_similarity_is_the_cosine_with_the_decayed_history():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]], np.float32)
    source = TextSimilaritySource(emb, window=2, decay=0.5)
    assert source.name == F.TEXT_SCORE
    query = np.array([0.5, 1.0]) / np.sqrt(1.25)             # 1 * e1 + 0.5 * e0, normalised
    scores = source.scores([np.array([3, 0, 1]), np.array([], np.int64)])
    np.testing.assert_allclose(scores[0], emb @ query, rtol=1e-6)
    np.testing.assert_array_equal(scores[1], np.zeros(4))     # empty history
    np.testing.assert_array_equal(source.feature(scores), scores)
    # Item 2: 0.8 from item 1 vs 0.5 * 0.6 from item 0; item 3: 0 from item 1 vs -0.5.
    np.testing.assert_array_equal(source.because(np.array([0, 1]), [2, 3]), [1, 1])
    np.testing.assert_array_equal(source.because(np.array([], np.int64), [2]), [-1])


# Cosines: (0, 1) 0.8, (0, 2) 0.6, (1, 2) 0.96; item 3 has no text; item 4 is opposite to
# item 0 (every cosine of it <= 0). Item 1 is not normalised.
TEXTS = np.array([[1.0, 0.0], [1.6, 1.2], [0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], np.float32)


def _neighbours(source):
    """{item: [(neighbour, cosine), ...] best first} of a text neighbour table."""
    table = source.table.tocsr()
    out = {}
    for i in range(table.shape[0]):
        row = table.getrow(i)
        pairs = sorted(zip(row.indices.tolist(), row.data.tolist()), key=lambda p: (-p[1], p[0]))
        out[i] = [(j, round(w, 5)) for j, w in pairs]
    return out


def test_text_neighbours_are_each_items_most_similar_other_texts():
    every = TextNeighbourSource.fit_embeddings(TEXTS, neighbours=10)
    assert every.name == F.TEXT_SCORE and every.tie_break is None
    assert (every.window, every.decay) == (10, 0.5)
    assert _neighbours(every) == {0: [(1, 0.8), (2, 0.6)], 1: [(2, 0.96), (0, 0.8)],
                                  2: [(1, 0.96), (0, 0.6)], 3: [], 4: []}
    best = TextNeighbourSource.fit_embeddings(TEXTS, neighbours=1)
    assert _neighbours(best) == {0: [(1, 0.8)], 1: [(2, 0.96)], 2: [(1, 0.96)], 3: [], 4: []}
    assert best.table.dtype == np.float32 and best.table.shape == (5, 5)
    # Equal texts: cosine 1 (never above), ties to the lower index; never itself.
    same = TextNeighbourSource.fit_embeddings(np.array([[1.0, 0], [0, 1], [2, 0], [1, 0]]), 1)
    assert _neighbours(same) == {0: [(2, 1.0)], 1: [], 2: [(0, 1.0)], 3: [(0, 1.0)]}
    assert same.table.data.max() <= 1.0
    single = TextNeighbourSource.fit_embeddings(np.ones((1, 3)), 5)
    assert single.table.shape == (1, 1) and single.table.nnz == 0


def test_text_neighbours_in_blocks_equal_the_whole_matrix_at_once():
    emb = np.random.default_rng(0).normal(size=(37, 8)).astype(np.float32)
    emb[[5, 20]] = 0.0                                             # two items without text
    whole = TextNeighbourSource.fit_embeddings(emb, neighbours=4, block=1024).table
    for block in (1, 6, 36):
        blocked = TextNeighbourSource.fit_embeddings(emb, neighbours=4, block=block).table
        np.testing.assert_array_equal(blocked.indptr, whole.indptr)
        np.testing.assert_array_equal(blocked.indices, whole.indices)
        np.testing.assert_allclose(blocked.data, whole.data, rtol=1e-6)
    # By hand: the best 4 positive cosines of the other items with text.
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-30)
    cos = unit.astype(np.float64) @ unit.T.astype(np.float64)
    for i in range(len(emb)):
        others = [j for j in np.argsort(-cos[i], kind="stable") if j != i and cos[i, j] > 0]
        row = whole.getrow(i)
        assert sorted(row.indices.tolist()) == sorted(others[:4]), i
        np.testing.assert_allclose(row.toarray()[0, others[:4]], cos[i, others[:4]], rtol=1e-5)
    assert whole.getrow(5).nnz == 0 and whole.getrow(20).nnz == 0
    assert not np.isin([5, 20], whole.indices).any()              # nobody's neighbour


def test_text_neighbours_score_the_recent_items_like_the_transitions():
    source = TextNeighbourSource.fit_embeddings(TEXTS, neighbours=10, window=2, decay=0.5)
    # Last item 1 (weight 1): 0 -> 0.8, 2 -> 0.96; item 0 before it (0.5): 1 -> 0.8, 2 -> 0.6.
    history = np.array([4, 0, 1])
    scores = source.scores([history, np.array([], np.int64)])
    np.testing.assert_allclose(scores, [[0.8, 0.4, 1.26, 0, 0], np.zeros(5)], rtol=1e-6)
    as_transitions = TransitionSource(source.table, None, window=2, decay=0.5)
    np.testing.assert_array_equal(scores, as_transitions.scores([history, np.array([], int)]))
    np.testing.assert_array_equal(source.feature(scores), scores)          # no log count
    np.testing.assert_array_equal(source.because(history, [0, 1, 2, 3]), [1, 0, 1, -1])
    assert source.supported(history).tolist() == [0, 1, 2]
    assert source.supported(np.array([3])).tolist() == []                  # no text
    assert source.reason.format(item="Rose soap") == "Similar to Rose soap"


def test_text_neighbours_save_and_load(tmp_path):
    source = TextNeighbourSource.fit_embeddings(TEXTS, neighbours=1, window=3, decay=0.25)
    path = str(tmp_path / "text.npz")
    source.save(path)
    loaded = TextNeighbourSource.load(path)
    assert type(loaded) is TextNeighbourSource and loaded.tie_break is None
    assert (loaded.window, loaded.decay) == (3, 0.25)
    np.testing.assert_array_equal(loaded.table.toarray(), source.table.toarray())
    histories = [np.array([0, 2]), np.array([4])]
    np.testing.assert_array_equal(loaded.scores(histories), source.scores(histories))


def test_text_neighbour_parameters_are_checked():
    with pytest.raises(ValueError, match="text_score: neighbours and block must be >= 1"):
        TextNeighbourSource.fit_embeddings(TEXTS, neighbours=0)
    with pytest.raises(ValueError, match="neighbours and block"):
        TextNeighbourSource.fit_embeddings(TEXTS, block=0)
    with pytest.raises(ValueError, match="text_score: window must be >= 1"):
        TextNeighbourSource.fit_embeddings(TEXTS, window=0)
    with pytest.raises(ValueError, match="decay in"):
        TextNeighbourSource.fit_embeddings(TEXTS, decay=1.5)
    with pytest.raises(ValueError, match=r"finite \[n_items, H\]"):
        TextNeighbourSource.fit_embeddings(np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        TextNeighbourSource.fit_embeddings(np.array([[1.0, np.nan], [0, 1]]))


def test_retrieval_wraps_scores_and_feature_is_the_gap_to_the_first_candidate():
    source = RetrievalSource(lambda histories: np.ones((len(histories), 3)))
    assert source.name == F.RETRIEVAL_SCORE and "{item}" not in source.reason
    assert source([np.array([0])]).shape == (1, 3)
    np.testing.assert_allclose(source.feature(np.array([[0.9, 0.7]])), [[0.0, -0.2]])
    np.testing.assert_array_equal(source.because(np.array([0]), [1, 2]), [-1, -1])


def test_fitted_tables_save_and_load(tmp_path):
    for source in (TransitionSource.fit(SEQUENCES, 4, window=2, decay=0.5),
                   CooccurrenceSource.fit(SEQUENCES, 4, window=1, tie_break=False)):
        path = str(tmp_path / f"{source.name}.npz")
        source.save(path)
        loaded = type(source).load(path)
        histories = [np.array([0, 3]), np.array([2])]
        np.testing.assert_array_equal(loaded.scores(histories), source.scores(histories))
        if isinstance(source, TransitionSource):
            assert (loaded.window, loaded.decay) == (2, 0.5)
        else:
            assert loaded.tie_break is None


def test_sources_fitted_on_units_score_like_those_fitted_on_their_sequences():
    # Units of the distinct engagements (histories oldest first, the engaged item).
    histories, items = [], []
    for seq in SEQUENCES:
        for i, item in enumerate(seq):
            histories.append(np.asarray(seq[:i]))
            items.append(item)
    probe = [np.array([0, 3]), np.array([2]), np.array([], np.int64)]
    for on_units, on_sequences in (
            (TransitionSource.fit_units(histories, items, 4, window=2, decay=0.5),
             TransitionSource.fit(SEQUENCES, 4, window=2, decay=0.5)),
            (CooccurrenceSource.fit_units(histories, items, 4, window=2),
             CooccurrenceSource.fit(SEQUENCES, 4, window=2))):
        np.testing.assert_array_equal(on_units.table.toarray(), on_sequences.table.toarray())
        np.testing.assert_allclose(on_units.scores(probe), on_sequences.scores(probe))


def test_supported_items_are_those_with_a_table_score_beyond_the_tie_break():
    transitions = TransitionSource.fit(SEQUENCES, 4, window=1)
    cooccurrences = CooccurrenceSource.fit(SEQUENCES, 4, window=1)
    for source, history in ((transitions, np.array([1, 0])), (transitions, np.array([3])),
                            (cooccurrences, np.array([0, 3])), (cooccurrences, np.array([2]))):
        scores = source.scores([history])[0]
        expected = np.flatnonzero(scores > item_to_item.TIE_BREAK)
        np.testing.assert_array_equal(source.supported(history), expected)
    assert transitions.supported(np.array([1, 0])).tolist() == [1, 2]   # window 1: item 0
    assert not len(transitions.supported(np.array([], np.int64)))


def test_source_parameters_are_checked():
    with pytest.raises(ValueError, match="transition_score: window must be >= 1"):
        TransitionSource.fit(SEQUENCES, 4, window=0)
    with pytest.raises(ValueError, match="decay in"):
        TextSimilaritySource(np.eye(2), window=3, decay=0.0)
    with pytest.raises(ValueError, match="cooccurrence_score: window"):
        CooccurrenceSource.fit(SEQUENCES, 4, window=0)


def test_the_package_imports_without_tensorflow():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, trainer.candidates; print(sorted({m.split('.')[0] "
         "for m in sys.modules} & {'tensorflow', 'keras', 'tf_keras', 'tensorflow_text'}))"],
        cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
