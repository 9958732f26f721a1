"""The Beam example pipeline on a tiny shop, checked against the pure rules."""
import glob
import json
import math

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import examples
from pipeline.components import example_beam
from trainer import features

NAN = math.nan


def tiny_frames():
    items = pd.DataFrame({
        "item_id": ["a", "b", "c", "cold"],
        "title": ["Red shoe", "Blue hat", "Green mug", "Never seen"],
        "description": ["", "warm", "", "cold item"],
        "brand": ["Acme", "", "Mugs Inc", "Acme"],
        "categories": ["Shoes > Running", "Hats", "", "Shoes"],
        "price": [10.0, 20.0, NAN, 5.0],
        "in_stock": [True, False, True, True],
        "created_at": [0, 0, 0, 0],
    })
    rows = [  # user, item, type, value, query, session, ts
        ("u1", "", "search", NAN, "shoe", "s1", 100),
        ("u1", "a", "view", NAN, "", "s1", 110),
        ("u1", "a", "click", NAN, "", "s1", 120),
        ("u1", "b", "view", NAN, "", "s1", 130),
        ("u2", "b", "view", NAN, "", "", 200),
        ("u2", "b", "add_to_cart", 1.0, "", "", 210),
        ("u2", "c", "view", NAN, "", "", 5000),          # > 30 min later: new session
        ("u2", "c", "purchase", 2.0, "", "", 5010),
        ("u1", "a", "rating", 5.0, "", "", 6000),
        ("u3", "a", "view", NAN, "", "", 7000),
        ("u3", "c", "view", NAN, "", "", 7100),
    ]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "value", "query",
                                         "session_id", "timestamp"])
    return events.sort_values("timestamp", kind="stable").reset_index(drop=True), items


