"""The "product" row of the Beauty benchmark: what a shop runs, measured on the leave-one-out
test set (issue #14).

1. The folder becomes a shop export (``beauty_data.to_shop``, the data contract) twice: the
   whole history (what the pipeline trains on) and the history without each user's last item
   (what the shop knew when the test user asked; the serving stack reads this one).
2. ``tfx_pipeline.py --runner local --config benchmarks/configs/beauty.json`` runs every
   component (ExampleGen ... Evaluators, Pushers) in a child process, exactly as a shop runs
   it. The config's fixed split times reproduce leave-one-out on the export's clock
   (``beauty_data.event_timestamps``: every user's last item on the last day, the one
   before it a day earlier): train = all but the last two items (retrieval and its
   item-to-item tables), rank = the second-to-last items (the ranker's two-stage rows:
   stacking on validation targets), eval = the last items (the Evaluators' blessing gate:
   pass or fail, nothing is chosen from it).
3. The pushed bundle is served by the stand-in model server, and the API's own
   ``Services`` / ``Recommender`` (the functions ``/v1/recommend`` calls) answer every test
   user in this process over gRPC: retrieval top K, the candidate pool, ``rank_candidates``,
   diversity, the filter of purchased items. The test target is looked up in the 10 items
   returned: Recall@K and NDCG@K of ``benchmarks/protocol.py``; *filtered* drops the user's
   history items from the list first (the API never returns purchased items, so both agree
   unless it did).
4. HTTP replay: for a seeded sample of users the running API (``serving.demo.local_stack``:
   stand-in + API subprocesses on the same bundle and export) must return exactly the lists
   of step 3; the run reports agreement and p50/p99 of those requests.

Nothing is tuned on test users: the config's values were chosen on validation users by the
benchmark-only systems (``ours``, ``ours_ranked``), recorded in the row's ``choices``.
Everything written derives from the research-only data and goes to ``work_dir`` (outside the
repository).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import time

import numpy as np
from tqdm import tqdm

from benchmarks import beauty_data, folders, protocol
from benchmarks.product_run import (API_SETTINGS, InProcessApi, http_replay, run_pipeline,
                                    work_dir_for)
from pipeline import candidate_rows

REPO = folders.REPO
DEFAULT_CONFIG = os.path.join(REPO, "benchmarks", "configs", "beauty.json")
K = 10
CHOICES = ("benchmarks/configs/beauty.json: retrieval as 'ours' (frozen MiniLM text, no "
           "user-id embedding, in-batch softmax; chosen on validation NDCG@10, "
           "benchmarks/README.md) with the causal (SASRec-style) history "
           "encoder over 50 items (history_length 50 as issue #15 sets for Beauty; causal "
           "chosen over pooled on validation NDCG@10 of 'ours', .0486 vs .0482 at history "
           "10, the ours_causal row) and its next-item objective over the whole catalog "
           "(sequence_objective_negatives 'catalog': validation NDCG@10 .0494 vs .0486 "
           "in-batch, the ours_causal_catalog row); the training length chosen on validation: "
           "early stopping on the rank split's NDCG@10 (the second-to-last items, patience 3, a "
           "check every pass over the train clicks) within a 7,212-step budget, rounded up to "
           "whole checks (the ours_causal_catalog_early row: validation NDCG@10 .0524 at the "
           "kept epoch 15 of 16 vs .0494 at the fixed 5 epochs); candidates and ranker rows as "
           "'ours_ranked' (top 100 + 50 transitions + 50 co-occurrences, 20 sampled "
           "negatives, the ranker's mean over seeds (ensemble_size 3); chosen on held-out "
           "validation users; a top 400, tried in the product_top400 row, raised the pool's "
           "ceiling but cost 19 ms of median latency and did not raise the answer, so the "
           "top 100 stays: docs/DESIGN.md 'Step 5'); item texts take a description's first "
           "300 characters when the folder has descriptions (description_chars; Beauty's "
           "items.tsv has none, so its item texts are title | brand | category); everything "
           "else the pipeline's defaults. No value was chosen on test users; the Evaluators' "
           "blessing on the eval split (= the test items) is a pass/fail gate, not a choice.")


def test_users(data):
    """[(user id, history item indices oldest first, target index)] of the leave-one-out
    test set (users with >= 3 items), in file order."""
    return [(user, np.asarray(seq[:-1]), int(seq[-1]))
            for user, seq in zip(data.user_ids, data.sequences) if len(seq) >= 3]


def list_metrics(lists, users, asins):
    """protocol.metrics_from_ranks of the target's position in each returned list
    (unfiltered; filtered: history items dropped from the list first)."""
    ranks = {"unfiltered": [], "filtered": []}
    miss = 10 ** 9
    for ids, (_, history, target) in zip(lists, users):
        target_id = asins[target]
        history_ids = {asins[i] for i in history}
        for variant, kept in (("unfiltered", ids),
                              ("filtered", [i for i in ids if i not in history_ids
                                            or i == target_id])):
            ranks[variant].append(kept.index(target_id) if target_id in kept else miss)
    out = {v: protocol.metrics_from_ranks(np.asarray(r, np.int64)) for v, r in ranks.items()}
    out["users"] = len(users)
    return out


def score_users(api, users, threads=2, desc="product: test users"):
    """``api.recommend`` for every user (a thread pool, as the API's workers run them);
    returns (lists, degraded answers by stage, strategies)."""
    degraded, strategies = {}, {}
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        answers = list(tqdm(pool.map(lambda u: api.recommend(u[0], K), users), total=len(users),
                            desc=desc, dynamic_ncols=True, mininterval=5))
    for _, stages, strategy in answers:
        strategies[strategy] = strategies.get(strategy, 0) + 1
        for stage in stages:
            degraded[stage] = degraded.get(stage, 0) + 1
    return [a[0] for a in answers], degraded, strategies


def stage_metrics(api, users, asins, threads=2):
    """The first two stages of the same answers, measured on the same users: retrieval alone
    (its top K, protocol metrics of the target's position, unfiltered and filtered) and the
    share of targets in the candidate pool the ranker orders (its ceiling)."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        stages = list(tqdm(pool.map(lambda u: api.stages(u[0]), users), total=len(users),
                           desc="product: retrieval and pool", dynamic_ncols=True,
                           mininterval=5))
    retrieval = list_metrics([ids for ids, _ in stages], users, asins)
    in_pool = [asins[target] in set(candidates)
               for (_, candidates), (_, _, target) in zip(stages, users)]
    return {"retrieval": retrieval, "pool_share": float(np.mean(in_pool)) if users else 0.0,
            "mean_pool_size": float(np.mean([len(c) for _, c in stages])) if users else 0.0,
            "retrieval_share_at": retrieval_share_at([ids for ids, _ in stages], users, asins)}


