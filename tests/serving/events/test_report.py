"""The experiment report on a small hand-built store: counts, rates, intervals and p-values
against hand computations and scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from serving.api.experiments import Experiment, Variant
from serving.events.report import experiment_report, ratio_moments
from serving.events.store import SqliteEventStore
from tests.serving.api.setup import redis_url  # noqa: F401
from tests.serving.events.test_impressions import credit, shown
from tests.serving.events.test_store import _open_store

EXPERIMENT = Experiment("exp", "salt", (Variant("A", 1), Variant("B", 1)), control="A")


@pytest.fixture(params=["sqlite", "redis"])
def report(request, tmp_path):
    """A: users a1 (4 impressions, 1 click, bought 2 x 10.0), a2 (2 impressions, nothing),
    a3 (2 impressions, clicked the same item twice: one click);
    B: b1 (2 impressions, 2 clicks, bought 1 x 5.0 and 1 x 15.0), b2 (4 impressions, 1 click,
    bought 1 x 30.0)."""
    store = _open_store(request, tmp_path)
    a1 = shown("r1", "a1", ["i1", "i2"], 10) + shown("r2", "a1", ["i3", "i4"], 20)
    a2 = shown("r3", "a2", ["i1", "i2"], 10)
    a3 = shown("r4", "a3", ["i1", "i2"], 10)
    b1 = shown("r5", "b1", ["i1", "i2"], 10, variant="B")
    b2 = shown("r6", "b2", ["i1", "i2", "i3", "i4"], 10, variant="B")
    store.add_impressions(a1 + a2 + a3 + b1 + b2
                          + shown("r7", "x", ["i1"], 10, experiment="other"))
    store.add_attributions([
        credit(a1[2], "click", 21), credit(a1[2], "purchase", 22, revenue=20.0, value=2),
        credit(a3[0], "click", 11), credit(a3[0], "click", 12),
        credit(b1[0], "click", 11), credit(b1[1], "click", 12),
        credit(b1[0], "purchase", 13, revenue=5.0), credit(b1[1], "purchase", 13, revenue=15.0),
        credit(b2[3], "click", 11), credit(b2[3], "add_to_cart", 12),
        credit(b2[3], "purchase", 13, revenue=30.0)])
    yield experiment_report(store, EXPERIMENT)
    store.close()


def test_counts_and_rates_per_variant(report):
    a, b = report["variants"]["A"], report["variants"]["B"]
    assert (a["users"], a["impressions"], a["clicks"], a["purchases"], a["buyers"]) == \
        (3, 8, 2, 1, 1)
    assert (b["users"], b["impressions"], b["clicks"], b["add_to_carts"], b["purchases"],
            b["buyers"]) == (2, 6, 3, 1, 3, 2)
    assert a["ctr"]["value"] == pytest.approx(2 / 8) and b["ctr"]["value"] == pytest.approx(3 / 6)
    assert a["conversion"]["value"] == pytest.approx(1 / 3)
    assert b["conversion"]["value"] == pytest.approx(1.0)
    assert a["revenue"] == 20.0 and b["revenue"] == 50.0
    assert a["revenue_per_user"]["value"] == pytest.approx(20 / 3)
    assert b["revenue_per_user"]["value"] == pytest.approx(25.0)
    assert report["users_in_several_variants"] == 0 and report["control"] == "A"


def test_intervals_and_p_values_match_scipy(report):
    a = report["variants"]["A"]
    wilson = stats.binomtest(1, 3).proportion_ci(0.95, method="wilson")
    assert a["conversion"]["ci"] == pytest.approx([wilson.low, wilson.high], abs=1e-7)
    revenue_a, revenue_b = np.array([20.0, 0.0, 0.0]), np.array([20.0, 30.0])
    t_ci = stats.ttest_1samp(revenue_a, 0).confidence_interval(0.95)
    assert a["revenue_per_user"]["ci"] == pytest.approx([t_ci.low, t_ci.high], abs=1e-6)

    vs = report["comparisons"]["B"]
    welch = stats.ttest_ind(revenue_b, revenue_a, equal_var=False)
    assert vs["revenue_per_user"]["p_value"] == pytest.approx(welch.pvalue, abs=1e-7)
    assert vs["revenue_per_user"]["difference"] == pytest.approx(25 - 20 / 3)
    chi2 = stats.chi2_contingency(np.array([[1, 2], [2, 0]]), correction=False)
    assert vs["conversion"]["p_value"] == pytest.approx(chi2.pvalue, abs=1e-7)
    assert vs["conversion"]["difference"] == pytest.approx(1 - 1 / 3)

    # CTR by hand: per-user clicks / impressions, delta-method variances, z-test
    def moments(clicks, shown_):
        c, n = np.array(clicks, float), np.array(shown_, float)
        r = c.sum() / n.sum()
        cov = np.cov(c, n, ddof=1)
        return r, (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (len(c) * n.mean() ** 2)

    ra, va = moments([1, 0, 1], [4, 2, 2])
    rb, vb = moments([2, 1], [2, 4])
    assert ratio_moments(np.array([1.0, 0, 1]), np.array([4.0, 2, 2])) == \
        pytest.approx((ra, va))
    z = (rb - ra) / math.sqrt(va + vb)
    assert vs["ctr"]["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), abs=1e-7)
    half = stats.norm.ppf(0.975) * math.sqrt(va + vb)
    assert vs["ctr"]["ci"] == pytest.approx([rb - ra - half, rb - ra + half], abs=1e-7)
    assert vs["ctr"]["significant"] == (vs["ctr"]["p_value"] < 0.05)


def test_an_empty_experiment_reports_zero_users_without_failing(tmp_path):
    store = SqliteEventStore(tmp_path / "events.sqlite3")
    report = experiment_report(store, EXPERIMENT)
    assert report["variants"]["A"]["users"] == 0
    assert report["comparisons"]["B"]["ctr"]["p_value"] is None
    store.close()
