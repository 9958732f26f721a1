"""The sample shop's planted ground truth, for tests and benchmarks only.

``latent_groups(seed, scale)`` re-draws the users of ``generate_shop(seed=..., scale=...)``
(the same generators, without the events) and returns each user's latent tastes. Nothing
here is written into the shop folder: the pipeline reads the contract tables only and never
sees this. The grouping the user segments are judged against is ``main_top``: the top-level
category that most of the user's favourite leaf categories were drawn from (share
``SampleConfig.main_top_share``, 0.7 per favourite; the rest from anywhere).
"""
import numpy as np
import pandas as pd

from pipeline.sample_shop.catalog import BRAND_NAMES, TOPS
from pipeline.sample_shop.config import SampleConfig
from pipeline.sample_shop.generate import draw_population


def latent_groups(seed: int = 0, scale: float = 1.0,
                  cfg: SampleConfig = SampleConfig()) -> pd.DataFrame:
    """One row per user of the shop: ``user_id`` (as in users/events, before any
    pseudonym), ``main_top`` (top category name), ``price_level`` (standardised log price
    the user prefers at the start), ``favourite_brands`` (names, ";"-joined)."""
    _, users, _ = draw_population(seed, scale, cfg)
    brands = np.array(BRAND_NAMES, dtype=object)
    return pd.DataFrame({
        "user_id": users.table["user_id"].to_numpy(),
        "main_top": np.array(TOPS, dtype=object)[users.main_top],
        "price_level": users.price_start,
        "favourite_brands": [";".join(brands[row]) for row in users.fav_brand],
    })