def retrieval_share_at(retrieved, users, asins,
                       cutoffs=candidate_rows.RETRIEVAL_CUTOFFS):
    """{k: share of the users' targets among retrieval's first k items}, for each cutoff
    up to the longest list retrieval returned (its K): how the pool's retrieval part would
    grow or shrink with the exported top K (pipeline ``retrieval_top_k``)."""
    longest = max((len(ids) for ids in retrieved), default=0)
    position = [{item: p for p, item in enumerate(ids)} for ids in retrieved]
    return candidate_rows.shares_within(
        [rank_of.get(asins[target], longest) for rank_of, (_, _, target) in zip(position, users)],
        longest, cutoffs)


def index_lists(lists, asins, k=K):
    """The API's answers (item ids) as catalog indices [U, k], -1 padding a short answer."""
    position = {asin: i for i, asin in enumerate(asins)}
    out = np.full((len(lists), k), -1, np.int64)
    for row, ids in enumerate(lists):
        if len(ids) > k:
            raise ValueError(f"answer {row} has {len(ids)} items, more than k = {k}")
        out[row, :len(ids)] = [position[i] for i in ids]
    return out


def _pipeline_or_reuse(shop, work_dir, config, seed, reuse, echo, rerun_from=""):
    """The pipeline's report: a new run, or with ``reuse`` the run already in ``work_dir``
    (its pushed models answer; only the API's side is measured again), or with
    ``rerun_from`` (component ids) a partial run of the pipeline on the run in ``work_dir``
    (``_partial_run``)."""
    report_path = os.path.join(work_dir, "pipeline_report.json")
    if rerun_from:
        if reuse:
            raise ValueError("reuse_pipeline and rerun_from exclude each other")
        return _partial_run(shop, work_dir, config, seed, echo, rerun_from, report_path), False
    if reuse and os.path.exists(report_path):
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
        for model in ("retrieval", "ranking"):
            if not (report.get("models", {}).get(model) or {}).get("pushed"):
                raise ValueError(f"reuse_pipeline: the run in {work_dir} pushed no {model} "
                                 f"model")
        echo(f"pipeline: reusing the run in {work_dir} ({report.get('total_seconds')} s)")
        return report, True
    if reuse:
        raise ValueError(f"reuse_pipeline: no pipeline run in {work_dir} ({report_path} is "
                         f"missing)")
    return run_pipeline(shop, work_dir, config, seed, echo), False


