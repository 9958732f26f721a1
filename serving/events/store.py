"""Where the API keeps shoppers' events: SQLite (WAL, embedded default) or Redis.

``open_event_store("sqlite:///var/events.sqlite3")`` or ``open_event_store("redis://host:6379/0")``.
Events are the canonical events frame of the data contract (``pipeline.contract.spec.
EVENT_COLUMNS``, as ``load_shop`` returns them and ``serving.events.validation`` builds them),
optionally with an ``event_id`` column.
A user's context for recommendations follows the training rules (``pipeline.examples``):
history = distinct engaged items (click, add_to_cart, purchase, rating), most recent first,
at most ``max_history`` of them (the API's setting; the models keep as many as they read).

Safe retries: an event with an ``event_id`` is stored at most once per user; posting it again
(a batch retried after a timeout, or twice in one batch) stores nothing more and counts as
accepted. Personal data: ``retention_days`` + ``purge_expired()`` delete old events,
``erase_user()`` deletes one user's events and records the erasure pseudonymously
(serving/events/erasure.py). docs/privacy.md.

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
from dataclasses import astuple, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract import spec
from pipeline.examples import ENGAGEMENT_EVENTS, history_before
from serving.events.erasure import (KEY_ID_META, KEY_META, Erasure, ErasureKeyError,
                                    ErasureList, as_key, key_id, mismatch_message, new_key,
                                    user_hash)
from serving.events.errors import EventStoreError
from serving.events.impressions import Attribution, Impression
from trainer import features

__all__ = ["AddResult", "EventStore", "EventStoreError", "MIGRATIONS", "SqliteEventStore",
           "UserContext", "open_event_store"]

NOW = 2 ** 62                # "before now": every stored event counts for the history
DAY_SECONDS = 86_400
SYNCHRONOUS = ("NORMAL", "FULL")


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


@dataclass(frozen=True)
class AddResult:
    """What a store did with a batch: ``new[i]`` is True when event i was stored now, False
    when the store already held an event with the same (user_id, event_id) -- stored earlier
    or earlier in this batch. Events without an event_id are always new."""

    new: np.ndarray

    @property
    def stored(self) -> int:
        """Events stored now."""
        return int(np.count_nonzero(self.new))

    @property
    def duplicates(self) -> int:
        """Events dropped because the store already had their (user_id, event_id)."""
        return len(self.new) - self.stored

    @property
    def accepted(self) -> int:
        """Events the store now holds for this batch: stored now or already stored (all)."""
        return len(self.new)


class EventStore(ABC):
    """Event log with the per-user reads the recommender needs, idempotent adds, retention
    and erasure.

    ``retention_days``: events dated -- or received by the API -- more than this many days
    before ``purge_expired(now)`` are deleted by it (None: kept until erased).
    ``erasure_key``: the secret the erasure list's user hashes are keyed with (None: a key
    the store generates and keeps; serving/events/erasure.py).
    ``max_history``: distinct items of a ``user_context`` history (1..200).
    """

    retention_days: int | None = None
    max_history: int = features.HISTORY_LENGTH
    _erasure_key: bytes | None = None

    @property
    def scan_limit(self) -> int:
        """Recent engagements read to find ``max_history`` distinct items (repeats of an item
        take several)."""
        return max(500, 10 * self.max_history)

    def _configure(self, retention_days: int | None, erasure_key: str | bytes | None,
                   max_history: int = features.HISTORY_LENGTH) -> None:
        try:
            self.max_history = features.check_history_length(max_history, "max_history")
        except ValueError as e:
            raise EventStoreError(str(e)) from None
        if retention_days is not None and (isinstance(retention_days, bool) or
                                           not isinstance(retention_days, int) or
                                           retention_days < 1):
            raise EventStoreError(f"retention_days must be a whole number of days >= 1 or "
                                  f"None (keep), got {retention_days!r}")
        self.retention_days = retention_days
        self._erasure_key = None if erasure_key is None else as_key(erasure_key)

    def _check_erasure_key(self) -> None:
        """Refuse to open with a configured key other than the erasure list's (fail fast)."""
        if self._erasure_key is None:
            return
        recorded = self.get_meta(KEY_ID_META)
        if recorded is not None and recorded != key_id(self._erasure_key):
            raise ErasureKeyError(mismatch_message(recorded, key_id(self._erasure_key)))

    # ---- writing ----

    def add(self, events: pd.DataFrame, received_at: int | None = None) -> int:
        """Store the events (in order) that the store does not hold yet; returns how many
        were accepted: stored now or already stored under the same (user_id, event_id), so
        ``len(events)`` -- a retried batch answers like the first attempt. ``add_batch``
        tells the two apart."""
        return self.add_batch(events, received_at).accepted

    def add_batch(self, events: pd.DataFrame, received_at: int | None = None) -> AddResult:
        """Store the events (in order) whose (user_id, event_id) the store does not hold
        yet, atomically; which were new and which duplicates."""
        return self._add(events, received_at, None)

    @abstractmethod
    def _add(self, events: pd.DataFrame, received_at: int | None,
             meta: tuple[str, str] | None) -> AddResult:
        """add_batch, also setting bookkeeping ``meta`` (key, value) with the events."""

    def import_shop_events(self, events: pd.DataFrame, now: int | None = None) -> bool:
        """Add a shop export's events once (fingerprinted); True if they were added now.

        Events of erased users up to their erasure and, with a retention, events older than
        it are left out: an old export must not bring back what was deleted.
        """
        export = fingerprint(events)
        key = f"shop_import:{export}"
        if self.get_meta(key) is not None:
            return False
        keep = events
        if self.erasure_records():
            keep = self.erasure_list().exclude(keep)
        cutoff = self.cutoff(now)
        if cutoff is not None:
            keep = keep[keep[spec.TIMESTAMP].to_numpy() >= cutoff]
        self._add(with_import_ids(keep, export), None, (key, str(len(events))))
        return True

    # ---- retention ----

    def cutoff(self, now: int | None = None) -> int | None:
        """Epoch second before which events are expired at ``now`` (None: no retention)."""
        if self.retention_days is None:
            return None
        return (now_seconds() if now is None else int(now)) - self.retention_days * DAY_SECONDS

    def purge_expired(self, now: int | None = None) -> int:
        """Delete every event dated or received before ``cutoff(now)`` (and its event_id);
        returns how many. Does nothing without a retention. Safe to run concurrently with
        the API and, for Redis, from several replicas."""
        cutoff = self.cutoff(now)
        return 0 if cutoff is None else self._purge_before(cutoff)

    @abstractmethod
    def _purge_before(self, cutoff: int) -> int:
        """Delete events with timestamp < cutoff or received_at < cutoff; how many."""

    # ---- erasure ----

    def erase_user(self, user_id: str, now: int | None = None) -> int:
        """Delete every event of the user (and their event_ids), record the erasure (keyed
        hash of the id, time, count) and return how many events were deleted. Recorded even
        when the store had none: the user may still be in a shop export or training data."""
        key = self.erasure_key()
        erased_at = now_seconds() if now is None else int(now)
        return self._erase(user_id, user_hash(key, user_id), erased_at)

    @abstractmethod
    def _erase(self, user_id: str, hashed: str, erased_at: int) -> int:
        """Delete the user's events and append (hashed, erased_at, count) atomically."""

    @abstractmethod
    def erasure_records(self) -> list[Erasure]:
        """Every recorded erasure, oldest first (an audit trail without user ids)."""

    def erasure_key(self) -> bytes:
        """The erasure list's key: the configured one, else the store's generated one. The
        first use records its fingerprint; another key is refused (ErasureKeyError)."""
        key = self._erasure_key
        if key is None:
            generated = self.get_meta(KEY_META)
            if generated is None:
                recorded = self.get_meta(KEY_ID_META)
                if recorded is not None:        # written with a configured key: need it
                    raise ErasureKeyError(mismatch_message(recorded, "none"))
                generated = self._setdefault_meta(KEY_META, new_key())
            key = as_key(generated)
        recorded = self._setdefault_meta(KEY_ID_META, key_id(key))
        if recorded != key_id(key):
            raise ErasureKeyError(mismatch_message(recorded, key_id(key)))
        return key

    def erasure_list(self) -> ErasureList:
        """Erased users (keyed hashes) with their latest erasure time."""
        latest: dict[str, int] = {}
        for record in self.erasure_records():
            latest[record.user_hash] = max(record.erased_at,
                                           latest.get(record.user_hash, record.erased_at))
        return ErasureList(self.erasure_key(), latest)

    # ---- reading ----

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
    def search_queries(self) -> set[tuple[str, str]]:
        """Distinct (user_id, query) of the stored search events (for autocomplete; the
        Redis store keeps each user's latest ``max_searches``)."""

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
    def _setdefault_meta(self, key: str, value: str) -> str:
        """Set a bookkeeping value unless it exists (atomically); the value now stored."""

    @abstractmethod
    def events(self) -> pd.DataFrame:
        """Every stored event as the contract's events frame (EVENT_COLUMNS, time order;
        the feedback export, serving/events/export.py)."""

    # ---- impressions and attributions (serving/events/impressions.py) ----

    @abstractmethod
    def add_impressions(self, impressions: list[Impression]) -> None:
        """Store the items an answer showed."""

    @abstractmethod
    def latest_impression(self, user_id: str, item_id: str, since: int,
                          until: int) -> Impression | None:
        """The user's latest impression of the item with since <= timestamp <= until."""

    @abstractmethod
    def add_attributions(self, attributions: list[Attribution]) -> None:
        """Store engagements credited to impressions."""

    @abstractmethod
    def experiment_impressions(self, experiment: str) -> list[tuple[str, str, int]]:
        """(variant, user_id, impressions) of every user shown items in the experiment."""

    @abstractmethod
    def experiment_attributions(self, experiment: str) -> list[Attribution]:
        """The attributions credited to the experiment's impressions."""

    @abstractmethod
    def impressions(self) -> list[Impression]:
        """Every stored impression, oldest first (the feedback export)."""

    @abstractmethod
    def purge_impressions(self, cutoff: int) -> int:
        """Delete impressions and attributions dated before ``cutoff``; how many
        impressions."""

    @abstractmethod
    def ping(self) -> None:
        """Raise EventStoreError if the store cannot answer."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def user_context(self, user_id: str) -> UserContext:
        """History (pipeline.examples rule, at most ``max_history`` items), purchases and the
        current session's search."""
        recent = self.recent_engagements(user_id, self.scan_limit)
        rows = [{"item_id": i, "timestamp": t} for i, _, t in reversed(recent)]
        history = history_before(rows, NOW, self.max_history)
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


