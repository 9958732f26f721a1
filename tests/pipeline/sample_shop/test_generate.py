"""Tests of the sample shop generator (pipeline/sample_shop/generate.py and its sample_* helpers)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.contract.spec import EVENT_TYPES
from pipeline.sample_shop.behaviour import _funnel
from pipeline.sample_shop.catalog import make_catalog
from pipeline.sample_shop.config import SampleConfig, epoch, shop_sizes
from pipeline.sample_shop.generate import generate_shop, main
from pipeline.sample_shop.users import make_users

CFG = SampleConfig()
START, END = pd.Timestamp(CFG.start), pd.Timestamp(CFG.end)
FILES = ("items.csv", "users.csv", "events.csv", "manifest.json")


def _read(shop: Path, fmt: str = "csv") -> dict:
    """The three tables as text columns, read the way a user would with pandas."""
    if fmt == "csv":
        return {n: pd.read_csv(shop / f"{n}.csv", dtype=str, keep_default_na=False)
                for n in ("items", "users", "events")}
    if fmt == "parquet":
        return {n: pd.read_parquet(shop / f"{n}.parquet") for n in ("items", "users", "events")}
    return {n: pd.read_json(shop / f"{n}.jsonl", lines=True, dtype=False, convert_dates=False)
            for n in ("items", "users", "events")}


def _tokens(text: str) -> set:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A shop at scale 0.05 (seed 7): directory, returned counts and tables."""
    shop = tmp_path_factory.mktemp("small")
    counts = generate_shop(shop, seed=7, scale=0.05)
    return shop, counts, _read(shop)


def test_same_seed_gives_byte_identical_files_and_other_seed_differs(small, tmp_path):
    shop, _, _ = small
    again, other = tmp_path / "again", tmp_path / "other"
    generate_shop(again, seed=7, scale=0.05)
    generate_shop(other, seed=8, scale=0.05)
    for name in FILES:
        assert (again / name).read_bytes() == (shop / name).read_bytes(), name
    for name in ("items.csv", "users.csv", "events.csv"):
        assert (other / name).read_bytes() != (shop / name).read_bytes(), name