def _partial_run(shop, work_dir, config, seed, echo, rerun_from, report_path):
    """``tfx_pipeline.py --from-nodes rerun_from`` on the run in ``work_dir``: the named
    components and what depends on them run again with ``config`` (e.g. the ranking Trainer
    with another ranking_config), the others' outputs are the earlier run's. Each model the
    partial run evaluated must have been pushed (the served model is the new one); the
    report keeps the earlier run's results for the models it did not touch, and the earlier
    report under ``base_run``."""
    if not os.path.exists(report_path):
        raise ValueError(f"rerun_from: no pipeline run in {work_dir} ({report_path} is "
                         f"missing)")
    with open(report_path, encoding="utf-8") as f:
        base = json.load(f)
    report = run_pipeline(shop, work_dir, config, seed, echo, require_push=False,
                          args=("--from-nodes", rerun_from))
    models = dict(base.get("models", {}))
    for model, result in report.get("models", {}).items():
        if result.get("blessed") is None:          # its Evaluator did not run
            continue
        if not result.get("pushed"):
            raise ValueError(f"rerun_from: the partial run did not push a {model} model "
                             f"(blessed: {result.get('blessed')}; failed thresholds: "
                             f"{result.get('failed')}); the earlier model would answer")
        models[model] = result
    report.update(models=models, base_run={key: base.get(key) for key in (
        "total_seconds", "component_seconds", "models", "config")})
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


def config_changes(config: dict, default: dict, prefix: str = "") -> list:
    """["retrieval_config.history_encoder: 'causal' -> 'pooled'", ...]: where ``config``
    differs from ``default`` (nested dicts compared key by key)."""
    changes = []
    for key in sorted(set(config) | set(default)):
        mine, base = config.get(key, "(default)"), default.get(key, "(default)")
        if isinstance(mine, dict) and isinstance(base, dict):
            changes += config_changes(mine, base, f"{prefix}{key}.")
        elif mine != base:
            changes.append(f"{prefix}{key}: {base!r} -> {mine!r}")
    return changes


def choices_for(config: dict) -> str:
    """What the row's configuration chose: CHOICES for the product's own configuration, and
    for an ablation (another config file) what it changes first."""
    with open(DEFAULT_CONFIG, encoding="utf-8") as f:
        changes = config_changes(config, json.load(f))
    if not changes:
        return CHOICES
    return (f"An ablation of the product: benchmarks/configs/beauty.json with "
            f"{'; '.join(changes)}. The product's own choices: " + CHOICES)


