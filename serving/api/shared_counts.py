"""Popularity and search-suggestion counts shared by API replicas on one Redis event store.

Each API process keeps the counts it answers from in memory (``Catalog.popularity``,
``QuerySuggestions``) and adds the events *it* receives at once. With a SQLite store there
is one process and nothing else to do. With Redis several replicas write the same store,
and each would only count its own events: replicas drift, and a shopper sees a different
"popular" list depending on which replica answers. The store already keeps the shared
truth: the add script increments ``popularity`` (a sorted set item -> engagement count)
atomically with every stored engagement, and keeps every user's searches.

``SharedCounts`` makes each replica follow that truth: a background thread asks the store
every ``poll_s`` (default 0.5 s) for a *change stamp* — one pipelined round trip reading
``seq`` (incremented by every stored event, whichever replica stored it), ``count`` (also
changed by purges) and the length of ``erasure_log`` (erasures) — and only when the stamp
moved (or this replica counted events itself since the last read, see ``changed``) rereads
the popularity sorted set (ZRANGE, one call, O(items)) and installs it. Search suggestions
are rebuilt from the store (``search_queries``: one read per user with searches, heavier)
when the stamp moved and at most every ``suggestions_refresh_s`` (default 30 s).

Why a short poll and not a read per request: requests never wait on it (no Redis call on
the request path, and a slow Redis does not slow answers), the cost is one tiny read per
``poll_s`` per replica when nothing happens, and the full reread happens at most once per
poll however many events arrive. The price is staleness: another replica's events reach
this one's popularity within ``poll_s`` (plus the reread); the replica that received them
counts them at once, as before, and a user's own history is read from the store with every
request, so it is never stale. A failed poll keeps the counts it has and is retried.
"""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("serving.api.shared_counts")


def is_shared(store) -> bool:
    """Whether other processes may write ``store`` (the Redis store)."""
    try:
        from serving.events.store_redis import RedisEventStore
    except ImportError:                    # no redis client installed: no Redis store either
        return False
    return isinstance(store, RedisEventStore)


class SharedCounts:
    """Keeps a replica's popularity and suggestions in step with a shared (Redis) store.

    ``catalog`` is a callable returning the catalog in service (it is swapped when the
    catalog grows); ``suggestions`` the replica's ``QuerySuggestions``. With a store that
    is not shared, ``start`` does nothing and the process counts alone, as before.
    """

    def __init__(self, store, catalog, suggestions, poll_s: float = 0.5,
                 suggestions_refresh_s: float = 30.0):
        if poll_s <= 0 or suggestions_refresh_s <= 0:
            raise ValueError("poll_s and suggestions_refresh_s must be > 0")
        self.store, self._catalog, self.suggestions = store, catalog, suggestions
        self.poll_s, self.suggestions_refresh_s = poll_s, suggestions_refresh_s
        self.enabled = is_shared(store)
        self.refreshes = 0                     # popularity rereads (tests, logs)
        self._stamp: tuple | None = None
        self._local = False                    # this replica counted events since a reread
        self._suggested_at = time.monotonic()  # Services built the suggestions just now
        self._suggestions_stale = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def stamp(self) -> tuple:
        """The store's change stamp (seq, count, erasures): moves with every add, purge and
        erasure of any replica."""
        s = self.store
        pipe = s.r.pipeline(transaction=False)
        pipe.get(s.p + "seq")
        pipe.get(s.p + "count")
        pipe.llen(s.p + "erasure_log")
        seq, count, erasures = pipe.execute()
        return int(seq or 0), int(count or 0), int(erasures or 0)

    def changed(self) -> None:
        """This replica counted new events in memory: reread at the next poll even when the
        stamp read before this replica's add already included them (no double count
        survives a poll)."""
        self._local = True

    def refresh(self, force: bool = False) -> bool:
        """One poll: reread the popularity if the store changed (or ``force``), and the
        suggestions when they are stale and ``suggestions_refresh_s`` has passed. Returns
        whether the popularity was reread."""
        with self._lock:
            stamp = self.stamp()
            local, self._local = self._local, False
            reread = force or local or stamp != self._stamp
            if reread:
                self._suggestions_stale |= force or stamp != self._stamp
                self._stamp = stamp
                self._catalog().set_popularity(self.store.engagement_counts())
                self.refreshes += 1
            now = time.monotonic()
            if self._suggestions_stale and (
                    force or now - self._suggested_at >= self.suggestions_refresh_s):
                self.suggestions.reset(self.store.search_queries())
                self._suggested_at, self._suggestions_stale = now, False
            return reread

    def start(self) -> "SharedCounts":
        if self.enabled and self._thread is None:
            self._stamp = self.stamp()       # Services read the counts at this state
            self._thread = threading.Thread(target=self._loop, name="shared-counts",
                                            daemon=True)
            self._thread.start()
            log.info("popularity follows the shared event store (poll every %.2f s, "
                     "suggestions rebuilt at most every %.0f s)", self.poll_s,
                     self.suggestions_refresh_s)
        return self

    def _loop(self) -> None:
        failing = False
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
                failing = False
            except Exception:  # pylint: disable=broad-except  (kept counts; retried)
                if not failing:
                    log.exception("reading the shared counts failed; keeping the current "
                                  "ones and retrying every %.2f s", self.poll_s)
                failing = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