def test_counts_at_small_scale_are_within_bounds_and_match_files(small):
    shop, counts, t = small
    assert 1000 <= counts["items"] <= 1300
    assert 450 <= counts["users"] <= 650
    assert 4000 <= counts["events"] <= 9000
    assert counts["items"] == len(t["items"]) and counts["users"] == len(t["users"])
    assert counts["events"] == len(t["events"])
    assert counts["sessions"] == t["events"]["session_id"].nunique()
    by_type = t["events"]["event_type"].value_counts()
    assert {k: counts[k] for k in EVENT_TYPES} == by_type.to_dict()
    manifest = json.loads((shop / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["scale"] == 0.05 and manifest["format"] == "csv"
    assert manifest["counts"] == counts and manifest["generator_version"]


def test_sizes_grow_with_scale_as_specified():
    one, ten = shop_sizes(1.0, CFG), shop_sizes(10.0, CFG)
    assert one["items"] >= 5000 and one["users"] >= 2000
    assert ten["sessions"] == 10 * one["sessions"]
    assert one["items"] * 3 < ten["items"] < one["items"] * 3.3       # ~ sqrt(10)
    tiny = shop_sizes(0.001, CFG)
    assert tiny["items"] >= CFG.min_items and tiny["sessions"] >= CFG.min_sessions


def test_every_event_type_present_and_funnel_narrows(small):
    events = small[2]["events"]
    n = events["event_type"].value_counts()
    assert set(n.index) == set(EVENT_TYPES)
    assert n["view"] > 3 * n["click"] > 3 * n["purchase"]
    assert n["click"] > n["add_to_cart"] > n["purchase"] > n["rating"] > 0


def test_columns_and_values_follow_the_contract(small):
    t = small[2]
    items, users, events = t["items"], t["users"], t["events"]
    assert list(items.columns) == ["item_id", "title", "description", "brand", "categories",
                                   "price", "in_stock", "created_at"]
    assert list(events.columns) == ["user_id", "item_id", "event_type", "value", "query",
                                    "session_id", "timestamp"]
    assert items["item_id"].is_unique and users["user_id"].is_unique
    assert (items["title"] != "").all() and (items["description"].str.len() > 40).all()
    assert (items["price"].astype(float) >= 0).all()
    assert set(items["in_stock"]) == {"true", "false"}
    levels = items["categories"].str.split(" > ")
    assert (levels.str.len() >= 3).all()
    assert levels.str[0].nunique() >= 10 and items["categories"].nunique() >= 40
    iso = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"
    assert items["created_at"].str.match(iso).all() and events["timestamp"].str.match(iso).all()
    search = events["event_type"] == "search"
    assert (events.loc[search, "item_id"] == "").all()
    assert (events.loc[search, "query"] != "").all() and (events.loc[~search, "query"] == "").all()
    assert events.loc[~search, "item_id"].isin(items["item_id"]).all()
    assert events["user_id"].isin(users["user_id"]).all()
    value = pd.to_numeric(events["value"].replace("", np.nan))
    kind = events["event_type"]
    assert value[kind == "rating"].between(1, 5).all() and value[kind == "rating"].nunique() >= 3
    assert (value[kind.isin(["add_to_cart", "purchase"])] >= 1).all()
    assert value[~kind.isin(["rating", "add_to_cart", "purchase"])].isna().all()


def test_event_times_follow_item_creation_and_stay_in_range(small):
    items, events = small[2]["items"], small[2]["events"]
    created = pd.to_datetime(events["item_id"].map(items.set_index("item_id")["created_at"]))
    ts = pd.to_datetime(events["timestamp"])
    has_item = events["item_id"] != ""
    assert (ts[has_item] >= created[has_item]).all()
    assert ts.between(START, END).all() and ts.is_monotonic_increasing
    # some items are created inside the range and still get events afterwards
    in_range = pd.to_datetime(items["created_at"]) > START
    assert events["item_id"].isin(items.loc[in_range, "item_id"]).any()


def test_cold_items_are_late_and_have_no_events(small):
    items, events = small[2]["items"], small[2]["events"]
    created = pd.to_datetime(items["created_at"])
    cold = items.loc[created >= END - pd.Timedelta(days=CFG.cold_days), "item_id"]
    assert 0.01 * len(items) <= len(cold) <= 0.02 * len(items)
    assert not events["item_id"].isin(cold).any()
    assert small[1]["cold_items"] == len(cold)


def test_searches_precede_clicks_on_items_matching_their_words(small):
    items, events = small[2]["items"], small[2]["events"]
    title = items.set_index("item_id")["title"]
    sessions = events[events["session_id"].isin(
        events.loc[events["event_type"] == "search", "session_id"])]
    followed = matching = 0
    for _, s in sessions.groupby("session_id"):
        search, clicks = s[s["event_type"] == "search"], s[s["event_type"] == "click"]
        if clicks.empty:
            continue
        assert search["timestamp"].iloc[0] < clicks["timestamp"].min()
        words = _tokens(search["query"].iloc[0])
        followed += 1
        matching += all(words & _tokens(title[i]) for i in clicks["item_id"])
    assert followed >= 50
    assert matching / followed >= 0.9


def test_user_table_has_free_attributes(small):
    users = small[2]["users"]
    assert {"user_id", "country", "signup_date", "age_band"} <= set(users.columns)
    assert users["country"].nunique() >= 5 and users["age_band"].nunique() >= 5


def _recall_at_100(shop: Path) -> tuple:
    """Eval-click recall@100 of global popularity and of popular-in-your-categories."""
    t = _read(shop)
    items, events = t["items"], t["events"]
    cutoff = START + 0.9 * (END - START)
    ts = pd.to_datetime(events["timestamp"])
    train, test = events[ts < cutoff], events[ts >= cutoff]
    category = items.set_index("item_id")["categories"]
    popularity = train.loc[train["event_type"] == "click", "item_id"].value_counts()
    global_top = list(popularity.index[:100])
    by_category = {c: list(ids) for c, ids in
                   pd.Series(popularity.index).groupby(category[popularity.index].values)}
    engaged = train[train["item_id"] != ""]
    engagement = (engaged.groupby(["user_id", engaged["item_id"].map(category)]).size()
                  .rename("n").reset_index().sort_values(["user_id", "n"],
                                                         ascending=[True, False],
                                                         kind="mergesort"))
    favourite = {u: list(g["item_id"]) for u, g in engagement.groupby("user_id")}
    recall_pop, recall_pref = [], []
    for user, clicks in test[test["event_type"] == "click"].groupby("user_id"):
        if user not in favourite:
            continue
        truth = set(clicks["item_id"])
        recs = [i for c in favourite[user] for i in by_category.get(c, [])][:100]
        recs += [i for i in global_top if i not in recs][:100 - len(recs)]
        recall_pop.append(len(truth & set(global_top)) / len(truth))
        recall_pref.append(len(truth & set(recs)) / len(truth))
    return float(np.mean(recall_pop)), float(np.mean(recall_pref)), len(recall_pop)


def test_preferences_beat_popularity_on_a_time_split(tmp_path):
    generate_shop(tmp_path, seed=11, scale=0.3)
    popular, preferred, n_users = _recall_at_100(tmp_path)
    assert n_users >= 100
    assert preferred >= 1.5 * popular, (popular, preferred)


def test_ratings_and_clicks_rise_with_how_well_the_item_fits():
    n = 200_000
    imp = {"affinity": np.repeat([-1.0, 1.0], n // 2), "match": np.zeros(n),
           "position": np.zeros(n, int), "item": np.zeros(n, int)}
    out = _funnel(np.random.default_rng(0), imp, CFG)
    low, high = slice(0, n // 2), slice(n // 2, n)
    assert out["clicked"][high].mean() > 2 * out["clicked"][low].mean()
    assert (out["rating"][high][out["rated"][high]].mean()
            > out["rating"][low][out["rated"][low]].mean() + 1.0)


def test_about_half_of_the_users_drift_to_new_interests():
    rng = np.random.default_rng(0)
    catalog = make_catalog(rng, 600, CFG)
    users = make_users(rng, 1000, catalog, CFG)
    moved = np.abs(users.pref_end - users.pref_start).sum(axis=1) > 0.1
    assert 0.4 < moved.mean() < 0.6
    np.testing.assert_allclose(users.pref_end.sum(axis=1), 1.0)
    assert (catalog.created[catalog.cold] >= epoch(CFG.end) - CFG.cold_days * 86400).all()


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_other_formats_hold_the_same_tables(tmp_path, fmt):
    generate_shop(tmp_path / "csv", seed=5, scale=0.02, fmt="csv")
    generate_shop(tmp_path / fmt, seed=5, scale=0.02, fmt=fmt)
    want, got = _read(tmp_path / "csv"), _read(tmp_path / fmt, fmt)
    for name in want:
        g = got[name].copy()
        if "in_stock" in g:
            g["in_stock"] = g["in_stock"].map({True: "true", False: "false"})
        if "price" in g:
            g["price"] = g["price"].map("{:.2f}".format)
        if "value" in g:
            g["value"] = g["value"].map(lambda v: "" if pd.isna(v) else str(int(v)))
        pd.testing.assert_frame_equal(g.astype(str), want[name], check_dtype=False)
    assert not (tmp_path / fmt / "events.csv").exists()


def test_output_passes_the_data_contract(small, tmp_path):
    from pipeline.contract.load import load_shop

    shop = load_shop(small[0])
    assert not shop.report.problems
    assert len(shop.events) == small[1]["events"]
    generate_shop(tmp_path, seed=2, scale=0.02, fmt="parquet")
    assert not load_shop(tmp_path).report.problems


@pytest.mark.parametrize("args, message", [
    (["--scale", "-1"], "--scale must be a number > 0"),
    (["--scale", "0"], "--scale must be a number > 0"),
    (["--scale", "nan"], "--scale must be a number > 0"),
    (["--scale", "500"], "--scale must be a number > 0 and <= 100"),
    (["--scale", "big"], "--scale must be a number > 0"),
    (["--format", "xml"], "--format must be one of csv, parquet, jsonl"),
    (["--seed", "-3"], "--seed must be a non-negative integer"),
    (["--seed", "1.5"], "--seed must be a non-negative integer"),
])
def test_cli_rejects_bad_arguments_clearly(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "shop")] + args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "shop").exists()


def test_cli_rejects_missing_out_and_out_that_is_a_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([])
    assert "--out" in capsys.readouterr().err
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(SystemExit):
        main(["--out", str(a_file)])
    assert "is not a directory" in capsys.readouterr().err


def test_library_rejects_bad_arguments(tmp_path):
    for kwargs in ({"scale": -0.5}, {"scale": float("inf")}, {"fmt": "xlsx"}, {"seed": -1},
                   {"seed": 1.5}):
        with pytest.raises(ValueError):
            generate_shop(tmp_path / "x", **kwargs)


def test_cli_runs_as_a_module(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pipeline.sample_shop", "--out",
                           str(tmp_path), "--seed", "3", "--scale", "0.01", "--format", "jsonl"],
                          capture_output=True, text=True, cwd=Path(__file__).parents[3],
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "events=" in done.stderr
    assert json.loads((tmp_path / "manifest.json").read_text())["format"] == "jsonl"


@pytest.mark.slow
def test_default_scale_reaches_the_promised_sizes(tmp_path):
    counts = generate_shop(tmp_path, seed=0, scale=1.0)
    assert counts["items"] >= 5000 and counts["users"] >= 2000 and counts["events"] >= 100_000
