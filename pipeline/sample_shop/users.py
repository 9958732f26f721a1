"""The sample shop's users: attribute table plus latent tastes that drive their behaviour.

Every user has favourite leaf categories (mostly within one main top-level category that leans
on their age band), favourite brands, favourite attribute values (colours, finishes, ...) and a
preferred price level. For about half of the users interests drift: by the end of the time
range a new category holds part of their attention and their price level has moved.
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.sample_shop.catalog import ATTR_VALUES, BRAND_NAMES, BRAND_TOP, LEAF_TOP, TOPS, Catalog
from pipeline.sample_shop.config import SampleConfig, epoch
from pipeline.sample_shop.taxonomy import (AGE_BANDS, AGE_LEANINGS, AGE_WEIGHTS, COUNTRIES,
                                      COUNTRY_WEIGHTS)

MAX_FAVOURITES = 4


@dataclass
class Population:
    """User table (user_id + free attributes) and aligned latent tastes."""

    table: pd.DataFrame
    pref_start: np.ndarray   # (users, leaves) category preference at the start, rows sum to 1
    pref_end: np.ndarray     # (users, leaves) at the end of the range
    price_start: np.ndarray  # preferred standardised log price at the start
    price_end: np.ndarray
    fav_brand: np.ndarray    # (users, brands) bool
    fav_attr: np.ndarray     # (users, attribute values + 1) bool; last column (= -1) False
    activity: np.ndarray     # relative session rate
    signup: np.ndarray       # epoch seconds
    main_top: np.ndarray     # index into TOPS: the top category most favourite leaves are in


def _rows_choice(rng, weights: np.ndarray) -> np.ndarray:
    """One draw per row of a non-negative weight matrix."""
    cum = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cum[:, -1]
    return np.minimum((cum <= u[:, None]).sum(axis=1), weights.shape[1] - 1)


def _favourite_leaves(rng, main_top: np.ndarray, leaf_pop: np.ndarray,
                      cfg: SampleConfig) -> np.ndarray:
    """(users, MAX_FAVOURITES) leaf indices, mostly from the user's main top category."""
    n = len(main_top)
    within = leaf_pop[None, :] * (LEAF_TOP[None, :] == np.arange(len(TOPS))[:, None])
    favs = np.empty((n, MAX_FAVOURITES), int)
    for j in range(MAX_FAVOURITES):
        local = _rows_choice(rng, within[main_top])
        anywhere = rng.choice(len(leaf_pop), n, p=leaf_pop)
        favs[:, j] = np.where(rng.random(n) < cfg.main_top_share, local, anywhere)
    return favs


def _preferences(rng, favs: np.ndarray, leaf_pop: np.ndarray, cfg: SampleConfig):
    n = len(favs)
    n_fav = 1 + rng.binomial(MAX_FAVOURITES - 1, 0.45, n)
    weights = rng.dirichlet(np.ones(MAX_FAVOURITES), n)
    weights *= np.arange(MAX_FAVOURITES)[None, :] < n_fav[:, None]
    weights /= weights.sum(axis=1, keepdims=True)
    pref = np.zeros((n, len(leaf_pop)))
    for j in range(MAX_FAVOURITES):
        np.add.at(pref, (np.arange(n), favs[:, j]), weights[:, j])
    pref = (1 - cfg.explore_share) * pref + cfg.explore_share * leaf_pop[None, :]
    drifting = rng.random(n) < cfg.drift_fraction
    new_leaf = rng.choice(len(leaf_pop), n, p=leaf_pop)
    new_leaf = np.where(new_leaf == favs[:, 0], (new_leaf + 1) % len(leaf_pop), new_leaf)
    shifted = (1 - cfg.drift_weight) * pref
    shifted[np.arange(n), new_leaf] += cfg.drift_weight
    pref_end = np.where(drifting[:, None], shifted, pref)
    price_start = rng.normal(0.0, 0.8, n)
    price_end = price_start + drifting * rng.normal(0.0, 0.6, n)
    return pref, pref_end, price_start, price_end


def _favourite_brands(rng, main_top: np.ndarray, favs: np.ndarray) -> np.ndarray:
    n = len(main_top)
    fav = np.zeros((n, len(BRAND_NAMES)), bool)
    by_top = (BRAND_TOP[None, :] == np.arange(len(TOPS))[:, None]).astype(float)
    for top in (main_top, main_top, LEAF_TOP[favs[:, 1]]):
        fav[np.arange(n), _rows_choice(rng, by_top[top])] = True
    return fav


def _favourite_attributes(rng, catalog: Catalog, n: int) -> np.ndarray:
    counts = np.bincount(catalog.attrs[catalog.attrs >= 0], minlength=len(ATTR_VALUES))
    p = (counts + 1.0) / (counts + 1.0).sum()
    fav = np.zeros((n, len(ATTR_VALUES) + 1), bool)
    for _ in range(3):
        fav[np.arange(n), rng.choice(len(ATTR_VALUES), n, p=p)] = True
    return fav


def _signups(rng, n: int, cfg: SampleConfig) -> np.ndarray:
    start, end = epoch(cfg.start), epoch(cfg.end)
    signup = rng.integers(epoch(cfg.users_since), start, n)
    late = rng.random(n) < cfg.late_signup_fraction
    return np.where(late, rng.integers(start, end - 14 * 86400, n), signup)


def make_users(rng: np.random.Generator, n_users: int, catalog: Catalog,
               cfg: SampleConfig) -> Population:
    """Draw `n_users` users with tastes over the catalog's categories, brands and prices."""
    age = rng.choice(len(AGE_BANDS), n_users, p=AGE_WEIGHTS)
    country = rng.choice(len(COUNTRIES), n_users, p=COUNTRY_WEIGHTS)
    top_pop = np.bincount(LEAF_TOP, weights=catalog.leaf_pop, minlength=len(TOPS))
    lean = np.array([[2.0 if top in AGE_LEANINGS[band] else 1.0 for top in TOPS]
                     for band in AGE_BANDS])
    main_top = _rows_choice(rng, (lean * top_pop[None, :])[age])
    favs = _favourite_leaves(rng, main_top, catalog.leaf_pop, cfg)
    pref, pref_end, price_start, price_end = _preferences(rng, favs, catalog.leaf_pop, cfg)
    signup = _signups(rng, n_users, cfg)
    table = pd.DataFrame({
        "user_id": [f"u{k:06d}" for k in range(1, n_users + 1)],
        "country": np.array(COUNTRIES)[country],
        "signup_date": np.datetime_as_string(signup.astype("datetime64[s]"), unit="D"),
        "age_band": np.array(AGE_BANDS)[age],
    })
    return Population(table=table, pref_start=pref, pref_end=pref_end,
                      price_start=price_start, price_end=price_end,
                      fav_brand=_favourite_brands(rng, main_top, favs),
                      fav_attr=_favourite_attributes(rng, catalog, n_users),
                      activity=rng.lognormal(0.0, 1.0, n_users), signup=signup,
                      main_top=main_top)

