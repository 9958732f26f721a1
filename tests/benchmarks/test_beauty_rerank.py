"""Two-stage "ours_ranked" (benchmarks/beauty_rerank.py): ranker rows from the candidate
stage, the re-ranked order, option checks and an end-to-end run on the planted folder (the
candidate stage itself: tests/trainer/candidates)."""
import functools
import json
import os

import numpy as np
import pytest

from benchmarks import beauty, beauty_rerank, protocol, registry
from trainer import features as F
from tests.benchmarks.test_beauty import planted_folder  # noqa: F401  (fixture)
from tests.trainer.candidates.helpers import two_sources


def test_training_rows_positive_plus_sampled_candidate_negatives():
    rng = np.random.default_rng(0)
    scores = rng.random((4, 50))
    transitions = np.zeros((4, 50))
    scores[0, 7] = 5.0                # user 0: target 7 retrieved (best)
    scores[1, 9] = -5.0               # user 1: target 9 neither retrieved nor a transition
    scores[2, 4] = 0.995              # user 2: target 4 retrieved
    scores[3, 8] = -5.0               # user 3: target 8 not retrieved, but the top transition
    transitions[3, 8] = 2.0
    histories = [np.array([0]), np.array([1]), np.array([2]), np.array([3])]
    targets = np.array([7, 9, 4, 8])
    candidates = two_sources(scores, transitions, 10, 2)
    rows, hits = beauty_rerank.training_rows(histories, targets, candidates, 4,
                                             np.random.default_rng(1), batch_size=2)
    assert hits == 3
    assert {r[0] for r in rows} == {0, 2, 3}                    # no rows for user 1
    for user, target in ((0, 7), (2, 4), (3, 8)):
        mine = [r for r in rows if r[0] == user]
        top = candidates([histories[user]]).items
        assert [r[2] for r in mine] == [1, 0, 0, 0, 0]
        best = scores[user].max()
        assert mine[0][1] == target
        negatives = [r[1] for r in mine[1:]]
        assert len(set(negatives)) == 4 and target not in negatives
        assert set(negatives) <= set(top[0])                    # only candidates
        for _, item, _, features in mine:
            assert features["retrieval_score"] == pytest.approx(scores[user, item] - best)
            assert features["transition_score"] == pytest.approx(
                np.log1p(transitions[user, item]))
    again, _ = beauty_rerank.training_rows(histories, targets, candidates, 4,
                                           np.random.default_rng(1))
    assert again == rows                                         # seeded sampling


def test_reranked_order_puts_the_ranked_candidates_first():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    transitions = np.array([[0.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    scorer = object.__new__(beauty_rerank.RerankedScorer)
    scorer.candidates = two_sources(scores, transitions, 3, 1)
    scorer.users_per_call = 1
    seen = {}

    def reverse(histories, candidates, features):
        seen["candidates"], seen["features"] = candidates.copy(), features
        return np.array([[0.1, 0.2, 0.3, 0.4]])                  # ranker reverses them
    scorer.rank_scores = reverse
    out = scorer([np.array([0])])
    np.testing.assert_array_equal(seen["candidates"], [[0, 1, 2, 4]])
    np.testing.assert_allclose(seen["features"]["retrieval_score"], [[0.0, -0.1, -0.2, -0.4]],
                               atol=1e-6)                        # vs the best
    assert list(np.argsort(-out[0], kind="stable")) == [4, 2, 1, 0, 3, 5]
    ranks = protocol.target_ranks(out, np.array([3]))
    assert ranks[0] == 4                                         # the rest keeps its order


def test_fit_ours_ranked_checks_candidate_counts_before_training(tmp_path):
    task = registry.FitTask([np.array([0, 1, 2])], None, 30, protocol.EvalSet([], np.zeros(0)))
    fit = functools.partial(beauty_rerank.fit_ours_ranked, task, 0, work_dir=str(tmp_path),
                            top_n=10, transition_candidates=5, text_candidates=5,
                            cooccurrence_candidates=5)
    with pytest.raises(ValueError, match="= 35 must not exceed the catalog's 30 items"):
        fit(cooccurrence_candidates=15)
    with pytest.raises(ValueError, match="text_candidates needs text_window > 0"):
        fit(text_window=0)
    with pytest.raises(ValueError, match="cooccurrence_candidates needs cooccurrence_window"):
        fit(cooccurrence_window=0)
    assert not os.listdir(tmp_path)                              # nothing trained


@pytest.mark.slow
def test_ours_ranked_end_to_end_on_the_planted_folder(planted_folder, tmp_path):  # noqa: F811
    """Retrieval (Transform + trainer.retrieval) + transitions, text and co-occurrence
    candidates -> ranker rows -> Transform with the score features -> trainer.ranking ->
    exported `score` signature re-ranks the candidates."""
    out = str(tmp_path / "results")
    beauty.main(["--data", planted_folder, "--out", out, "--models", "popular,ours_ranked",
                 "--set", f"ours_ranked.work_dir={json.dumps(str(tmp_path / 'work'))}",
                 "--set", "ours_ranked.top_n=20", "--set", "ours_ranked.negatives=5",
                 "--set", "ours_ranked.transition_candidates=10",
                 "--set", "ours_ranked.text_candidates=10",
                 "--set", "ours_ranked.cooccurrence_candidates=10",
                 # No MiniLM here (the Beauty smoke test of `ours` covers it): this test is
                 # about the two-stage plumbing, and the text exports dominate its time.
                 "--set", "ours_ranked.retrieval_config={\"epochs\": 20, "
                 "\"text_mode\": \"none\"}",
                 "--set", "ours_ranked.ranking_config={\"epochs\": 10, "
                 "\"use_text_embedding\": false}",
                 "--set", "ours_ranked.ranker_seeds=2"])
    results = json.load(open(os.path.join(out, "beauty.json")))
    ranked = results["models"]["ours_ranked"]
    first_stage = results["models"]["ours_ranked_retrieval"]
    assert ranked["validation"] is None and first_stage["validation"] is None
    assert first_stage["info"] == {"companion_of": "ours_ranked"}
    info = ranked["info"]
    runs = info["ranker_runs"]
    assert [run["config"]["seed"] for run in runs] == [0, 1]
    for run in runs:
        assert run["config"]["external_features"] == list(F.OPTIONAL_FLOAT_FEATURES)
        assert run["ranker"]["click"]["auc"] > 0.6                # held-out ranker rows
    assert info["ranker_rows"]["train"] > 0 and info["ranker_rows"]["eval"] > 0
    # The mean of both runs was a candidate too; the best held-out NDCG@10 was kept.
    scores = [run["holdout_validation"]["unfiltered"]["ndcg@10"] for run in runs]
    ensemble = info["holdout_validation_ensemble"]["unfiltered"]["ndcg@10"]
    assert info["selected"] in (0, 1, "ensemble")
    chosen = ensemble if info["selected"] == "ensemble" else scores[info["selected"]]
    assert chosen == max(scores + [ensemble])
    assert info["holdout_validation_retrieval"]["users"] == info["holdout_users"]
    popular = results["models"]["popular"]["test"]["unfiltered"]["ndcg@10"]
    assert ranked["test"]["unfiltered"]["ndcg@10"] > popular
    assert ranked["test"]["filtered"]["recall@10"] > 0
