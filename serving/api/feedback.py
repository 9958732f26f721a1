"""Impressions of the API's answers and the engagements attributed to them.

``ImpressionLog`` stores what an answer showed from a background thread, so logging never
slows or fails an answer: a full queue (``max_pending`` impressions) or an event store
error drops them, logs a warning and counts them (``shoprec_api_impressions_total``,
``result``). ``attribute`` credits each newly stored click, add_to_cart and purchase to the
latest impression of that user and item shown at most ``window_s`` before the event
(serving/events/impressions.py); POST /v1/events first waits (briefly) for the impressions
already queued, so an answer's impressions are stored before the engagement they earn.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque

import pandas as pd

from pipeline.contract import spec
from serving.api.catalog import Catalog
from serving.events.impressions import ATTRIBUTED_EVENTS, Attribution, Impression
from serving.events.store import EventStore

log = logging.getLogger("serving.api.feedback")


class ImpressionLog:
    """A bounded queue of impressions and the thread writing them to the store."""

    def __init__(self, store: EventStore, max_pending: int = 20_000, batch: int = 500,
                 count=None):
        """``count(result, n)``: called with ``stored`` / ``dropped`` and how many."""
        self.store, self.max_pending, self.batch = store, max_pending, batch
        self._count = count or (lambda result, n: None)
        self._queue: deque[Impression] = deque()
        self._in_flight = 0
        self._changed = threading.Condition()
        self._stopping = False
        self._warned_at = 0.0
        self._thread = threading.Thread(target=self._run, name="impression-log", daemon=True)
        self._thread.start()

    def log(self, impressions: list[Impression]) -> None:
        """Queue an answer's impressions (never blocks, never raises)."""
        if not impressions:
            return
        with self._changed:
            if len(self._queue) + len(impressions) > self.max_pending or self._stopping:
                self._dropped(len(impressions), "the queue is full")
                return
            self._queue.extend(impressions)
            self._changed.notify_all()

    def _dropped(self, n: int, why: str) -> None:
        self._count("dropped", n)
        now = time.monotonic()
        if now - self._warned_at > 60:           # at most one warning a minute
            self._warned_at = now
            log.warning("dropped %d impressions: %s (answers are not affected)", n, why)

    def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until every impression queued so far is written (or dropped); False when
        ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._stopping:
                    self._changed.wait()
                if not self._queue:
                    return
                batch = [self._queue.popleft()
                         for _ in range(min(self.batch, len(self._queue)))]
                self._in_flight = len(batch)
            try:
                self.store.add_impressions(batch)
                self._count("stored", len(batch))
            except Exception as e:  # pylint: disable=broad-except  (logged, never raised)
                self._dropped(len(batch), f"event store: {e}")
            finally:
                with self._changed:
                    self._in_flight = 0
                    self._changed.notify_all()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (at most ``timeout_s``), then stop the thread."""
        self.flush(timeout_s)
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout_s)


def impressions_of(request_id: str, user_id: str, item_ids: list[str], surface: str,
                   experiment: str, variant: str, timestamp: int,
                   offset: int = 0) -> list[Impression]:
    """One impression per item shown, positions from ``offset`` (a search page's)."""
    return [Impression(request_id, user_id, item, offset + position, surface, experiment,
                       variant, timestamp) for position, item in enumerate(item_ids)]


def attribute(store: EventStore, catalog: Catalog, events: pd.DataFrame,
              window_s: float) -> list[Attribution]:
    """Attributions of the click / add_to_cart / purchase events (user ids as the store
    knows them) to the latest impression of that user and item at most ``window_s`` before
    each; stored, and returned. Revenue of a purchase: its quantity (``value``, default 1)
    times the item's price now (0 for an item without a price)."""
    engaged = events[events[spec.EVENT_TYPE].isin(ATTRIBUTED_EVENTS)]
    found = []
    for user, item, kind, value, ts in zip(engaged[spec.USER_ID], engaged[spec.ITEM_ID],
                                           engaged[spec.EVENT_TYPE], engaged[spec.VALUE],
                                           engaged[spec.TIMESTAMP]):
        ts = int(ts)
        shown = store.latest_impression(user, item, ts - int(window_s), ts)
        if shown is None:
            continue
        quantity = 1.0 if kind == spec.CLICK or value is None or math.isnan(value) \
            else float(value)
        revenue = 0.0
        if kind == spec.PURCHASE:
            row = catalog.row(item)
            price = catalog.describe(row)["price"] if row is not None else None
            revenue = quantity * float(price) if price is not None else 0.0
        found.append(Attribution(user, item, kind, quantity, round(revenue, 6), ts,
                                 shown.request_id, shown.position, shown.surface,
                                 shown.experiment, shown.variant, shown.timestamp))
    if found:
        store.add_attributions(found)
    return found
