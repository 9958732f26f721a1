"""Event ids (safe retries), retention and erasure, in both stores (issue #19; Redis when a
redis-server binary is available)."""
from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest

from pipeline.contract import spec
from serving.events.erasure import ErasureKeyError, ErasureList, read_erasures, user_hash
from serving.events.store import (DAY_SECONDS, EventStoreError, SqliteEventStore,
                                  open_event_store)
from tests.serving.api.setup import redis_url  # noqa: F401
from tests.serving.events.test_store import store  # noqa: F401  (fixture)

NOW = 1_750_000_000
KEY = "k" * 32


def events(*rows) -> pd.DataFrame:
    """Events frame from (user, item, type, timestamp[, event_id[, query]]) tuples."""
    records = []
    for row in rows:
        user, item, etype, ts, *rest = row
        records.append({spec.USER_ID: user, spec.ITEM_ID: item, spec.EVENT_TYPE: etype,
                        spec.VALUE: np.nan, spec.QUERY: rest[1] if len(rest) > 1 else "",
                        spec.SESSION_ID: "", spec.TIMESTAMP: ts,
                        spec.EVENT_ID: rest[0] if rest else ""})
    return pd.DataFrame(records, columns=[*spec.EVENT_COLUMNS, spec.EVENT_ID])


def open_like(store, **options):
    """Another store object on the same data (another replica / a restart)."""
    if isinstance(store, SqliteEventStore):
        return open_event_store(f"sqlite:///{store.path}", **options)
    from serving.events.store_redis import RedisEventStore

    return RedisEventStore(store.r, **options)


# ---- event ids ----

def test_a_retried_batch_stores_nothing_twice(store):
    batch = events(("u", "a", "click", 10, "e1"), ("u", "b", "purchase", 11, "e2"),
                   ("u", "", "search", 12, "e3", "red lipstick"))
    first = store.add_batch(batch, received_at=NOW)
    assert (first.stored, first.duplicates, first.accepted) == (3, 0, 3)
    retry = store.add_batch(batch, received_at=NOW + 5)
    assert (retry.stored, retry.duplicates, retry.accepted) == (0, 3, 3)
    assert retry.new.tolist() == [False, False, False]
    assert store.add(batch) == 3, "add answers a retry like the first attempt"
    assert store.count() == 3
    assert store.engagement_counts() == {"a": 1, "b": 1}, "popularity counted once"
    ctx = store.user_context("u")
    assert ctx.history == ["b", "a"] and ctx.purchased == {"b"} and ctx.query == "red lipstick"


def test_duplicates_inside_one_batch_keep_the_first(store):
    result = store.add_batch(events(("u", "a", "click", 10, "e1"), ("u", "b", "click", 11, "e1"),
                                    ("u", "c", "click", 12, "e2"), ("u", "c", "click", 12, "e2")))
    assert result.new.tolist() == [True, False, True, False]
    assert store.count() == 2 and store.user_context("u").history == ["c", "a"]


def test_event_ids_are_scoped_per_user_and_empty_means_none(store):
    result = store.add_batch(events(("u", "a", "click", 10, "same"),
                                    ("v", "a", "click", 10, "same"),
                                    ("u", "b", "view", 11, ""), ("u", "b", "view", 11, "")))
    assert result.stored == 4, "another user's id does not collide; no id = no dedup"
    assert store.add_batch(events(("v", "z", "click", 20, "same"))).duplicates == 1


def test_frames_without_an_event_id_column_are_stored_as_before(store):
    frame = events(("u", "a", "click", 10)).drop(columns=[spec.EVENT_ID])
    assert store.add(frame) == 1 and store.add(frame) == 1 and store.count() == 2


def test_concurrent_retries_of_the_same_batch_store_it_once(store):
    batch = events(*[("u", f"i{n}", "click", n, f"e{n}") for n in range(50)])
    results = []

    def send():
        results.append(store.add_batch(batch, received_at=NOW))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.stored for r in results) == [0, 0, 0, 50]
    assert store.count() == 50


def test_shop_import_skips_events_already_posted_with_the_same_id(store):
    store.add(events(("u", "a", "click", 10, "e1")), received_at=NOW)
    export = events(("u", "a", "click", 10, "e1"), ("u", "b", "click", 11, "e2"))
    assert store.import_shop_events(export) is True
    assert store.count() == 2 and store.user_context("u").history == ["b", "a"]


# ---- retention ----

def test_without_a_retention_nothing_is_purged(store):
    store.add(events(("u", "a", "click", 1)))
    assert store.retention_days is None and store.purge_expired(NOW) == 0
    assert store.count() == 1


@pytest.mark.parametrize("days", [0, -1, 1.5, True, "30"])
def test_retention_must_be_whole_days(tmp_path, days):
    with pytest.raises(EventStoreError, match="retention_days"):
        SqliteEventStore(tmp_path / "e.sqlite3", retention_days=days)


