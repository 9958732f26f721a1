"""What the API runs on, started and stopped together: shop catalog, event store, models."""
from __future__ import annotations

import logging
import threading
import time

from pipeline.contract import spec
from pipeline.contract.load import load_shop
from pipeline.contract.pseudonym import Pseudonyms
from pipeline.examples import ENGAGEMENT_EVENTS
from serving.api.ann import build_index
from serving.api.autocomplete import QuerySuggestions
from serving.api.catalog import Catalog
from serving.api.catalog_updates import CatalogUpdates, apply_to_items, merged
from serving.api.metrics import ApiMetrics
from serving.api.model_backend import ModelBackend, ModelWatcher
from serving.api.recommender import Recommender
from serving.api.search_text import TextIndex
from serving.api.segments import SegmentShelf
from serving.api.settings import Settings
from serving.api.shared_counts import SharedCounts
from serving.events.erasure import read_key_file
from serving.events.store import EventStore, open_event_store

log = logging.getLogger("serving.api")


class Services:
    """Catalog + event store + model backend/watcher + recommender."""

    def __init__(self, settings: Settings, metrics: ApiMetrics):
        self.settings, self.metrics = settings, metrics
        started = time.perf_counter()
        # Every user id that enters the API (shop export, requests, events) is turned into
        # the pipeline's pseudonym first (docs/privacy.md); without a key they stay as given.
        self.pseudonyms = (Pseudonyms.from_file(settings.pseudonym_key_file)
                           if settings.pseudonym_key_file else None)
        shop = load_shop(settings.shop_dir, on_bad_rows=settings.on_bad_rows,
                         pseudonyms=self.pseudonyms)
        self.store: EventStore = open_event_store(
            settings.event_store, retention_days=settings.retention_days or None,
            erasure_key=read_key_file(settings.erasure_key_file),
            synchronous=settings.event_store_synchronous, max_history=settings.max_history)
        try:
            if self.store.import_shop_events(shop.events):
                log.info("imported %d shop events into %s", len(shop.events),
                         settings.event_store)
            # the live catalog changes kept for this export are re-applied (restart)
            self.catalog_updates = CatalogUpdates(None, self.store, shop.items)
            kept = self.catalog_updates.kept()
            items, live, deleted = apply_to_items(shop.items, kept)
            self.catalog = self.catalog_updates.catalog = Catalog(items, live, deleted)
            if kept:
                log.info("re-applied %d live catalog changes to this shop export (%d items "
                         "added or re-texted, %d deleted)", len(kept), len(live), len(deleted))
            self.catalog.set_popularity(self.store.engagement_counts())
            self.suggestions = QuerySuggestions(settings.autocomplete_min_users)
            self.suggestions.reset(self.store.search_queries())
            self.backend = ModelBackend.connect(
                settings.tfserving_grpc, settings.tfserving_deadline_s,
                settings.tfserving_retries, settings.retrieval_model, settings.ranking_model,
                max_history=settings.max_history)
        except BaseException:
            self.store.close()
            raise
        self.watcher = ModelWatcher(self.backend, self.catalog, settings.model_poll_s,
                                    settings.embedding_batch_size, self._versions_changed,
                                    build_index=self._build_index)
        self.recommender = self._recommender(self.catalog)
        metrics.catalog_items.set(len(self.catalog))
        log.info("shop %s: %d items, %d events (%.1f s); user ids %s", settings.shop_dir,
                 len(self.catalog), len(shop.events), time.perf_counter() - started,
                 f"pseudonymised (key id {self.pseudonyms.key_id})" if self.pseudonyms
                 else "as given (no pseudonym_key_file)")
        self._purger: threading.Thread | None = None
        self._stopping = threading.Event()
        # the pushed user segments of the served retrieval version (serving/api/segments.py)
        self.segments = SegmentShelf(
            settings.segments_dir, lambda: self.watcher.versions.get(settings.retrieval_model),
            settings.segment_max_history)
        # replicas on one Redis store follow its popularity and suggestions (shared_counts.py)
        self.shared_counts = SharedCounts(self.store, lambda: self.catalog, self.suggestions,
                                          settings.shared_counts_poll_s,
                                          settings.shared_suggestions_refresh_s)

    def _build_index(self, embeddings):
        """Retrieval's index in the API over a version's raw candidate embeddings, or None
        when the served model's top_k answers (Settings.retrieval_index)."""
        method, n = self.settings.retrieval_index, len(embeddings)
        if method == "model" or (method == "auto" and n < self.settings.ann_min_items):
            return None
        return build_index(embeddings, "scann" if method == "auto" else method,
                           seed=0, min_items_for_scann=1)

    def _recommender(self, catalog: Catalog, text_index: TextIndex | None = None):
        return Recommender(catalog, self.store, self.backend, self.settings,
                           observe=self.metrics.observe_stage,
                           versions=lambda: self.watcher.versions, text_index=text_index,
                           segment_popular=lambda user, ctx: self.segments.popular_for(
                               user, ctx))

    def update_catalog(self, updates) -> None:
        """Apply validated live catalog changes (serving/api/catalog_updates.py): prices,
        stock and deletions in place; new items and changed texts by a grown catalog whose
        changed items the served retrieval version encodes (a ``ServingError`` refuses the
        whole request: nothing applied or kept), swapped in once the changes are kept."""
        self.catalog_updates.apply(updates, grow=self._grow)

    def _grow(self, updates) -> None:
        old = self.catalog
        items, texts, deleted = apply_to_items(old.current_items(), merged({}, updates))
        readded = {u.item_id for u in updates if u.changes_text}
        live = set(old.ids[old.live_rows]) | texts
        gone = (set(old.ids[~old.active]) - readded) | deleted
        version = old.embeddings_version

        def encode(catalog, rows):
            return self.backend.embed_rows(catalog, rows, self.settings.embedding_batch_size,
                                           version=version)

        started = time.perf_counter()
        new = old.grown(items, live, gone, encode)
        text_index = TextIndex(new, typo_tolerance=self.settings.typo_tolerance,
                               previous=self.recommender.text_index)
        recommender = self._recommender(new, text_index)

        def swap():
            self.recommender = recommender
            self.catalog = self.catalog_updates.catalog = self.watcher.catalog = new
            self.metrics.catalog_items.set(len(new))
            log.info("catalog now %d items (%d live) after %d changes in %.2f s", len(new),
                     len(new.live_rows), len(updates), time.perf_counter() - started)
        return swap

    def user_key(self, user_id: str | None) -> str | None:
        """The form of a user id the store and the models know: its pseudonym (or as given
        without a key)."""
        if user_id is None or self.pseudonyms is None:
            return user_id
        return self.pseudonyms(user_id)

    def _versions_changed(self, versions: dict[str, int]) -> None:
        self.metrics.set_versions(versions, self.catalog.embeddings_version)

    def start(self) -> "Services":
        """Wait (bounded) for the model server, then keep polling it in the background."""
        if not self.watcher.wait_ready(self.settings.startup_wait_s):
            log.warning("model server %s not ready after %.0f s (%s); serving degraded "
                        "answers and retrying", self.settings.tfserving_grpc,
                        self.settings.startup_wait_s, self.watcher.last_error)
        self.watcher.start()
        self.shared_counts.start()
        if self.settings.retention_days:
            self.purge_expired()
            self._purger = threading.Thread(target=self._purge_loop, name="event-purge",
                                            daemon=True)
            self._purger.start()
        return self

    def purge_expired(self) -> int:
        """Delete events past the retention; popularity is recounted when any went."""
        deleted = self.store.purge_expired()
        if deleted:
            log.info("deleted %d events older than %d days", deleted,
                     self.settings.retention_days)
            self.catalog.set_popularity(self.store.engagement_counts())
            self.suggestions.reset(self.store.search_queries())
        return deleted

    def _purge_loop(self) -> None:
        while not self._stopping.wait(self.settings.purge_interval_s):
            try:
                self.purge_expired()
            except Exception:  # pylint: disable=broad-except  (retried next interval)
                log.exception("purging expired events failed; retrying in %.0f s",
                              self.settings.purge_interval_s)

    def add_events(self, events, received_at: int):
        """Store validated events (user ids as ``user_key``) and count the newly stored
        engagements for popularity; a retried event (same user and event_id) counts once.
        Returns the store's AddResult."""
        events = events.assign(**{spec.USER_ID: [self.user_key(u)
                                                 for u in events[spec.USER_ID]]})
        result = self.store.add_batch(events, received_at=received_at)
        new = events[result.new]
        engaged = new[new[spec.EVENT_TYPE].isin(ENGAGEMENT_EVENTS)]
        self.catalog.add_engagements(engaged[spec.ITEM_ID])
        self.shared_counts.changed()
        searches = new[new[spec.EVENT_TYPE] == spec.SEARCH]
        for user, query in zip(searches[spec.USER_ID], searches[spec.QUERY]):
            self.suggestions.add(user, query)
        for event_type, n in new[spec.EVENT_TYPE].value_counts().items():
            self.metrics.events.labels(event_type).inc(int(n))
        return result

    def erase_user(self, user_id: str) -> int:
        """Delete every stored event of a user (erasure request); the store records a keyed
        hash so the next training export leaves the user out. Popularity and the query
        suggestions are recounted."""
        deleted = self.store.erase_user(self.user_key(user_id))
        self.catalog.set_popularity(self.store.engagement_counts())
        self.suggestions.reset(self.store.search_queries())
        return deleted

    def close(self) -> None:
        self._stopping.set()
        self.shared_counts.stop()
        self.watcher.stop()
        self.backend.close()
        self.store.close()
