"""trainer/candidates/stage.py: the union of the sources' best items, per-source counts, the
exclusion rules and the features, on catalogs of a few items."""
import numpy as np
import pytest

from trainer.candidates import CandidateStage, RetrievalSource, stage
from tests.trainer.candidates.helpers import FixedSource, fixed_scores, two_sources


def test_top_candidates_best_first_ties_by_item_index():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, 0.2],
                       [1.0, 1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(stage.top_candidates(scores, 3), [[1, 3, 2], [0, 1, 2]])
    with pytest.raises(ValueError, match="top_n"):
        stage.top_candidates(scores, 6)


def test_top_candidates_equals_a_stable_full_sort_with_ties_and_minus_infinity():
    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.integers(1, 300))
        scores = rng.integers(-3, 4, size=(3, n)).astype(np.float64)   # many ties
        scores[rng.random((3, n)) < 0.2] = -np.inf
        top_n = int(rng.integers(1, n + 1))
        np.testing.assert_array_equal(
            stage.top_candidates(scores, top_n),
            np.argsort(-scores, axis=1, kind="stable")[:, :top_n], err_msg=f"trial {trial}")
    with pytest.raises(ValueError, match="NaN"):
        stage.top_candidates(np.array([[0.5, np.nan, 0.1, 0.2, 0.3]]), 1)


def test_union_candidates_appends_the_best_new_items_of_the_second_ranking():
    top = np.array([[3, 1, 2], [0, 1, 2]])
    ranking = np.array([[1, 5, 3, 4, 0, 2], [0, 1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(stage.union_candidates(top, ranking, 2),
                                  [[3, 1, 2, 5, 4], [0, 1, 2, 3, 4]])
    assert stage.union_candidates(top, ranking, 0) is top
    with pytest.raises(ValueError, match="are needed"):
        stage.union_candidates(top, ranking[:, :4], 2)


def test_candidates_carry_relative_retrieval_and_log_transition_scores():
    retrieval = np.array([[0.5, 0.9, 0.1, 0.7, 0.3, 0.2]])
    transitions = np.array([[0.0, 0.0, 3.0, 0.0, 0.0, 1.0]])
    brands = np.array([0, 1, 1, -1, 0, 1])
    found = two_sources(retrieval, transitions, 2, 2, brands)([np.array([0, 4, 2])])
    np.testing.assert_array_equal(found.scores, retrieval)
    np.testing.assert_array_equal(found.items, [[1, 3, 2, 5]])   # retrieval top 2, transitions
    np.testing.assert_allclose(found.features["retrieval_score"], [[0.0, -0.2, -0.8, -0.7]],
                               atol=1e-6)                         # gap to retrieval's best
    np.testing.assert_allclose(found.features["transition_score"],
                               [np.log1p([0.0, 0.0, 3.0, 1.0])], atol=1e-6)
    np.testing.assert_allclose(found.features["history_brand_share"], [[1 / 3, 0, 1 / 3, 1 / 3]])
    np.testing.assert_array_equal(found.features["last_item_same_brand"], [[1, 0, 1, 1]])
    assert all(v.dtype == np.float32 for v in found.features.values())
    with pytest.raises(ValueError, match="transition_score: the number of candidates"):
        two_sources(retrieval, transitions, 2, -1)


def test_candidates_can_exclude_the_history_items():
    retrieval = np.array([[0.5, 0.9, 0.1, 0.7, 0.3, 0.2]])
    transitions = np.array([[0.0, 0.0, 3.0, 2.0, 0.0, 1.0]])
    history = [np.array([0, 2])]
    kept = two_sources(retrieval, transitions, 2, 2)(history).items
    np.testing.assert_array_equal(kept, [[1, 3, 2, 5]])          # history item 2 is one
    found = two_sources(retrieval, transitions, 2, 2, exclude="history")(history)
    np.testing.assert_array_equal(found.scores, retrieval)        # the scores stay as they were
    np.testing.assert_array_equal(found.items, [[1, 3, 5, 4]])    # retrieval top 2, transitions
    np.testing.assert_allclose(found.features["retrieval_score"], [[0.0, -0.2, -0.7, -0.6]],
                               atol=1e-6)                         # gap to the best candidate
    blocked = two_sources(retrieval, transitions, 2, 2, exclude="history").blocked(history, 6)
    assert blocked[0, [0, 2]].all() and blocked.sum() == 2


def test_further_sources_follow_in_turn_and_carry_their_scores():
    retrieval = np.array([[0.5, 0.9, 0.1, 0.7, 0.3, 0.2, 0.0]])
    transitions = np.array([[0.0, 0.0, 3.0, 0.0, 0.0, 1.0, 0.0]])
    text = np.array([[0.9, 0.1, 0.8, 0.2, 0.6, 0.7, 0.0]])
    counts = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7.0]])
    more = [(FixedSource("text_score", text), 2),
            (FixedSource("cooccurrence_score", counts, counts=True), 1)]
    found = two_sources(retrieval, transitions, 2, 1, more=more)([np.array([0])])
    np.testing.assert_array_equal(found.items, [[1, 3, 2, 0, 5, 6]])  # retrieval, transitions,
    np.testing.assert_allclose(found.features["text_score"],          # text, co-occurrence
                               [[0.1, 0.2, 0.8, 0.9, 0.7, 0.0]], atol=1e-6)
    np.testing.assert_allclose(found.features["cooccurrence_score"],
                               [[0, 0, 0, 0, 0, np.log1p(7.0)]], atol=1e-6)
    np.testing.assert_array_equal(found.origin, [[0, 0, 1, 2, 2, 3]])  # who added each
    plain = two_sources(retrieval, transitions, 2, 1)([np.array([0])]).features
    assert "text_score" not in plain                              # no such source, no feature
    scored = two_sources(retrieval, transitions, 2, 1,
                         more=[(FixedSource("text_score", text), 0)])([np.array([0])])
    assert scored.items.shape == (1, 3) and "text_score" in scored.features  # 0: a feature only
    assert list(scored.features) == ["retrieval_score", "history_brand_share",
                                     "last_item_same_brand", "transition_score", "text_score"]


