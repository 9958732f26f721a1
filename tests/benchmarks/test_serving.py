"""benchmarks/serving.py: the load loop's accounting, the synthetic shop, pushed-model inputs,
users, requests and report, and short runs."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks import serving as bench


def test_run_cell_counts_latencies_errors_and_throughput():
    def make_call():
        def call(rng):
            time.sleep(0.01)
            if rng.random() < 0.25:
                raise RuntimeError("failed call")
        return call

    row = bench.run_cell(make_call, concurrency=2, warmup_s=0.05, duration_s=0.5)
    assert row["concurrency"] == 2 and row["errors"] > 0
    assert 20 <= row["requests"] + row["errors"] <= 110
    assert row["throughput_rps"] == round(row["requests"] / 0.5, 1)
    assert 10 <= row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] < 200


def test_synthetic_shop_is_valid_and_histories_follow_the_rule(tmp_path):
    from pipeline.contract.load import load_shop
    from pipeline.examples import history_before

    histories = bench.write_synthetic_shop(tmp_path, 500, seed=3)
    shop = load_shop(tmp_path)
    assert len(shop.items) == 500 and len(shop.events) == bench.USERS * bench.CLICKS_PER_USER
    user = sorted(histories)[7]
    rows = shop.events[shop.events["user_id"] == user].to_dict("records")
    assert histories[user] == history_before(rows, 2 ** 62)
    assert bench.write_synthetic_shop(tmp_path / "again", 500, seed=3) == histories


@pytest.mark.slow
def test_short_benchmark_run_writes_json_and_table(tmp_path):
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", "--sizes", "300", "--concurrency", "1,2",
         "--duration-s", "1.5", "--warmup-s", "0.5", "--workdir", str(tmp_path / "work"),
         "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((out / "serving.json").read_text())
    cells = {(r["target"], r["concurrency"]) for r in report["results"]}
    assert cells == {(t, c) for t in ("recommend", "top_k", "score") for c in (1, 2)}
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in report["results"])
    assert set(report["results"][0]["stage_mean_ms"]) >= {"retrieval", "ranking"}
    assert "| 300 | recommend | 1 |" in (out / "serving.md").read_text()


# ---- --models pushed: inputs, users, requests, report ----
def _version(folder, with_model=True):
    folder.mkdir(parents=True)
    if with_model:
        (folder / "saved_model.pb").write_bytes(b"")


def test_pushed_versions_are_the_latest_numeric_ones(tmp_path):
    for model in ("retrieval", "ranking"):
        for version in ("2", "10", "9"):
            _version(tmp_path / model / version)
        _version(tmp_path / model / ".tmp-11-abc")             # staging of a push: ignored
    assert bench.pushed_versions(tmp_path) == {"retrieval": 10, "ranking": 10}


@pytest.mark.parametrize("layout, expected", [
    ({}, "does not exist"),
    ({"retrieval/3": True}, "no pushed ranking model"),
    ({"retrieval/3": True, "ranking/notes": True}, "no pushed ranking model"),
    ({"retrieval/3": True, "ranking/4": False}, "has no saved_model.pb"),
])
def test_pushed_versions_say_what_is_missing_and_what_to_do(tmp_path, layout, expected):
    serving = tmp_path / "serving"
    if layout:
        for folder, with_model in layout.items():
            _version(serving / folder, with_model)
    with pytest.raises(bench.InputError) as e:
        bench.pushed_versions(serving)
    assert expected in str(e.value)
    assert "make demo" in str(e.value) and "--serving-dir" in str(e.value)


def test_pushed_mode_refuses_a_missing_shop_before_starting_anything(tmp_path, capsys):
    for model in ("retrieval", "ranking"):
        _version(tmp_path / "serving" / model / "1")
    code = bench.main(["--models", "pushed", "--serving-dir", str(tmp_path / "serving"),
                       "--shop", str(tmp_path / "no_shop"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "shop folder" in err and "--shop" in err and "make demo" in err
    assert not (tmp_path / "out").exists()


def test_pushed_mode_refuses_a_missing_serving_dir(tmp_path, capsys):
    code = bench.main(["--models", "pushed", "--serving-dir", str(tmp_path / "nothing"),
                       "--out", str(tmp_path / "out")])
    assert code == 2 and "run `make demo` first" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--models", "pushed", "--sizes", "300"], "--sizes is for --models synthetic"),
    (["--shop", "sample_shop"], "--serving-dir and --shop are for --models pushed"),
    (["--models", "pushed", "--targets", "recommend,nope"], "unknown target(s) nope"),
    (["--concurrency", "1,x"], "comma-separated integers"),
])
def test_arguments_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_each_mode_has_its_defaults():
    pushed = bench.parse_args(["--models", "pushed"])
    assert (pushed.serving_dir, pushed.shop) == ("serving_models", "sample_shop")
    assert pushed.targets == ["recommend", "search", "top_k", "rank_candidates"]
    synthetic = bench.parse_args([])
    assert synthetic.targets == ["recommend", "top_k", "score"]
    assert synthetic.sizes == [10000, 100000] and synthetic.serving_dir is None


def test_histories_are_distinct_engaged_items_most_recent_first():
    import pandas as pd

    events = pd.DataFrame(
        [("a", "i1", "click", 10), ("a", "i2", "view", 11), ("a", "i3", "purchase", 12),
         ("a", "i1", "add_to_cart", 13), ("b", "i4", "view", 14), ("c", "i5", "rating", 9)]
        + [("d", f"j{t}", "click", 100 + t) for t in range(60)],
        columns=["user_id", "item_id", "event_type", "timestamp"]).sample(frac=1, random_state=1)
    histories = bench.engaged_histories(events)
    assert histories["a"] == ["i1", "i3"]               # views are impressions, i1 once
    assert histories["c"] == ["i5"] and "b" not in histories
    assert histories["d"] == [f"j{t}" for t in range(59, 9, -1)]     # max_history = 50
    assert bench.engaged_histories(events, length=2)["d"] == ["j59", "j58"]


def test_histories_match_the_synthetic_shops_and_the_pipeline_rule(tmp_path):
    from pipeline.contract.load import load_shop

    expected = bench.write_synthetic_shop(tmp_path, 300, seed=5)
    assert bench.engaged_histories(load_shop(tmp_path).events) == expected


def test_search_queries_are_words_of_catalog_titles():
    from serving.api.search_text import words

    titles = ["Dwell & Co Stainless Steel 28 cm Wok", "Bloomfield Red Pizza Oven", "The", ""]
    queries = bench.search_queries(titles, 200, seed=4)
    assert queries == bench.search_queries(titles, 200, seed=4)
    assert queries != bench.search_queries(titles, 200, seed=5)
    sentences = [" ".join(words(t)) for t in titles]
    assert all(q and any(f" {q} " in f" {s} " for s in sentences) for q in queries)
    assert {len(q.split()) for q in queries} == {1, 2}
    with pytest.raises(bench.InputError):
        bench.search_queries(["the", "a"], 3, seed=0)


def test_predict_inputs_have_the_shapes_of_each_signature():
    items = {"item_id": np.array(["i1", "i2", "i3"], object)}
    history = [f"h{i}" for i in range(12)]
    top_k = bench.predict_inputs("top_k", "u1", ["h1"])
    assert top_k["history_item_ids"].shape == (1, 50) and top_k["query"].shape == (1,)
    assert list(top_k["history_item_ids"][0][:2]) == ["h1", ""]
    ranked = bench.predict_inputs("rank_candidates", "u1", history, "wok", items)
    assert ranked["user_id"].shape == () and ranked["query"].shape == ()
    assert list(ranked["history_item_ids"]) == history + [""] * 38
    assert list(bench.predict_inputs("rank_candidates", "u1", history, "wok", items,
                                     width=10)["history_item_ids"]) == history[:10]
    assert ranked["item_id"] is items["item_id"]
    scored = bench.predict_inputs("score", "u1", history, "", items)
    assert scored["user_id"].shape == (3,) and scored["history_item_ids"].shape == (3, 50)
    assert "query" not in scored
    with pytest.raises(ValueError):
        bench.predict_inputs("serving_default", "u1", [])


def test_extra_float_inputs_of_a_signature_are_zeros():
    from serving.client.model_metadata import SignatureSpec, TensorSpec

    signature = SignatureSpec(inputs={
        "item_id": TensorSpec("DT_STRING", (-1,)), "price": TensorSpec("DT_FLOAT", (-1,)),
        "retrieval_score": TensorSpec("DT_FLOAT", (-1,)),
        "temperature": TensorSpec("DT_DOUBLE", ())}, outputs={})
    extra = bench.extra_inputs(signature, {"item_id", "price"}, 4)
    assert set(extra) == {"retrieval_score", "temperature"}
    assert extra["retrieval_score"].dtype == np.float32 and extra["retrieval_score"].shape == (4,)
    assert not extra["retrieval_score"].any() and extra["temperature"].shape == ()
    assert bench.extra_inputs(None, set(), 4) == {}
    with pytest.raises(bench.InputError, match="segment"):
        bench.extra_inputs(SignatureSpec(inputs={"segment": TensorSpec("DT_STRING", (-1,))},
                                         outputs={}), set(), 4)


def test_stage_names_come_from_the_metrics_in_pipeline_order():
    from serving.api.metrics import ApiMetrics

    metrics = ApiMetrics()
    for stage, seconds in [("context", 0.001), ("retrieval", 0.02), ("candidates", 0.004),
                           ("ranking", 0.03)]:
        metrics.observe_stage(stage, seconds)
    before = bench.parse_stage_sums(metrics.exposition().decode())
    assert list(before) == ["context", "retrieval", "candidates", "ranking"]
    metrics.observe_stage("candidates", 0.006)
    metrics.observe_stage("candidates", 0.010)
    metrics.observe_stage("new_stage", 0.002)
    after = bench.parse_stage_sums(metrics.exposition().decode())
    assert bench.stage_deltas(before, after) == {"candidates": 8.0, "new_stage": 2.0}


def test_run_cell_counts_degraded_answers_per_stage():
    def make_call():
        def call(rng):
            time.sleep(0.005)
            return ["ranking"] if rng.random() < 0.5 else []
        return call

    row = bench.run_cell(make_call, 2, warmup_s=0.02, duration_s=0.3, count_degraded=True)
    assert 0 < row["degraded"] < row["requests"]
    assert row["degraded_stages"] == {"ranking": row["degraded"]}
    assert "degraded" not in bench.run_cell(make_call, 1, 0.0, 0.05)


def _pushed_report():
    row = {"catalog_items": 5197, "concurrency": 4, "requests": 100, "errors": 1,
           "throughput_rps": 33.3, "p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": 30.0}
    return {"meta": {"mode": "pushed", "date": "2026-12-02", "machine": "2 CPU cores",
                     "duration_s": 3.0, "warmup_s": 1.0, "load_before": [1.0, 1.0, 1.0],
                     "serving_dir": "serving_models", "shop": "sample_shop",
                     "model_versions": {"retrieval": 17, "ranking": 18},
                     "catalog_items": 5197, "users": 1755},
            "results": [
                {**row, "target": "recommend", "degraded": 3,
                 "stage_mean_ms": {"context": 0.8, "retrieval": 18.0, "candidates": 8.8,
                                   "ranking": 27.7, "reasons": 0.5}},
                {**row, "target": "search", "degraded": 0,
                 "stage_mean_ms": {"context": 0.01, "retrieval": 37.2, "ranking": 21.7}},
                {**row, "target": "rank_candidates"}]}


def test_markdown_of_pushed_models_names_them_and_every_stage():
    text = bench.markdown(_pushed_report())
    assert text.startswith("# Serving latency and throughput: models pushed by the TFX pipeline")
    assert "retrieval v17, ranking v18 from `serving_models`, shop `sample_shop`" in text
    assert "5,197 items; 1,755 users" in text
    assert "| 5,197 | recommend | 4 | 100 | 1 | 3 | 33.3 | 10.0 | 20.0 | 30.0 |" in text
    assert "| 5,197 | rank_candidates | 4 | 100 | 1 |  | 33.3 |" in text
    assert ("| catalog | target | concurrency | context | retrieval | candidates | ranking "
            "| reasons |") in text
    assert "| 5,197 | search | 4 | 0.01 | 37.2 |  | 21.7 |  |" in text


def test_markdown_of_synthetic_models_has_no_pushed_header():
    report = _pushed_report()
    report["meta"] = {k: v for k, v in report["meta"].items()
                      if k in ("date", "machine", "duration_s", "warmup_s", "load_before")}
    report["results"] = report["results"][2:]
    text = bench.markdown(report)
    assert text.startswith("# Serving latency and throughput\n")
    assert "serving_models" not in text and "Models " not in text
    assert "Mean time per API stage" not in text          # no API target, no stage table


@pytest.mark.slow
def test_short_pushed_run_on_models_laid_out_as_the_pusher_does(tmp_path):
    """Pushed mode end to end; synthetic models stand in for the pipeline's (same
    signatures, same serving-dir layout), since a pipeline run takes minutes."""
    setup = bench.build(300, tmp_path / "work", seed=0)
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", "--models", "pushed",
         "--serving-dir", str(setup.serving_dir), "--shop", str(setup.shop_dir),
         "--concurrency", "2", "--duration-s", "1.5", "--warmup-s", "0.5",
         "--targets", "recommend,search,top_k,score,rank_candidates", "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((out / "serving_pushed.json").read_text())
    assert not (out / "serving.json").exists()
    meta = report["meta"]
    assert meta["mode"] == "pushed" and meta["model_versions"] == {"retrieval": 1, "ranking": 1}
    assert meta["catalog_items"] == 300 and meta["users"] == bench.USERS
    assert [r["target"] for r in report["results"]] == \
        ["recommend", "search", "top_k", "score", "rank_candidates"]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in report["results"])
    assert all(r["degraded"] == 0 for r in report["results"][:2])
    assert set(report["results"][1]["stage_mean_ms"]) >= {"retrieval", "ranking"}
    assert "| 300 | rank_candidates | 2 |" in (out / "serving_pushed.md").read_text()
