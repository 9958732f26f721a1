"""A search folder as a shop export: the train queries' judgments as a search log that the
data contract accepts, whole queries per split, nothing of the test queries."""
import json
import os

import pytest

from benchmarks import search_data, search_product, search_shop
from pipeline import examples
from pipeline.contract.load import load_shop
from tests.benchmarks.test_search_data import write_folder

TRAIN_QUERIES = "".join(f"{10 + i}\tsteel bracket {i}\ttrain\n" for i in range(10))
TRAIN_JUDGMENTS = "".join(f"{10 + i}\tp{1 + i % 3}\t2\t{i % 3}\n" for i in range(10))


def _data(tmp_path):
    from tests.benchmarks.test_search_data import JUDGMENTS, PRODUCTS, QUERIES
    folder = write_folder(tmp_path / "data", PRODUCTS, QUERIES + TRAIN_QUERIES,
                          JUDGMENTS + TRAIN_JUDGMENTS)
    return search_data.load_search(folder)


def test_train_judgments_become_sessions_the_contract_accepts(tmp_path):
    data = _data(tmp_path)
    counts = search_shop.to_shop(data, str(tmp_path / "shop"))
    shop = load_shop(str(tmp_path / "shop"), on_bad_rows="fail")
    assert len(shop.items) == 3 and set(shop.items["item_id"]) == {"p1", "p2", "p3"}
    assert shop.items["price"].eq(0).all() and shop.items["in_stock"].all()
    events = shop.events
    # 11 train queries (1 + 10) with 12 judgments: one session each, search then view.
    assert counts["train_queries"] == 11 and counts["sessions"] == 12
    assert counts["events"] == {"search": 12, "view": 12, "click": 8, "purchase": 4}
    assert not set(events["query"]) & {"white paint", "gallon of paint"}    # test queries
    first = events[events["user_id"] == "q1-0"]
    assert first["event_type"].tolist() == ["search", "view", "click", "purchase"]  # grade 2
    assert first["query"].iloc[0] == "angle bracket" and first["item_id"].iloc[1] == "p1"
    graded_0 = events[events["user_id"] == "q10-0"]                 # p1 with grade 0
    assert graded_0["event_type"].tolist() == ["search", "view"]
    assert events.groupby("user_id")["session_id"].nunique().eq(1).all()


def test_split_times_hold_whole_queries_in_the_rank_and_eval_splits(tmp_path):
    data = _data(tmp_path)
    counts = search_shop.to_shop(data, str(tmp_path / "shop"))
    times = counts["split_times"]
    cutoffs = examples.check_split_times(times["eval_from"], times["rank_from"])
    events = load_shop(str(tmp_path / "shop")).events
    searches = events[events["event_type"] == "search"]
    split_of_query = {}
    for user, t in zip(searches["user_id"], searches["timestamp"]):
        split_of_query.setdefault(user.split("-")[0], set()).add(examples.split_of(t, *cutoffs))
    assert all(len(splits) == 1 for splits in split_of_query.values()), split_of_query
    per_split = [s for splits in split_of_query.values() for s in splits]
    assert per_split.count("eval") >= 1 and per_split.count("rank") >= 1
    assert per_split.count("train") >= 8
    # pipeline_splits names the same queries per split (what product tuning reads)
    named = search_shop.pipeline_splits(data)
    assert {split: sorted(f"q{q.query_id}" for q in queries)
            for split, queries in named.items()} == {
        split: sorted(query for query, splits in split_of_query.items() if split in splits)
        for split in ("train", "rank", "eval")}


def test_export_refuses_the_repository_and_a_folder_without_train_judgments(tmp_path):
    data = _data(tmp_path)
    with pytest.raises(search_data.SearchDataError, match="inside the repository"):
        search_shop.to_shop(data, os.path.join(search_shop.folders.REPO, "runs", "shop_x"))
    test_only = search_data.load_search(write_folder(
        tmp_path / "test_only", queries="query_id\tquery\tsplit\n2\twhite paint\ttest\n",
        judgments="query_id\tproduct_id\tgrade\n2\tp3\t2\n"))
    with pytest.raises(search_data.SearchDataError, match="no train query"):
        search_shop.to_shop(test_only, str(tmp_path / "shop2"))


def test_product_config_takes_the_exports_split_times(tmp_path):
    times = {"rank_from": "2020-01-01T00:10:00Z", "eval_from": "2020-01-01T00:20:00Z"}
    config = search_product.write_config(search_product.DEFAULT_CONFIG, times,
                                         str(tmp_path / "config.json"))
    assert config["eval_from"] == times["eval_from"] and "retrieval_config" in config
    assert json.load(open(tmp_path / "config.json")) == config
    (tmp_path / "fixed.json").write_text(json.dumps({"eval_from": "2020-01-01T00:00:00Z"}))
    with pytest.raises(ValueError, match="computes the split times"):
        search_product.write_config(str(tmp_path / "fixed.json"), times,
                                    str(tmp_path / "out.json"))
