"""Parameters of the sample shop generator, in one place.

Sizes are given at scale 1; `shop_sizes` derives the sizes for another scale (events grow
linearly, items and users with the square root). Times are fixed, never taken from the clock.
"""
import math
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

GENERATOR_VERSION = "1.0.0"
FORMATS = ("csv", "parquet", "jsonl")


def epoch(iso: str) -> int:
    """Seconds since 1970 for an ISO-8601 UTC timestamp such as 2026-01-01T00:00:00Z."""
    return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")
               .replace(tzinfo=timezone.utc).timestamp())


def iso_times(seconds: np.ndarray) -> np.ndarray:
    """ISO-8601 UTC strings ("2026-01-01T12:00:00Z") for epoch seconds, as an object array."""
    unique, inverse = np.unique(seconds, return_inverse=True)
    text = np.datetime_as_string(unique.astype("datetime64[s]"), unit="s").astype(object)
    return (text + "Z")[inverse]


@dataclass(frozen=True)
class SampleConfig:
    """Everything the generator draws from besides the seed and the scale."""

    # time range of the events; items and users exist from earlier dates
    start: str = "2026-01-01T00:00:00Z"
    end: str = "2026-03-31T23:59:59Z"
    catalog_since: str = "2024-06-01T00:00:00Z"
    users_since: str = "2022-01-01T00:00:00Z"
    # sizes at scale 1 and floors for tiny scales
    base_items: int = 5200
    base_users: int = 2400
    base_sessions: int = 10500
    min_items: int = 320
    min_users: int = 60
    min_sessions: int = 400
    max_scale: float = 100.0
    # catalog
    price_sigma: float = 0.45          # log-normal spread of prices within a leaf category
    item_zipf: float = 1.0             # exponent of item popularity within a leaf category
    leaf_zipf: float = 0.7             # exponent of leaf category popularity
    brand_zipf: float = 0.9            # exponent of brand popularity within a top category
    in_stock_rate: float = 0.93
    new_item_fraction: float = 0.07    # created inside the time range, with events afterwards
    cold_fraction: float = 0.015       # created in the last days, no events at all
    cold_days: float = 3.0
    # users
    main_top_share: float = 0.7        # favourite leaves drawn from the user's main top category
    explore_share: float = 0.1         # preference mass spread over all leaves by popularity
    drift_fraction: float = 0.5        # users whose interests shift during the time range
    drift_weight: float = 0.4          # preference mass of the new interest at the end
    late_signup_fraction: float = 0.15
    # behaviour
    repeat_leaf_rate: float = 0.35     # session continues the category of the previous one
    search_fraction: float = 0.3
    mean_impressions: float = 8.0
    max_impressions: int = 25
    click_bias: float = -2.6
    rating_rate: float = 0.45          # share of purchases that get rated (within the range)


def shop_sizes(scale: float, cfg: SampleConfig) -> dict:
    """Numbers of items, users and sessions to draw at a scale."""
    root = math.sqrt(scale)
    return {
        "items": max(cfg.min_items, round(cfg.base_items * root)),
        "users": max(cfg.min_users, round(cfg.base_users * root)),
        "sessions": max(cfg.min_sessions, round(cfg.base_sessions * scale)),
    }