def fingerprint(events: pd.DataFrame) -> str:
    """Content hash of an events frame (order-sensitive; the EVENT_COLUMNS only)."""
    hashed = pd.util.hash_pandas_object(events[list(spec.EVENT_COLUMNS)], index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()[:24]


def with_import_ids(events: pd.DataFrame, export: str) -> pd.DataFrame:
    """The events, each without an event_id given one from the export's fingerprint and its
    row (``import:<export>:<row>``): an import that died part-way (Redis adds in chunks,
    the import marker comes with the last) adds only what is missing when it runs again, so
    the outcome is that of one atomic import."""
    given = (events[spec.EVENT_ID] if spec.EVENT_ID in events
             else pd.Series([None] * len(events), index=events.index, dtype=object))
    out = events.copy()
    out[spec.EVENT_ID] = [g if isinstance(g, str) and g else f"import:{export}:{row}"
                          for g, row in zip(given, events.index)]
    return out


def event_rows(events: pd.DataFrame, received_at: int | None):
    """Tuples in EVENT_COLUMNS order + received_at + event_id; NaN values, absent or empty
    event ids become None."""
    value = events[spec.VALUE].to_numpy(dtype=np.float64)
    values = [None if np.isnan(v) else float(v) for v in value]
    if spec.EVENT_ID in events:
        ids = [i if isinstance(i, str) and i else None for i in events[spec.EVENT_ID]]
    else:
        ids = [None] * len(events)
    return zip(events[spec.USER_ID], events[spec.ITEM_ID], events[spec.EVENT_TYPE], values,
               events[spec.QUERY], events[spec.SESSION_ID],
               (int(t) for t in events[spec.TIMESTAMP]), [received_at] * len(events), ids)


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
    ("client event ids: at most one event per (user_id, event_id)", """
        ALTER TABLE events ADD COLUMN event_id TEXT;
        CREATE UNIQUE INDEX events_by_user_event_id ON events (user_id, event_id)
            WHERE event_id IS NOT NULL;"""),
    ("time indexes for the retention purge", """
        CREATE INDEX events_by_time ON events (timestamp);
        CREATE INDEX events_by_received ON events (received_at);"""),
    ("erasure log: keyed hashes of erased user ids, never the ids", """
        CREATE TABLE erasures (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_hash TEXT NOT NULL,
            erased_at INTEGER NOT NULL,
            events_deleted INTEGER NOT NULL);"""),
    ("impressions (what answers showed) and the engagements attributed to them", """
        CREATE TABLE impressions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            request_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            item_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            surface TEXT NOT NULL,
            experiment TEXT NOT NULL DEFAULT '',
            variant TEXT NOT NULL DEFAULT '',
            timestamp INTEGER NOT NULL);
        CREATE INDEX impressions_by_user_item ON impressions (user_id, item_id, timestamp);
        CREATE INDEX impressions_by_time ON impressions (timestamp);
        CREATE INDEX impressions_by_experiment ON impressions (experiment, variant, user_id);
        CREATE TABLE attributions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id TEXT NOT NULL,
            item_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            value REAL NOT NULL,
            revenue REAL NOT NULL,
            timestamp INTEGER NOT NULL,
            request_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            surface TEXT NOT NULL,
            experiment TEXT NOT NULL DEFAULT '',
            variant TEXT NOT NULL DEFAULT '',
            impression_timestamp INTEGER NOT NULL);
        CREATE INDEX attributions_by_experiment ON attributions (experiment, variant);
        CREATE INDEX attributions_by_user ON attributions (user_id);
        CREATE INDEX attributions_by_time ON attributions (timestamp);"""),
)
_IMPRESSION_COLUMNS = ("request_id, user_id, item_id, position, surface, experiment, variant, "
                       "timestamp")
