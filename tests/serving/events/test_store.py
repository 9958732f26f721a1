"""Event stores: the history rule, purchases, session search, imports; SQLite migrations and
WAL; the same behaviour from Redis when a redis-server binary is available."""
from __future__ import annotations

import sqlite3
import threading
import time

import numpy as np
import pandas as pd
import pytest

from pipeline.contract import spec
from serving.events.store import (MIGRATIONS, EventStoreError, SqliteEventStore, fingerprint,
                                 migrate, open_event_store, with_import_ids)
from tests.serving.api.setup import redis_url  # noqa: F401
from trainer import features


def events(*rows) -> pd.DataFrame:
    """Canonical events frame from (user, item, type, timestamp[, query][, value]) tuples."""
    records = []
    for row in rows:
        user, item, etype, ts, *rest = row
        query = rest[0] if rest else ""
        value = rest[1] if len(rest) > 1 else np.nan
        records.append({spec.USER_ID: user, spec.ITEM_ID: item, spec.EVENT_TYPE: etype,
                        spec.VALUE: value, spec.QUERY: query, spec.SESSION_ID: "",
                        spec.TIMESTAMP: ts})
    return pd.DataFrame(records, columns=list(spec.EVENT_COLUMNS))


def _open_store(request, tmp_path, **kwargs):
    """An empty store of the fixture's backend (SQLite file or the test Redis)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    else:
        url = request.getfixturevalue("redis_url")
        import redis

        redis.Redis.from_url(url).flushdb()
    return open_event_store(url, **kwargs)


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    s = _open_store(request, tmp_path)
    yield s
    s.close()


def test_history_is_distinct_engaged_items_most_recent_first(store):
    store.add(events(("u", "a", "click", 10), ("u", "b", "view", 11), ("u", "c", "purchase", 12),
                     ("u", "a", "add_to_cart", 13), ("u", "d", "rating", 14, "", 4.0),
                     ("v", "z", "click", 15)))
    ctx = store.user_context("u")
    assert ctx.history == ["d", "a", "c"], "views are impressions, not history"
    assert ctx.last_engagement == {"d": "rating", "a": "add_to_cart", "c": "purchase"}
    assert ctx.purchased == {"c"} and ctx.known and ctx.last_timestamp == 14


def test_history_ties_keep_insertion_order_and_length_is_capped(store):
    n = features.HISTORY_LENGTH + 5
    store.add(events(*[("u", f"i{k}", "click", 100) for k in range(n)]))
    assert store.user_context("u").history == [f"i{k}" for k in range(n - 1, 4, -1)]


@pytest.fixture(params=["sqlite", "redis"])
def store_50(request, tmp_path):
    """A store reading histories of up to 50 items (the API's default max_history)."""
    s = _open_store(request, tmp_path, max_history=50)
    yield s
    s.close()


def test_history_holds_max_history_distinct_items(store_50):
    """max_history 50: the 50 most recent distinct engaged items, even when each was engaged
    with many times (the scan reads enough events to find them)."""
    assert store_50.max_history == 50 and store_50.scan_limit >= 500
    rows = [("u", f"i{k % 70}", "click", 1000 + k) for k in range(700)]   # 10 rounds of 70
    store_50.add(events(*rows))
    expected = [f"i{k % 70}" for k in range(699, 649, -1)]
    assert store_50.user_context("u").history == expected


@pytest.mark.parametrize("value", [0, 201, 2.5])
def test_max_history_out_of_range_is_named(tmp_path, value):
    with pytest.raises(EventStoreError, match=rf"max_history={value!r}: must be a whole number"):
        open_event_store(f"sqlite:///{tmp_path / 'e.sqlite3'}", max_history=value)


def test_unknown_user_has_empty_context(store):
    ctx = store.user_context("nobody")
    assert not ctx.known and ctx.history == [] and ctx.purchased == set()
    assert ctx.query == "" and ctx.last_timestamp is None


def test_search_counts_only_in_the_current_session(store):
    gap = spec.SESSION_GAP_SECONDS
    store.add(events(("u", "", "search", 1000, "red lipstick"), ("u", "a", "view", 1000 + gap)))
    assert store.user_context("u").query == "red lipstick"
    store.add(events(("u", "a", "click", 1001 + 2 * gap)))
    assert store.user_context("u").query == "", "a search before a 30 min gap is stale"


def test_search_queries_are_distinct_user_query_pairs(store):
    store.add(events(("u", "", "search", 1, "Red lipstick"), ("u", "", "search", 2,
                                                              "Red lipstick"),
                     ("v", "", "search", 3, "red lipstick"), ("v", "a", "click", 4)))
    assert store.search_queries() == {("u", "Red lipstick"), ("v", "red lipstick")}
    store.erase_user("u")
    assert store.search_queries() == {("v", "red lipstick")}


def test_engagement_counts_and_meta(store):
    store.add(events(("u", "a", "click", 1), ("v", "a", "purchase", 2), ("v", "b", "view", 3)))
    assert store.engagement_counts() == {"a": 2}
    assert store.count() == 3
    assert store.get_meta("k") is None
    store.set_meta("k", "v1")
    store.set_meta("k", "v2")
    assert store.get_meta("k") == "v2"


def test_shop_import_happens_once_per_export(store):
    shop = events(("u", "a", "click", 1), ("u", "b", "click", 2))
    assert store.import_shop_events(shop) is True
    assert store.import_shop_events(shop.copy()) is False
    assert store.count() == 2
    assert store.import_shop_events(events(("u", "c", "click", 3))) is True
    assert store.user_context("u").history == ["c", "b", "a"]


def test_an_import_that_died_part_way_resumes_without_duplicates(store):
    shop = events(*[(f"u{k % 3}", f"i{k}", "click", k) for k in range(2500)])
    # The process died after the first 1,000 events (Redis: one chunk), before the marker.
    store._add(with_import_ids(shop, fingerprint(shop)).iloc[:1000], None, None)
    assert store.count() == 1000
    assert store.import_shop_events(shop) is True
    assert store.count() == 2500, "the resumed import adds only the missing events"
    assert store.import_shop_events(shop) is False
    assert store.user_context("u0").history[:2] == ["i2499", "i2496"]
    given = shop.assign(**{spec.EVENT_ID: ["mine"] + [""] * 2499})
    assert with_import_ids(given, "x")[spec.EVENT_ID].tolist()[:2] == ["mine", "import:x:1"]


def test_concurrent_writers_lose_nothing(store):
    def write(worker):
        for n in range(20):
            store.add(events((f"w{worker}", f"i{n}", "click", n)))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 80
    assert store.user_context("w3").history[:2] == ["i19", "i18"]


# ---- SQLite specifics ----

def test_new_database_is_migrated_to_the_latest_schema_in_wal_mode(tmp_path):
    path = tmp_path / "db" / "events.sqlite3"
    store = SqliteEventStore(path)
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    columns = [r[1] for r in conn.execute("PRAGMA table_info(events)")]
    assert columns[-2:] == ["received_at", "event_id"]
    conn.close()


def test_old_database_is_migrated_and_keeps_its_events(tmp_path):
    path = tmp_path / "events.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:1]) == 1
    conn.execute("INSERT INTO events (user_id, item_id, event_type, timestamp) "
                 "VALUES ('u', 'a', 'click', 5)")
    conn.close()
    store = SqliteEventStore(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.user_context("u").history == ["a"]
    store.add(events(("u", "b", "click", 6)), received_at=1234)
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT item_id, received_at FROM events ORDER BY id").fetchall() == [
        ("a", None), ("b", 1234)]
    conn.close()


def test_database_from_a_newer_shoprec_is_refused(tmp_path):
    path = tmp_path / "events.sqlite3"
    SqliteEventStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(EventStoreError, match="newer than this shoprec"):
        SqliteEventStore(path)


def test_a_failing_migration_leaves_the_previous_version(tmp_path):
    path = tmp_path / "events.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    broken = MIGRATIONS[:1] + (("broken", "CREATE TABLE meta (k TEXT); SELECT * FROM nope"),)
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, broken)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone() is None
    conn.close()


