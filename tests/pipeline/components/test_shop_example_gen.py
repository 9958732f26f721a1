"""ShopExampleGen: parameters, the executor's work on a tiny CSV shop, and a LocalDagRunner run."""
import glob
import json
import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import examples
from pipeline.components import shop_example_gen as seg
from pipeline.contract.load import DataContractError
from trainer import features

T0 = 1_700_000_000
ITEMS = ("item_id,title,description,brand,categories,price,in_stock\n"
         "a,Red shoe,Light runner,Acme,Shoes > Running,49.5,true\n"
         "b,Blue hat,,,Hats,12,false\n"
         "c,Green mug,Ceramic,Mugs Inc,,8,true\n"
         "cold,Never seen,,Acme,Shoes,5,true\n")
EVENTS_HEADER = "user_id,item_id,event_type,value,query,session_id,timestamp\n"
EVENT_ROWS = [  # ten units over ten distinct times; u1's second session carries a query
    f"u1,a,view,,,,{T0}", f"u1,a,click,,,,{T0 + 10}", f"u1,b,view,,,,{T0 + 20}",
    f"u1,,search,,red shoe,s2,{T0 + 5000}", f"u1,c,view,,,s2,{T0 + 5010}",
    f"u1,c,add_to_cart,1,,s2,{T0 + 5020}", f"u2,b,view,,,,{T0 + 100}",
    f"u2,b,purchase,1,,,{T0 + 130}", f"u2,a,view,,,,{T0 + 140}",
    f"u2,b,rating,4,,,{T0 + 9000}", f"u3,c,view,,,,{T0 + 200}",
    f"u3,a,view,,,,{T0 + 300}", f"u3,b,click,,,,{T0 + 400}",
    f"u3,c,purchase,1,,x9,{T0 + 20000}", f"u1,a,view,,,,{T0 + 30000}"]


def make_shop(root, extra_events=()):
    root.mkdir(parents=True, exist_ok=True)
    (root / "items.csv").write_text(ITEMS, encoding="utf-8")
    (root / "events.csv").write_text(
        EVENTS_HEADER + "\n".join(EVENT_ROWS + list(extra_events)) + "\n", encoding="utf-8")
    return str(root)