_ATTRIBUTION_COLUMNS = ("user_id, item_id, event_type, value, revenue, timestamp, request_id, "
                        "position, surface, experiment, variant, impression_timestamp")
_ENGAGED = tuple(sorted(ENGAGEMENT_EVENTS))
_IN_ENGAGED = f"({','.join('?' * len(_ENGAGED))})"
_INSERT = ("INSERT INTO events (user_id, item_id, event_type, value, query, session_id, "
           "timestamp, received_at, event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


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

    ``synchronous``: ``"NORMAL"`` (default) makes a commit durable against a crash of the
    process (an acknowledged add survives SIGKILL) but the last commits before a power loss
    or OS crash may be lost; ``"FULL"`` syncs the WAL at every commit, durable against those
    too, for a slower add (docs/privacy.md, "Durability"). Deleted events are overwritten
    (``secure_delete``) and an erasure truncates the WAL, so erased rows do not linger in
    the files.
    """

    purge_chunk = 10_000      # events deleted per transaction (the API's writes interleave)

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000,
                 retention_days: int | None = None, erasure_key: str | bytes | None = None,
                 synchronous: str = "NORMAL", max_history: int = features.HISTORY_LENGTH):
        self.path = str(path)
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            raise EventStoreError("the SQLite event store needs a file (WAL does not apply "
                                  "to in-memory databases)")
        if str(synchronous).upper() not in SYNCHRONOUS:
            raise EventStoreError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, got "
                                  f"{synchronous!r}")
        self._configure(retention_days, erasure_key, max_history)
        self.synchronous = str(synchronous).upper()
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
        self._check_erasure_key()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=self._busy_ms / 1000)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA secure_delete = ON")   # deleted rows are zeroed, not left
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

    @contextmanager
    def _transaction(self):
        """A write transaction (BEGIN IMMEDIATE: takes the write lock first)."""
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params=()) -> list:
        with self._conn() as conn:
            return conn.execute(sql, params).fetchall()

    def _add(self, events, received_at, meta):
        rows = list(event_rows(events, received_at))
        new = np.ones(len(rows), dtype=bool)
        with self._transaction() as conn:
            seen: set[tuple[str, str]] = set()
            for i, row in enumerate(rows):          # under the write lock: no race
                if row[8] is None:
                    continue
                pair = (row[0], row[8])
                if pair in seen or conn.execute(
                        "SELECT 1 FROM events WHERE user_id = ? AND event_id = ?",
                        pair).fetchone():
                    new[i] = False
                seen.add(pair)
            conn.executemany(_INSERT, (row for row, fresh in zip(rows, new) if fresh))
            if meta is not None:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)
        return AddResult(new)

    def _purge_before(self, cutoff):
        deleted = 0
        while True:
            with self._transaction() as conn:
                n = conn.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE timestamp < ? "
                    "OR received_at < ? LIMIT ?)", (cutoff, cutoff, self.purge_chunk)).rowcount
            deleted += n
            if n < self.purge_chunk:
                break
        if deleted:
            self.checkpoint()
        return deleted

    def _erase(self, user_id, hashed, erased_at):
        with self._transaction() as conn:
            deleted = conn.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            conn.execute("DELETE FROM impressions WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM attributions WHERE user_id = ?", (user_id,))
            conn.execute("INSERT INTO erasures (user_hash, erased_at, events_deleted) "
                         "VALUES (?, ?, ?)", (hashed, erased_at, deleted))
        self.checkpoint()
        return deleted

    def checkpoint(self, attempts: int = 5) -> bool:
        """Copy the WAL into the database and truncate it, so deleted rows' old page images
        leave the WAL file; True when done (readers in the middle of a read can delay it:
        retried ``attempts`` times, else the next checkpoint overwrites them)."""
        for attempt in range(attempts):
            busy = self._query("PRAGMA wal_checkpoint(TRUNCATE)")[0][0]
            if not busy:
                return True
            time.sleep(0.02 * (attempt + 1))
        return False

    def erasure_records(self):
        return [Erasure(*row) for row in self._query(
            "SELECT user_hash, erased_at, events_deleted FROM erasures ORDER BY id")]

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

    def search_queries(self):
        return {(user, query) for user, query in self._query(
            "SELECT DISTINCT user_id, query FROM events WHERE event_type = ?",
            (spec.SEARCH,))}

    def events(self):
        rows = self._query("SELECT user_id, item_id, event_type, value, query, session_id, "
                           "timestamp FROM events ORDER BY timestamp, id")
        return events_frame(rows)

    def add_impressions(self, impressions):
        with self._transaction() as conn:
            conn.executemany(f"INSERT INTO impressions ({_IMPRESSION_COLUMNS}) VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?)",
                             [astuple(i) for i in impressions])

    def latest_impression(self, user_id, item_id, since, until):
        rows = self._query(f"SELECT {_IMPRESSION_COLUMNS} FROM impressions WHERE user_id = ? "
                           "AND item_id = ? AND timestamp BETWEEN ? AND ? "
                           "ORDER BY timestamp DESC, id DESC LIMIT 1",
                           (user_id, item_id, since, until))
        return Impression(*rows[0]) if rows else None

    def add_attributions(self, attributions):
        with self._transaction() as conn:
            conn.executemany(f"INSERT INTO attributions ({_ATTRIBUTION_COLUMNS}) VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             [astuple(a) for a in attributions])

    def experiment_impressions(self, experiment):
        return [tuple(r) for r in self._query(
            "SELECT variant, user_id, COUNT(*) FROM impressions WHERE experiment = ? "
            "GROUP BY variant, user_id", (experiment,))]

    def experiment_attributions(self, experiment):
        return [Attribution(*r) for r in self._query(
            f"SELECT {_ATTRIBUTION_COLUMNS} FROM attributions WHERE experiment = ? "
            "ORDER BY id", (experiment,))]

    def impressions(self):
        return [Impression(*r) for r in self._query(
            f"SELECT {_IMPRESSION_COLUMNS} FROM impressions ORDER BY timestamp, id")]

    def purge_impressions(self, cutoff):
        deleted = 0
        for table in ("impressions", "attributions"):
            while True:
                with self._transaction() as conn:
                    n = conn.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "
                                     "WHERE timestamp < ? LIMIT ?)",
                                     (cutoff, self.purge_chunk)).rowcount
                if table == "impressions":
                    deleted += n
                if n < self.purge_chunk:
                    break
        return deleted

    def get_meta(self, key):
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key, value):
        self._query("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _setdefault_meta(self, key, value):
        with self._transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
            return conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

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


def open_event_store(url: str, retention_days: int | None = None,
                     erasure_key: str | bytes | None = None, synchronous: str = "NORMAL",
                     **options) -> EventStore:
    """``sqlite:///relative/path``, ``sqlite:////absolute/path`` or ``redis://host:port/db``.

    ``retention_days`` and ``erasure_key``: see EventStore; ``synchronous``: SQLite's
    durability (see SqliteEventStore; Redis's is its own persistence configuration, so it
    is ignored there); ``options`` go to the store's constructor (e.g. ``max_per_user``
    for Redis).
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not path:
            raise EventStoreError("sqlite URL needs a file path: sqlite:///var/events.sqlite3")
        return SqliteEventStore(path, retention_days=retention_days, erasure_key=erasure_key,
                                synchronous=synchronous, **options)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from serving.events.store_redis import RedisEventStore
        return RedisEventStore.from_url(url, retention_days=retention_days,
                                        erasure_key=erasure_key, **options)
    raise EventStoreError(f"unsupported event store URL {url!r}: use sqlite:///PATH or "
                          "redis://HOST:PORT/DB")


def events_frame(rows) -> pd.DataFrame:
    """The contract's events frame of (user_id, item_id, event_type, value, query,
    session_id, timestamp) rows."""
    frame = pd.DataFrame(list(rows), columns=list(spec.EVENT_COLUMNS))
    frame[spec.VALUE] = pd.to_numeric(frame[spec.VALUE], errors="coerce").astype(float)
    frame[spec.TIMESTAMP] = frame[spec.TIMESTAMP].astype("int64")
    return frame


def now_seconds() -> int:
    """Current time in epoch seconds (the default timestamp of posted events)."""
    return int(time.time())
