"""The "product" row of the search benchmark: what a shop runs, scored on the test queries
(issue #17).

1. The folder becomes a shop export (``benchmarks/search_shop.py``): the catalog, and a
   search log built from the judgments of the train queries only.
2. ``tfx_pipeline.py --runner local`` runs every component on it with a committed config
   (``benchmarks/configs/homedepot.json``) plus the split times the export computed (whole
   train queries in the rank and eval splits; recorded in the row).
3. The pushed bundle is served by the stand-in model server; the API's own ``Services`` /
   ``Recommender.search`` (what ``/v1/search`` runs: dense retrieval with the query text,
   the candidate pool, the ranking model with the query) answers every test query in this
   process for an anonymous shopper, ``k`` = 100. The returned list is the ranking the
   protocol reads (``search_protocol.list_scores``: products not returned come after it and
   never count for Recall@100).
   With ``tune`` (a grid of API settings, e.g. the search fusion's weights), each
   combination first answers the pipeline's eval-split queries (train queries neither model
   trained on: ``search_shop.pipeline_splits``), the best by ``selection_score`` is kept,
   and the stack restarts with it. Test queries are never seen by the tuning.
4. HTTP replay: a seeded sample of test queries through the running API's ``GET /v1/search``
   must return exactly the in-process lists; p50/p99 of those requests on the full catalog.

Nothing is tuned on test queries: the config was written before any product run.
Everything derived from the research-only data goes to ``work_dir``, outside the repository.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import os
import time

import numpy as np
from tqdm import tqdm

from benchmarks import folders, search_protocol, search_shop
from benchmarks.product_run import (API_SETTINGS, InProcessApi, http_replay, run_pipeline,
                                    work_dir_for)

DEFAULT_CONFIG = os.path.join(folders.REPO, "benchmarks", "configs", "homedepot.json")
K = search_protocol.K_RECALL
CHOICES = ("benchmarks/configs/homedepot.json: retrieval with no user-id embedding (every "
           "session is its own pseudonymous shopper), top 100, and since stop 40 MiniLM's top "
           "2 layers fine-tuned on the search log (text_mode top_layers, text lr 1e-4, 800 "
           "steps; chosen in a scratch check on train queries, docs/DESIGN.md); ranker "
           "defaults; the pipeline's search terms (since stop 42: texts of >= 2 users from "
           "the train and rank splits, read by the API's BM25 word index); split times from the export (10 % of train queries each for rank and "
           "eval). Nothing was chosen on test queries.")


def write_config(base_path, split_times, out_path):
    """The committed config plus the export's split times: what the pipeline runs."""
    with open(base_path, encoding="utf-8") as f:
        config = json.load(f)
    clash = {"eval_from", "rank_from"} & set(config)
    if clash:
        raise ValueError(f"{base_path}: sets {sorted(clash)}; the search export computes the "
                         "split times, leave them out")
    config.update(eval_from=split_times["eval_from"], rank_from=split_times["rank_from"])
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return config


