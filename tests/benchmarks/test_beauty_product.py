"""The product row of the Beauty benchmark (benchmarks/beauty_product.py): list metrics, the
test users, option checks, and a smoke run of the real pipeline + API on 1,000 real users."""
import json
import os

import numpy as np
import pytest

from benchmarks import beauty, beauty_data, beauty_product
from tests.benchmarks.test_beauty import REAL_DATA, planted_folder  # noqa: F401  (fixture)


def test_list_metrics_find_the_target_in_the_returned_list():
    asins = ["a", "b", "c", "d", "e"]
    users = [("u1", np.array([0, 1]), 2),         # target c at position 1
             ("u2", np.array([3]), 4),            # target e missing
             ("u3", np.array([0]), 1)]            # history item a listed first, target b 2nd
    lists = [["d", "c", "e"], ["a", "b"], ["a", "b", "c"]]
    out = beauty_product.list_metrics(lists, users, asins)
    assert out["users"] == 3
    assert out["unfiltered"]["recall@10"] == pytest.approx(2 / 3)
    assert out["unfiltered"]["ndcg@10"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(3)) / 3)
    # Filtered: u3's history item "a" leaves the list, so b moves to the top.
    assert out["filtered"]["ndcg@10"] == pytest.approx((1 / np.log2(3) + 1.0) / 3)


def test_retrieval_share_at_counts_targets_within_each_cutoff_of_the_returned_list():
    asins = ["a", "b", "c", "d", "e"]
    users = [("u1", np.array([0]), 1),             # target b at rank 1 (0-based)
             ("u2", np.array([1]), 4),             # target e at rank 2
             ("u3", np.array([2]), 3)]             # target d not retrieved
    retrieved = [["a", "b", "c"], ["a", "b", "e"], ["a", "b", "c"]]
    shares = beauty_product.retrieval_share_at(retrieved, users, asins, cutoffs=(1, 2, 10))
    # Cutoffs past the longest list are left out; the list's own length (its K) is added.
    assert shares == {1: 0.0, 2: pytest.approx(1 / 3), 3: pytest.approx(2 / 3)}
    assert beauty_product.retrieval_share_at([], [], asins) == {}


def test_test_users_are_the_leave_one_out_test_set(planted_folder):  # noqa: F811
    data = beauty_data.load_beauty(planted_folder, max_users=20, seed=1)
    users = beauty_product.test_users(data)
    assert [u for u, _, _ in users] == [u for u, s in zip(data.user_ids, data.sequences)
                                        if len(s) >= 3]
    for (_, history, target), seq in zip(users, data.sequences):
        assert list(history) == list(seq[:-1]) and target == seq[-1]


@pytest.mark.parametrize("argv, message", [
    (["--set", "product.nope=1"], "unknown option"),
    (["--set", 'product.work_dir="benchmarks/x"'], "inside the repository"),
])
def test_product_options_are_checked(planted_folder, tmp_path, argv, message):  # noqa: F811
    with pytest.raises(SystemExit, match=message):
        beauty.main(["--data", planted_folder, "--out", str(tmp_path), "--models",
                     "product"] + argv)


def test_a_partial_rerun_keeps_the_untouched_models_and_needs_a_push(tmp_path, monkeypatch):
    base = {"total_seconds": 5000.0, "component_seconds": {"retrieval_trainer": 4000.0},
            "config": {"retrieval_top_k": 400},
            "models": {"retrieval": {"blessed": True, "pushed": True, "pushed_version": "1"},
                       "ranking": {"blessed": True, "pushed": True, "pushed_version": "2"}}}
    report_path = tmp_path / "pipeline_report.json"
    calls = []

    def fake_run_pipeline(shop, work_dir, config, seed, echo, require_push, args):
        calls.append((require_push, args))
        return {"total_seconds": 600.0, "component_seconds": {"ranking_trainer": 500.0},
                "partial_run": ["ranking_trainer", "ranking_evaluator", "ranking_pusher"],
                "models": {"ranking": ranking}}
    monkeypatch.setattr(beauty_product, "run_pipeline", fake_run_pipeline)
    with pytest.raises(ValueError, match="no pipeline run"):
        beauty_product._partial_run("shop", str(tmp_path), "c.json", 0, print,  # pylint: disable=protected-access
                                    "ranking_trainer", str(report_path))
    report_path.write_text(json.dumps(base))
    ranking = {"blessed": True, "pushed": True, "pushed_version": "3"}
    report = beauty_product._partial_run("shop", str(tmp_path), "c.json", 0, print,  # pylint: disable=protected-access
                                         "ranking_trainer", str(report_path))
    assert calls == [(False, ("--from-nodes", "ranking_trainer"))]
    assert report["models"] == {"retrieval": base["models"]["retrieval"], "ranking": ranking}
    assert report["base_run"]["total_seconds"] == 5000.0 and report["total_seconds"] == 600.0
    assert json.loads(report_path.read_text()) == report        # the merged report is kept
    # a re-run model that was not pushed: the earlier model would answer, so it fails
    report_path.write_text(json.dumps(base))
    ranking = {"blessed": False, "pushed": False, "failed": ["NDCG@10"]}
    with pytest.raises(ValueError, match="did not push a ranking model"):
        beauty_product._partial_run("shop", str(tmp_path), "c.json", 0, print,  # pylint: disable=protected-access
                                    "ranking_trainer", str(report_path))