def read_split(uri, split):
    import tensorflow as tf

    files = sorted(glob.glob(f"{uri}/Split-{split}/{example_beam.FILE_PREFIX}-*.gz"))
    assert files, f"no files for split {split}"
    return [examples.decode_example(r.numpy())
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def expected_units(events, items, eval_fraction):
    item_rows = {i["item_id"]: examples.item_features(i) for i in items.to_dict("records")}
    records = events.assign(seq=range(len(events))).to_dict("records")
    joined = []
    for user in sorted({r["user_id"] for r in records}):
        for unit in examples.build_units(user, [r for r in records if r["user_id"] == user],
                                         30 * 60):
            joined.append(examples.join_item(unit, item_rows[unit[features.ITEM_ID]]))
    cutoff = examples.eval_cutoff([u[features.TIMESTAMP] for u in joined], eval_fraction)
    return joined, cutoff


def key(example):
    return (example[features.USER_ID], example[features.ITEM_ID], example[features.TIMESTAMP])


@pytest.fixture(scope="module", params=["in_memory", "multi_processing"])
def generated(tmp_path_factory, request):
    """The pipeline's output in one process, and on two worker processes (where the units
    are materialised before the split)."""
    tmp = tmp_path_factory.mktemp("beam")
    events, items = tiny_frames()
    events_path, items_path = example_beam.write_canonical_tables(events, items, str(tmp / "w"))
    uri, summary_path = str(tmp / "examples"), str(tmp / "summary.json")
    workers = 2 if request.param == "multi_processing" else 1
    options = PipelineOptions([f"--direct_running_mode={request.param}",
                               f"--direct_num_workers={workers}"])
    with beam.Pipeline(options=options) as p:
        example_beam.build_pipeline(p, events_path, items_path, uri, summary_path,
                                    eval_fraction=0.3, session_gap_minutes=30)
    return uri, example_beam.read_summary(summary_path), events, items


def test_splits_match_pure_rules(generated):
    uri, summary, events, items = generated
    expected, cutoff = expected_units(events, items, 0.3)
    train, evaluation = read_split(uri, "train"), read_split(uri, "eval")
    assert summary["cutoff_timestamp"] == cutoff
    assert all(e[features.TIMESTAMP] < cutoff for e in train)
    assert all(e[features.TIMESTAMP] >= cutoff for e in evaluation)
    got = {key(e): e for e in train + evaluation}
    assert len(got) == len(train) + len(evaluation) == len(expected)
    for want in expected:
        assert got[key(want)] == want           # prices here are exact in float32


def test_catalog_has_every_item_including_cold(generated):
    uri, summary, _, items = generated
    catalog = read_split(uri, "catalog")
    assert sorted(e[features.ITEM_ID] for e in catalog) == sorted(items["item_id"])
    cold = next(e for e in catalog if e[features.ITEM_ID] == "cold")
    assert cold[features.USER_ID] == "" and cold[features.CLICKED] == 0
    assert cold[features.TITLE] == "Never seen"


def test_summary_counts(generated):
    uri, summary, _, _ = generated
    splits = summary["splits"]
    train, evaluation = read_split(uri, "train"), read_split(uri, "eval")
    assert splits["train"]["examples"] == len(train)
    assert splits["eval"]["examples"] == len(evaluation)
    for split, rows in (("train", train), ("eval", evaluation)):
        for label in (features.CLICKED, features.PURCHASED, features.HAS_RATING):
            rate = sum(e[label] for e in rows) / len(rows)
            assert splits[split][f"{label}_rate"] == pytest.approx(rate)


def test_rating_and_query_survive_the_pipeline(generated):
    uri = generated[0]
    rows = {key(e): e for e in read_split(uri, "train") + read_split(uri, "eval")}
    clicked_a = rows[("u1", "a", 110)]
    assert clicked_a[features.QUERY] == "shoe" and clicked_a[features.HAS_RATING] == 1
    assert clicked_a[features.RATING] == 5.0 and clicked_a[features.TOP_CATEGORY] == "Shoes"
    u3_c = rows[("u3", "c", 7100)]
    assert u3_c[features.NUM_HISTORY] == 0     # u3 only viewed: no engagement history


def test_bad_parameters_and_tables_are_rejected(tmp_path):
    events, items = tiny_frames()
    with pytest.raises(ValueError, match="lacks columns \\['in_stock'\\]"):
        example_beam.write_canonical_tables(events, items.drop(columns="in_stock"),
                                            str(tmp_path))
    ghost = events.copy()
    ghost.loc[3, "item_id"] = "ghost"
    with pytest.raises(ValueError, match="1 canonical events refer to items missing .*ghost"):
        example_beam.write_canonical_tables(ghost, items, str(tmp_path))
    anonymous = events.copy()
    anonymous.loc[2, "user_id"] = ""
    with pytest.raises(ValueError, match="empty user_id \\(rows \\[2\\]\\)"):
        example_beam.write_canonical_tables(anonymous, items, str(tmp_path))
    twice = pd.concat([items, items.iloc[:1]])
    with pytest.raises(ValueError, match="duplicate item_id .*'a'"):
        example_beam.write_canonical_tables(events, twice, str(tmp_path))
    with pytest.raises(ValueError, match="session_gap_minutes"):
        example_beam.build_pipeline(beam.Pipeline(), "e", "i", "u", "s", 0.1, 0)
    with pytest.raises(ValueError, match="eval_fraction"):
        example_beam.build_pipeline(beam.Pipeline(), "e", "i", "u", "s", 1.5, 30)


def test_read_summary_refuses_counts_that_show_lost_data(tmp_path):
    def summary(**tallies):
        path = tmp_path / "summary.json"
        path.write_text(json.dumps({"cutoff_timestamp": 5, "rank_cutoff_timestamp": None,
                                    "splits": {"train": {"examples": 7},
                                               "eval": {"examples": 2}},
                                    "tallies": tallies}))
        return str(path)

    whole = summary(events_read=20, events_grouped=20, units=9)
    assert example_beam.read_summary(whole, 20)["tallies"]["units"] == 9
    with pytest.raises(RuntimeError, match="events read: 19 of 20"):
        example_beam.read_summary(summary(events_read=19, events_grouped=19, units=9), 20)
    with pytest.raises(RuntimeError, match="events grouped by user: 18 of 20"):
        example_beam.read_summary(summary(events_read=20, events_grouped=18, units=9))
    with pytest.raises(RuntimeError, match="units written to the splits: 9 of 10"):
        example_beam.read_summary(summary(events_read=20, events_grouped=20, units=10))
