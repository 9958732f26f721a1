"""What the API runs on, started and stopped together: shop catalog, event store, models."""
from __future__ import annotations

import logging
import time

from pipeline.contract import spec
from pipeline.contract.load import load_shop
from pipeline.examples import ENGAGEMENT_EVENTS
from serving.api.catalog import Catalog
from serving.api.metrics import ApiMetrics
from serving.api.model_backend import ModelBackend, ModelWatcher
from serving.api.recommender import Recommender
from serving.api.settings import Settings
from serving.events.store import EventStore, open_event_store

log = logging.getLogger("serving.api")


class Services:
    """Catalog + event store + model backend/watcher + recommender."""

    def __init__(self, settings: Settings, metrics: ApiMetrics):
        self.settings, self.metrics = settings, metrics
        started = time.perf_counter()
        shop = load_shop(settings.shop_dir, on_bad_rows=settings.on_bad_rows)
        self.catalog = Catalog(shop.items)
        metrics.catalog_items.set(len(self.catalog))
        self.store: EventStore = open_event_store(settings.event_store)
        try:
            if self.store.import_shop_events(shop.events):
                log.info("imported %d shop events into %s", len(shop.events),
                         settings.event_store)
            self.catalog.set_popularity(self.store.engagement_counts())
            self.backend = ModelBackend.connect(
                settings.tfserving_grpc, settings.tfserving_deadline_s,
                settings.tfserving_retries, settings.retrieval_model, settings.ranking_model)
        except BaseException:
            self.store.close()
            raise
        self.watcher = ModelWatcher(self.backend, self.catalog, settings.model_poll_s,
                                    settings.embedding_batch_size, self._versions_changed)
        self.recommender = Recommender(self.catalog, self.store, self.backend, settings,
                                       observe=metrics.observe_stage)
        log.info("shop %s: %d items, %d events (%.1f s)", settings.shop_dir, len(self.catalog),
                 len(shop.events), time.perf_counter() - started)

    def _versions_changed(self, versions: dict[str, int]) -> None:
        self.metrics.set_versions(versions, self.catalog.embeddings_version)

    def start(self) -> "Services":
        """Wait (bounded) for the model server, then keep polling it in the background."""
        if not self.watcher.wait_ready(self.settings.startup_wait_s):
            log.warning("model server %s not ready after %.0f s (%s); serving degraded "
                        "answers and retrying", self.settings.tfserving_grpc,
                        self.settings.startup_wait_s, self.watcher.last_error)
        self.watcher.start()
        return self

    def add_events(self, events, received_at: int) -> int:
        """Store validated events and count engagements for popularity."""
        stored = self.store.add(events, received_at=received_at)
        engaged = events[events[spec.EVENT_TYPE].isin(ENGAGEMENT_EVENTS)]
        self.catalog.add_engagements(engaged[spec.ITEM_ID])
        for event_type, n in events[spec.EVENT_TYPE].value_counts().items():
            self.metrics.events.labels(event_type).inc(int(n))
        return stored

    def close(self) -> None:
        self.watcher.stop()
        self.backend.close()
        self.store.close()
