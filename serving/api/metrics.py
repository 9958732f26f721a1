"""Prometheus metrics of the API, in a registry of its own (one per app instance)."""
from __future__ import annotations

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics:
    """Latency per endpoint and per recommendation stage, models in use, events, fallbacks."""

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
        self.degraded = Counter("shoprec_api_degraded", "Answers given without a model "
                                "stage because its call failed", ["stage"], registry=r)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_latency.labels(stage).observe(seconds)

    def set_versions(self, versions: dict[str, int], embeddings_version: int | None) -> None:
        for model, version in versions.items():
            self.model_version.labels(model).set(version)
        if embeddings_version is not None:
            self.embeddings_version.set(embeddings_version)

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
