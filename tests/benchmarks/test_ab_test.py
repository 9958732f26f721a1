"""The A/B simulation, small: it runs end to end through the API and reports both
experiments with the product's numbers."""
from __future__ import annotations

import numpy as np

from benchmarks import ab_test


def test_shoppers_prefer_their_favourite_leaf_category():
    catalog, population = ab_test.sample_truth(seed=0, scale=0.05)
    shoppers = ab_test.Shoppers(catalog, population)
    user = population.table["user_id"].iloc[0]
    u = shoppers.row_of_user[user]
    favourite = int(np.argmax(population.pref_end[u]))
    liked = catalog.table["item_id"][catalog.leaf == favourite].iloc[:3].tolist()
    least = population.pref_end[u][catalog.leaf] <= np.quantile(population.pref_end[u], 0.2)
    other = catalog.table["item_id"][least].iloc[:3].tolist()
    click, buy = shoppers.probabilities(user, liked + other)
    assert click[:3].mean() > click[3:].mean()
    assert ((0 < buy) & (buy < 1)).all()


def test_a_small_simulation_reports_both_experiments(tmp_path):
    results = ab_test.simulate(tmp_path, seed=0, scale=0.05, rounds=1, max_users=30,
                               resplits=5)
    assert results["requests"] == 30 and results["degraded_answers"] == 0
    reports = results["reports"]
    assert set(reports) == {"ranking_v2", "aa"}
    users = sum(v["users"] for r in reports.values() for v in r["variants"].values())
    impressions = sum(v["impressions"] for r in reports.values()
                      for v in r["variants"].values())
    assert users == 30 and impressions == 30 * results["k"]
    assert set(reports["ranking_v2"]["comparisons"]["v2"]) == {"ctr", "conversion",
                                                                "revenue_per_user"}
    assert results["aa_calibration"]["resplits"] == 5
    results["verdict"] = ab_test.verdict(results)
    text = ab_test.markdown(results)
    assert "Experiment `ranking_v2`" in text and "A/A calibration" in text
    ab_test.draw_chart(results, str(tmp_path / "chart.png"))
    assert (tmp_path / "chart.png").stat().st_size > 1000
