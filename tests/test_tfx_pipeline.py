"""End to end: the whole TFX pipeline on a tiny sample shop, twice (good, then degraded,
reusing the first run's cached data components)."""
import collections
import glob
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

import tfx_pipeline
from pipeline.configs import load_config
from pipeline.contract.pseudonym import Pseudonyms
from tests.conftest import pushed_versions

pytestmark = pytest.mark.slow

NODES = ("ShopExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "AnomaliesGate",
         "Transform", "retrieval_trainer", "CandidateExamples", "ranking_trainer",
         "latest_blessed_retrieval_resolver",
         "retrieval_evaluator", "retrieval_pusher", "latest_blessed_ranking_resolver",
         "ranking_evaluator", "ranking_pusher", "UserSegments", "SegmentsPusher", "SearchTerms",
         "SearchTermsPusher")


def _blessed(pipeline_root, evaluator_id):
    """{execution dir: blessed?} from the evaluator's BLESSED / NOT_BLESSED marker files."""
    out = {}
    for run in glob.glob(os.path.join(pipeline_root, evaluator_id, "blessing", "*")):
        out[run] = os.path.exists(os.path.join(run, "BLESSED"))
    return out


def _evaluations(pipeline_root, evaluator_id):
    """The evaluator's TFMA output dirs, oldest execution first."""
    runs = glob.glob(os.path.join(pipeline_root, evaluator_id, "evaluation", "*"))
    return sorted(runs, key=lambda path: int(os.path.basename(path)))


def _candidate_metrics(path):
    """{(slice, output, metric): value} of the evaluated (candidate) model; slice = tuple of
    (column, value) pairs, () for overall. Baseline values and diffs are left out."""
    import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel
    out = {}
    for record in tfma.load_metrics(path):
        slice_key = []
        for key in record.slice_key.single_slice_keys:
            value = getattr(key, key.WhichOneof("kind"))
            slice_key.append((key.column, value.decode() if isinstance(value, bytes) else value))
        for entry in record.metric_keys_and_values:
            if entry.key.is_diff or entry.key.model_name == "baseline":
                continue
            out[(tuple(slice_key), entry.key.output_name, entry.key.name)] = (
                entry.value.double_value.value)
    return out


def test_every_component_completes(runs):
    times = runs["first"]["component_seconds"]
    assert set(NODES) <= set(times), sorted(set(NODES) - set(times))


def test_second_run_reuses_the_cached_data_components_and_retrains(runs):
    assert runs["first"]["cached_components"] == []
    cached = set(runs["second"]["cached_components"])
    assert {"ShopExampleGen", "StatisticsGen", "SchemaGen", "Transform"} <= cached, cached
    assert not cached & {"retrieval_trainer", "CandidateExamples", "ranking_trainer",
                         "retrieval_evaluator", "ranking_evaluator"}, cached