def product_row(data, data_dir, seed=0, config=DEFAULT_CONFIG, work_dir="",
                replay_users=500, threads=2, echo=tqdm.write, facts=None,
                reuse_pipeline=False, rerun_from="", note=""):
    """The benchmark row of the product (module docstring): options, info (pipeline
    report, per-stage seconds, degraded answers, replay), fit/eval seconds, test metrics.
    ``facts``: beyond-accuracy facts (protocol.item_facts): then the test metrics hold the
    answers' beyond-accuracy metrics too. ``reuse_pipeline``: answer from the pipeline run
    already in ``work_dir`` (fit seconds = its recorded wall time) instead of a new one;
    ``rerun_from``: component ids, a partial run of the pipeline on the run already in
    ``work_dir`` from those components on (fit seconds = the partial run's wall time; the
    earlier run's report is kept in the row's pipeline info).
    ``note``: a sentence kept with the row (e.g. what an ablation's earlier run measured)."""
    # pylint: disable=import-outside-toplevel
    from serving.demo.local_stack import LocalStack
    work_dir = work_dir_for(work_dir, "shoprec_beauty_product_")
    if replay_users < 0 or threads < 1:
        raise ValueError(f"replay_users must be >= 0 and threads >= 1, got {replay_users}, "
                         f"{threads}")
    config = os.path.abspath(config)
    with open(config, encoding="utf-8") as f:
        options = {"config_file": os.path.relpath(config, REPO), "config": json.load(f),
                   "api_settings": API_SETTINGS, "replay_users": replay_users,
                   "threads": threads, "k": K, "reuse_pipeline": reuse_pipeline,
                   "rerun_from": rerun_from}
    seconds = {}
    started = time.time()
    shop, known = os.path.join(work_dir, "shop"), os.path.join(work_dir, "shop_known")
    exported = {"full": beauty_data.to_shop(data, shop),
                "known": beauty_data.to_shop(data, known, hold_out_last=1)}
    seconds["shop_export"] = time.time() - started
    started = time.time()
    report, reused = _pipeline_or_reuse(shop, work_dir, config, seed, reuse_pipeline, echo,
                                        rerun_from)
    seconds["pipeline"] = (float(report.get("total_seconds") or 0.0) if reused
                           else time.time() - started)
    users = test_users(data)
    asins = list(data.items.asin)
    stack = LocalStack(os.path.join(work_dir, "serving_models"), known,
                       log_dir=os.path.join(work_dir, "stack"), api_settings=API_SETTINGS,
                       startup_timeout_s=900.0)
    started = time.time()
    stack.start()
    seconds["stack_start"] = time.time() - started
    try:
        started = time.time()
        api = InProcessApi(known, f"{stack.host}:{stack.grpc_port}",
                           f"sqlite:///{os.path.join(work_dir, 'in_process_events.sqlite3')}",
                           **stack.api_settings)  # the stack's settings: its pushed folders too
        seconds["in_process_api_start"] = time.time() - started
        try:
            started = time.time()
            lists, degraded, strategies = score_users(api, users, threads)
            seconds["score_test_users"] = time.time() - started
            started = time.time()
            stage_test = stage_metrics(api, users, asins, threads)
            seconds["score_stages"] = time.time() - started
            versions = dict(api.services.watcher.versions)
        finally:
            api.close()
        test = list_metrics(lists, users, asins)
        if facts is not None:
            from trainer import beyond_accuracy  # pylint: disable=import-outside-toplevel
            test["beyond_accuracy"] = beyond_accuracy.measure(index_lists(lists, asins), facts)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(len(users), size=min(replay_users, len(users)),
                                    replace=False))
        started = time.time()
        replay = http_replay(stack, "/v1/recommend",
                             [{"user_id": users[i][0], "k": K} for i in sample],
                             [lists[i] for i in sample])
        seconds["http_replay"] = time.time() - started
    finally:
        stack.stop()
    info = {"shop_export": exported, "work_dir": work_dir, "model_versions": versions,
            "pipeline_reused": reused,
            "pipeline": {key: report.get(key) for key in (
                "total_seconds", "component_seconds", "models", "partial_run", "base_run")
                if key in report},
            "stages": stage_test, "degraded_answers": degraded, "strategies": strategies,
            "http_replay": replay,
            "choices": choices_for(options["config"]),
            "stage_seconds": {k: round(v, 1) for k, v in seconds.items()}}
    row = {"options": options, "info": info,
           "fit_seconds": seconds["shop_export"] + seconds["pipeline"],
           "eval_seconds": sum(v for k, v in seconds.items()
                               if k not in ("shop_export", "pipeline")),
           "validation": None, "test": test}
    if note:
        row["note"] = str(note)
    return row