class ProductSearch:
    """The search benchmark's method for the product: ``start()`` exports, runs the pipeline
    and starts the stack; ``scores(queries)`` answers them through ``Recommender.search``;
    ``close()`` stops everything. ``info`` holds what the row reports."""

    def __init__(self, data, seed=0, config=DEFAULT_CONFIG, work_dir="", replay_queries=200,
                 threads=2, reuse=False, api_settings=None, tune=None, echo=tqdm.write):
        if reuse and not work_dir:
            raise ValueError("reuse needs the work_dir of an earlier run")
        work_dir = work_dir_for(work_dir, "shoprec_search_product_")
        if replay_queries < 0 or threads < 1:
            raise ValueError(f"replay_queries must be >= 0 and threads >= 1, got "
                             f"{replay_queries}, {threads}")
        self.data, self.seed, self.work_dir, self.echo = data, seed, work_dir, echo
        self.config_path = os.path.abspath(config)
        self.replay_queries, self.threads, self.reuse = replay_queries, threads, reuse
        # API settings of both the in-process services and the stack (strings, as the
        # environment gives them: SHOPREC_<NAME>)
        self.api_settings = {**API_SETTINGS, "max_k": str(K), **(api_settings or {})}
        self.tune = {name: list(values) for name, values in (tune or {}).items()}
        clash = set(self.tune) & set(api_settings or {})
        if clash or any(not values for values in self.tune.values()):
            raise ValueError(f"tune: every setting needs values and none may also be set: "
                             f"{sorted(clash) or self.tune}")
        self.index = {pid: i for i, pid in enumerate(data.products.product_id)}
        self.stack = self.api = None
        self.lists = {}             # query text -> product indices, as answered
        self.degraded, self.seconds = {}, {}
        self.info = {"options": {"config_file": os.path.relpath(self.config_path, folders.REPO),
                                 "api_settings": self.api_settings, "k": K,
                                 "replay_queries": replay_queries, "threads": threads,
                                 "tune": self.tune,
                                 "reused_pipeline_run": reuse},
                     "choices": CHOICES, "work_dir": work_dir}

    def _timed(self, name, function, *args, **kwargs):
        started = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            self.seconds[name] = round(time.time() - started, 1)

    def start(self):
        """Export, pipeline, stack and in-process API; on a failure whatever started is
        stopped before the error goes on."""
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self):
        shop = os.path.join(self.work_dir, "shop")
        config_path = os.path.join(self.work_dir, "pipeline_config.json")
        report_path = os.path.join(self.work_dir, "pipeline_report.json")
        if self.reuse:          # serving-side changes measured on the same pushed bundle
            if not os.path.isfile(report_path):
                raise ValueError(f"reuse: {report_path} not found; run once without reuse")
            with open(os.path.join(self.work_dir, "shop_export.json"), encoding="utf-8") as f:
                exported = json.load(f)
            with open(config_path, encoding="utf-8") as f:
                self.info["options"]["config"] = json.load(f)
            with open(report_path, encoding="utf-8") as f:
                report = json.load(f)
        else:
            exported = self._timed("shop_export", search_shop.to_shop, self.data, shop)
            with open(os.path.join(self.work_dir, "shop_export.json"), "w",
                      encoding="utf-8") as f:
                json.dump(exported, f, indent=2)
            self.info["options"]["config"] = write_config(
                self.config_path, exported["split_times"], config_path)
            report = self._timed("pipeline", run_pipeline, shop, self.work_dir, config_path,
                                 self.seed, self.echo)
        self.info.update(shop_export=exported, pipeline={
            key: report.get(key) for key in ("total_seconds", "component_seconds", "models")})
        self._serve(shop)
        if self.tune:
            self.info["tuning"] = self._timed("tune", self._tune)
            self.api_settings.update({name: str(value) for name, value in
                                      self.info["tuning"]["chosen"].items()})
            # the stack's API reads its settings when it starts; the model server goes on
            self.api.close()
            self.api = None
            self._timed("api_restart", self.stack.restart_api, self.api_settings)
            self._in_process_api(shop)
        self.info["options"]["api_settings"] = dict(self.api_settings)
        return self

    def _serve(self, shop):
        """The stack on the pushed bundle, and the in-process API on its model server."""
        # pylint: disable=import-outside-toplevel
        from serving.demo.local_stack import LocalStack
        self.stack = LocalStack(os.path.join(self.work_dir, "serving_models"), shop,
                                log_dir=os.path.join(self.work_dir, "stack"),
                                api_settings=self.api_settings,
                                startup_timeout_s=900.0)
        self._timed("stack_start", self.stack.start)
        self._in_process_api(shop)

    def _in_process_api(self, shop):
        """The in-process API on the stack's model server, with the stack's API settings."""
        self.api = self._timed(
            "in_process_api_start", InProcessApi, shop,
            f"{self.stack.host}:{self.stack.grpc_port}",
            f"sqlite:///{os.path.join(self.work_dir, 'in_process_events.sqlite3')}",
            **self.stack.api_settings)     # the stack's API settings: its pushed folders too
        self.info["model_versions"] = dict(self.api.services.watcher.versions)
        # the pushed search terms the word index reads (None: none were pushed)
        self.info["search_terms_version"] = \
            self.api.services.recommender.text_index.terms_version

    def _tune(self):
        """Every combination of ``self.tune`` answers the pipeline's eval-split queries;
        returns {"queries", "grid": [one row per combination], "chosen"} (the best
        ``selection_score``; the first of equals)."""
        queries = [q for q in search_shop.pipeline_splits(self.data)["eval"] if q.counted]
        recommender = self.api.services.recommender
        base, names, grid = recommender.settings, sorted(self.tune), []
        combinations = list(itertools.product(*(self.tune[n] for n in names)))
        try:
            for values in tqdm(combinations, desc="product: tuning on eval-split queries"):
                chosen = dict(zip(names, values))
                recommender.settings = dataclasses.replace(base, **chosen)
                self.lists = {}
                per_query = search_protocol.evaluate(
                    lambda qs: {"product": self.scores(qs)}, queries)["product"]
                grid.append({**chosen, **{m: float(per_query[m].mean()) for m in
                                          (search_protocol.CONDENSED, search_protocol.RECALL)},
                             "selection": search_protocol.selection_score(per_query)})
        finally:
            recommender.settings = base
            self.lists, self.degraded = {}, {}
            self.seconds.pop("score_queries", None)
        best = max(grid, key=lambda row: row["selection"])
        return {"queries": len(queries), "grid": grid,
                "chosen": {name: best[name] for name in names}}

    def _answer(self, text):
        ids, stages, _ = self.api.search(text, K)
        return text, [self.index[i] for i in ids], stages

    def scores(self, queries):
        """Full-catalog scores [len(queries), n_products] from the answers' order."""
        texts = [q.text for q in queries if q.text not in self.lists]
        started = time.time()
        with concurrent.futures.ThreadPoolExecutor(self.threads) as pool:
            for text, found, stages in pool.map(self._answer, texts):
                self.lists[text] = found
                for stage in stages:
                    self.degraded[stage] = self.degraded.get(stage, 0) + 1
        self.seconds["score_queries"] = round(self.seconds.get("score_queries", 0.0)
                                              + time.time() - started, 1)
        return search_protocol.list_scores([self.lists[q.text] for q in queries],
                                           len(self.data.products))

    def replay(self, queries):
        """The HTTP replay of a seeded sample of ``queries`` (already scored)."""
        rng = np.random.default_rng(self.seed)
        texts = sorted({q.text for q in queries})
        sample = [texts[i] for i in np.sort(rng.choice(
            len(texts), size=min(self.replay_queries, len(texts)), replace=False))]
        ids = self.data.products.product_id
        self.info["http_replay"] = self._timed(
            "http_replay", http_replay, self.stack, "/v1/search",
            [{"q": t, "k": K} for t in sample], [[ids[i] for i in self.lists[t]]
                                                  for t in sample],
            "product: /v1/search replay")
        return self.info["http_replay"]

    def close(self):
        self.info["degraded_answers"] = dict(self.degraded)
        self.info["short_lists"] = sum(len(found) < K for found in self.lists.values())
        self.info["stage_seconds"] = dict(self.seconds)
        if self.api is not None:
            self.api.close()
        if self.stack is not None:
            self.stack.stop()
