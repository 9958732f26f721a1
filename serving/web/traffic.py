"""Live traffic from the API's own Prometheus metrics (serving/api/metrics.py), read from its
registry in-process: requests and latency percentiles per route and per recommendation stage,
answers per strategy, degraded answers, events ingested, refused requests, the queue.

Percentiles are estimated from the histogram buckets as Prometheus' ``histogram_quantile``
does (linear within a bucket), over everything since the API started."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class LatencyRow:
    name: str                   # route template or stage
    count: int
    errors: int                 # answers with status >= 500 (routes only)
    refused: int                # answers with status 4xx (routes only)
    percentiles_ms: tuple       # per QUANTILES, None without observations


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``q`` quantile of a cumulative histogram [(upper bound, count)], sorted by bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return math.inf             # beyond the last finite bucket
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def milliseconds(value: float | None, last_bound_s: float) -> str:
    """A percentile for a table: "12.5", "–" without observations, "> 5,000" beyond the
    histogram's last finite bucket (``last_bound_s``)."""
    if value is None:
        return "–"
    if math.isinf(value):
        return f"> {last_bound_s * 1000:,.0f}"
    return f"{value:,.1f}"


def _samples(registry) -> dict[str, list]:
    """metric family name -> its samples."""
    return {family.name: family.samples for family in registry.collect()}


def _latency_rows(samples, label: str, with_status: bool) -> list[LatencyRow]:
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for sample in samples:
        name = sample.labels.get(label, "")
        if sample.name.endswith("_bucket"):
            buckets[name][float(sample.labels["le"])] += sample.value
        elif sample.name.endswith("_count"):
            status = sample.labels.get("status", "200") if with_status else "200"
            counts[name][status[0]] += sample.value
    rows = []
    for name, by_bound in buckets.items():
        cumulative = sorted(by_bound.items())
        found = [quantile(q, cumulative) for q in QUANTILES]
        rows.append(LatencyRow(name, int(sum(counts[name].values())), int(counts[name]["5"]),
                               int(counts[name]["4"]),
                               tuple(None if v is None else v * 1000 for v in found)))
    return sorted(rows, key=lambda r: (-r.count, r.name))


def _counts(samples, *labels: str) -> dict[tuple, int]:
    """Totals of a counter by the given labels (``_total`` samples only)."""
    out: dict[tuple, int] = defaultdict(int)
    for sample in samples:
        if sample.name.endswith("_total"):
            out[tuple(sample.labels.get(name, "") for name in labels)] += int(sample.value)
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _gauges(samples, label: str) -> dict[str, float]:
    return {sample.labels.get(label, ""): sample.value for sample in samples}


def _value(samples) -> float:
    return sum(sample.value for sample in samples)


def traffic_summary(metrics) -> dict:
    """Everything the console's traffic view shows, from an ``ApiMetrics``."""
    s = _samples(metrics.registry)
    return {
        "routes": _latency_rows(s.get("shoprec_api_request_duration_seconds", []),
                                "endpoint", with_status=True),
        "stages": _latency_rows(s.get("shoprec_api_stage_duration_seconds", []), "stage",
                                with_status=False),
        "answers": _counts(s.get("shoprec_api_recommendations", []), "endpoint", "strategy"),
        "degraded": _counts(s.get("shoprec_api_degraded", []), "stage"),
        "events": _counts(s.get("shoprec_api_events_ingested", []), "event_type"),
        "rejected": _counts(s.get("shoprec_api_rejected_requests", []), "endpoint", "reason"),
        "models": _gauges(s.get("shoprec_api_model_version", []), "model"),
        "active": _value(s.get("shoprec_api_active_requests", [])),
        "queued": _value(s.get("shoprec_api_queued_requests", [])),
    }
