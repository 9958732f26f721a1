"""An experiment's report from the event store's impressions and attributions.

The unit of randomisation is the user (serving/api/experiments.py), so every metric and
test treats users as the independent observations:

* ``users``: users shown at least one item in the variant; ``impressions``; ``clicks``:
  impressions with at least one attributed click (a shown item clicked twice counts once);
  ``add_to_carts``, ``purchases`` (attributed events) and ``revenue`` (their sum);
* ``ctr`` = clicks / impressions, a ratio of per-user sums: its interval and test use the
  delta method (variance of a ratio metric, Deng et al. 2018), a normal z-test of the
  difference -- not a two-proportion test over impressions, which would treat one user's
  impressions as independent and find "effects" in an A/A;
* ``conversion`` = users with an attributed purchase / users; Wilson interval
  (``scipy.stats.binomtest``), difference: Wald interval, Pearson's chi-square test
  (``scipy.stats.chi2_contingency``, no continuity correction);
* ``revenue_per_user`` = revenue / users; t interval, difference: Welch's t-test
  (``scipy.stats.ttest_ind(equal_var=False)``) and its interval.

Each variant other than the control is compared with the control; p-values are not
corrected for several variants or metrics (read them with that in mind, or run two
variants). Users seen in several variants (the experiment's weights or salt changed while
it ran) are counted in each and reported in ``users_in_several_variants``.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy import stats

from pipeline.contract import spec


def experiment_report(store, experiment, confidence: float = 0.95) -> dict:
    """The report of ``experiment`` (serving.api.experiments.Experiment) over ``store``."""
    return compute_report(experiment.name, [v.name for v in experiment.variants],
                          experiment.control, store.experiment_impressions(experiment.name),
                          store.experiment_attributions(experiment.name), confidence)


def _per_user(variants, impressions, attributions) -> dict[str, dict[str, np.ndarray]]:
    """variant -> per-user arrays (impressions, clicks, carts, purchases, buyer, revenue),
    users in one order."""
    shown: dict[str, dict[str, int]] = {v: {} for v in variants}
    for variant, user, n in impressions:
        shown.setdefault(variant, {})[user] = shown.get(variant, {}).get(user, 0) + int(n)
    clicked: dict[tuple[str, str], set] = defaultdict(set)
    counts: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for a in attributions:
        key = (a.variant, a.user_id)
        if a.event_type == spec.CLICK:
            clicked[key].add((a.request_id, a.item_id))
        else:
            counts[key][a.event_type] += 1
            if a.event_type == spec.PURCHASE:
                counts[key]["revenue"] += a.revenue
    out = {}
    for variant, users in shown.items():
        order = sorted(users)
        keys = [(variant, u) for u in order]
        out[variant] = {
            "impressions": np.array([users[u] for u in order], dtype=float),
            "clicks": np.array([len(clicked.get(k, ())) for k in keys], dtype=float),
            "add_to_carts": np.array([counts[k][spec.ADD_TO_CART] if k in counts else 0.0
                                      for k in keys]),
            "purchases": np.array([counts[k][spec.PURCHASE] if k in counts else 0.0
                                   for k in keys]),
            "revenue": np.array([counts[k]["revenue"] if k in counts else 0.0 for k in keys]),
            "users": order}
    return out


def _num(x) -> float | None:
    """A JSON-safe float of 8 significant digits (None for NaN / infinity)."""
    if x is None:
        return None
    x = float(x)
    return float(f"{x:.8g}") if math.isfinite(x) else None


def _interval(low, high) -> list:
    return [_num(low), _num(high)]


def ratio_moments(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """(ratio of sums, its delta-method variance) over per-user numerators/denominators."""
    m = len(num)
    if m == 0 or den.sum() == 0:
        return float("nan"), float("nan")
    ratio = num.sum() / den.sum()
    if m < 2:
        return ratio, float("nan")
    cov = np.cov(num, den, ddof=1)
    mean_den = den.mean()
    var = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio ** 2 * cov[1, 1]) / (m * mean_den ** 2)
    return ratio, max(var, 0.0)


def _variant_metrics(data: dict, confidence: float) -> dict:
    users = len(data["users"])
    z = stats.norm.ppf(0.5 + confidence / 2)
    ctr, ctr_var = ratio_moments(data["clicks"], data["impressions"])
    buyers = int((data["purchases"] > 0).sum())
    conversion = {"value": _num(buyers / users) if users else None, "ci": [None, None]}
    if users:
        ci = stats.binomtest(buyers, users).proportion_ci(confidence, method="wilson")
        conversion["ci"] = _interval(ci.low, ci.high)
    revenue = data["revenue"]
    rpu = {"value": _num(revenue.mean()) if users else None, "ci": [None, None]}
    if users >= 2:
        if revenue.std(ddof=1) > 0:
            ci = stats.ttest_1samp(revenue, 0.0).confidence_interval(confidence)
            rpu["ci"] = _interval(ci.low, ci.high)
        else:
            rpu["ci"] = _interval(revenue.mean(), revenue.mean())
    return {
        "users": users, "impressions": int(data["impressions"].sum()),
        "clicks": int(data["clicks"].sum()),
        "add_to_carts": int(data["add_to_carts"].sum()),
        "purchases": int(data["purchases"].sum()), "buyers": buyers,
        "revenue": _num(revenue.sum()),
        "ctr": {"value": _num(ctr),
                "ci": _interval(ctr - z * math.sqrt(ctr_var), ctr + z * math.sqrt(ctr_var))
                if math.isfinite(ctr_var) else [None, None]},
        "conversion": conversion, "revenue_per_user": rpu}


def _compare(control: dict, other: dict, confidence: float) -> dict:
    """``other`` against ``control``: difference, its interval and the test's p-value for
    CTR, conversion and revenue per user."""
    z = stats.norm.ppf(0.5 + confidence / 2)
    out = {}
    # CTR: delta-method z-test
    a, var_a = ratio_moments(control["clicks"], control["impressions"])
    b, var_b = ratio_moments(other["clicks"], other["impressions"])
    diff, se = b - a, math.sqrt(var_a + var_b) if math.isfinite(var_a + var_b) else float("nan")
    p = 2 * stats.norm.sf(abs(diff) / se) if se and math.isfinite(se) and se > 0 else None
    out["ctr"] = {"difference": _num(diff), "ci": _interval(diff - z * se, diff + z * se),
                  "relative": _num(diff / a) if a else None, "p_value": _num(p),
                  "test": "delta-method z-test (users as the unit)"}
    # conversion: chi-square on buyers / non-buyers
    n_a, n_b = len(control["users"]), len(other["users"])
    k_a, k_b = int((control["purchases"] > 0).sum()), int((other["purchases"] > 0).sum())
    p_a, p_b = (k_a / n_a if n_a else float("nan")), (k_b / n_b if n_b else float("nan"))
    diff = p_b - p_a
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b) if n_a and n_b \
        else float("nan")
    p = None
    table = np.array([[k_a, n_a - k_a], [k_b, n_b - k_b]])
    if n_a and n_b and (table.sum(axis=0) > 0).all():
        p = stats.chi2_contingency(table, correction=False).pvalue
    out["conversion"] = {"difference": _num(diff), "ci": _interval(diff - z * se, diff + z * se),
                         "relative": _num(diff / p_a) if p_a else None, "p_value": _num(p),
                         "test": "Pearson chi-square (2x2, no continuity correction)"}
    # revenue per user: Welch's t-test
    ra, rb = control["revenue"], other["revenue"]
    diff = (rb.mean() - ra.mean()) if n_a and n_b else float("nan")
    p, ci = None, [None, None]
    if n_a >= 2 and n_b >= 2 and (ra.std(ddof=1) > 0 or rb.std(ddof=1) > 0):
        test = stats.ttest_ind(rb, ra, equal_var=False)
        p = test.pvalue
        interval = test.confidence_interval(confidence)
        ci = _interval(interval.low, interval.high)
    out["revenue_per_user"] = {"difference": _num(diff), "ci": ci,
                               "relative": _num(diff / ra.mean()) if n_a and ra.mean() else None,
                               "p_value": _num(p), "test": "Welch's t-test"}
    alpha = 1 - confidence
    for metric in out.values():
        metric["significant"] = metric["p_value"] is not None and metric["p_value"] < alpha
    return out


def compute_report(name: str, variants: list[str], control: str, impressions,
                   attributions, confidence: float = 0.95) -> dict:
    """The report from (variant, user, impressions) rows and Attribution rows."""
    data = _per_user(variants, impressions, attributions)
    seen: dict[str, int] = defaultdict(int)
    for variant_data in data.values():
        for user in variant_data["users"]:
            seen[user] += 1
    return {
        "experiment": name, "control": control, "confidence": confidence,
        "variants": {v: _variant_metrics(d, confidence) for v, d in data.items()},
        "comparisons": {v: _compare(data[control], d, confidence)
                        for v, d in data.items() if v != control},
        "users_in_several_variants": sum(1 for n in seen.values() if n > 1)}
