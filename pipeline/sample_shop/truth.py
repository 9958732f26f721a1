"""The sample shop's planted ground truth, for tests and benchmarks only.

``latent_groups(seed, scale)`` re-draws the users of ``generate_shop(seed=..., scale=...)``
(the same generators, without the events) and returns each user's latent tastes. Nothing
here is written into the shop folder: the pipeline reads the contract tables only and never
sees this. Two groupings:

- ``main_top``: the top-level category the user's favourite leaf categories were drawn from
  with probability ``SampleConfig.main_top_share`` (0.7 per favourite; the rest from any
  category), before the preference weights are drawn. A seed of the tastes, not the tastes:
  a user whose heaviest favourite fell outside it shops mostly elsewhere.
- ``preferred_top``: the top-level category holding the largest share of the user's planted
  category preference at the start of the time range (favourite weights, exploration
  included), i.e. the category the generator's sessions are drawn from most. The user
  segments are judged against this one (docs/DESIGN.md, "User segments"); on the scale-1
  shop the two agree with an adjusted Rand index of about 0.6.
"""
import numpy as np
import pandas as pd

from pipeline.sample_shop.catalog import BRAND_NAMES, LEAF_TOP, TOPS
from pipeline.sample_shop.config import SampleConfig
from pipeline.sample_shop.generate import draw_population


def latent_groups(seed: int = 0, scale: float = 1.0,
                  cfg: SampleConfig = SampleConfig()) -> pd.DataFrame:
    """One row per user of the shop: ``user_id`` (as in users/events, before any
    pseudonym), ``main_top`` and ``preferred_top`` (top category names, module docstring),
    ``price_level`` (standardised log price the user prefers at the start),
    ``favourite_brands`` (names, ";"-joined)."""
    _, users, _ = draw_population(seed, scale, cfg)
    brands = np.array(BRAND_NAMES, dtype=object)
    by_top = np.stack([users.pref_start[:, LEAF_TOP == t].sum(axis=1)
                       for t in range(len(TOPS))], axis=1)
    return pd.DataFrame({
        "user_id": users.table["user_id"].to_numpy(),
        "main_top": np.array(TOPS, dtype=object)[users.main_top],
        "preferred_top": np.array(TOPS, dtype=object)[by_top.argmax(axis=1)],
        "price_level": users.price_start,
        "favourite_brands": [";".join(brands[row]) for row in users.fav_brand],
    })
