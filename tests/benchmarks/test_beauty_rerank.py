"""Two-stage "ours_ranked" (benchmarks/beauty_rerank.py): candidate selection, ranker rows,
the re-ranked order, and an end-to-end run on the planted folder."""
import json
import os

import numpy as np
import pytest

from benchmarks import beauty, beauty_rerank, protocol
from tests.benchmarks import planted
from tests.benchmarks.test_beauty import planted_folder  # noqa: F401  (fixture)


def test_top_candidates_best_first_ties_by_item_index():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, 0.2],
                       [1.0, 1.0, 1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(beauty_rerank.top_candidates(scores, 3),
                                  [[1, 3, 2], [0, 1, 2]])
    with pytest.raises(ValueError, match="top_n"):
        beauty_rerank.top_candidates(scores, 6)


def _fixed_scorer(scores):
    """A scorer over fixed per-user score rows, keyed by the history's first item."""
    return lambda histories: np.stack([scores[int(h[0])] for h in histories])


def test_training_rows_positive_plus_sampled_retrieved_negatives():
    rng = np.random.default_rng(0)
    scores = rng.random((3, 50))
    scores[0, 7] = 5.0                # user 0: target 7 retrieved (best)
    scores[1, 9] = -5.0               # user 1: target 9 not in the top 10
    scores[2, 4] = 0.995              # user 2: target 4 retrieved
    histories = [np.array([0]), np.array([1]), np.array([2])]
    targets = np.array([7, 9, 4])
    rows, hits = beauty_rerank.training_rows(histories, targets, _fixed_scorer(scores), 10, 4,
                                             np.random.default_rng(1), batch_size=2)
    assert hits == 2
    assert {r[0] for r in rows} == {0, 2}                       # no rows for user 1
    for user, target in ((0, 7), (2, 4)):
        mine = [r for r in rows if r[0] == user]
        top = set(beauty_rerank.top_candidates(scores[user:user + 1], 10)[0])
        assert [r[2] for r in mine] == [1, 0, 0, 0, 0]
        best = scores[user].max()
        assert mine[0][1] == target
        assert mine[0][3] == pytest.approx(scores[user, target] - best)   # gap to the best
        negatives = [r[1] for r in mine[1:]]
        assert len(set(negatives)) == 4 and target not in negatives
        assert set(negatives) <= top                             # only retrieved items
        assert all(r[3] == pytest.approx(scores[user, r[1]] - best) for r in mine)
    again, _ = beauty_rerank.training_rows(histories, targets, _fixed_scorer(scores), 10, 4,
                                           np.random.default_rng(1))
    assert again == rows                                         # seeded sampling


def test_reranked_order_puts_the_ranked_top_n_first():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]])
    scorer = object.__new__(beauty_rerank.RerankedScorer)
    scorer.retrieval, scorer.top_n, scorer.users_per_call = _fixed_scorer(scores), 3, 1
    seen = {}

    def reverse(histories, candidates, retrieval_scores):
        seen["candidates"], seen["scores"] = candidates.copy(), retrieval_scores.copy()
        return np.array([[0.1, 0.2, 0.3]])                       # ranker reverses the top 3
    scorer.rank_scores = reverse
    out = scorer([np.array([0])])
    np.testing.assert_array_equal(seen["candidates"], [[0, 1, 2]])
    np.testing.assert_allclose(seen["scores"], [[0.0, -0.1, -0.2]], atol=1e-6)  # vs the best
    assert list(np.argsort(-out[0], kind="stable")) == [2, 1, 0, 3, 4, 5]
    ranks = protocol.target_ranks(out, np.array([3]))
    assert ranks[0] == 3                                         # the rest keeps its order


@pytest.mark.slow
def test_ours_ranked_end_to_end_on_the_planted_folder(planted_folder, tmp_path):  # noqa: F811
    """Retrieval (Transform + trainer.retrieval) -> ranker rows -> Transform with the
    retrieval score -> trainer.ranking -> exported `score` signature re-ranks the top-N."""
    out = str(tmp_path / "results")
    beauty.main(["--data", planted_folder, "--out", out, "--models", "popular,ours_ranked",
                 "--set", f"ours_ranked.work_dir={json.dumps(str(tmp_path / 'work'))}",
                 "--set", "ours_ranked.top_n=20", "--set", "ours_ranked.negatives=5",
                 # No MiniLM here (the Beauty smoke test of `ours` covers it): this test is
                 # about the two-stage plumbing, and the text exports dominate its time.
                 "--set", "ours_ranked.retrieval_config={\"epochs\": 20, "
                 "\"text_mode\": \"none\"}",
                 "--set", "ours_ranked.ranking_config={\"epochs\": 10, "
                 "\"use_text_embedding\": false}"])
    results = json.load(open(os.path.join(out, "beauty.json")))
    ranked = results["models"]["ours_ranked"]
    first_stage = results["models"]["ours_ranked_retrieval"]
    assert ranked["validation"] is None and first_stage["validation"] is None
    assert first_stage["info"] == {"companion_of": "ours_ranked"}
    info = ranked["info"]
    run = info["ranker_runs"][info["selected"]]
    assert run["config"]["use_retrieval_score"] is True
    assert info["ranker_rows"]["train"] > 0 and info["ranker_rows"]["eval"] > 0
    assert run["ranker"]["click"]["auc"] > 0.6                    # held-out ranker rows
    assert info["holdout_validation_retrieval"]["users"] == info["holdout_users"]
    popular = results["models"]["popular"]["test"]["unfiltered"]["ndcg@10"]
    assert ranked["test"]["unfiltered"]["ndcg@10"] > popular
    # Re-ranking only moves the retrieved top-N: recall at N is unchanged.
    assert ranked["test"]["filtered"]["recall@10"] > 0
