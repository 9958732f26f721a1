"""Prometheus metrics of the API, in a registry of its own (one per app instance)."""
from __future__ import annotations

from typing import Callable

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)
from prometheus_client.core import CounterMetricFamily

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics:
    """Latency per endpoint and per recommendation stage, models in use, events, fallbacks,
    readiness, model watcher poll failures, refused requests and the admission queue."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.request_latency = Histogram(
            "shoprec_api_request_duration_seconds", "HTTP request latency per endpoint",
            ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram(
            "shoprec_api_stage_duration_seconds", "Latency of each recommendation stage "
            "(context, retrieval, filter, ranking, diversify, reasons, neighbours)",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.model_version = Gauge(
            "shoprec_api_model_version", "Version of each model TF Serving serves to the API",
            ["model"], registry=r)
        self.embeddings_version = Gauge(
            "shoprec_api_catalog_embeddings_version",
            "Retrieval model version the cached catalog embeddings come from", registry=r)
        self.catalog_items = Gauge("shoprec_api_catalog_items", "Items in the catalog",
                                   registry=r)
        self.events = Counter("shoprec_api_events_ingested", "Events accepted by POST /v1/events",
                              ["event_type"], registry=r)
        self.answers = Counter("shoprec_api_recommendations", "Answers per strategy",
                               ["endpoint", "strategy"], registry=r)
        self.experiment_answers = Counter(
            "shoprec_api_experiment_answers", "Answers given to users in an experiment",
            ["experiment", "variant"], registry=r)
        self.impressions = Counter(
            "shoprec_api_impressions", "Impressions (items shown) stored, or dropped (queue "
            "full, event store error)", ["result"], registry=r)
        self.attributions = Counter(
            "shoprec_api_attributions", "Engagements credited to an impression",
            ["event_type"], registry=r)
        self.degraded = Counter("shoprec_api_degraded", "Answers given without a model "
                                "stage because its call failed", ["stage"], registry=r)
        self.ready = Gauge("shoprec_api_ready", "1 when GET /readyz would answer 200 (every "
                           "readiness check passes), else 0; evaluated when scraped",
                           registry=r)
        self.readiness_check = Gauge(
            "shoprec_api_readiness_check", "1 when this readiness check passed at the last "
            "evaluation (model_server, models_available, embeddings, event_store, watcher)",
            ["check"], registry=r)
        self.rejected = Counter(
            "shoprec_api_rejected_requests", "Requests refused before any work: "
            "unauthenticated (401), forbidden (403), rate_limited (429), shed (503, the queue "
            "was full), queue_timeout (503, no slot in time)", ["endpoint", "reason", "role"],
            registry=r)
        self.key_reloads = Counter(
            "shoprec_api_keys_reloads", "Changes of the API keys file: loaded, or refused "
            "(malformed; the previous keys stay in use)", ["result"], registry=r)
        self.queued = Gauge("shoprec_api_queued_requests", "Requests waiting for a "
                            "computation slot (at most max_queued_requests)", registry=r)
        self.active = Gauge("shoprec_api_active_requests", "Requests being computed (at most "
                            "max_concurrent_requests)", registry=r)
        self._poll_failures: Callable[[], int] = lambda: 0
        r.register(_CallbackCounter(
            "shoprec_api_model_watcher_poll_failures",
            "Polls of the model watcher (served versions, embeddings, item-to-item tables) "
            "that ended in an error", lambda: self._poll_failures()))

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_latency.labels(stage).observe(seconds)

    def set_versions(self, versions: dict[str, int], embeddings_version: int | None) -> None:
        for model, version in versions.items():
            self.model_version.labels(model).set(version)
        if embeddings_version is not None:
            self.embeddings_version.set(embeddings_version)

    def watch_poll_failures(self, count: Callable[[], int]) -> None:
        """Report ``count()`` (the model watcher's failed polls) as the poll failure counter."""
        self._poll_failures = count

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)


class _CallbackCounter:
    """A counter whose value another object keeps (read when scraped)."""

    def __init__(self, name: str, documentation: str, value: Callable[[], float]):
        self.name, self.documentation, self.value = name, documentation, value

    def describe(self):
        return [CounterMetricFamily(self.name, self.documentation)]

    def collect(self):
        yield CounterMetricFamily(self.name, self.documentation, value=float(self.value()))
