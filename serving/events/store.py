"""Where the API keeps shoppers' events: SQLite (WAL, embedded default) or Redis.

``open_event_store("sqlite:///var/events.sqlite3")`` or ``open_event_store("redis://host:6379/0")``.
Events are the canonical events frame of the data contract (``pipeline.contract.spec.
EVENT_COLUMNS``, as ``load_shop`` returns them and ``serving.events.validation`` builds them).
A user's context for recommendations follows the training rules (``pipeline.examples``):
history = distinct engaged items (click, add_to_cart, purchase, rating), most recent first.

SQLite schema changes are the numbered ``MIGRATIONS``; ``PRAGMA user_version`` records how
many are applied, each runs in its own transaction, and a database from a newer shoprec is
refused rather than guessed at.
"""
from __future__ import annotations

import hashlib
import queue
import sqlite3
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract import spec
from pipeline.examples import ENGAGEMENT_EVENTS, history_before
from trainer import features

NOW = 2 ** 62                # "before now": every stored event counts for the history


class EventStoreError(RuntimeError):
    """The store cannot be opened or used (bad URL, newer schema, unreachable server)."""


@dataclass(frozen=True)
class UserContext:
    """What the recommender knows about a user right now."""

    history: list[str]                        # distinct engaged items, most recent first
    last_engagement: dict[str, str]           # item_id -> latest engagement type
    purchased: set[str] = field(default_factory=set)
    query: str = ""                           # latest search of the current session
    last_timestamp: int | None = None         # the user's latest event (any type)

    @property
    def known(self) -> bool:
        """True when the user has engaged with at least one item."""
        return bool(self.history)


class EventStore(ABC):
    """Append-only event log with the per-user reads the recommender needs."""

    scan_limit = 500          # recent engagements read to find HISTORY_LENGTH distinct items

    @abstractmethod
    def add(self, events: pd.DataFrame, received_at: int | None = None) -> int:
        """Append canonical events (in order); returns how many were stored."""

    @abstractmethod
    def recent_engagements(self, user_id: str, limit: int) -> list[tuple[str, str, int]]:
        """(item_id, event_type, timestamp) of the user's latest engagements, newest first."""

    @abstractmethod
    def purchased_items(self, user_id: str) -> set[str]:
        """Items the user ever purchased."""

    @abstractmethod
    def last_search(self, user_id: str) -> tuple[str, int] | None:
        """(query, timestamp) of the user's latest search, or None."""

    @abstractmethod
    def last_timestamp(self, user_id: str) -> int | None:
        """Timestamp of the user's latest event of any type, or None for an unknown user."""

    @abstractmethod
    def engagement_counts(self) -> dict[str, int]:
        """item_id -> number of engagement events (for popularity)."""

    @abstractmethod
    def count(self) -> int:
        """Number of events stored."""

    @abstractmethod
    def get_meta(self, key: str) -> str | None:
        """A bookkeeping value (e.g. which shop exports were imported)."""

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None:
        """Store a bookkeeping value."""

    @abstractmethod
    def ping(self) -> None:
        """Raise EventStoreError if the store cannot answer."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def user_context(self, user_id: str) -> UserContext:
        """History (pipeline.examples rule), purchases and the current session's search."""
        recent = self.recent_engagements(user_id, self.scan_limit)
        rows = [{"item_id": i, "timestamp": t} for i, _, t in reversed(recent)]
        history = history_before(rows, NOW, features.HISTORY_LENGTH)
        last_type: dict[str, str] = {}
        for item_id, event_type, _ in recent:
            last_type.setdefault(item_id, event_type)
        last_ts = self.last_timestamp(user_id)
        search = self.last_search(user_id)
        query = ""
        if search and last_ts is not None and search[1] >= last_ts - spec.SESSION_GAP_SECONDS:
            query = search[0]
        return UserContext(history, {i: last_type[i] for i in history},
                           self.purchased_items(user_id), query, last_ts)

    def import_shop_events(self, events: pd.DataFrame) -> bool:
        """Add a shop export's events once (fingerprinted); True if they were added now."""
        key = f"shop_import:{fingerprint(events)}"
        if self.get_meta(key) is not None:
            return False
        self.add(events)
        self.set_meta(key, str(len(events)))
        return True