def test_committed_configs_split_the_export_clock_into_leave_one_out():
    # pylint: disable=import-outside-toplevel
    from pipeline import examples
    from pipeline.configs import load_config
    for name in ("beauty.json", "beauty_smoke.json"):
        cfg = load_config(os.path.join(beauty_product.REPO, "benchmarks", "configs", name))
        assert cfg.two_stage
        cutoffs = examples.check_split_times(cfg.eval_from, cfg.rank_from)
        # Every user's clock (offsets of up to an hour): the last item is eval (test), the
        # one before it rank (validation), the rest train.
        for user in range(0, 5000, 7):
            times = beauty_data.event_timestamps(6, user)
            assert [examples.split_of(t, *cutoffs) for t in times] == [
                "train"] * 4 + ["rank", "eval"]


USERS = 1000          # the smoke's sample of real users (the catalog stays whole: 12,101 items)


@pytest.mark.slow
def test_smoke_product_beats_transitions_on_real_beauty_subsample(tmp_path):
    """1,000 real users: shop export -> tfx_pipeline.py (every component) -> pushed bundle
    -> the API's recommender in-process and over HTTP -> leave-one-out metrics."""
    if not os.path.isdir(REAL_DATA):
        pytest.skip(f"real Amazon Beauty data not found at {os.path.abspath(REAL_DATA)} "
                    f"(research-only data, not in the repository)")
    out = str(tmp_path / "results")
    config = os.path.join(beauty_product.REPO, "benchmarks", "configs", "beauty_smoke.json")
    beauty.main(["--data", REAL_DATA, "--max-users", str(USERS), "--seed", "0", "--out", out,
                 "--models", "transitions,product", "--no-beyond-accuracy",
                 "--set", f"product.config={json.dumps(config)}",
                 "--set", f"product.work_dir={json.dumps(str(tmp_path / 'work'))}",
                 "--set", "product.replay_users=100"])
    results = json.load(open(os.path.join(out, f"beauty_u{USERS}.json")))
    assert results["dataset"]["users"] == USERS and results["dataset"]["items"] == 12101
    product = results["models"]["product"]
    test = {m: r["test"]["unfiltered"]["ndcg@10"] for m, r in results["models"].items()}
    assert test["product"] > test["transitions"], test
    info = product["info"]
    assert info["degraded_answers"] == {} and info["strategies"] == {"personalized": USERS}
    assert info["http_replay"]["agree"] == info["http_replay"]["requests"] == 100
    assert info["shop_export"]["known"]["held_out"] == USERS
    pipeline = info["pipeline"]
    assert {"ShopExampleGen", "Transform", "retrieval_trainer", "CandidateExamples",
            "ranking_trainer", "ranking_evaluator", "ranking_pusher"} <= set(
                pipeline["component_seconds"])
    assert pipeline["models"]["retrieval"]["pushed"] and pipeline["models"]["ranking"]["pushed"]
    assert product["validation"] is None and product["test"]["users"] == USERS
    stages = info["stages"]     # retrieval alone and the pool, measured on the same users
    assert stages["retrieval"]["users"] == USERS and stages["mean_pool_size"] > 100
    assert 0 < stages["retrieval"]["unfiltered"]["recall@10"] < stages["pool_share"]
    assert stages["pool_share"] >= product["test"]["unfiltered"]["recall@10"] - 0.01
    # the smoke config's retrieval top K is 100; JSON turned the cutoffs into strings
    shares = {int(k): share for k, share in stages["retrieval_share_at"].items()}
    assert sorted(shares) == [10, 50, 100] and shares[10] <= shares[50] <= shares[100]
    assert shares[10] == pytest.approx(stages["retrieval"]["unfiltered"]["recall@10"])
    assert shares[100] <= stages["pool_share"] + 0.01   # the pool leaves out purchases