def test_wal_readers_are_not_blocked_by_an_open_write(tmp_path):
    path = tmp_path / "events.sqlite3"
    store = SqliteEventStore(path)
    store.add(events(("u", "a", "click", 1)))
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO events (user_id, item_id, event_type, timestamp) "
                   "VALUES ('u', 'b', 'click', 2)")
    started = time.perf_counter()
    assert store.user_context("u").history == ["a"], "readers see the last commit"
    assert time.perf_counter() - started < 1.0
    writer.execute("COMMIT")
    assert store.user_context("u").history == ["b", "a"]
    writer.close()
    store.close()


@pytest.mark.parametrize("url, message", [
    ("sqlite:///", "needs a file path"), ("postgres://x", "unsupported event store URL"),
    ("sqlite:///:memory:", "needs a file")])
def test_bad_store_urls_are_explained(url, message):
    with pytest.raises(EventStoreError, match=message):
        open_event_store(url)


def test_sqlite_connections_are_reused_across_short_lived_threads(tmp_path):
    store = SqliteEventStore(tmp_path / "events.sqlite3")
    for _ in range(20):
        thread = threading.Thread(target=store.user_context, args=("u",))
        thread.start()
        thread.join()
    assert store._pool.qsize() == 1, "worker threads come and go; connections stay"
    store.close()
    with pytest.raises(EventStoreError, match="closed"):
        store.user_context("u")
