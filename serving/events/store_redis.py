"""Redis event store: the same reads as the SQLite store, for several API replicas.

Keys (``prefix`` defaults to ``shoprec:``):

* ``events`` stream: the full event log (XADD, capped at ``max_log`` entries, approximately);
* ``seq``: event counter; members carry it zero-padded, so equal timestamps keep their order;
  ``count``: events stored (minus purged and erased ones);
* ``user:<id>:engaged`` sorted set, score = timestamp, member ``<seq>|<type>|<item_id>``,
  trimmed to the newest ``max_per_user``;
* ``user:<id>:purchased`` set; ``user:<id>:searches`` sorted set (``<seq>|<query>``, newest
  ``max_searches``); ``last_ts`` sorted set user -> latest event time (ZADD GT);
* ``popularity`` sorted set item -> engagement count; ``meta`` hash; ``schema_version``;
* retention and erasure (schema 2): ``user:<id>:log`` sorted set, one member per stored
  event ``<seq>|<stream id>|<timestamp>|<type>|<item_id>`` scored by its *expiry basis*
  (the earlier of its timestamp and the time it was received); ``user:<id>:ids`` sorted set
  event_id -> expiry basis (the duplicate check); ``user:<id>:purchases`` sorted set
  item -> latest purchase's basis; ``expiry`` sorted set user -> earliest basis of their
  events (what a purge has to visit); ``erasure_log`` list, one
  ``<user hash>|<erased_at>|<events deleted>`` per erasure (serving/events/erasure.py).
* impressions and attributions (serving/events/impressions.py): ``user:<id>:impressions``
  and ``user:<id>:attributed`` sorted sets scored by time, members ``<seq>|<JSON row>``,
  trimmed to the newest ``max_impressions_per_user``; ``impression_users`` sorted set
  user -> earliest impression time (what an impression purge visits); ``experiment:<name>``
  set of the users shown items in the experiment (the report's population).

Adding a chunk of events, purging one user and erasing one user are Lua scripts: each runs
atomically, so a retried batch can never be half-counted as duplicates and an erasure never
races with an add of the same user. Schema 1 stores (before event ids) are migrated at
open: the per-user logs are rebuilt from the stream (docs/privacy.md). Stop every schema-1
replica before starting this version: events an old replica adds afterwards are in no
per-user log, so a purge or an erasure would miss their stream entries.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import astuple

import numpy as np
import redis

from pipeline.contract import spec
from pipeline.examples import ENGAGEMENT_EVENTS
from serving.events.erasure import Erasure
from serving.events.impressions import Attribution, Impression
from serving.events.store import AddResult, EventStore, EventStoreError, event_rows, events_frame
from trainer import features

SCHEMA_VERSION = 2
_SEQ_DIGITS = 15
_CHUNK = 1000                  # events per script call
_PURGE_USERS = 200             # users fetched per round of a purge
_MIGRATION_WAIT_S = 120.0

_LUA_ENGAGED = "local ENGAGED = {" + ", ".join(
    f"[{t!r}] = true" for t in sorted(ENGAGEMENT_EVENTS)) + "}\n"
_FIELDS = 10                   # ARGV entries per event in the add script

# ARGV: prefix, max_log, max_per_user, max_searches, meta key ('' = none), meta value, then
# per event: user, item, type, value, query, session, timestamp, received, event_id, basis.
# Returns {stored, duplicates, flags} with flags a string of '1' (stored) / '0' (duplicate).
_ADD = _LUA_ENGAGED + f"""
local p, max_log = ARGV[1], ARGV[2]
local max_per_user, max_searches = tonumber(ARGV[3]), tonumber(ARGV[4])
local stored, dups, flags, trim = 0, 0, {{}}, {{}}
for b = 6, #ARGV - 1, {_FIELDS} do
  local user, item, etype, value = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local query, session, ts, received = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7], ARGV[b + 8]
  local eid, basis = ARGV[b + 9], ARGV[b + 10]
  local u = p .. 'user:' .. user .. ':'
  local fresh = true
  if eid ~= '' then
    fresh = redis.call('ZADD', u .. 'ids', 'NX', basis, eid) == 1
  end
  if fresh then
    local seq = string.format('%0{_SEQ_DIGITS}d', redis.call('INCR', p .. 'seq'))
    local sid = redis.call('XADD', p .. 'events', 'MAXLEN', '~', max_log, '*',
      'user_id', user, 'item_id', item, 'event_type', etype, 'value', value, 'query', query,
      'session_id', session, 'timestamp', ts, 'received_at', received, 'event_id', eid)
    redis.call('ZADD', u .. 'log', basis, seq .. '|' .. sid .. '|' .. ts .. '|' .. etype ..
               '|' .. item)
    redis.call('ZADD', p .. 'last_ts', 'GT', ts, user)
    redis.call('ZADD', p .. 'expiry', 'LT', basis, user)
    if ENGAGED[etype] then
      redis.call('ZADD', u .. 'engaged', ts, seq .. '|' .. etype .. '|' .. item)
      redis.call('ZINCRBY', p .. 'popularity', 1, item)
      trim[user] = true
    end
    if etype == {spec.PURCHASE!r} then
      redis.call('SADD', u .. 'purchased', item)
      redis.call('ZADD', u .. 'purchases', 'GT', basis, item)
    elseif etype == {spec.SEARCH!r} then
      redis.call('ZADD', u .. 'searches', ts, seq .. '|' .. query)
      redis.call('ZREMRANGEBYRANK', u .. 'searches', 0, -max_searches - 1)
    end
    stored = stored + 1
    flags[#flags + 1] = '1'
  else
    dups = dups + 1
    flags[#flags + 1] = '0'
  end
end
for user, _ in pairs(trim) do
  redis.call('ZREMRANGEBYRANK', p .. 'user:' .. user .. ':engaged', 0, -max_per_user - 1)
end
if stored > 0 then redis.call('INCRBY', p .. 'count', stored) end
if ARGV[5] ~= '' then redis.call('HSET', p .. 'meta', ARGV[5], ARGV[6]) end
return {{stored, dups, table.concat(flags)}}
"""

_PARSE = r"""
local function parse(m)
  return string.match(m, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
end
local function forget(p, m)     -- a logged event leaves the stream and the popularity
  local seq, sid, ts, etype, item = parse(m)
  redis.call('XDEL', p .. 'events', sid)
  if ENGAGED[etype] then redis.call('ZINCRBY', p .. 'popularity', -1, item) end
  return seq, etype, item
end
"""

# ARGV: prefix, user, cutoff. Deletes the user's events whose basis < cutoff; returns how many.
_PURGE_USER = _LUA_ENGAGED + _PARSE + """
local p, user, upper = ARGV[1], ARGV[2], '(' .. ARGV[3]
local u = p .. 'user:' .. user .. ':'
local expired = redis.call('ZRANGEBYSCORE', u .. 'log', '-inf', upper)
local seqs = {}
for _, m in ipairs(expired) do
  local seq, etype, item = forget(p, m)
  if seq ~= '' then
    seqs[seq] = true
    if ENGAGED[etype] then
      redis.call('ZREM', u .. 'engaged', seq .. '|' .. etype .. '|' .. item)
    end
  end
end
redis.call('ZREMRANGEBYSCORE', u .. 'log', '-inf', upper)
redis.call('ZREMRANGEBYSCORE', u .. 'ids', '-inf', upper)
for _, item in ipairs(redis.call('ZRANGEBYSCORE', u .. 'purchases', '-inf', upper)) do
  redis.call('SREM', u .. 'purchased', item)
end
redis.call('ZREMRANGEBYSCORE', u .. 'purchases', '-inf', upper)
for _, m in ipairs(redis.call('ZRANGE', u .. 'searches', 0, -1)) do
  if seqs[string.match(m, '^([^|]*)|')] then redis.call('ZREM', u .. 'searches', m) end
end
-- dated before the cutoff (also catches entries the log does not know)
redis.call('ZREMRANGEBYSCORE', u .. 'engaged', '-inf', upper)
redis.call('ZREMRANGEBYSCORE', u .. 'searches', '-inf', upper)
if #expired > 0 then redis.call('DECRBY', p .. 'count', #expired) end
local first = redis.call('ZRANGE', u .. 'log', 0, 0, 'WITHSCORES')
if #first == 0 then
  redis.call('DEL', u .. 'engaged', u .. 'searches', u .. 'purchased', u .. 'purchases',
             u .. 'log', u .. 'ids')
  redis.call('ZREM', p .. 'last_ts', user)
  redis.call('ZREM', p .. 'expiry', user)
else
  redis.call('ZADD', p .. 'expiry', first[2], user)
  if #expired > 0 then
    local latest = nil
    for _, m in ipairs(redis.call('ZRANGE', u .. 'log', 0, -1)) do
      local _, _, ts = parse(m)
      ts = tonumber(ts)
      if latest == nil or ts > latest then latest = ts end
    end
    redis.call('ZADD', p .. 'last_ts', latest, user)
  end
end
redis.call('ZREMRANGEBYSCORE', p .. 'popularity', '-inf', 0)
return #expired
"""

# ARGV: prefix, user, user hash, erased_at. Deletes all the user's keys, records the erasure;
# returns how many events were deleted.
_ERASE = _LUA_ENGAGED + _PARSE + """
local p, user, hashed, erased_at = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local u = p .. 'user:' .. user .. ':'
local logged = redis.call('ZRANGE', u .. 'log', 0, -1)
for _, m in ipairs(logged) do forget(p, m) end
redis.call('DEL', u .. 'engaged', u .. 'searches', u .. 'purchased', u .. 'purchases',
           u .. 'log', u .. 'ids')
redis.call('ZREM', p .. 'last_ts', user)
redis.call('ZREM', p .. 'expiry', user)
if #logged > 0 then redis.call('DECRBY', p .. 'count', #logged) end
redis.call('ZREMRANGEBYSCORE', p .. 'popularity', '-inf', 0)
redis.call('RPUSH', p .. 'erasure_log', hashed .. '|' .. erased_at .. '|' .. #logged)
return #logged
"""


def expiry_basis(timestamp: int, received_at: int | None) -> int:
    """When an event starts to age for the retention: the earlier of when it happened and
    when the API received it (a client's far-future timestamp cannot keep it longer)."""
    return timestamp if received_at is None else min(timestamp, received_at)


class RedisEventStore(EventStore):
    """Events in Redis (redis-py client, decoded responses)."""

    def __init__(self, client: redis.Redis, prefix: str = "shoprec:", max_per_user: int = 1000,
                 max_searches: int = 20, max_log: int = 10_000_000,
                 retention_days: int | None = None, erasure_key: str | bytes | None = None,
                 max_history: int = features.HISTORY_LENGTH,
                 max_impressions_per_user: int = 5000):
        self.r, self.p = client, prefix
        self.max_impressions_per_user = max_impressions_per_user
        self.max_per_user, self.max_searches, self.max_log = max_per_user, max_searches, max_log
        self._configure(retention_days, erasure_key, max_history)
        self.ping()
        self._scripts = {name: self.r.register_script(code) for name, code in
                         (("add", _ADD), ("purge", _PURGE_USER), ("erase", _ERASE))}
        self._call(self._open_schema)
        self.schema_version = SCHEMA_VERSION
        self._check_erasure_key()

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "RedisEventStore":
        """Connect with a redis:// URL (socket timeouts of 2 s)."""
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0,
                                      socket_connect_timeout=2.0)
        return cls(client, **kwargs)

    def _user(self, user_id: str, what: str) -> str:
        return f"{self.p}user:{user_id}:{what}"

    # ---- schema ----

    def _open_schema(self) -> None:
        version_key = self.p + "schema_version"
        version = self.r.get(version_key)
        if version is None and self.r.set(version_key, SCHEMA_VERSION, nx=True):
            return                                              # a new store
        version = int(self.r.get(version_key))
        if version > SCHEMA_VERSION:
            raise EventStoreError(f"redis event store schema version {version} is newer than "
                                  f"this shoprec knows ({SCHEMA_VERSION})")
        if version < SCHEMA_VERSION:
            self._migrate_from_1()

    def _migrate_from_1(self) -> None:
        """Schema 1 -> 2: per-user logs, purchase times, expiry and count rebuilt from the
        stream (events the stream already trimmed stay in the per-user sets, unlogged: a
        purge removes them by timestamp, an erasure with the user's keys). One replica
        migrates, the others wait for it."""
        lock, token = self.p + "migrating", uuid.uuid4().hex
        if not self.r.set(lock, token, nx=True, ex=int(_MIGRATION_WAIT_S)):
            deadline = time.monotonic() + _MIGRATION_WAIT_S
            while time.monotonic() < deadline:
                if int(self.r.get(self.p + "schema_version") or 0) >= SCHEMA_VERSION:
                    return
                time.sleep(0.2)
            raise EventStoreError("redis event store: another replica's schema migration "
                                  f"did not finish within {_MIGRATION_WAIT_S:.0f} s")
        try:
            purchases: dict[str, dict[str, int]] = {}
            logged, start = 0, "-"
            while True:
                entries = self.r.xrange(self.p + "events", min=start, count=_CHUNK)
                if not entries:
                    break
                pipe = self.r.pipeline(transaction=False)
                for sid, e in entries:
                    ts = int(e["timestamp"])
                    received = int(e["received_at"]) if e.get("received_at") else None
                    basis = expiry_basis(ts, received)
                    user, etype, item = e["user_id"], e["event_type"], e["item_id"]
                    pipe.zadd(self._user(user, "log"),
                              {f"|{sid}|{ts}|{etype}|{item}": basis})   # no seq: unknown
                    pipe.zadd(self.p + "expiry", {user: basis}, lt=True)
                    if etype == spec.PURCHASE:
                        mine = purchases.setdefault(user, {})
                        mine[item] = max(basis, mine.get(item, basis))
                pipe.execute()
                logged += len(entries)
                start = "(" + entries[-1][0]
            for user, items in purchases.items():
                self.r.zadd(self._user(user, "purchases"), items, gt=True)
            for key in self.r.scan_iter(match=_glob_escape(self.p + "user:") + "*:purchased",
                                        count=1000):
                user = key[len(self.p + "user:"):-len(":purchased")]
                unlogged = self.r.smembers(key) - set(purchases.get(user, {}))
                if unlogged:        # older than the stream: age with the user's activity
                    latest = self.r.zscore(self.p + "last_ts", user) or 0
                    self.r.zadd(self._user(user, "purchases"),
                                {item: int(latest) for item in unlogged}, gt=True)
            self.r.set(self.p + "count", logged)
            self.r.set(self.p + "schema_version", SCHEMA_VERSION)
        finally:
            if self.r.get(lock) == token:
                self.r.delete(lock)

    # ---- writing ----

    def _add(self, events, received_at, meta):
        rows = list(event_rows(events, received_at))
        flags = []
        try:
            for start in range(0, len(rows), _CHUNK):
                last = start + _CHUNK >= len(rows)
                flags.append(self._add_chunk(rows[start:start + _CHUNK],
                                             meta if last else None))
            if not rows and meta is not None:
                self.set_meta(*meta)
        except redis.RedisError as e:
            raise EventStoreError(f"redis: {e}") from None
        new = np.frombuffer("".join(flags).encode("ascii"), dtype=np.uint8) == ord("1")
        return AddResult(new)

    def _add_chunk(self, rows, meta) -> str:
        args = [self.p, self.max_log, self.max_per_user, self.max_searches,
                *(meta if meta is not None else ("", ""))]
        for user, item, etype, value, query, session, ts, received, event_id in rows:
            args += [user, item, etype, "" if value is None else repr(value), query, session,
                     ts, "" if received is None else received, event_id or "",
                     expiry_basis(ts, received)]
        _, _, flags = self._scripts["add"](keys=[], args=args)
        return flags

    def _purge_before(self, cutoff):
        deleted, visited = 0, set()
        try:
            while True:
                users = self.r.zrangebyscore(self.p + "expiry", "-inf", f"({cutoff}",
                                             start=0, num=_PURGE_USERS)
                if not users or visited.issuperset(users):
                    return deleted
                visited.update(users)
                for user in users:
                    deleted += int(self._scripts["purge"](keys=[], args=[self.p, user,
                                                                           cutoff]))
        except redis.RedisError as e:
            raise EventStoreError(f"redis: {e}") from None

    def _erase(self, user_id, hashed, erased_at):
        deleted = int(self._call(self._scripts["erase"], keys=[],
                                 args=[self.p, user_id, hashed, erased_at]))
        self._forget_impressions(user_id)
        return deleted

    def _forget_impressions(self, user_id: str) -> None:
        """Delete every impression and attribution of the user."""
        shown = self._impression_rows(user_id, "-inf", "+inf")
        pipe = self.r.pipeline(transaction=True)
        for experiment in {i.experiment for i in shown if i.experiment}:
            pipe.srem(self.p + f"experiment:{experiment}", user_id)
        pipe.delete(self._user(user_id, "impressions"), self._user(user_id, "attributed"))
        pipe.zrem(self.p + "impression_users", user_id)
        self._call(pipe.execute)

    def erasure_records(self):
        records = []
        for line in self._call(self.r.lrange, self.p + "erasure_log", 0, -1):
            hashed, erased_at, deleted = line.split("|")
            records.append(Erasure(hashed, int(erased_at), int(deleted)))
        return records

    # ---- reading ----

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

    def search_queries(self):
        users = [user for user, _ in self._call(self.r.zrange, self.p + "last_ts", 0, -1,
                                                 withscores=True)]
        found = set()
        for start in range(0, len(users), 500):
            batch = users[start:start + 500]
            pipe = self.r.pipeline(transaction=False)
            for user in batch:
                pipe.zrange(self._user(user, "searches"), 0, -1)
            for user, members in zip(batch, self._call(pipe.execute)):
                found.update((user, member.split("|", 1)[1]) for member in members)
        return found

    def count(self):
        return int(self._call(self.r.get, self.p + "count") or 0)

    def get_meta(self, key):
        return self._call(self.r.hget, self.p + "meta", key)

    def set_meta(self, key, value):
        self._call(self.r.hset, self.p + "meta", key, value)

    def _setdefault_meta(self, key, value):
        self._call(self.r.hsetnx, self.p + "meta", key, value)
        return self.get_meta(key)

    def events(self):
        rows, start = [], "-"
        while True:
            entries = self._call(self.r.xrange, self.p + "events", min=start, count=_CHUNK)
            if not entries:
                break
            for _, e in entries:
                value = e.get("value", "")
                rows.append((e["user_id"], e["item_id"], e["event_type"],
                             float(value) if value else None, e.get("query", ""),
                             e.get("session_id", ""), int(e["timestamp"])))
            start = "(" + entries[-1][0]
        frame = events_frame(rows)
        return frame.sort_values(spec.TIMESTAMP, kind="stable").reset_index(drop=True)

    # ---- impressions and attributions ----

    def _add_rows(self, what: str, rows: list) -> None:
        if not rows:
            return
        first = int(self._call(self.r.incrby, self.p + "impression_seq", len(rows)))
        pipe = self.r.pipeline(transaction=True)
        users = {}
        for n, row in enumerate(rows, start=first - len(rows) + 1):
            member = f"{n:0{_SEQ_DIGITS}d}|" + json.dumps(astuple(row))
            pipe.zadd(self._user(row.user_id, what), {member: row.timestamp})
            users[row.user_id] = min(row.timestamp, users.get(row.user_id, row.timestamp))
            if what == "impressions" and row.experiment:
                pipe.sadd(self.p + f"experiment:{row.experiment}", row.user_id)
        for user, earliest in users.items():
            pipe.zremrangebyrank(self._user(user, what), 0, -self.max_impressions_per_user - 1)
            pipe.zadd(self.p + "impression_users", {user: earliest}, lt=True)
        self._call(pipe.execute)

    def _rows(self, user_id: str, what: str, low, high) -> list:
        members = self._call(self.r.zrangebyscore, self._user(user_id, what), low, high)
        return [json.loads(m.split("|", 1)[1]) for m in members]

    def _all_rows(self, users: list[str], what: str):
        """(user, rows) of every user's ``what`` set, read in pipelined batches."""
        for start in range(0, len(users), 500):
            batch = users[start:start + 500]
            pipe = self.r.pipeline(transaction=False)
            for user in batch:
                pipe.zrange(self._user(user, what), 0, -1)
            for user, members in zip(batch, self._call(pipe.execute)):
                yield user, [json.loads(m.split("|", 1)[1]) for m in members]

    def _impression_rows(self, user_id, low, high) -> list[Impression]:
        return [Impression(*row) for row in self._rows(user_id, "impressions", low, high)]

    def add_impressions(self, impressions):
        self._add_rows("impressions", list(impressions))

    def latest_impression(self, user_id, item_id, since, until):
        found = [i for i in self._impression_rows(user_id, since, until)
                 if i.item_id == item_id]
        return found[-1] if found else None

    def add_attributions(self, attributions):
        self._add_rows("attributed", list(attributions))

    def _experiment_users(self, experiment: str) -> list[str]:
        return sorted(self._call(self.r.smembers, self.p + f"experiment:{experiment}"))

    def experiment_impressions(self, experiment):
        counts: dict[tuple[str, str], int] = {}
        for user, rows in self._all_rows(self._experiment_users(experiment), "impressions"):
            for i in (Impression(*row) for row in rows):
                if i.experiment == experiment:
                    counts[(i.variant, user)] = counts.get((i.variant, user), 0) + 1
        return [(variant, user, n) for (variant, user), n in counts.items()]

    def experiment_attributions(self, experiment):
        return [a for _, rows in self._all_rows(self._experiment_users(experiment),
                                                "attributed")
                for a in (Attribution(*row) for row in rows) if a.experiment == experiment]

    def impressions(self):
        users = [u for u, _ in self._call(self.r.zrange, self.p + "impression_users", 0, -1,
                                          withscores=True)]
        rows = [Impression(*row) for _, found in self._all_rows(users, "impressions")
                for row in found]
        return sorted(rows, key=lambda i: i.timestamp)

    def purge_impressions(self, cutoff):
        deleted = 0
        users = self._call(self.r.zrangebyscore, self.p + "impression_users", "-inf",
                           f"({cutoff}")
        for user in users:
            pipe = self.r.pipeline(transaction=True)
            pipe.zremrangebyscore(self._user(user, "impressions"), "-inf", f"({cutoff}")
            pipe.zremrangebyscore(self._user(user, "attributed"), "-inf", f"({cutoff}")
            pipe.zrange(self._user(user, "impressions"), 0, 0, withscores=True)
            removed, _, first = self._call(pipe.execute)
            deleted += int(removed)
            if first:
                self._call(self.r.zadd, self.p + "impression_users", {user: first[0][1]})
            else:       # nothing shown to the user any more: out of every experiment's set
                self._call(self.r.zrem, self.p + "impression_users", user)
                for key in self._call(self.r.scan_iter,
                                      match=_glob_escape(self.p + "experiment:") + "*"):
                    self._call(self.r.srem, key, user)
        return deleted

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


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
