"""What the benchmarks' "product" rows share: the real pipeline run on a shop export, the
API's own services in this process on the pushed bundle, and the HTTP replay that checks the
running API answers exactly as the in-process calls did.

Used by ``benchmarks/beauty_product.py`` (recommendations, issue #14) and
``benchmarks/search_product.py`` (search, issue #17).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
from tqdm import tqdm

from benchmarks import folders
from benchmarks.folders import REPO

# API settings of the benchmarks' stacks: the defaults, but no rate limit for the replay.
API_SETTINGS = {"rate_limits": "off"}


def work_dir_for(work_dir, prefix):
    """``work_dir``, or a new temporary folder; never inside the repository (what is written
    there derives from research-only data)."""
    import tempfile  # pylint: disable=import-outside-toplevel
    work_dir = work_dir or tempfile.mkdtemp(prefix=prefix)
    if folders.inside_repo(work_dir):
        raise ValueError(f"work_dir {work_dir} is inside the repository; the shop export "
                         "derives from research-only data: use a folder outside it")
    return work_dir


class ProductRunError(RuntimeError):
    """A stage of the product run failed; the message says which and where its log is."""


# Where run_pipeline writes in its work_dir (names= overrides some).
PIPELINE_FILES = {"pipeline_root": "pipeline_root", "metadata": "metadata.db",
                  "serving": "serving_models", "report": "pipeline_report.json",
                  "log": "pipeline.log"}


def run_pipeline(shop_dir, work_dir, config_path, seed, echo=print, overrides=None,
                 names=None, require_push=True, args=()):
    """``tfx_pipeline.py --runner local`` on the export; returns its report (component wall
    times from ML Metadata, the models' eval metrics, blessing and push).

    ``overrides``: PipelineConfig keys over the config file (``--set``); ``names``: file
    names in ``work_dir`` other than ``PIPELINE_FILES`` (runs that share one pipeline root
    and ML Metadata, each with its own report, so that a config with ``enable_cache``
    reuses their unchanged components); ``require_push``: fail unless both models were
    pushed; ``args``: further tfx_pipeline.py arguments (e.g. ``--from-nodes``)."""
    path = {key: os.path.join(work_dir, name)
            for key, name in dict(PIPELINE_FILES, **(names or {})).items()}
    report_path = path["report"]
    command = [sys.executable, os.path.join(REPO, "tfx_pipeline.py"), "--runner", "local",
               "--config", config_path, "--data", shop_dir,
               "--pipeline-root", path["pipeline_root"], "--metadata-path", path["metadata"],
               "--serving-dir", path["serving"], "--seed", str(seed), "--report", report_path,
               "--log-file", path["log"]]
    for key, value in (overrides or {}).items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    command += list(args)
    echo("pipeline: " + " ".join(command[1:]))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            echo("  " + line.rstrip())
    if proc.returncode:
        raise ProductRunError(f"the pipeline failed (exit {proc.returncode}); full log: "
                              f"{path['log']}")
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    for model in ("retrieval", "ranking") if require_push else ():
        result = report.get("models", {}).get(model, {})
        if not result.get("pushed"):
            raise ProductRunError(f"the pipeline did not push a {model} model (blessed: "
                                  f"{result.get('blessed')}; failed thresholds: "
                                  f"{result.get('failed')}); report: {report_path}")
    return report


class InProcessApi:
    """The API's ``Services`` (catalog, event store with the export imported, model backend
    and watcher, recommender) in this process, on a model server's gRPC address.
    ``settings``: API settings besides the defaults (e.g. ``max_k="100"``)."""

    def __init__(self, shop_dir, grpc_address, event_store, startup_timeout_s=600.0,
                 **settings):
        # pylint: disable=import-outside-toplevel
        from serving.api.metrics import ApiMetrics
        from serving.api.services import Services
        from serving.api.settings import Settings
        from serving.api.settings import ENV_PREFIX
        # The API's defaults (the recommender is called directly: no auth, no rate limit),
        # ``settings`` read as the stack's API reads its environment (strings allowed).
        settings = Settings.from_env(
            {ENV_PREFIX + name.upper(): str(value) for name, value in settings.items()},
            shop_dir=shop_dir, tfserving_grpc=grpc_address, event_store=event_store,
            auth="off", access_log=False, startup_wait_s=startup_timeout_s)
        self.services = Services(settings, ApiMetrics()).start()
        if not self.services.watcher.ready:
            self.services.close()
            raise ProductRunError(f"the in-process API found no ready models at "
                                  f"{grpc_address}: {self.services.watcher.last_error}")

    def _answer(self, result):
        """(item ids, degraded stages, strategy) of a Recommendations."""
        return ([self.services.catalog.ids[r.row] for r in result.items],
                list(result.degraded), result.strategy)

    def recommend(self, user_id, k):
        """What ``/v1/recommend`` answers for ``user_id``."""
        svc = self.services
        return self._answer(svc.recommender.recommend(svc.user_key(user_id), k))

    def stages(self, user_id):
        """(retrieval's top K as the model returned it, the candidate pool) of
        ``/v1/recommend`` for ``user_id`` (``Recommender.stages``)."""
        svc = self.services
        return svc.recommender.stages(svc.user_key(user_id))

    def search(self, query, k):
        """What ``/v1/search?q=`` answers for an anonymous shopper."""
        return self._answer(self.services.recommender.search(query, None, k))

    def close(self):
        self.services.close()


def http_replay(stack, path, requests, expected, desc="product: HTTP replay"):
    """GET ``path`` with each of ``requests`` (query parameters) on the running API:
    agreement of the answers' item ids with ``expected`` (the in-process lists, same order),
    and latency percentiles."""
    import httpx  # pylint: disable=import-outside-toplevel
    headers = stack.headers("shopfront")
    seconds, mismatches = [], []
    with httpx.Client(base_url=stack.api_url, timeout=30.0) as client:
        for params, want in tqdm(list(zip(requests, expected)), desc=desc,
                                 dynamic_ncols=True, mininterval=5):
            started = time.perf_counter()
            response = client.get(path, params=params, headers=headers)
            seconds.append(time.perf_counter() - started)
            if response.status_code != 200:
                mismatches.append({**params, "status": response.status_code,
                                   "body": response.text[:300]})
                continue
            body = response.json()
            got = [item["item_id"] for item in body["items"]]
            if got != want or body["degraded"]:
                mismatches.append({**params, "http": got, "in_process": want,
                                   "degraded": body["degraded"]})
    ms = np.asarray(seconds) * 1000.0
    return {"requests": len(requests), "agree": len(requests) - len(mismatches),
            "mismatches": mismatches[:20], "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}