# One user, history [0, 2]; retrieval prefers lower items, the second source items 5 then 4.
RETRIEVAL = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
SECOND = np.array([[0.0, 0.0, 0.0, 0.0, 1.0, 2.0]])
HISTORY = [np.array([0, 2])]


def _stage(**settings):
    return CandidateStage([(RetrievalSource(fixed_scores(RETRIEVAL)), 2),
                           (FixedSource("transition_score", SECOND), 1)], **settings)


@pytest.mark.parametrize("settings, purchased, expected", [
    ({}, None, [0, 1, 5]),                                        # "none"
    ({"exclude": "history"}, None, [1, 3, 5]),                    # items 0 and 2 out
    ({"exclude": "purchased"}, [np.array([0])], [1, 2, 5]),       # only the purchase 0 out
    ({"allowed": [1, 0, 1, 1, 1, 0]}, None, [0, 2, 4]),           # 1 and 5 out of stock
])
def test_exclusion_rules(settings, purchased, expected):
    found = _stage(**settings)(HISTORY, purchased)
    np.testing.assert_array_equal(found.items, [expected])
    assert found.valid.all() and found.origin.tolist() == [[0, 0, 1]]
    assert "history_brand_share" not in found.features           # no brands given


def test_excluded_items_come_last_and_are_marked_when_a_source_runs_out():
    found = _stage(exclude="history", allowed=[1, 0, 1, 1, 1, 0])(HISTORY)
    # Allowed: 3 and 4 only; the second source's best is item 4 (taken), then nothing left:
    # the best excluded item by index (0) fills the place, marked invalid.
    np.testing.assert_array_equal(found.items, [[3, 4, 0]])
    np.testing.assert_array_equal(found.valid, [[True, True, False]])


def test_per_source_counts_and_settings_are_checked():
    assert _stage().counts == [2, 1] and _stage().size == 3
    with pytest.raises(ValueError, match="first source's number of candidates must be >= 1"):
        CandidateStage([(RetrievalSource(fixed_scores(RETRIEVAL)), 0)])
    with pytest.raises(ValueError, match="at least one source"):
        CandidateStage([])
    with pytest.raises(ValueError, match="exclude must be one of"):
        _stage(exclude="viewed")
    with pytest.raises(ValueError, match="needs the purchased items"):
        _stage(exclude="purchased")(HISTORY)
    with pytest.raises(ValueError, match="allowed has 3 items"):
        _stage(allowed=[1, 1, 1])(HISTORY)