def test_no_raw_user_id_reaches_the_vocabularies_or_the_pushed_models(runs):
    """With a pseudonym key, Transform's user vocabulary and everything pushed hold
    pseudonyms only (docs/privacy.md); the shop's own ids appear nowhere."""
    from pipeline.contract.load import load_shop  # pylint: disable=import-outside-toplevel
    cfg = runs["cfg"]
    raw_ids = set(load_shop(cfg.data_dir).events["user_id"])
    vocabularies = glob.glob(os.path.join(cfg.pipeline_root, "Transform", "transform_graph",
                                          "*", "transform_fn", "assets", "*user_id*"))
    assert vocabularies, "no user vocabulary found"
    with open(vocabularies[0], encoding="utf-8") as f:
        entries = [line.rstrip("\n") for line in f if line.strip()]
    assert len(entries) > 50 and all(e.startswith("p_") for e in entries), entries[:5]
    assert all(re.fullmatch(r"u\d{6}", u) for u in raw_ids)     # the sample shop's form
    for path in glob.glob(os.path.join(cfg.serving_dir, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                found = {m.decode() for m in re.findall(rb"u\d{6}", f.read())}
            assert not found & raw_ids, (path, sorted(found & raw_ids)[:3])


def test_both_models_pushed_once_blessed(runs):
    for model in ("retrieval", "ranking"):
        versions = runs["first_versions"][model]
        assert len(versions) == 1, (model, versions)
        assert os.path.exists(os.path.join(runs["cfg"].serving_dir, model, versions[0],
                                           "saved_model.pb"))


@pytest.mark.parametrize("model", ["retrieval", "ranking"])
def test_degraded_candidate_is_not_blessed_and_not_pushed(runs, model):
    cfg = runs["cfg"]
    blessings = _blessed(cfg.pipeline_root, f"{model}_evaluator")
    assert sorted(blessings.values()) == [False, True], (model, blessings)
    assert pushed_versions(cfg.serving_dir, model) == runs["first_versions"][model]


def test_report_has_each_models_blessing_push_and_metrics(runs):
    """run_local's report (printed as the run's results): read back from ML Metadata."""
    first, second = runs["first"]["models"], runs["second"]["models"]
    for model in ("retrieval", "ranking"):
        assert first[model]["blessed"] is True and first[model]["pushed"] is True, first
        assert [first[model]["pushed_version"]] == runs["first_versions"][model]
        assert second[model]["blessed"] is False and second[model]["pushed"] is False, second
        assert second[model]["failed"] and second[model]["baseline"], second
    assert {"NDCG@10", "click AUC", "purchase AUC"} <= set(first["ranking"]["metrics"])
    assert 0 < first["retrieval"]["metrics"]["recall@100"] <= 1
    assert "recall@100 vs baseline" in second["retrieval"]["failed"]


def test_retrieval_early_stopping_watches_the_rank_split(runs):
    """The good run stops early on the rank split (tests/conftest.py): checks every 50 of its
    150 steps, the evaluated model is the best check's, on the rank window's clicks."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    root = runs["cfg"].pipeline_root
    paths = sorted(glob.glob(os.path.join(root, "retrieval_trainer", "model_run", "*",
                                          "metrics.json")),
                   key=lambda p: int(p.split(os.sep)[-2]))
    with open(paths[0], encoding="utf-8") as f:
        metrics = json.load(f)
    report = metrics["early_stopping"]
    steps = [c["steps"] for c in report["checks"]]
    assert steps == [50, 100, 150][:len(steps)] and (len(steps) == 3 or report["stopped_early"])
    assert metrics["model"]["ndcg@10"] == pytest.approx(report["best_value"], abs=1e-6)
    assert os.path.exists(os.path.join(os.path.dirname(paths[0]), "validation_curve.png"))
    rank_files = glob.glob(os.path.join(root, "ShopExampleGen", "examples", "*", "Split-rank",
                                        "*"))
    clicks = 0
    for record in tf.data.TFRecordDataset(rank_files, "GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        clicks += int(example.features.feature["clicked"].int64_list.value[0])
    assert clicks > 0 and metrics["num_eval_queries"] == clicks


def _candidate_report(pipeline_root, run: int = 0):
    """CandidateExamples' report of the first run (``run`` -1: of the last)."""
    paths = sorted(glob.glob(os.path.join(pipeline_root, "CandidateExamples",
                                          "candidate_examples", "*", "candidate_examples.json")),
                   key=lambda p: int(p.split(os.sep)[-2]))
    assert paths, "no CandidateExamples report"
    with open(paths[run], encoding="utf-8") as f:
        return json.load(f), os.path.dirname(paths[run])


def test_candidate_examples_hold_the_apis_pool_for_each_click(runs):
    """Two-stage rows: every clicked unit of the rank window (train rows) and of the eval
    split is a context; its rows are the API's pool for it, with the candidate features."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from pipeline import examples  # pylint: disable=import-outside-toplevel
    cfg = runs["cfg"]
    report, raw_dir = _candidate_report(cfg.pipeline_root)
    train, evaluation = report["splits"]["train"], report["splits"]["eval"]
    assert train["from_split"] == "rank" and evaluation["from_split"] == "eval"
    assert evaluation["contexts"] >= 30, evaluation       # 39 clicked eval units
    for split in (train, evaluation):
        assert 0 < split["contexts_with_target_in_pool"] <= split["contexts"], split
        assert split["mean_pool_size"] >= cfg.retrieval_top_k, split
        assert set(split["target_found_by"]) <= {"retrieval_score", "transition_score",
                                                 "cooccurrence_score", "text_score"}, split
        shares = {int(k): v for k, v in split["target_in_retrieval_first_k"].items()}
        assert max(shares) == cfg.retrieval_top_k, shares     # cutoffs up to the top K
        in_order = [shares[k] for k in sorted(shares)]
        assert in_order == sorted(in_order) and in_order[0] < in_order[-1], shares
    assert train["rows"] <= train["contexts_with_target_in_pool"] * (cfg.ranking_negatives + 1)
    assert train["rows"] > train["contexts_with_target_in_pool"] * cfg.ranking_negatives // 2
    assert report["hard_negatives"] == train["hard_negatives"] == 0     # the default: off
    # The second run draws up to 5 of each context's negatives from the pools' first 30
    # places (after the items the user was shown and passed over).
    second, _ = _candidate_report(cfg.pipeline_root, run=-1)
    assert (second["hard_negatives"], second["hard_window"]) == (5, 30)
    hard = second["splits"]["train"]
    assert 0 < hard["hard_negatives"] <= 5 * hard["contexts_with_target_in_pool"], hard
    assert evaluation["rows"] >= evaluation["contexts_with_target_in_pool"] * cfg.retrieval_top_k
    assert report["item_to_item"]["transition_pairs"] > 0, report["item_to_item"]
    assert report["item_to_item"]["text_pairs"] > 0, report["item_to_item"]   # frozen MiniLM
    rows = [examples.decode_example(r.numpy()) for r in tf.data.TFRecordDataset(
        glob.glob(os.path.join(raw_dir, "Split-eval", "*.gz")), compression_type="GZIP")]
    assert len(rows) == evaluation["rows"]
    by_context = collections.defaultdict(list)
    for row in rows:
        by_context[row["context_id"]].append(row)
    assert len(by_context) == evaluation["contexts_with_target_in_pool"]
    # Like the API's filter_purchased: nothing the user bought before is a candidate.
    assert report["exclude_purchased"] is True and report["purchased_units"] > 0, report
    from pipeline.components import candidate_examples  # pylint: disable=import-outside-toplevel
    bought = collections.defaultdict(list)
    for split_dir in glob.glob(os.path.join(cfg.pipeline_root, "ShopExampleGen", "examples",
                                            "*", "Split-*")):
        if not split_dir.endswith("Split-catalog"):
            for user, item, timestamp in candidate_examples.read_purchases(split_dir):
                bought[user].append((timestamp, item))
    assert bought, "the sample shop has purchases"
    for context in by_context.values():
        user, when = context[0]["user_id"], context[0]["timestamp"]
        assert not {r["item_id"] for r in context} & {i for t, i in bought[user] if t < when}
    for context in by_context.values():
        assert sum(r["clicked"] for r in context) == 1, "one chosen item per context"
        assert len({r["item_id"] for r in context}) == len(context)
        assert len({(r["user_id"], r["timestamp"]) for r in context}) == 1
        assert max(r["retrieval_score"] for r in context) == 0.0   # relative to the first
    transformed = glob.glob(os.path.join(cfg.pipeline_root, "CandidateExamples",
                                         "transformed_examples", "*", "Split-train", "*.gz"))
    first = next(iter(tf.data.TFRecordDataset(transformed, compression_type="GZIP")))
    keys = set(tf.train.Example.FromString(first.numpy()).features.feature)
    assert {"item_id_idx", "retrieval_score", "transition_score", "text_score",
            "context_id"} <= keys, keys


def _served_ndcg_at_10(export, files):
    """Mean over contexts of NDCG@10 of the one clicked item in the `score` order."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    from pipeline import examples  # pylint: disable=import-outside-toplevel
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    scores = tf.saved_model.load(export).signatures["serving_default"](
        examples=tf.constant(records))["score"].numpy()
    contexts = collections.defaultdict(list)
    for record, score in zip(records, scores):
        row = examples.decode_example(record)
        contexts[row["context_id"]].append((-score, -row["clicked"]))
    gains = []
    for rows in contexts.values():
        position = [clicked for _, clicked in sorted(rows)].index(-1)
        gains.append(1.0 / np.log2(position + 2) if position < 10 else 0.0)
    return float(np.mean(gains))


def test_ranking_evaluator_blesses_the_served_order(runs):
    """The ranking Evaluator judges NDCG@10 of the combined score over each eval context's
    candidate pool (the order the API serves), with AUC per head, sliced by user
    activity and by user segment (UserSegments' assignments; "none" without one)."""
    import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel
    from tensorflow_model_analysis.writers import eval_config_writer  # pylint: disable=C0415
    cfg = runs["cfg"]
    first, second = _evaluations(cfg.pipeline_root, "ranking_evaluator")
    metrics = _candidate_metrics(first)
    overall = {(output, name) for (slice_key, output, name) in metrics if slice_key == ()}
    assert ("score", "ndcg") in overall, overall
    for head in ("click", "purchase"):
        assert {(head, "auc"), (head, "mean_label"), (head, "mean_prediction"),
                (head, "example_count")} <= overall, overall
    values = collections.defaultdict(set)
    for slice_key, _, _ in metrics:
        for column, value in slice_key:
            values[column].add(value)
    assert set(values) == {"user_activity", "user_segment"}, dict(values)
    assert values["user_activity"] <= {"cold", "warm", "heavy"}
    segment_slices = {v for v in values["user_segment"] if v != "none"}
    assert segment_slices and all(v.isdigit() for v in segment_slices), values
    assert any(s == (("user_segment", v),) and (o, n) == ("score", "ndcg")
               for (s, o, n) in metrics for v in segment_slices)
    config = eval_config_writer.load_eval_run(first)[0]
    gated = {(spec.output_names[0], metric.class_name) for spec in config.metrics_specs
             for metric in spec.metrics if metric.per_slice_thresholds}
    assert gated == {("score", "NDCG"), ("click", "AUC"), ("purchase", "AUC")}, gated
    # The good model passes them; the degraded one fails (change vs the blessed model).
    assert tfma.load_validation_result(first).validation_ok
    bad = tfma.load_validation_result(second)
    assert not bad.validation_ok
    failed = {(f.metric_key.output_name, f.metric_key.name)
              for per_slice in bad.metric_validations_per_slice for f in per_slice.failures}
    assert {("score", "ndcg"), ("click", "auc"), ("purchase", "auc")} & failed, failed
    report, raw_dir = _candidate_report(cfg.pipeline_root)
    good = {f"{o}/{n}": v for (s, o, n), v in metrics.items() if s == ()}
    # TFMA's NDCG@10 is the served order's: the pushed model's score over each context's
    # pool, computed by hand.
    assert good["score/ndcg"] == pytest.approx(_served_ndcg_at_10(
        os.path.join(cfg.serving_dir, "ranking", runs["first_versions"]["ranking"][0]),
        glob.glob(os.path.join(raw_dir, "Split-eval", "*.gz"))), abs=1e-6)
    with open(os.path.join(os.path.dirname(cfg.pipeline_root), "ranking_metrics.json"), "w",
              encoding="utf-8") as f:      # numbers for the record (docs/DESIGN.md)
        json.dump({"good": good,
                   "degraded": {f"{o}/{n}": v for (s, o, n), v in
                                _candidate_metrics(second).items() if s == ()},
                   "pool_order_ndcg_at_10": report["splits"]["eval"]["pool_order_ndcg_at_10"],
                   "candidates": report["splits"],
                   "failed": sorted(map(list, failed))}, f, indent=1)


PROBE = textwrap.dedent("""
    import collections, glob, json, os, sys
    import numpy as np
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  registers the tokeniser ops a BERT tower exports
    root, serving = sys.argv[1], sys.argv[2]
    version = sorted(os.listdir(os.path.join(serving, "retrieval")))[-1]
    model = tf.saved_model.load(os.path.join(serving, "retrieval", version))
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in ("user_id", "item_id", "query")}
    spec["history_item_ids"] = tf.io.FixedLenFeature([10], tf.string)
    spec["clicked"] = tf.io.FixedLenFeature([], tf.int64)
    def read(split):
        files = glob.glob(os.path.join(root, "ShopExampleGen", "examples", "*",
                                       "Split-" + split, "*.gz"))
        ds = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(512)
        return [tf.io.parse_example(b, spec) for b in ds]
    counts = collections.Counter()
    for b in read("train"):
        counts.update(b["item_id"].numpy()[b["clicked"].numpy() == 1].tolist())
    popular = {i for i, _ in counts.most_common(100)}
    hits = pop_hits = n = 0
    for b in read("eval"):
        keep = b["clicked"].numpy() == 1
        if not keep.any():
            continue
        out = model.signatures["top_k"](
            user_id=tf.boolean_mask(b["user_id"], keep),
            history_item_ids=tf.boolean_mask(b["history_item_ids"], keep),
            query=tf.boolean_mask(b["query"], keep))
        top = out["item_ids"].numpy()
        truth = b["item_id"].numpy()[keep]
        hits += sum(t in row for t, row in zip(truth, top))
        pop_hits += sum(t in popular for t in truth)
        n += len(truth)
    extra = [m for m in ("tensorflow_recommenders", "tf_keras", "tfx", "keras_hub",
                         "tensorflow_transform")
             if m in sys.modules]
    print(json.dumps({"n": n, "model": hits / n, "popularity": pop_hits / n, "extra": extra}))
""")


def test_pushed_retrieval_beats_popularity_with_tensorflow_only(runs):
    """Loads the pushed model with tensorflow (+ tensorflow_text ops) alone."""
    cfg = runs["cfg"]
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", PROBE, cfg.pipeline_root, cfg.serving_dir],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n"] >= 30, result          # the tiny shop has 39 clicked eval units
    assert result["extra"] == [], result
    assert result["model"] > result["popularity"] * 1.2, result


SIGNATURES = {
    "retrieval": {"top_k", "serving_default", "query_embedding", "candidate_embedding",
                  "eval_hit_at_k", "related_items"},
    "ranking": {"serving_default", "score", "score_with_query", "rank_candidates"},
}


def test_api_on_the_pushed_models_is_warm_and_ranks_with_the_query(runs, tmp_path):
    """The stand-in + API on the models this pipeline pushed (same run, no second pipeline):
    the stand-in replays each export's warm-up requests before serving it, so the first
    requests meet the API's production deadline (2 s) with no degraded stage; the API loads
    the retrieval version's item-to-item tables; ranking reorders the candidates, which are
    retrieval's or explained by a history item (item-to-item sources)."""
    import time

    import portpicker
    from fastapi.testclient import TestClient

    from pipeline.contract.load import load_shop
    from pipeline.examples import ENGAGEMENT_EVENTS
    from serving.api.app import create_app
    from serving.api.model_backend import ModelBackend
    from serving.api.settings import Settings
    from serving.standin.model_config import single_model_config
    from serving.standin.model_server import ModelServer

    cfg = runs["cfg"]
    for model in SIGNATURES:
        version_dir = os.path.join(cfg.serving_dir, model, runs["first_versions"][model][0])
        assert os.path.isfile(os.path.join(version_dir, "assets.extra",
                                           "tf_serving_warmup_requests")), model
    configs = [c for model in SIGNATURES
               for c in single_model_config(model, os.path.join(cfg.serving_dir, model))]
    started = time.perf_counter()
    server = ModelServer(configs, port=portpicker.pick_unused_port(), host="127.0.0.1",
                         file_system_poll_wait_seconds=0).start()
    record = {"model_server_start_s": round(time.perf_counter() - started, 2), "warmup": {}}
    backend = None
    try:
        for model, expected in SIGNATURES.items():
            with server.registry.servable(model) as (_, servable):
                warmup = servable.warmup
            assert warmup is not None and set(warmup.signatures) == expected, (model, warmup)
            record["warmup"][model] = {"records": warmup.records,
                                       "seconds": round(warmup.seconds, 2)}
        shop = load_shop(cfg.data_dir, on_bad_rows="quarantine")
        engaged = shop.events[shop.events["event_type"].isin(sorted(ENGAGEMENT_EVENTS))]
        users = engaged["user_id"].value_counts().index[:5].tolist()
        searches = shop.events.loc[shop.events["event_type"] == "search", "query"]
        query = searches.value_counts().index[0]
        # No filters and no diversity cap: the answer is the ranked retrieval list.
        settings = Settings(shop_dir=cfg.data_dir,
                            tfserving_grpc=f"127.0.0.1:{server.grpc_port}",
                            event_store=f"sqlite:///{tmp_path / 'events.sqlite3'}",
                            startup_wait_s=300, max_category_share=1.0,
                            filter_purchased=False, filter_out_of_stock=False, auth="off",
                            pseudonym_key_file=cfg.pseudonym_key_file,
                            search_terms_dir=os.path.join(cfg.serving_dir, "search_terms"))
        names = Pseudonyms.from_file(cfg.pseudonym_key_file)
        assert settings.tfserving_deadline_s == 2.0
        backend = ModelBackend.connect(f"127.0.0.1:{server.grpc_port}", deadline_s=60,
                                       retries=0)
        with TestClient(create_app(settings)) as client:
            health = client.get("/readyz").json()
            assert health["status"] == "ready", health
            assert health["item_to_item_version"] == health["models"]["retrieval"], health
            reordered, from_tables = [], 0
            for i, user in enumerate(users):
                started = time.perf_counter()
                response = client.get("/v1/recommend", params={"user_id": user, "k": 10})
                if i == 0:
                    record["first_recommend_s"] = round(time.perf_counter() - started, 3)
                body = response.json()
                assert response.status_code == 200, body
                assert body["strategy"] == "personalized" and body["degraded"] == [], body
                ids = [item["item_id"] for item in body["items"]]
                scores = [item["score"] for item in body["items"]]
                assert scores == sorted(scores, reverse=True), "ranking score order"
                retrieved, _ = backend.top_k(names(user), body["context"]["history"],
                                             body["context"]["query"])
                history = body["context"]["history"]
                for item in body["items"]:
                    if item["item_id"] not in retrieved:
                        reason = item["reason"]
                        assert reason["type"] in ("chosen_after", "chosen_together",
                                                  "similar_to_history"), item
                        assert reason["item_id"] in history, (item, history)
                        from_tables += 1
                reordered.append(ids != retrieved[:10])
            assert any(reordered), "ranking never changed the retrieval order"
            started = time.perf_counter()
            response = client.get("/v1/search", params={"q": query, "user_id": users[0]})
            record["first_search_s"] = round(time.perf_counter() - started, 3)
            body = response.json()
            assert response.status_code == 200 and body["degraded"] == [], body
            assert body["strategy"] == "search" and len(body["items"]) == 10
            # the word index reads the search terms pushed with the served retrieval version
            text_index = client.app.state.services.recommender.text_index
            assert client.get("/readyz").json()["search_terms_version"] == \
                text_index.terms_version == str(health["models"]["retrieval"]), health
            assert text_index.terms.items
            _live_item_on_the_pushed_models(client, shop.items, record)
    finally:
        if backend is not None:
            backend.close()
        server.stop(grace_s=1)
    record["reordered_users"] = f"{sum(reordered)}/{len(reordered)}"
    record["item_to_item_items_in_top10"] = from_tables
    with open(os.path.join(os.path.dirname(cfg.pipeline_root), "serving_warmup.json"), "w",
              encoding="utf-8") as f:      # numbers for the record (docs/serving.md)
        json.dump(record, f, indent=1)


def _live_item_on_the_pushed_models(client, items, record):
    """A product added live (issue #20): the pushed item tower encodes it from its texts
    (its id is new to the model) and retrieval's top K holds it within a second, next to
    the item whose texts it copies; its similar items share that item's top category."""
    import time

    import numpy as np

    twin = items.iloc[int(np.argmax(items["title"].str.len()))]
    new_id = "live-" + twin["item_id"]
    started = time.perf_counter()
    answer = client.post("/v1/catalog/updates", json={
        "item_id": new_id, "title": twin["title"], "brand": twin["brand"],
        "categories": twin["categories"], "description": twin["description"],
        "price": 10.0})
    assert answer.status_code == 200, answer.text
    services = client.app.state.services
    pinned = type("Pinned", (), {"model_versions": dict(services.watcher.versions)})()
    ids, _ = services.recommender._top_k("", [], twin["title"], pinned)
    record["live_item_s"] = round(time.perf_counter() - started, 3)
    assert record["live_item_s"] < 1.0, record
    assert new_id in ids, "the live item is in retrieval's top K for its own title"
    catalog = services.catalog
    row, twin_row = catalog.row(new_id), catalog.row(twin["item_id"])
    cosine = float(catalog.embeddings[row] @ catalog.embeddings[twin_row])
    others = catalog.embeddings @ catalog.embeddings[twin_row]
    record["live_item_cosine_to_twin"] = round(cosine, 3)
    assert cosine > np.quantile(others, 0.9), "encoded near the item with its texts"
    body = client.get("/v1/search", params={"q": twin["title"], "k": 10}).json()
    assert body["degraded"] == [] and new_id in [i["item_id"] for i in body["items"]], body


def test_pushes_under_load_lose_no_answer_on_the_pushed_models(runs, tmp_path):
    """Smoke of benchmarks/serving_swaps.py (10 pushes there): the real stack on the models
    this pipeline pushed, a new version pushed while 8 clients ask /v1/recommend (one push
    keeps CI short): no failed and no degraded answer, the push served (the stand-in loads
    each version in a child process, so loading never stalls the served version;
    benchmarks/results/serving_swaps.md)."""
    from benchmarks import serving_swaps  # pylint: disable=import-outside-toplevel
    cfg = runs["cfg"]
    code = serving_swaps.main([
        "--serving-dir", cfg.serving_dir, "--shop", cfg.data_dir, "--swaps", "1",
        "--clients", "8", "--settle-s", "2", "--pseudonym-key-file", cfg.pseudonym_key_file,
        "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "work")])
    report = json.loads((tmp_path / "out" / "serving_swaps.json").read_text())
    summary = report["summary"]
    assert summary["answers"] > 50 and summary["swaps_served"] == 1, report
    assert summary["failed"] == 0 and summary["degraded"] == 0, summary
    assert code == 0


def test_kubeflow_v2_spec_parses(tmp_path):
    cfg = load_config(data_dir="gs://bucket/shop", pipeline_root=str(tmp_path / "kfp_root"),
                      serving_dir="gs://bucket/serving_models", pipeline_name="ShopRec Demo")
    path = tfx_pipeline.compile_kubeflow_v2(cfg, str(tmp_path / "spec.json"), "img:1")
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    pipeline_spec = spec.get("pipelineSpec", spec)
    assert pipeline_spec["pipelineInfo"]["name"] == "shoprec-demo"
    tasks = pipeline_spec["root"]["dag"]["tasks"]
    assert {"ShopExampleGen", "Transform", "retrieval_trainer", "ranking_pusher"} <= set(tasks)


def test_user_segments_are_pushed_with_the_retrieval_version_and_hold_aggregates_only(runs):
    """UserSegments (docs/DESIGN.md, "User segments"): the report, map and assignments next
    to the pushed retrieval version; the report names no user and no segment is smaller
    than segments_min_size; assignments use pseudonyms. The ARI vs the generator's planted
    grouping is printed: the tiny shop has too few engagements per user to assert it (the
    acceptance is measured on the scale-1 shop, tests/benchmarks/test_segments.py)."""
    from pipeline.contract.load import load_shop  # pylint: disable=import-outside-toplevel
    from pipeline.sample_shop.truth import latent_groups  # pylint: disable=import-outside-toplevel
    from sklearn.metrics import adjusted_rand_score  # pylint: disable=import-outside-toplevel
    cfg = runs["cfg"]
    version = runs["first_versions"]["retrieval"][0]
    assert pushed_versions(cfg.serving_dir, "segments") == [version]
    pushed = os.path.join(cfg.serving_dir, "segments", version)
    assert sorted(os.listdir(pushed)) == ["assignments.json", "segments.json", "segments.png"]
    with open(os.path.join(pushed, "segments.json"), encoding="utf-8") as f:
        text = f.read()
    report = json.loads(text)
    with open(os.path.join(pushed, "assignments.json"), encoding="utf-8") as f:
        assignments = json.load(f)["users"]
    assert report["segments"] >= 2, report
    assert all(p["size"] >= cfg.segments_min_size for p in report["profiles"]), report
    assert not re.search(r"p_[0-9a-f]{32}|u\d{6}", text)
    assert assignments and all(u.startswith("p_") for u in assignments)
    assert set(assignments.values()) == set(range(report["segments"]))
    pseudonym = Pseudonyms.from_file(cfg.pseudonym_key_file)
    truth = latent_groups(3, 0.05)
    truth["user_id"] = [pseudonym(u) for u in truth["user_id"]]
    truth = truth.set_index("user_id").loc[list(assignments)]
    ari = adjusted_rand_score(truth["preferred_top"], list(assignments.values()))
    print(f"tiny shop: {report['segments']} segments of {report['users']} users, ARI vs "
          f"preferred_top {ari:.3f}")
    assert ari > 0.0, ari           # better than chance
    assert set(load_shop(cfg.data_dir).events["user_id"]).isdisjoint(assignments)


def test_search_terms_are_pushed_with_the_retrieval_version_and_name_no_user(runs):
    """SearchTerms (docs/DESIGN.md, "Search terms from the search log"): the file next to the
    pushed retrieval version; only catalog items, only search texts at least
    search_terms_min_users distinct users engaged after, and no user id."""
    from pipeline.contract.load import load_shop  # pylint: disable=import-outside-toplevel
    from serving.api.autocomplete import normalise  # pylint: disable=import-outside-toplevel
    cfg = runs["cfg"]
    version = runs["first_versions"]["retrieval"][0]
    assert pushed_versions(cfg.serving_dir, "search_terms") == [version]
    with open(os.path.join(cfg.serving_dir, "search_terms", version, "search_terms.json"),
              encoding="utf-8") as f:
        text = f.read()
    report = json.loads(text)
    shop = load_shop(cfg.data_dir, on_bad_rows="quarantine")
    searched = {normalise(q) for q in shop.events["query"] if q}
    assert report["min_users"] == cfg.search_terms_min_users and report["items"], report
    assert set(report["items"]) <= set(shop.items["item_id"])
    assert {t for terms in report["items"].values() for t in terms} <= searched
    assert all(0 < len(terms) <= cfg.search_terms_max_per_item
               for terms in report["items"].values())
    assert not re.search(r"p_[0-9a-f]{32}|u\d{6}", text)


def test_kubeflow_v2_spec_compiles_with_both_tuners(tmp_path):
    """tuning "both": the Tuner components compile for Kubeflow v2 and feed the trainers."""
    cfg = load_config(data_dir="gs://bucket/shop", pipeline_root=str(tmp_path / "kfp_root"),
                      serving_dir="gs://bucket/serving_models", tuning="both",
                      tuner_max_trials=2, tuner_steps=10)
    path = tfx_pipeline.compile_kubeflow_v2(cfg, str(tmp_path / "spec.json"), "img:1")
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    tasks = spec.get("pipelineSpec", spec)["root"]["dag"]["tasks"]
    assert {"retrieval_tuner", "ranking_tuner"} <= set(tasks)
    for model in ("retrieval", "ranking"):
        inputs = tasks[f"{model}_trainer"]["inputs"]["artifacts"]["hyperparameters"]
        assert inputs["taskOutputArtifact"]["producerTask"] == f"{model}_tuner", inputs


def test_a_partial_run_reruns_its_components_on_the_previous_runs_outputs(runs, tmp_path):
    """tfx_pipeline.run_local(from_nodes=..., to_nodes=...) is TFX's partial run: only the
    components between them run, on the previous run's artifacts (here a copy of the
    session's ML Metadata, so the shared run is untouched)."""
    import dataclasses  # pylint: disable=import-outside-toplevel
    import shutil  # pylint: disable=import-outside-toplevel
    from ml_metadata import metadata_store  # pylint: disable=import-outside-toplevel
    from ml_metadata.proto import metadata_store_pb2  # pylint: disable=import-outside-toplevel
    from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel
    from pipeline.pipeline import create_pipeline  # pylint: disable=import-outside-toplevel
    cfg = runs["cfg"]
    components = create_pipeline(cfg, tfx.orchestration.metadata.sqlite_metadata_connection_config(
        str(tmp_path / "unused.db"))).components
    # TFX's selection: downstream of a from-node, upstream of a to-node
    assert tfx_pipeline.partial_nodes(components, ["ranking_trainer"]) == [
        "ranking_trainer", "ranking_evaluator", "ranking_pusher"]
    assert tfx_pipeline.partial_nodes(components, ["Transform"], ["retrieval_trainer"]) == [
        "Transform", "retrieval_trainer"]
    with pytest.raises(ValueError, match="unknown component id.*'rankin_trainer'"):
        tfx_pipeline.partial_nodes(components, ["rankin_trainer"])

    shutil.copy(cfg.metadata_path, tmp_path / "metadata.db")
    partial = dataclasses.replace(cfg, metadata_path=str(tmp_path / "metadata.db"),
                                  pipeline_root=str(tmp_path / "root"),
                                  serving_dir=str(tmp_path / "serving"))
    report = tfx_pipeline.run_local(partial, from_nodes=["UserSegments"],
                                    to_nodes=["UserSegments"])
    assert report["partial_run"] == ["UserSegments"]
    assert list(report["component_seconds"]) == ["UserSegments"]
    assert report["cached_components"] == [] and report["models"] == {}
    assert os.listdir(tmp_path / "root") == ["UserSegments"]     # nothing else was written
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = str(tmp_path / "metadata.db")
    store = metadata_store.MetadataStore(connection)
    context = store.get_context_by_type_and_name("node", f"{cfg.pipeline_name}.UserSegments")
    latest = max(store.get_executions_by_context(context.id), key=lambda e: e.id)
    inputs = [e.artifact_id for e in store.get_events_by_execution_ids([latest.id])
              if e.type == metadata_store_pb2.Event.INPUT]
    uris = [a.uri for a in store.get_artifacts_by_id(inputs)]
    # its inputs are the session run's artifacts, under that run's pipeline root
    assert uris and all(uri.startswith(cfg.pipeline_root) for uri in uris), uris
    with pytest.raises(ValueError, match="holds no run"):
        tfx_pipeline.run_local(dataclasses.replace(
            partial, metadata_path=str(tmp_path / "none" / "metadata.db")),
            from_nodes=["UserSegments"])
