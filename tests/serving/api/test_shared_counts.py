"""Replicas on one Redis store share popularity and search suggestions
(serving/api/shared_counts.py): two stores, catalogs and suggestion indexes stand for two API
processes; SQLite stays a single process's counts."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from pipeline.contract import spec
from serving.api.autocomplete import QuerySuggestions
from serving.api.catalog import Catalog
from serving.api.shared_counts import SharedCounts
from serving.events.store import open_event_store
from tests.serving.api.setup import items_rows, redis_url  # noqa: F401


def _catalog() -> Catalog:
    items = pd.DataFrame(items_rows())
    items[spec.PRICE] = items[spec.PRICE].astype(float)
    items[spec.IN_STOCK] = items[spec.IN_STOCK] == "true"
    return Catalog(items)


def _events(*rows) -> pd.DataFrame:
    """(user, item, type[, query]) rows, timestamps in order."""
    return pd.DataFrame([{spec.USER_ID: user, spec.ITEM_ID: item, spec.EVENT_TYPE: etype,
                          spec.VALUE: np.nan, spec.QUERY: rest[0] if rest else "",
                          spec.SESSION_ID: "", spec.TIMESTAMP: 1_000 + n}
                         for n, (user, item, etype, *rest) in enumerate(rows)],
                        columns=list(spec.EVENT_COLUMNS))


class Replica:
    """What one API process holds: its store connection, catalog, suggestions, counts."""

    def __init__(self, url: str, **kwargs):
        self.store = open_event_store(url)
        self.catalog = _catalog()
        self.catalog.set_popularity(self.store.engagement_counts())
        self.suggestions = QuerySuggestions(min_users=2)
        self.suggestions.reset(self.store.search_queries())
        self.shared = SharedCounts(self.store, lambda: self.catalog, self.suggestions,
                                   **kwargs)

    def add(self, events: pd.DataFrame) -> None:
        """What Services.add_events does with the counts."""
        result = self.store.add_batch(events)
        new = events[result.new]
        self.catalog.add_engagements(new[new[spec.EVENT_TYPE] == "click"][spec.ITEM_ID])
        self.shared.changed()

    def count(self, item_id: str) -> float:
        return float(self.catalog.popularity[self.catalog.row(item_id)])

    def close(self):
        self.shared.stop()
        self.store.close()


@pytest.fixture
def replicas(redis_url):  # noqa: F811
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    one = Replica(redis_url, suggestions_refresh_s=3600)
    two = Replica(redis_url, suggestions_refresh_s=3600)
    yield one, two
    one.close()
    two.close()


def test_a_replica_takes_the_engagements_another_stored(replicas):
    one, two = replicas
    assert two.shared.enabled
    two.shared.start()                               # stamp of the empty store
    assert not two.shared.refresh(), "nothing changed: no reread"
    one.add(_events(*[(f"u{n}", "food3", "click") for n in range(3)], ("u0", "toy1", "view")))
    assert one.count("food3") == 3 and two.count("food3") == 0
    assert two.shared.refresh(), "another replica's add moved the store's stamp"
    assert two.count("food3") == 3 and two.count("toy1") == 0, "views are not engagements"
    assert two.catalog.popular(1, np.ones(len(two.catalog), bool))[0] == \
        two.catalog.row("food3")
    assert not two.shared.refresh() and two.shared.refreshes == 1


def test_an_erasure_on_another_replica_lowers_the_counts(replicas):
    one, two = replicas
    one.add(_events(("a", "book4", "click"), ("b", "book4", "click")))
    two.shared.start()
    two.shared.refresh(force=True)
    assert two.count("book4") == 2
    one.store.erase_user("a")
    assert two.shared.refresh() and two.count("book4") == 1


def test_a_replicas_own_events_are_not_counted_twice(replicas):
    """The poll can read the store between this replica's add and its in-memory count;
    ``changed`` makes the next poll reread, so the double count does not outlive it."""
    _, two = replicas
    two.shared.start()
    events = _events(("c", "beauty7", "click"))
    two.store.add_batch(events)                       # stored ...
    two.shared.refresh()                              # ... a poll reads it (count 1) ...
    two.catalog.add_engagements(events[spec.ITEM_ID])  # ... then the in-memory count
    assert two.count("beauty7") == 2
    two.shared.changed()
    assert two.shared.refresh() and two.count("beauty7") == 1


def test_suggestions_are_rebuilt_from_the_store_at_most_every_refresh_interval(redis_url):  # noqa: F811
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    one, two = Replica(redis_url), Replica(redis_url, suggestions_refresh_s=0.3)
    try:
        two.shared.start()
        one.add(_events(("s1", "", "search", "Red Lipstick"), ("s2", "", "search",
                                                                 "red  lipstick")))
        assert two.shared.refresh()
        assert two.suggestions.suggest("red", 5) == [], "not before the refresh interval"
        time.sleep(0.35)
        assert not two.shared.refresh(), "popularity unchanged"
        assert two.suggestions.suggest("red", 5) == [("red lipstick", 2)]
    finally:
        one.close()
        two.close()


def test_the_poll_thread_brings_another_replicas_events_within_a_few_polls(replicas):
    one, two = replicas
    two.shared.poll_s = 0.05
    two.shared.start()
    one.add(_events(("d", "toy5", "click")))
    deadline = time.monotonic() + 5
    while two.count("toy5") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert two.count("toy5") == 1


def test_a_failing_poll_keeps_the_counts_and_the_thread(replicas, caplog):
    one, two = replicas
    one.add(_events(("e", "food8", "click")))
    two.shared.refresh(force=True)
    two.shared.poll_s = 0.05
    two.shared.start()
    real = two.shared.stamp
    two.shared.stamp = lambda: (_ for _ in ()).throw(ConnectionError("redis down"))
    time.sleep(0.2)
    assert two.count("food8") == 1 and two.shared._thread.is_alive()
    assert "reading the shared counts failed" in caplog.text
    two.shared.stamp = real
    one.add(_events(("f", "food8", "click")))
    deadline = time.monotonic() + 5
    while two.count("food8") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert two.count("food8") == 2


def test_a_sqlite_store_is_one_process_and_starts_no_thread(tmp_path):
    store = open_event_store(f"sqlite:///{tmp_path / 'events.sqlite3'}")
    try:
        shared = SharedCounts(store, _catalog, QuerySuggestions()).start()
        assert not shared.enabled and shared._thread is None
        shared.changed()
        shared.stop()
    finally:
        store.close()


def test_poll_intervals_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="must be > 0"):
        SharedCounts(None, _catalog, QuerySuggestions(), poll_s=0)