def read_split(uri, split):
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(uri, f"Split-{split}", "data_tfrecord-*.gz")))
    assert files, f"no TFRecord files in Split-{split}"
    return [examples.decode_example(r.numpy())
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def direct_pipeline():
    return beam.Pipeline(options=PipelineOptions(["--direct_running_mode=in_memory"]))


def run_executor(tmp_path, data_dir, on_bad_rows="fail", **options):
    uris = {name: str(tmp_path / name) for name in ("examples", "report", "work")}
    os.makedirs(uris["report"], exist_ok=True)
    summary = seg.generate_shop_examples(direct_pipeline, data_dir, on_bad_rows, 0.2, 30,
                                         uris["examples"], uris["report"], uris["work"],
                                         **options)
    return uris, summary


@pytest.mark.parametrize("kwargs, message", [
    ({"data_dir": ""}, "data_dir"),
    ({"on_bad_rows": "skip"}, "on_bad_rows must be one of fail, quarantine"),
    ({"eval_fraction": 1.0}, "eval_fraction"),
    ({"session_gap_minutes": 0}, "session_gap_minutes"),
    ({"session_gap_minutes": 2.5}, "session_gap_minutes"),
    ({"rank_fraction": 0.9}, "rank_fraction"),
    ({"rank_fraction": -0.1}, "rank_fraction"),
    ({"eval_from": "yesterday"}, "eval_from='yesterday': not an ISO-8601"),
    ({"eval_from": "2024-01-02T00:00:00"}, "give a time zone"),
    ({"rank_from": "2024-01-01T00:00:00Z"}, "rank_from needs eval_from"),
    ({"eval_from": "2024-01-01T00:00:00Z", "rank_from": "2024-01-02T00:00:00Z"},
     "must be before eval_from"),
    ({"history_length": 0}, r"history_length=0: must be a whole number of items in \[1, 200\]"),
    ({"history_length": 500}, "history_length=500"),
])
def test_component_rejects_bad_parameters(kwargs, message):
    params = {"data_dir": "shop", **kwargs}
    with pytest.raises(ValueError, match=message):
        seg.ShopExampleGen(**params)


def test_component_declares_outputs():
    component = seg.ShopExampleGen(data_dir="shop", on_bad_rows="quarantine")
    assert set(component.outputs) == {"examples", "report"}
    assert component.outputs["report"].type is seg.ShopDataReport
    assert component.exec_properties["eval_fraction"] == 0.1


def test_executor_writes_splits_and_summary(tmp_path):
    uris, summary = run_executor(tmp_path, make_shop(tmp_path / "shop"))
    train, evaluation = read_split(uris["examples"], "train"), read_split(uris["examples"],
                                                                          "eval")
    catalog = read_split(uris["examples"], "catalog")
    assert len(train) + len(evaluation) == 10
    assert summary["splits"]["train"]["examples"] == len(train) == 8
    assert summary["splits"]["eval"]["examples"] == len(evaluation) == 2
    assert sorted(e[features.ITEM_ID] for e in catalog) == ["a", "b", "c", "cold"]
    assert summary["tables"]["events"]["rows_read"] == len(EVENT_ROWS)
    with open(os.path.join(uris["report"], "summary.json")) as f:
        assert json.load(f) == summary
    assert summary["cutoff_timestamp"] == min(e[features.TIMESTAMP] for e in evaluation)
    in_s2 = next(e for e in train if e[features.USER_ID] == "u1" and e[features.ITEM_ID] == "c")
    assert in_s2[features.QUERY] == "red shoe" and in_s2[features.ADDED_TO_CART] == 1
    assert in_s2[features.HISTORY_ITEM_IDS][:1] == ["a"] and in_s2[features.NUM_HISTORY] == 1


def test_executor_writes_histories_of_the_configured_length(tmp_path):
    """history_length 3: every split's histories have 3 entries, the engaged items strictly
    before the unit, most recent first (u3's purchase of c at +20000 follows its click of b
    at +400; a purchase in the same unit is never in its history)."""
    extra = [f"u3,a,click,,,,{T0 + 500}", f"u3,b,add_to_cart,,,,{T0 + 600}",
             f"u3,d0,view,,,,{T0 + 700}"]
    shop = make_shop(tmp_path / "shop", extra)
    (tmp_path / "shop" / "items.csv").write_text(ITEMS + "d0,Later,,,,1,true\n",
                                                 encoding="utf-8")
    component = seg.ShopExampleGen(data_dir=shop, history_length=3)
    assert component.exec_properties["history_length"] == 3
    uris, summary = run_executor(tmp_path, shop, history_length=3)
    assert summary["history_length"] == 3
    rows = [row for split in ("train", "eval", "catalog")
            for row in read_split(uris["examples"], split)]
    assert {len(row[features.HISTORY_ITEM_IDS]) for row in rows} == {3}
    later = next(r for r in rows if r[features.USER_ID] == "u3" and r[features.ITEM_ID] == "d0")
    assert later[features.HISTORY_ITEM_IDS] == ["b", "a", ""]     # b again: distinct, latest
    assert later[features.NUM_HISTORY] == 2
    purchase = next(r for r in rows if r[features.USER_ID] == "u3"
                    and r[features.TIMESTAMP] == T0 + 20000)
    assert purchase[features.HISTORY_ITEM_IDS] == ["b", "a", ""]


def test_executor_writes_a_rank_split_between_train_and_eval(tmp_path):
    uris, summary = run_executor(tmp_path, make_shop(tmp_path / "shop"), rank_fraction=0.3)
    units = {split: read_split(uris["examples"], split)
             for split in (features.TRAIN_SPLIT, features.RANK_SPLIT, features.EVAL_SPLIT)}
    assert {split: len(u) for split, u in units.items()} == {"train": 5, "rank": 3, "eval": 2}
    assert {split: summary["splits"][split]["examples"] for split in units} == {
        "train": 5, "rank": 3, "eval": 2}
    times = {split: [e[features.TIMESTAMP] for e in u] for split, u in units.items()}
    assert max(times["train"]) < summary["rank_cutoff_timestamp"] == min(times["rank"])
    assert max(times["rank"]) < summary["cutoff_timestamp"] == min(times["eval"])
    assert summary["rank_fraction"] == 0.3 and summary["rank_cutoff_utc"]
    without, plain = run_executor(tmp_path / "plain", make_shop(tmp_path / "shop2"))
    assert plain["rank_cutoff_timestamp"] is None and "rank" not in plain["splits"]
    assert not glob.glob(os.path.join(without["examples"], "Split-rank"))


def test_fixed_split_times_replace_the_fractions(tmp_path):
    # u1 T0+5000.. and u3 T0+400 fall in [rank_from, eval_from); T0+20000 and later: eval.
    iso = lambda t: __import__("datetime").datetime.fromtimestamp(  # noqa: E731
        t, __import__("datetime").timezone.utc).isoformat().replace("+00:00", "Z")
    uris, summary = run_executor(tmp_path, make_shop(tmp_path / "shop"), rank_fraction=0.3,
                                 eval_from=iso(T0 + 20000), rank_from=iso(T0 + 400))
    times = {split: sorted(e[features.TIMESTAMP] for e in read_split(uris["examples"], split))
             for split in (features.TRAIN_SPLIT, features.RANK_SPLIT, features.EVAL_SPLIT)}
    assert times["eval"] == [T0 + 20000, T0 + 30000]
    assert times["rank"] == [T0 + 400, T0 + 5010]
    assert max(times["train"]) < T0 + 400 and len(times["train"]) == 6
    assert (summary["cutoff_timestamp"], summary["rank_cutoff_timestamp"]) == (
        T0 + 20000, T0 + 400)
    assert summary["eval_from"] == iso(T0 + 20000)
    # eval_from alone: no rank split, whatever rank_fraction says.
    uris, summary = run_executor(tmp_path / "two", make_shop(tmp_path / "shop2"),
                                 rank_fraction=0.3, eval_from=iso(T0 + 20000))
    assert set(summary["splits"]) == {"train", "eval", "catalog"}
    assert summary["splits"]["train"]["examples"] == 8
    assert not glob.glob(os.path.join(uris["examples"], "Split-rank"))


def test_contract_failure_stops_with_readable_message(tmp_path):
    shop = make_shop(tmp_path / "shop", extra_events=[f"u9,zzz,view,,,,{T0}"])
    with pytest.raises(DataContractError, match=r"events.csv:17: field 'item_id'"):
        run_executor(tmp_path, shop)
    assert not os.path.exists(tmp_path / "examples")


def test_quarantine_policy_keeps_good_rows_and_writes_files(tmp_path):
    shop = make_shop(tmp_path / "shop", extra_events=[f"u9,zzz,view,,,,{T0}",
                                                      f"u9,a,teleport,,,,{T0}"])
    uris, summary = run_executor(tmp_path, shop, on_bad_rows="quarantine")
    assert summary["tables"]["events"]["rows_quarantined"] == 2
    assert summary["policy"] == "quarantine"
    with open(os.path.join(uris["report"], "quarantine.jsonl")) as f:
        assert len(f.readlines()) == 2
    assert summary["splits"]["train"]["examples"] + summary["splits"]["eval"]["examples"] == 10


def test_all_units_at_one_time_is_a_clear_error(tmp_path):
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "items.csv").write_text(ITEMS, encoding="utf-8")
    (shop / "events.csv").write_text(EVENTS_HEADER + f"u1,a,view,,,,{T0}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="train split is empty"):
        run_executor(tmp_path, str(shop))


@pytest.mark.slow
def test_local_dag_runner_run(tmp_path):
    from tfx import v1 as tfx
    from tfx.orchestration import metadata
    from tfx.types import artifact_utils, standard_artifacts
    from tfx.components.util import examples_utils

    shop = make_shop(tmp_path / "shop")
    component = seg.ShopExampleGen(data_dir=shop, eval_fraction=0.2)
    db = str(tmp_path / "metadata.db")
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="shop-example-gen-test", pipeline_root=str(tmp_path / "root"),
        components=[component], enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            db),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    tfx.orchestration.LocalDagRunner().run(pipeline)

    with metadata.Metadata(metadata.sqlite_metadata_connection_config(db)) as store:
        [examples_artifact] = store.store.get_artifacts_by_type(
            standard_artifacts.Examples.TYPE_NAME)
        [report] = store.store.get_artifacts_by_type(seg.ShopDataReport.TYPE_NAME)
    artifact = standard_artifacts.Examples()
    artifact.set_mlmd_artifact(examples_artifact)
    assert artifact_utils.decode_split_names(artifact.split_names) == [
        "train", "eval", "catalog"]
    assert examples_utils.get_payload_format_string(artifact) == "FORMAT_TF_EXAMPLE"
    assert report.custom_properties["train_examples"].int_value == 8

    counts = {split: read_split(artifact.uri, split) for split in ("train", "eval", "catalog")}
    assert {s: len(v) for s, v in counts.items()} == {"train": 8, "eval": 2, "catalog": 4}
    with open(os.path.join(report.uri, "summary.json")) as f:
        assert json.load(f)["splits"]["eval"]["examples"] == 2
    last = max(counts["eval"], key=lambda e: e[features.TIMESTAMP])
    assert last[features.USER_ID] == "u1" and last[features.ITEM_ID] == "a"
    assert last[features.TIMESTAMP] == T0 + 30000
    assert last[features.HISTORY_ITEM_IDS][:2] == ["c", "a"]   # cart at +5020, click at +10
    assert last[features.NUM_HISTORY] == 2 and last[features.TITLE] == "Red shoe"
    assert last[features.TOP_CATEGORY] == "Shoes" and last[features.PRICE] == 49.5


def test_user_ids_become_pseudonyms_and_erased_users_are_left_out(tmp_path):
    from pipeline.contract.pseudonym import write_new_key  # pylint: disable=C0415
    from serving.events.store import open_event_store  # pylint: disable=C0415
    names = write_new_key(tmp_path / "pseudonym.key")
    store_url = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    store = open_event_store(store_url)
    store.erase_user(names("u3"))               # the API stores and erases pseudonyms
    store.close()
    shop = make_shop(tmp_path / "shop", extra_events=[f"u9,a,teleport,,,,{T0}"])
    uris, summary = run_executor(tmp_path, shop, on_bad_rows="quarantine",
                                 pseudonym_key_file=str(tmp_path / "pseudonym.key"),
                                 erasures_from=store_url)
    units = read_split(uris["examples"], "train") + read_split(uris["examples"], "eval")
    assert {e[features.USER_ID] for e in units} == {names("u1"), names("u2")}
    assert summary["privacy"] == {"user_ids": f"pseudonymised (key id {names.key_id})",
                                  "erased_events_removed": 4}
    written = "".join(open(path, encoding="utf-8").read()
                      for path in glob.glob(os.path.join(uris["report"], "*")))
    assert names("u9") in written and '"u9"' not in written and '"u1"' not in written