def test_purge_deletes_events_dated_or_received_before_the_retention(store):
    old, recent = NOW - 40 * DAY_SECONDS, NOW - 10 * DAY_SECONDS
    store.add(events(("u", "a", "click", old, "e1"), ("u", "b", "purchase", old),
                     ("u", "", "search", old, "", "old query"), ("w", "a", "click", old)),
              received_at=old)
    store.add(events(("u", "c", "click", recent, "e2"), ("v", "a", "click", recent)),
              received_at=recent)
    # dated in the far future, but received long ago: ages from when it was received
    store.add(events(("v", "d", "add_to_cart", 7_000_000_000)), received_at=old)
    store.add(events(("x", "a", "click", old)))              # imported: ages by its date
    later = open_like(store, retention_days=30)
    assert later.purge_expired(NOW) == 6
    assert later.purge_expired(NOW) == 0, "idempotent"
    assert later.count() == 2
    ctx = later.user_context("u")
    assert ctx.history == ["c"] and ctx.purchased == set() and ctx.query == ""
    assert ctx.last_timestamp == recent
    assert later.user_context("v").history == ["a"]
    assert later.user_context("v").last_timestamp == recent
    assert not later.user_context("w").known and later.user_context("w").last_timestamp is None
    assert later.engagement_counts() == {"a": 1, "c": 1}
    assert later.add_batch(events(("u", "a", "click", NOW, "e1"))).stored == 1, \
        "a purged event's id goes with it"
    assert later.add_batch(events(("u", "c", "click", NOW, "e2"))).duplicates == 1
    later.close()


def test_purge_runs_in_chunks(tmp_path):
    store = SqliteEventStore(tmp_path / "e.sqlite3", retention_days=1)
    store.purge_chunk = 7
    store.add(events(*[("u", f"i{n}", "click", 1000 + n) for n in range(30)]))
    store.add(events(("u", "z", "click", NOW)))
    assert store.purge_expired(NOW) == 30 and store.count() == 1
    store.close()


def test_shop_import_leaves_out_events_past_the_retention(store):
    later = open_like(store, retention_days=30)
    export = events(("u", "a", "click", NOW - 31 * DAY_SECONDS), ("u", "b", "click", NOW - 1))
    assert later.import_shop_events(export, now=NOW) is True
    assert later.user_context("u").history == ["b"] and later.count() == 1
    assert later.import_shop_events(export, now=NOW) is False
    later.close()


# ---- erasure ----

def test_erase_user_deletes_every_event_and_records_a_pseudonym(store):
    store.add(events(("u", "a", "click", 10, "e1"), ("u", "b", "purchase", 11),
                     ("u", "", "search", 12, "", "secret query"), ("v", "a", "click", 13)),
              received_at=NOW)
    assert store.erase_user("u", now=NOW + 60) == 3
    assert store.count() == 1 and store.engagement_counts() == {"a": 1}
    ctx = store.user_context("u")
    assert not ctx.known and ctx.purchased == set() and ctx.query == "" \
        and ctx.last_timestamp is None
    assert store.user_context("v").history == ["a"]
    [record] = store.erasure_records()
    assert record.events_deleted == 3 and record.erased_at == NOW + 60
    assert "u" not in record.user_hash and len(record.user_hash) == 32
    erased = store.erasure_list()
    assert "u" in erased and "v" not in erased and erased.erased_at("u") == NOW + 60
    assert record.user_hash == user_hash(store.erasure_key(), "u")
    assert store.erase_user("u", now=NOW + 120) == 0, "nothing left; recorded again"
    assert store.erasure_list().erased_at("u") == NOW + 120
    assert [r.events_deleted for r in store.erasure_records()] == [3, 0]
    assert store.add_batch(events(("u", "a", "click", NOW + 200, "e1"))).stored == 1, \
        "the user's event ids went too: activity after the erasure is new"


def test_erasing_an_unknown_user_is_recorded(store):
    assert store.erase_user("never-seen", now=NOW) == 0
    assert "never-seen" in store.erasure_list() and store.count() == 0


def test_erasure_list_excludes_the_erased_users_events_up_to_the_erasure():
    key = b"x" * 32
    erased = ErasureList(key, {user_hash(key, "u"): 100})
    frame = events(("u", "a", "click", 99), ("u", "a", "click", 100), ("v", "a", "click", 50),
                   ("u", "b", "click", 101))
    kept = erased.exclude(frame)
    assert kept[[spec.USER_ID, spec.TIMESTAMP]].values.tolist() == [["v", 50], ["u", 101]]
    assert erased.exclude(frame.iloc[:0]).empty
    assert ErasureList(key, {}).exclude(frame).equals(frame)


def test_shop_import_leaves_out_erased_users(store):
    store.erase_user("u", now=NOW)
    export = events(("u", "a", "click", NOW - 5), ("v", "a", "click", NOW - 5),
                    ("u", "b", "click", NOW + 5))
    assert store.import_shop_events(export) is True
    assert store.user_context("u").history == ["b"], "only what came after the erasure"
    assert store.user_context("v").history == ["a"]


def test_the_erasure_list_survives_a_restart_and_is_read_by_url(store, tmp_path):
    store.erase_user("u", now=NOW)
    again = open_like(store)
    assert "u" in again.erasure_list()
    again.close()
    if isinstance(store, SqliteEventStore):
        assert "u" in read_erasures(f"sqlite:///{store.path}")
    assert "u" in read_erasures(store)