def fingerprint(events: pd.DataFrame) -> str:
    """Content hash of an events frame (order-sensitive)."""
    hashed = pd.util.hash_pandas_object(events[list(spec.EVENT_COLUMNS)], index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()[:24]


def event_rows(events: pd.DataFrame, received_at: int | None):
    """Tuples in EVENT_COLUMNS order + received_at; NaN values become None."""
    value = events[spec.VALUE].to_numpy(dtype=np.float64)
    values = [None if np.isnan(v) else float(v) for v in value]
    return zip(events[spec.USER_ID], events[spec.ITEM_ID], events[spec.EVENT_TYPE], values,
               events[spec.QUERY], events[spec.SESSION_ID],
               (int(t) for t in events[spec.TIMESTAMP]), [received_at] * len(events))


# Schema history of the SQLite store; append only, never edit an applied entry.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("events log with a per-user time index", """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id TEXT NOT NULL,
            item_id TEXT NOT NULL DEFAULT '',
            event_type TEXT NOT NULL,
            value REAL,
            query TEXT NOT NULL DEFAULT '',
            session_id TEXT NOT NULL DEFAULT '',
            timestamp INTEGER NOT NULL);
        CREATE INDEX events_by_user_time ON events (user_id, timestamp, id);"""),
    ("bookkeeping key/value table", """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"""),
    ("when the API stored each event (NULL for imported shop exports)", """
        ALTER TABLE events ADD COLUMN received_at INTEGER;"""),
)
_ENGAGED = tuple(sorted(ENGAGEMENT_EVENTS))
_IN_ENGAGED = f"({','.join('?' * len(_ENGAGED))})"


def migrate(conn: sqlite3.Connection, migrations=MIGRATIONS) -> int:
    """Apply pending migrations, one transaction each; returns the schema version."""
    for number, (_, script) in enumerate(migrations, start=1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(migrations):
                raise EventStoreError(
                    f"event store schema version {version} is newer than this shoprec "
                    f"knows ({len(migrations)}); upgrade shoprec or use another database")
            if version < number:
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return conn.execute("PRAGMA user_version").fetchone()[0]


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


class SqliteEventStore(EventStore):
    """Events in one SQLite file in WAL mode: readers never wait for the writer.

    Connections are pooled (reused by whichever thread needs one), so their number stays
    at the peak of concurrent calls however often worker threads come and go.
    """

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000):
        self.path = str(path)
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            raise EventStoreError("the SQLite event store needs a file (WAL does not apply "
                                  "to in-memory databases)")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._busy_ms = busy_timeout_ms
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._closed = False
        with self._conn() as conn:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise EventStoreError(f"{self.path}: could not switch to WAL "
                                      f"(journal_mode={mode})")
            self.schema_version = migrate(conn)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self._busy_ms / 1000)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
            conn.execute("PRAGMA synchronous = NORMAL")   # durable at checkpoints; WAL-safe
        except sqlite3.Error as e:
            raise EventStoreError(f"cannot open event store {self.path}: {e}") from None
        return conn

    @contextmanager
    def _conn(self):
        if self._closed:
            raise EventStoreError(f"event store {self.path} is closed")
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            yield conn
        finally:
            self._pool.put(conn)

    def _query(self, sql: str, params=()) -> list:
        with self._conn() as conn:
            return conn.execute(sql, params).fetchall()

    def add(self, events: pd.DataFrame, received_at: int | None = None) -> int:
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO events (user_id, item_id, event_type, value, query, "
                    "session_id, timestamp, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    event_rows(events, received_at))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(events)

    def recent_engagements(self, user_id, limit):
        return self._query(
            "SELECT item_id, event_type, timestamp FROM events WHERE user_id = ? AND "
            f"event_type IN {_IN_ENGAGED} ORDER BY timestamp DESC, id DESC LIMIT ?",
            (user_id, *_ENGAGED, limit))

    def purchased_items(self, user_id):
        rows = self._query("SELECT DISTINCT item_id FROM events WHERE user_id = ? AND "
                           "event_type = ?", (user_id, spec.PURCHASE))
        return {r[0] for r in rows}

    def last_search(self, user_id):
        rows = self._query("SELECT query, timestamp FROM events WHERE user_id = ? AND "
                           "event_type = ? ORDER BY timestamp DESC, id DESC LIMIT 1",
                           (user_id, spec.SEARCH))
        return tuple(rows[0]) if rows else None

    def last_timestamp(self, user_id):
        return self._query("SELECT MAX(timestamp) FROM events WHERE user_id = ?",
                           (user_id,))[0][0]

    def engagement_counts(self):
        return dict(self._query(f"SELECT item_id, COUNT(*) FROM events WHERE event_type IN "
                                f"{_IN_ENGAGED} GROUP BY item_id", _ENGAGED))

    def get_meta(self, key):
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key, value):
        self._query("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def count(self):
        return self._query("SELECT COUNT(*) FROM events")[0][0]

    def ping(self):
        try:
            self._query("SELECT 1")
        except sqlite3.Error as e:
            raise EventStoreError(f"event store {self.path}: {e}") from None

    def close(self):
        self._closed = True
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                break


def open_event_store(url: str) -> EventStore:
    """``sqlite:///relative/path``, ``sqlite:////absolute/path`` or ``redis://host:port/db``."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path:
            raise EventStoreError("sqlite URL needs a file path: sqlite:///var/events.sqlite3")
        return SqliteEventStore(path)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from serving.events.store_redis import RedisEventStore
        return RedisEventStore.from_url(url)
    raise EventStoreError(f"unsupported event store URL {url!r}: use sqlite:///PATH or "
                          "redis://HOST:PORT/DB")


def now_seconds() -> int:
    """Current time in epoch seconds (the default timestamp of posted events)."""
    return int(time.time())
