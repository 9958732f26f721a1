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
from serving.api.experiments import (Experiment, Experiments, Variant, load_experiments,
                                     variant_settings)
from serving.api.feedback import ImpressionLog, attribute, impressions_of
from serving.api.metrics import ApiMetrics
from serving.api.model_backend import RANK_CANDIDATES, ModelBackend, ModelWatcher
from serving.api.pushed_files import VersionShelf
from serving.api.recommender import Recommender
from serving.api.search_terms import TERMS_FILE, SearchTerms
from serving.api.search_text import TextIndex
from serving.api.segments import SegmentShelf
from serving.api.settings import Settings
from serving.api.shared_counts import SharedCounts
from serving.events.erasure import read_key_file
from serving.events.store import DAY_SECONDS, EventStore, now_seconds, open_event_store

log = logging.getLogger("serving.api")


class Services:
    """Catalog + event store + model backend/watcher + recommender."""

    def __init__(self, settings: Settings, metrics: ApiMetrics):
        self.settings, self.metrics = settings, metrics
        started = time.perf_counter()
        self.experiments = (load_experiments(settings.experiments_file, settings)
                            if settings.experiments_file else Experiments())
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
        # what shoppers searched before choosing each item, pushed with the served retrieval
        # version (serving/api/search_terms.py): the BM25 word index reads them
        self.search_terms = VersionShelf(
            settings.search_terms_dir, (TERMS_FILE,),
            lambda: self.watcher.versions.get(settings.retrieval_model), SearchTerms.load,
            "search terms")
        self.recommender = self._recommender(self.catalog, TextIndex(
            self.catalog, typo_tolerance=settings.typo_tolerance,
            terms=self.search_terms.current()))
        self._variants = self._variant_recommenders()
        metrics.catalog_items.set(len(self.catalog))
        self.impression_log = ImpressionLog(
            self.store, count=lambda result, n: metrics.impressions.labels(result).inc(n)) \
            if settings.log_impressions else None
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

    def _variant_recommenders(self) -> dict:
        """(experiment, variant) -> the recommender of that variant over the current catalog:
        the API's own when the variant changes nothing, else one with its settings, ranking
        model and pinned ranking version (catalog, store, text index and model client
        shared). Rebuilt when a catalog change swaps the catalog in."""
        out = {}
        for experiment in self.experiments.experiments:
            for variant in experiment.variants:
                if not (variant.settings or variant.ranking_model or variant.ranking_version):
                    out[(experiment.name, variant.name)] = self.recommender
                    continue
                backend = self.backend
                if variant.ranking_model and variant.ranking_model != backend.ranking_model:
                    backend = ModelBackend(backend.client, backend.retrieval_model,
                                           variant.ranking_model,
                                           max_history=self.settings.max_history)
                pin = ({backend.ranking_model: variant.ranking_version}
                       if variant.ranking_version else {})
                out[(experiment.name, variant.name)] = self._recommender(
                    self.catalog, self.recommender.text_index, backend,
                    variant_settings(self.settings, variant.settings), pin)
        return out

    def route(self, user_key: str | None,
              surface: str) -> tuple[Recommender, tuple[Experiment, Variant] | None]:
        """The recommender that answers this user on this surface, and their (experiment,
        variant) when they are in one (serving/api/experiments.py)."""
        assigned = self.experiments.assign(user_key, surface)
        if assigned is None:
            return self.recommender, None
        experiment, variant = assigned
        self.metrics.experiment_answers.labels(experiment.name, variant.name).inc()
        return self._variants[(experiment.name, variant.name)], assigned

    def log_impressions(self, request_id: str, user_key: str | None, surface: str,
                        assigned, item_ids: list[str], offset: int = 0) -> None:
        """Queue what an answer showed (nothing for requests without a user: no event can
        be attributed to them)."""
        if self.impression_log is None or not user_key or not item_ids:
            return
        experiment, variant = (assigned[0].name, assigned[1].name) if assigned else ("", "")
        self.impression_log.log(impressions_of(request_id, user_key, item_ids, surface,
                                               experiment, variant, now_seconds(), offset))

    def check_variant_models(self) -> None:
        """Warn about a variant ranking model or version the model server does not serve
        (its answers would degrade to retrieval order)."""
        for experiment in self.experiments.experiments:
            for variant in experiment.variants:
                if not (variant.ranking_model or variant.ranking_version):
                    continue
                model = variant.ranking_model or self.settings.ranking_model
                try:
                    self.backend.client.signature(model, RANK_CANDIDATES,
                                                  version=variant.ranking_version)
                except Exception as e:  # pylint: disable=broad-except  (a warning only)
                    log.warning("experiment %s, variant %s: ranking model %s%s is not served "
                                "(%s); its answers will degrade to retrieval order",
                                experiment.name, variant.name, model,
                                f" version {variant.ranking_version}"
                                if variant.ranking_version else "", e)

    def _build_index(self, embeddings):
        """Retrieval's index in the API over a version's raw candidate embeddings, or None
        when the served model's top_k answers (Settings.retrieval_index)."""
        method, n = self.settings.retrieval_index, len(embeddings)
        if method == "model" or (method == "auto" and n < self.settings.ann_min_items):
            return None
        return build_index(embeddings, "scann" if method == "auto" else method,
                           seed=0, min_items_for_scann=1)

    def _recommender(self, catalog: Catalog, text_index: TextIndex | None = None,
                     backend: ModelBackend | None = None, settings: Settings | None = None,
                     pin: dict | None = None):
        """A recommender over ``catalog``; an experiment's variant gives its own ``backend``
        (another ranking model), ``settings`` and ``pin`` (model name -> version)."""
        pin = pin or {}
        return Recommender(catalog, self.store, backend or self.backend,
                           settings or self.settings, observe=self.metrics.observe_stage,
                           versions=(lambda: {**self.watcher.versions, **pin}) if pin
                           else (lambda: self.watcher.versions), text_index=text_index,
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
            self._variants = self._variant_recommenders()     # experiments see it too
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
        # the search terms of the retrieval version now served (a rebuild when they differ)
        self.recommender.text_index.set_terms(self.search_terms.current())

    def start(self) -> "Services":
        """Wait (bounded) for the model server, then keep polling it in the background."""
        if not self.watcher.wait_ready(self.settings.startup_wait_s):
            log.warning("model server %s not ready after %.0f s (%s); serving degraded "
                        "answers and retrying", self.settings.tfserving_grpc,
                        self.settings.startup_wait_s, self.watcher.last_error)
        self.watcher.start()
        self.check_variant_models()
        self.shared_counts.start()
        if self.settings.retention_days or (self.settings.impression_retention_days
                                            and self.settings.log_impressions):
            self.purge_expired()
            self._purger = threading.Thread(target=self._purge_loop, name="event-purge",
                                            daemon=True)
            self._purger.start()
        return self

    def impression_cutoff(self, now: int | None = None) -> int | None:
        """Epoch second before which impressions and attributions are deleted: the shorter
        of the events' and the impressions' retention (None: kept)."""
        days = [d for d in (self.settings.retention_days,
                            self.settings.impression_retention_days) if d]
        if not days:
            return None
        return (now_seconds() if now is None else now) - min(days) * DAY_SECONDS

    def purge_expired(self) -> int:
        """Delete events past the retention (popularity is recounted when any went), and
        impressions and attributions past theirs."""
        cutoff = self.impression_cutoff()
        if cutoff is not None:
            gone = self.store.purge_impressions(cutoff)
            if gone:
                log.info("deleted %d impressions dated before %d", gone, cutoff)
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
        self._attribute(new)
        return result

    def _attribute(self, events) -> None:
        """Credit new engagements to the impressions before them; a failure is logged, the
        events stay stored (the report then misses them)."""
        if self.impression_log is None:
            return
        self.impression_log.flush()       # impressions of answers already given come first
        try:
            for a in attribute(self.store, self.catalog, events,
                               self.settings.attribution_window_s):
                self.metrics.attributions.labels(a.event_type).inc()
        except Exception:  # pylint: disable=broad-except  (the events are stored)
            log.exception("attributing %d events to impressions failed", len(events))

    def erase_user(self, user_id: str) -> int:
        """Delete every stored event of a user (erasure request); the store records a keyed
        hash so the next training export leaves the user out. Popularity and the query
        suggestions are recounted. Impressions still queued are written first, so the
        erasure deletes them too."""
        if self.impression_log is not None:
            self.impression_log.flush()
        deleted = self.store.erase_user(self.user_key(user_id))
        self.catalog.set_popularity(self.store.engagement_counts())
        self.suggestions.reset(self.store.search_queries())
        return deleted

    def close(self) -> None:
        self._stopping.set()
        if self.impression_log is not None:
            self.impression_log.close()
        self.shared_counts.stop()
        self.watcher.stop()
        self.backend.close()
        self.store.close()