def test_a_configured_key_is_used_and_another_one_refused(store):
    keyed = open_like(store, erasure_key=KEY)
    keyed.erase_user("u", now=NOW)
    assert keyed.erasure_key() == KEY.encode()
    assert keyed.get_meta("erasure_key") is None, "a configured key is never stored"
    assert keyed.erasure_records()[0].user_hash == user_hash(KEY.encode(), "u")
    with pytest.raises(ErasureKeyError, match="another erasure key"):
        open_like(store, erasure_key="z" * 32)
    with pytest.raises(ErasureKeyError):
        store.erasure_list()      # this store object has no key: it would generate another
    keyed.close()


def test_a_generated_key_is_kept(store):
    store.erase_user("u", now=NOW)
    key = store.erasure_key()
    again = open_like(store)
    assert again.erasure_key() == key and "u" in again.erasure_list()
    again.close()


def test_short_erasure_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="16 bytes"):
        SqliteEventStore(tmp_path / "e.sqlite3", erasure_key="short")


def test_sqlite_erasure_leaves_no_trace_of_the_user_in_the_files(tmp_path):
    path = tmp_path / "events.sqlite3"
    store = SqliteEventStore(path)
    who = "erase-me-7f3a9c"
    for n in range(20):                          # spread over many pages, with neighbours
        store.add(events(*[(who if k % 3 == 0 else f"other{k}", "item1", "click",
                            NOW + n * 100 + k, f"e{n}-{k}") for k in range(60)]))
    assert who.encode() in path.read_bytes() + (tmp_path / "events.sqlite3-wal").read_bytes()
    assert store.erase_user(who, now=NOW) == 400
    files = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert who.encode() not in files
    assert (tmp_path / "events.sqlite3-wal").stat().st_size == 0, "WAL truncated"
    assert store.count() == 800
    store.close()


def test_redis_erasure_leaves_no_trace_of_the_user(redis_url):  # noqa: F811
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    store = open_event_store(redis_url)
    who = "erase-me-7f3a9c"
    store.add(events((who, "a", "purchase", 10, "e1"), (who, "", "search", 11, "", "q"),
                     ("v", "a", "click", 12)), received_at=NOW)
    store.erase_user(who, now=NOW)
    assert not [k for k in client.scan_iter(count=1000) if who in k]
    assert all(e["user_id"] == "v" for _, e in client.xrange("shoprec:events"))
    assert who not in str(client.lrange("shoprec:erasure_log", 0, -1))
    store.close()


# ---- schema upgrades ----

def test_sqlite_store_from_before_event_ids_is_migrated(tmp_path):
    from serving.events.store import MIGRATIONS, migrate

    path = tmp_path / "events.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, MIGRATIONS[:3])
    conn.execute("INSERT INTO events (user_id, item_id, event_type, timestamp, received_at) "
                 "VALUES ('u', 'a', 'click', 5, 5)")
    conn.close()
    store = SqliteEventStore(path, retention_days=1)
    assert store.add_batch(events(("u", "b", "click", NOW, "e1"))).stored == 1
    assert store.add_batch(events(("u", "b", "click", NOW, "e1"))).duplicates == 1
    assert store.purge_expired(NOW) == 1 and store.user_context("u").history == ["b"]
    store.close()


def test_redis_store_of_schema_1_is_migrated(redis_url):  # noqa: F811
    """Keys as shoprec wrote them before event ids (schema 1)."""
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.flushdb()
    p = "shoprec:"
    old, recent = NOW - 40 * DAY_SECONDS, NOW - DAY_SECONDS
    rows = [("u", "a", "click", old), ("u", "b", "purchase", old), ("u", "c", "click", recent),
            ("v", "a", "click", recent)]
    for seq, (user, item, etype, ts) in enumerate(rows, start=1):
        r.xadd(p + "events", {"user_id": user, "item_id": item, "event_type": etype,
                              "value": "", "query": "", "session_id": "", "timestamp": ts,
                              "received_at": ts})
        r.zadd(f"{p}user:{user}:engaged", {f"{seq:015d}|{etype}|{item}": ts})
        r.zincrby(p + "popularity", 1, item)
        r.zadd(p + "last_ts", {user: ts}, gt=True)
        if etype == "purchase":
            r.sadd(f"{p}user:{user}:purchased", item)
    r.set(p + "seq", 4)
    r.set(p + "schema_version", 1)
    store = open_event_store(redis_url, retention_days=30)
    assert store.schema_version == 2 and r.get(p + "schema_version") == "2"
    assert store.count() == 4 and store.user_context("u").history == ["c", "b", "a"]
    assert store.purge_expired(NOW) == 2
    ctx = store.user_context("u")
    assert ctx.history == ["c"] and ctx.purchased == set()
    assert store.engagement_counts() == {"a": 1, "c": 1} and store.count() == 2
    assert store.erase_user("v", now=NOW) == 1 and store.engagement_counts() == {"c": 1}
    store.close()
