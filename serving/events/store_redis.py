"""Redis event store: the same reads as the SQLite store, for several API replicas.

Keys (``prefix`` defaults to ``shoprec:``):

* ``events`` stream: the full event log (XADD, capped at ``max_log`` entries, approximately);
* ``seq``: event counter; members carry it zero-padded, so equal timestamps keep their order;
* ``user:<id>:engaged`` sorted set, score = timestamp, member ``<seq>|<type>|<item_id>``,
  trimmed to the newest ``max_per_user``;
* ``user:<id>:purchased`` set; ``user:<id>:searches`` sorted set (``<seq>|<query>``, newest
  ``max_searches``); ``last_ts`` sorted set user -> latest event time (ZADD GT);
* ``popularity`` sorted set item -> engagement count; ``meta`` hash; ``schema_version``.
"""
from __future__ import annotations

import pandas as pd
import redis

from pipeline.contract import spec
from pipeline.examples import ENGAGEMENT_EVENTS
from serving.events.store import EventStore, EventStoreError, event_rows

SCHEMA_VERSION = 1
_SEQ_DIGITS = 15
_CHUNK = 1000                  # events per pipeline round trip


class RedisEventStore(EventStore):
    """Events in Redis (redis-py client, decoded responses)."""

    def __init__(self, client: redis.Redis, prefix: str = "shoprec:", max_per_user: int = 1000,
                 max_searches: int = 20, max_log: int = 10_000_000):
        self.r, self.p = client, prefix
        self.max_per_user, self.max_searches, self.max_log = max_per_user, max_searches, max_log
        self.ping()
        version = self.r.get(self.p + "schema_version")
        if version is None:
            self.r.set(self.p + "schema_version", SCHEMA_VERSION, nx=True)
        elif int(version) > SCHEMA_VERSION:
            raise EventStoreError(f"redis event store schema version {version} is newer than "
                                  f"this shoprec knows ({SCHEMA_VERSION})")
        self.schema_version = SCHEMA_VERSION

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "RedisEventStore":
        """Connect with a redis:// URL (socket timeouts of 2 s)."""
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0,
                                      socket_connect_timeout=2.0)
        return cls(client, **kwargs)

    def _user(self, user_id: str, what: str) -> str:
        return f"{self.p}user:{user_id}:{what}"

    def add(self, events: pd.DataFrame, received_at: int | None = None) -> int:
        rows = list(event_rows(events, received_at))
        try:
            for start in range(0, len(rows), _CHUNK):
                self._add_chunk(rows[start:start + _CHUNK])
        except redis.RedisError as e:
            raise EventStoreError(f"redis: {e}") from None
        return len(rows)

    def _add_chunk(self, rows) -> None:
        last = self.r.incrby(self.p + "seq", len(rows))
        pipe = self.r.pipeline(transaction=True)
        trim = set()
        for offset, row in enumerate(rows):
            user, item, etype, value, query, session, ts, received = row
            seq = f"{last - len(rows) + offset + 1:0{_SEQ_DIGITS}d}"
            record = {"user_id": user, "item_id": item, "event_type": etype,
                      "value": "" if value is None else repr(value), "query": query,
                      "session_id": session, "timestamp": ts,
                      "received_at": "" if received is None else received}
            pipe.xadd(self.p + "events", record, maxlen=self.max_log, approximate=True)
            pipe.zadd(self.p + "last_ts", {user: ts}, gt=True)
            if etype in ENGAGEMENT_EVENTS:
                pipe.zadd(self._user(user, "engaged"), {f"{seq}|{etype}|{item}": ts})
                pipe.zincrby(self.p + "popularity", 1, item)
                trim.add(user)
            if etype == spec.PURCHASE:
                pipe.sadd(self._user(user, "purchased"), item)
            if etype == spec.SEARCH:
                key = self._user(user, "searches")
                pipe.zadd(key, {f"{seq}|{query}": ts})
                pipe.zremrangebyrank(key, 0, -self.max_searches - 1)
        for user in trim:
            pipe.zremrangebyrank(self._user(user, "engaged"), 0, -self.max_per_user - 1)
        pipe.execute()

    def recent_engagements(self, user_id, limit):
        members = self._call(self.r.zrevrange, self._user(user_id, "engaged"), 0, limit - 1,
                             withscores=True)
        out = []
        for member, score in members:
            _, etype, item = member.split("|", 2)
            out.append((item, etype, int(score)))
        return out

    def purchased_items(self, user_id):
        return set(self._call(self.r.smembers, self._user(user_id, "purchased")))

    def last_search(self, user_id):
        found = self._call(self.r.zrevrange, self._user(user_id, "searches"), 0, 0,
                           withscores=True)
        if not found:
            return None
        member, score = found[0]
        return member.split("|", 1)[1], int(score)

    def last_timestamp(self, user_id):
        score = self._call(self.r.zscore, self.p + "last_ts", user_id)
        return None if score is None else int(score)

    def engagement_counts(self):
        pairs = self._call(self.r.zrange, self.p + "popularity", 0, -1, withscores=True)
        return {item: int(score) for item, score in pairs}

    def count(self):
        return int(self._call(self.r.get, self.p + "seq") or 0)

    def get_meta(self, key):
        return self._call(self.r.hget, self.p + "meta", key)

    def set_meta(self, key, value):
        self._call(self.r.hset, self.p + "meta", key, value)

    def ping(self):
        self._call(self.r.ping)

    def close(self):
        self.r.close()

    @staticmethod
    def _call(method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except redis.RedisError as e:
            raise EventStoreError(f"redis: {e}") from None
