"""What the API showed (impressions) and the engagements credited to them (attributions).

An ``Impression`` is one item of one answer: the request's id, the (pseudonymous) user, the
item, its position (0 = first), the surface (recommend, search, similar), the experiment and
variant the user was in ("" when none) and the time. An ``Attribution`` is a click,
add_to_cart or purchase event credited to the latest impression of that user and item shown
at most ``window_s`` before it (serving/api/feedback.py); a purchase carries its revenue
(quantity x the item's price when the event arrived). Both live in the event store beside
the events, age out with ``impression_retention_days`` (and the events' retention), and an
erasure deletes them with the user's events (docs/privacy.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.contract import spec

SURFACES = ("recommend", "search", "similar")
ATTRIBUTED_EVENTS = (spec.CLICK, spec.ADD_TO_CART, spec.PURCHASE)


@dataclass(frozen=True)
class Impression:
    request_id: str
    user_id: str
    item_id: str
    position: int            # 0 = the answer's first item
    surface: str             # one of SURFACES
    experiment: str          # "" = the user was in no experiment
    variant: str
    timestamp: int           # epoch seconds


@dataclass(frozen=True)
class Attribution:
    user_id: str
    item_id: str
    event_type: str          # one of ATTRIBUTED_EVENTS
    value: float             # quantity of add_to_cart / purchase (1 for a click)
    revenue: float           # purchase: value x price when it arrived; else 0
    timestamp: int           # the event's time
    request_id: str          # the impression credited
    position: int
    surface: str
    experiment: str
    variant: str
    impression_timestamp: int
