"""Search baselines: BM25 through bm25s, reciprocal-rank fusion, the random floor, tuning."""
import numpy as np
import pytest

from benchmarks import search_methods as methods
from benchmarks import search_protocol as protocol
from benchmarks.search_data import Query

TEXTS = ["Steel Angle Bracket", "Galvanized Corner Brackets (4-Pack)", "White Interior Paint",
         "Exterior Wood Stain", "Angle Grinder 4-1/2 in."]


def query(text, products=(0,), grades=(2,), query_id=None):
    return Query(query_id or text, text, "test", np.array(products), np.array(grades))


def test_bm25_stems_drops_stop_words_and_scores_every_product():
    bm25 = methods.BM25(TEXTS)
    scores = bm25.scores([query("the brackets"), query("painting"), query("zzz unknown")])
    assert scores.shape == (3, len(TEXTS))
    # "brackets" -> "bracket" matches both bracket titles, the shorter one higher.
    assert np.argsort(-scores[0])[:2].tolist() == [0, 1] and scores[0, 2:].max() == 0
    assert np.flatnonzero(scores[1]).tolist() == [2]         # "painting" -> "paint"
    assert not scores[2].any()                                  # no known token: all 0
    plain = methods.BM25(TEXTS, stemmer=None)
    assert not plain.scores([query("painting")]).any()


def test_bm25_with_params_reuses_tokens_and_changes_scores():
    bm25 = methods.BM25(TEXTS, k1=1.2, b=0.75)
    other = bm25.with_params(2.0, 0.0)
    assert other.tokens is bm25.tokens and (other.k1, other.b) == (2.0, 0.0)
    q = [query("angle brackets")]
    assert not np.allclose(bm25.scores(q), other.scores(q))


def test_random_order_is_seeded_per_query_not_per_batch():
    rnd = methods.RandomOrder(50, seed=3)
    a, b = query("a"), query("b")
    together = rnd.scores([a, b])
    assert np.array_equal(together[1], rnd.scores([b])[0])
    assert not np.array_equal(together[0], together[1])
    assert not np.array_equal(together[0], methods.RandomOrder(50, seed=4).scores([a])[0])


def test_competition_ranks_share_ranks_on_ties():
    ranks = methods.competition_ranks(np.array([[0.5, 2.0, 0.5, 0.0, 3.0]]))
    assert ranks.tolist() == [[3, 2, 3, 5, 1]]


class Fixed:
    """A method with fixed full-catalog scores."""

    def __init__(self, row):
        self.row = np.asarray(row, np.float64)

    def scores(self, queries):
        return np.tile(self.row, (len(queries), 1))


def test_rrf_fuses_ranks_and_rerank_fuses_only_the_candidates():
    a = Fixed([4.0, 3.0, 2.0, 1.0, 0.0])          # ranks 1 2 3 4 5
    b = Fixed([0.0, 3.0, 1.0, 4.0, 2.0])          # ranks 5 2 4 1 3
    fusion = methods.Fusion([a, b], k=60)
    got = fusion.scores([query("q")])[0]
    expected = [1 / (60 + ra) + 1 / (60 + rb) for ra, rb in zip([1, 2, 3, 4, 5],
                                                                  [5, 2, 4, 1, 3])]
    assert got == pytest.approx(expected)
    # A real fusion: product 1, second in both lists, beats 0 and 3, each first in one only.
    assert np.argsort(-got, kind="stable")[:3].tolist() == [1, 3, 0]
    # Among candidates {0, 2, 4} only: ranks a = 1 2 3, b = 3 2 1.
    rerank = fusion.rerank([query("q", products=[0, 2, 4], grades=[2, 0, 1])])[0]
    assert rerank == pytest.approx([1 / 61 + 1 / 63, 2 / 62, 1 / 63 + 1 / 61])


def test_tuning_picks_the_best_setting_on_the_queries_it_is_given():
    bm25 = methods.BM25(TEXTS)
    train = [query("angle bracket", products=[0, 4, 1], grades=[2, 0, 1]),
             query("paint", products=[2, 3], grades=[2, 0])]
    model, info = methods.tune_bm25(bm25, train, k1_grid=(0.5, 1.5), b_grid=(0.0, 1.0))
    assert len(info["grid"]) == 4 and (model.k1, model.b) == (info["k1"], info["b"])
    assert max(r["selection"] for r in info["grid"]) == next(
        r["selection"] for r in info["grid"] if (r["k1"], r["b"]) == (model.k1, model.b))
    # RRF of a method with itself: every k gives the same order, the first k wins.
    fusion, info = methods.tune_rrf([model, model], train, k_grid=(5, 60))
    assert fusion.k == 5 == info["k"]
    assert info["grid"][0]["selection"] == info["grid"][1]["selection"]
    assert info["grid"][0][protocol.RECALL] == 1.0


def test_linear_fusion_is_the_apis_and_its_weight_is_chosen_on_the_given_queries():
    from serving.api import search_fusion
    lexical = Fixed([0.0, 0.0, 9.0, 1.0, 0.0])
    dense = Fixed([0.9, 0.8, 0.1, 0.5, 0.2])
    fused = methods.LinearFusion(lexical, dense, 0.5).scores([query("q"), query("r")])
    assert fused == pytest.approx(np.tile(search_fusion.fuse(lexical.row, dense.row, 0.5),
                                          (2, 1)))
    # product 2 (the strong lexical match) is the top grade: only a lexical weight that
    # lifts it into the first places wins the selection
    train = [query("q", products=[2, 0], grades=[2, 0])]
    model, info = methods.tune_linear(lexical, dense, train, weight_grid=(0.0, 0.8))
    assert [row["lexical_weight"] for row in info["grid"]] == [0.0, 0.8]
    assert model.lexical_weight == info["lexical_weight"] == 0.8
    assert info["grid"][1]["selection"] > info["grid"][0]["selection"]
