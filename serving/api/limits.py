"""Request limits of the API: per-caller token buckets (rate limits) and admission control
with a bounded queue (load shedding). docs/security.md explains the choices.

No FastAPI here: ``app.py`` and ``access.py`` turn the exceptions into answers.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import anyio

ROLE_LIMITS = ("public", "events", "operator", "anonymous")   # anonymous: auth=off, per address
DEFAULT_RATE_LIMITS = "public=100/200,events=50/100,operator=10/20,anonymous=20/40"
UNLIMITED = "unlimited"
MAX_BUCKETS = 10_000       # per-address buckets kept (least recently used dropped first)
RETRY_AFTER_OVERLOADED_S = 1


@dataclass(frozen=True)
class Rate:
    """A token bucket's refill rate (requests per second) and size (burst)."""

    per_s: float
    burst: int

    def __str__(self) -> str:
        return f"{self.per_s:g}/{self.burst}"


def parse_rate(text: str) -> Rate | None:
    """``RATE/BURST`` (e.g. ``100/200``, ``0.5/5``) -> Rate; ``unlimited`` -> None.
    ValueError says what is wrong."""
    text = text.strip()
    if text == UNLIMITED:
        return None
    per_s, slash, burst = text.partition("/")
    try:
        rate = Rate(float(per_s), int(burst))
    except ValueError:
        raise ValueError(f"{text!r}: expected RATE/BURST (requests per second / bucket "
                         f"size, e.g. 100/200) or {UNLIMITED}") from None
    if not slash or not (math.isfinite(rate.per_s) and rate.per_s > 0) or rate.burst < 1:
        raise ValueError(f"{text!r}: RATE must be > 0 and BURST >= 1")
    return rate


def parse_rate_limits(text: str) -> dict[str, Rate | None]:
    """The ``rate_limits`` setting: ``role=RATE/BURST`` items separated by commas, each
    replacing that role's default (``DEFAULT_RATE_LIMITS``); ``off`` = no limit at all.
    ValueError says what is wrong."""
    limits = {role: parse_rate(rate) for role, _, rate in
              (item.partition("=") for item in DEFAULT_RATE_LIMITS.split(","))}
    if text.strip() == "off":
        return dict.fromkeys(limits)
    for item in filter(None, (part.strip() for part in text.split(","))):
        role, equals, rate = item.partition("=")
        if not equals or role.strip() not in ROLE_LIMITS:
            raise ValueError(f"{item!r}: expected ROLE=RATE/BURST with ROLE one of "
                             f"{', '.join(ROLE_LIMITS)} (or the whole setting 'off')")
        limits[role.strip()] = parse_rate(rate)
    return limits


class TokenBucket:
    """Holds up to ``burst`` tokens, refilled at ``per_s``; a request takes one."""

    def __init__(self, rate: Rate, now: float):
        self.rate, self.tokens, self.updated = rate, float(rate.burst), now

    def refill(self, now: float, rate: Rate | None = None) -> None:
        """Add the tokens earned since the last call; then switch to ``rate`` if given."""
        self.tokens = min(self.rate.burst,
                          self.tokens + max(0.0, now - self.updated) * self.rate.per_s)
        self.updated = now
        if rate is not None:
            self.rate, self.tokens = rate, min(self.tokens, rate.burst)

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        self.refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate.per_s


class RateLimiter:
    """One token bucket per caller (``key:<name>`` or ``address:<ip>``), created on first
    use. Only the ``MAX_BUCKETS`` most recently used are kept: a bucket idle long enough to be
    dropped would be (nearly) full again, so dropping it forgives little."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = MAX_BUCKETS):
        self.clock, self.max_buckets = clock, max_buckets
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def retry_after(self, caller: str, rate: Rate | None) -> int:
        """0 when ``caller`` may go on, else whole seconds to wait (>= 1, for Retry-After)."""
        if rate is None:
            return 0
        now = self.clock()
        bucket = self.buckets.get(caller)
        if bucket is None:
            bucket = self.buckets[caller] = TokenBucket(rate, now)
        elif bucket.rate != rate:               # the key's limit changed (keys file, setting)
            bucket.refill(now, rate)
        self.buckets.move_to_end(caller)
        while len(self.buckets) > self.max_buckets:
            self.buckets.popitem(last=False)
        wait = bucket.take(now)
        return 0 if wait == 0 else max(1, math.ceil(wait))


class Overloaded(Exception):
    """The request was not admitted: ``reason`` is ``shed`` (the queue was full) or
    ``queue_timeout`` (no slot within ``max_queue_wait_s``)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.retry_after_s = reason, RETRY_AFTER_OVERLOADED_S


class Admission:
    """At most ``max_concurrent`` computations at once; at most ``max_queued`` requests wait
    for a slot, each at most ``max_wait_s``; beyond that ``Overloaded`` at once (shedding
    load instead of letting every client's latency grow). Used on the event loop only."""

    def __init__(self, max_concurrent: int, max_queued: int, max_wait_s: float):
        self.limiter = anyio.CapacityLimiter(max_concurrent)
        # worker threads of their own: not the default pool (40) that sync routes share
        self.threads = anyio.CapacityLimiter(max_concurrent)
        self.max_queued, self.max_wait_s = max_queued, max_wait_s
        self.waiting = 0

    @property
    def active(self) -> int:
        return int(self.limiter.borrowed_tokens)

    async def run(self, function, *args):
        """``function(*args)`` in a worker thread once a slot is free."""
        try:
            self.limiter.acquire_nowait()
        except anyio.WouldBlock:
            if self.waiting >= self.max_queued:
                raise Overloaded("shed", f"overloaded: all {int(self.limiter.total_tokens)} "
                                 f"slots busy and {self.waiting} requests waiting; retry "
                                 f"after {RETRY_AFTER_OVERLOADED_S} s") from None
            self.waiting += 1
            try:
                with anyio.fail_after(self.max_wait_s):
                    await self.limiter.acquire()
            except TimeoutError:
                raise Overloaded("queue_timeout", f"overloaded: no slot free within "
                                 f"{self.max_wait_s:g} s; retry after "
                                 f"{RETRY_AFTER_OVERLOADED_S} s") from None
            finally:
                self.waiting -= 1
        try:
            return await anyio.to_thread.run_sync(function, *args, limiter=self.threads)
        finally:
            self.limiter.release()
