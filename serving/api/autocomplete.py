"""Query suggestions from the shop's own search log (``GET /v1/autocomplete``).

A suggestion is a past search query (lower-cased, spaces collapsed) that starts with what
the shopper typed, ranked by how many distinct users searched it (ties: alphabetical). Only
queries at least ``min_users`` distinct users searched are ever suggested: one shopper's
query ("gift for anna's divorce") never reaches another's screen, so the log can be shown
without exposing anybody (k-anonymity over user ids, which the API pseudonymises).

The index lives in the API process: built from the event store at start-up
(``EventStore.search_queries``), updated as search events arrive, rebuilt from the store
after an erasure or a retention purge (as popularity is), so an erased user's searches stop
counting at once. Each query keeps the set of its users until it is suggestible; after that
only a count, so memory follows the number of distinct queries, not of searches.
"""
from __future__ import annotations

import bisect
import heapq
import threading


def normalise(query: str) -> str:
    """The form queries are counted and matched in: lower case, single spaces, trimmed."""
    return " ".join(str(query).lower().split())


class QuerySuggestions:
    """Distinct-user counts of past queries and prefix look-ups over them (thread-safe)."""

    def __init__(self, min_users: int = 5, max_queries: int = 1_000_000):
        if min_users < 1 or max_queries < 1:
            raise ValueError(f"min_users and max_queries must be >= 1, got {min_users}, "
                             f"{max_queries}")
        self.min_users, self.max_queries = min_users, max_queries
        self._pending: dict[str, set[str]] = {}   # query -> its users, below min_users
        self._counts: dict[str, int] = {}         # suggestible query -> distinct users
        self._sorted: list[str] | None = []       # suggestible queries, sorted (lazily)
        self._lock = threading.Lock()

    def reset(self, pairs) -> None:
        """Rebuild from distinct (user, query) pairs (the event store's)."""
        users: dict[str, set[str]] = {}
        for user, query in pairs:
            query = normalise(query)
            if query:
                users.setdefault(query, set()).add(user)
        counts = {q: len(u) for q, u in users.items() if len(u) >= self.min_users}
        pending = {q: u for q, u in users.items() if len(u) < self.min_users}
        with self._lock:
            self._counts, self._pending, self._sorted = counts, pending, None

    def add(self, user: str, query: str) -> None:
        """Count one search (a user's repeated query counts once until it is suggestible)."""
        query = normalise(query)
        if not query:
            return
        with self._lock:
            if query in self._counts:
                self._counts[query] += 1
                return
            users = self._pending.get(query)
            if users is None:
                if len(self._pending) + len(self._counts) >= self.max_queries:
                    return                  # full: rare new queries wait for a rebuild
                users = self._pending[query] = set()
            users.add(user)
            if len(users) >= self.min_users:
                self._counts[query] = len(self._pending.pop(query))
                self._sorted = None

    def suggest(self, prefix: str, k: int) -> list[tuple[str, int]]:
        """Up to k (query, distinct users) starting with ``prefix``, most searched first."""
        prefix = normalise(prefix)
        with self._lock:
            if self._sorted is None:
                self._sorted = sorted(self._counts)
            ordered, counts = self._sorted, self._counts
            start = bisect.bisect_left(ordered, prefix)
            end = bisect.bisect_left(ordered, prefix + "\U0010ffff")
            return heapq.nsmallest(k, ((q, counts[q]) for q in ordered[start:end]),
                                   key=lambda pair: (-pair[1], pair[0]))

    def __len__(self) -> int:
        """Suggestible queries."""
        return len(self._counts)
