"""trainer/candidates/sources.py: each source's scores, feature and explanation on sequences
small enough to follow by hand; saving the fitted tables; a TensorFlow-free import."""
import os
import subprocess
import sys

import numpy as np
import pytest

from trainer import features as F
from trainer.candidates import (CooccurrenceSource, RetrievalSource, TextSimilaritySource,
                                TransitionSource, item_to_item)

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
