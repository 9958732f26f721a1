"""Serving latency and throughput: API endpoints and raw Predict calls, on synthetic models by
catalog size, or on the models the TFX pipeline pushed.

    python -m benchmarks.serving [--models synthetic] [--sizes 10000,100000]
        [--concurrency 1,8,32] [--targets recommend,top_k,score] [--duration-s 5]
        [--warmup-s 1] [--seed 0] [--out benchmarks/results] [--workdir DIR]
    python -m benchmarks.serving --models pushed [--serving-dir serving_models]
        [--shop sample_shop] [--pseudonym-key-file runs/pseudonym.key] [--concurrency 1,8,32]
        [--targets recommend,search,top_k,rank_candidates] [--duration-s 5] ...

``--models synthetic`` (default): for each catalog size a synthetic shop (items in 20 top
categories, users clicking in their two favourite ones) and synthetic retrieval/ranking
SavedModels with the production signatures (``serving/demo/synthetic_models.py``:
brute-force top-100 over the whole catalog, 64-d embeddings). Writes ``serving.json`` and
``serving.md`` into ``--out``.

``--models pushed``: the SavedModels the TFX pipeline pushed (``--serving-dir``, holding
``retrieval/<version>/`` and ``ranking/<version>/``; the latest version of each is served, as
in production) over the shop they were trained on (``--shop``, the folder with items.csv,
users.csv, events.csv): what ``make demo`` leaves in ``serving_models/`` and
``sample_shop/``. The users queried are the shop's users with engagement events, their
histories the distinct engaged items, most recent first. Writes ``serving_pushed.json`` and
``serving_pushed.md`` into ``--out`` (the synthetic results stay).

Both modes then start the local stack (stand-in model server + API, subprocesses on free
ports, ``serving/demo/local_stack.py``) and run each target at each concurrency for a bounded
time (closed loop: every worker sends its next request when the last one returns). Targets:

* ``recommend``: GET /v1/recommend?user_id=<known user>&k=10;
* ``search``: GET /v1/search?q=<one or two words of a catalog title>&k=10 (no user);
* ``top_k``: retrieval Predict ``top_k``, batch 1 (a user's history, no query);
* ``score``: ranking Predict ``score``, 100 random catalog items for one user (batch 100);
* ``rank_candidates``: ranking Predict ``rank_candidates``, ONE user context and 100 random
  catalog items (the ranking stage of a recommendation).

The Predict targets build their inputs as the API does (``serving/api/model_backend.py``) and
call the model server directly; ranking inputs the signature declares beyond those (e.g.
external float features such as ``retrieval_score``) are read from the model's metadata and
sent as zeros. Per cell: p50/p95/p99 latency, throughput, errors; for API targets also the
answers whose ``degraded`` list was not empty (a model stage failed and the API answered
without it) and the mean time of each stage (stage names as the API's ``/metrics`` reports
them). The JSON's ``meta`` holds the mode, machine, seed and, for pushed models, the serving
dir, shop, model versions served, catalog size and number of users.

Retrieval top-K by nearest-neighbour index (exact brute force vs ScaNN in the API process:
recall@100, latency, memory at 100k and 1M items) is measured by ``benchmarks/ann.py``.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import collections  # noqa: E402
import csv  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOP_CATEGORIES = 20
USERS, CLICKS_PER_USER = 2000, 8
ADJECTIVES = ("red", "blue", "green", "soft", "large", "mini", "classic", "organic", "smart",
              "wooden", "silver", "eco", "deluxe", "compact", "vintage", "bright")
MODELS = ("retrieval", "ranking")
CANDIDATES = 100             # items per ranking call (the API ranks retrieval's top 100)
SEARCH_QUERIES = 1000        # distinct search texts the search target draws from
API_TARGETS = ("recommend", "search")
DEFAULT_TARGETS = {"synthetic": "recommend,top_k,score",
                   "pushed": "recommend,search,top_k,rank_candidates"}
ALL_TARGETS = ("recommend", "search", "top_k", "score", "rank_candidates")
RESULT_NAME = {"synthetic": "serving", "pushed": "serving_pushed"}


class InputError(ValueError):
    """The pushed-mode inputs (serving dir, shop folder) cannot be used; says what to do."""


@dataclass
class Setup:
    """What one stack serves: shop folder, serving dir, catalog, users to query."""

    label: str                      # synthetic: the catalog size; pushed: "pushed"
    shop_dir: Path
    serving_dir: Path
    items: "pd.DataFrame"           # items table of load_shop
    histories: dict                 # user -> distinct engaged items, most recent first
    build_s: float = 0.0


# ---------------------------------------------------------------- synthetic models
def write_synthetic_shop(folder: Path, n_items: int, seed: int) -> dict[str, list[str]]:
    """items.csv + events.csv; returns user -> history (distinct clicks, most recent first)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    cats = rng.integers(0, TOP_CATEGORIES, n_items)
    with open(folder / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "brand", "categories", "price", "in_stock"])
        for i, c in enumerate(cats):
            words = rng.choice(ADJECTIVES, 2, replace=False)
            w.writerow([f"i{i:06d}", f"{words[0]} {words[1]} product{c} model {i}",
                        f"brand{i % 97}", f"Cat{c:02d} > Sub{i % 5}",
                        f"{rng.uniform(2, 200):.2f}", "true" if rng.random() > 0.05 else "false"])
    by_cat = [np.flatnonzero(cats == c) for c in range(TOP_CATEGORIES)]
    histories, t = {}, 1_735_689_600
    with open(folder / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "event_type", "timestamp"])
        for u in range(USERS):
            favourites = rng.choice(TOP_CATEGORIES, 2, replace=False)
            clicked = []
            for _ in range(CLICKS_PER_USER):
                pool = by_cat[favourites[0] if rng.random() < 0.7 else favourites[1]]
                item = f"i{rng.choice(pool):06d}"
                t += 7
                w.writerow([f"u{u:05d}", item, "click", t])
                clicked.append(item)
            histories[f"u{u:05d}"] = list(dict.fromkeys(reversed(clicked)))
    return histories


def build(size: int, workdir: Path, seed: int) -> Setup:
    """Synthetic shop folder, serving dir with synthetic models, user histories."""
    from pipeline.contract.load import load_shop
    from serving.demo.synthetic_models import write_models

    started = time.perf_counter()
    shop_dir, serving_dir = workdir / f"shop_{size}", workdir / f"models_{size}"
    histories = write_synthetic_shop(shop_dir, size, seed)   # deterministic: same seed, same shop
    shop = load_shop(shop_dir)
    if not (serving_dir / "ranking" / "1").is_dir():         # else: --workdir reuse
        write_models(shop.items, shop.events["item_id"].value_counts().to_dict(),
                     str(serving_dir), dim=64, seed=seed)
    return Setup(str(size), shop_dir, serving_dir, shop.items, histories,
                 time.perf_counter() - started)


# ---------------------------------------------------------------- pushed models
def pushed_versions(serving_dir: Path) -> dict[str, int]:
    """model -> latest numeric version under serving_dir/<model>/ (what TF Serving's
    ``latest`` policy serves); InputError when the folder or a version is missing."""
    serving_dir = Path(serving_dir)
    hint = ("run `make demo` first (it pushes the models to serving_models/) or pass "
            "--serving-dir DIR")
    if not serving_dir.is_dir():
        raise InputError(f"serving dir {str(serving_dir)!r} does not exist: {hint}")
    versions = {}
    for model in MODELS:
        found = sorted((int(d.name) for d in (serving_dir / model).glob("*")
                        if d.name.isdigit() and d.is_dir()), reverse=True)
        if not found:
            raise InputError(f"serving dir {str(serving_dir)!r} has no pushed {model} model "
                             f"(no numeric version folder under {model}/): {hint}")
        if not (serving_dir / model / str(found[0]) / "saved_model.pb").is_file():
            raise InputError(f"{serving_dir / model / str(found[0])} has no saved_model.pb "
                             f"(an incomplete push?): {hint}")
        versions[model] = found[0]
    return versions


def engaged_histories(events, length: int | None = None) -> dict[str, list[str]]:
    """user -> distinct engaged items (click, add to cart, purchase, rating), most recent
    first, at most ``length`` (default: the API's default ``max_history``), as the API's
    event store computes them; users without engagements are left out."""
    from pipeline.contract import spec
    from pipeline.examples import ENGAGEMENT_EVENTS
    from serving.api.settings import DEFAULT_MAX_HISTORY

    length = DEFAULT_MAX_HISTORY if length is None else length
    engaged = events[events[spec.EVENT_TYPE].isin(ENGAGEMENT_EVENTS)]
    engaged = engaged.sort_values(spec.TIMESTAMP, kind="mergesort")   # ties: file order
    histories: dict[str, list[str]] = {}
    for user, item in zip(engaged[spec.USER_ID].to_numpy()[::-1],
                          engaged[spec.ITEM_ID].to_numpy()[::-1]):
        history = histories.setdefault(user, [])
        if len(history) < length and item not in history:
            history.append(item)
    return histories


def pushed_setup(serving_dir: Path, shop_dir: Path) -> tuple[Setup, dict[str, int]]:
    """The pushed models' serving dir and their shop; (setup, model -> version on disk)."""
    from pipeline.contract.report import DataContractError
    from pipeline.contract.load import load_shop

    started = time.perf_counter()
    versions = pushed_versions(serving_dir)
    if not Path(shop_dir).is_dir():
        raise InputError(f"shop folder {str(shop_dir)!r} does not exist: run `make demo` "
                         "first (it writes sample_shop/) or pass --shop DIR")
    try:
        shop = load_shop(shop_dir, on_bad_rows="quarantine")    # as the API loads it
    except DataContractError as e:
        raise InputError(f"shop folder {str(shop_dir)!r}: {e}") from None
    histories = engaged_histories(shop.events)
    if not histories:
        raise InputError(f"shop folder {str(shop_dir)!r}: no user has engagement events "
                         "(click, add_to_cart, purchase, rating) in events")
    return Setup("pushed", Path(shop_dir), Path(serving_dir), shop.items, histories,
                 time.perf_counter() - started), versions


# ---------------------------------------------------------------- load loop
def run_cell(make_call, concurrency: int, warmup_s: float, duration_s: float,
             seed: int = 0, count_degraded: bool = False) -> dict:
    """Closed loop with `concurrency` workers; latencies of requests started in the window.

    With ``count_degraded`` each call returns the answer's ``degraded`` list (model stages
    answered without): the row counts the answers where it is not empty, and per stage.
    """
    start = time.perf_counter() + warmup_s
    end = start + duration_s
    results = [None] * concurrency

    def worker(n: int):
        call, rng = make_call(), random.Random(seed * 100_003 + n)
        latencies, errors, degraded = [], 0, collections.Counter()
        while True:
            began = time.perf_counter()
            if began >= end:
                break
            try:
                outcome = call(rng)
                ok = True
            except Exception:   # noqa: BLE001 - counted and reported as errors
                ok = False
            if began >= start:
                if ok:
                    latencies.append(time.perf_counter() - began)
                    if count_degraded and outcome:
                        degraded["answers"] += 1
                        degraded.update(outcome)
                else:
                    errors += 1
        results[n] = (latencies, errors, degraded)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=warmup_s + duration_s + 60)
    latencies = np.array([x for r in results if r for x in r[0]]) * 1000.0
    errors = sum(r[1] for r in results if r)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if len(latencies) else [np.nan] * 3
    row = {"concurrency": concurrency, "requests": int(len(latencies)), "errors": int(errors),
           "throughput_rps": round(len(latencies) / duration_s, 1),
           "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
           "p99_ms": round(float(p99), 2)}
    if count_degraded:
        degraded = sum((r[2] for r in results if r), collections.Counter())
        row["degraded"] = degraded.pop("answers", 0)
        row["degraded_stages"] = dict(sorted(degraded.items()))
    return row


def stage_means(api_url: str, headers=None) -> dict[str, tuple[float, float]]:
    """stage -> (sum seconds, count) from the API's metrics, every stage label it reports, in
    the order the API first observed them (pipeline order)."""
    return parse_stage_sums(httpx.get(f"{api_url}/metrics", timeout=10, headers=headers).text)


def parse_stage_sums(text: str) -> dict[str, tuple[float, float]]:
    """stage -> (sum seconds, count) of ``shoprec_api_stage_duration_seconds`` in a
    Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("shoprec_api_stage_duration_seconds_"):
                stage = s.labels["stage"]
                total, count = out.get(stage, (0.0, 0.0))
                if s.name.endswith("_sum"):
                    out[stage] = (s.value, count)
                elif s.name.endswith("_count"):
                    out[stage] = (total, s.value)
    return out


def stage_deltas(before: dict, after: dict) -> dict[str, float]:
    """Mean ms per stage between two ``stage_means`` snapshots (stages that ran in between)."""
    out = {}
    for stage, (total, count) in after.items():
        total0, count0 = before.get(stage, (0.0, 0.0))
        if count > count0:
            out[stage] = round(1000 * (total - total0) / (count - count0), 2)
    return out


# ---------------------------------------------------------------- targets
def search_queries(titles, n: int, seed: int) -> list[str]:
    """n search texts: one or two consecutive words (the API's tokenizer, no stop words) of
    random catalog titles; deterministic for a seed."""
    from serving.api.search_text import words

    rng = random.Random(seed)
    tokenized = [w for w in (words(str(t)) for t in titles) if w]
    if not tokenized:
        raise InputError("no catalog title has a word to search for")
    queries = []
    for _ in range(n):
        title = rng.choice(tokenized)
        size = min(len(title), rng.choice((1, 2)))
        first = rng.randrange(len(title) - size + 1)
        queries.append(" ".join(title[first:first + size]))
    return queries


def extra_inputs(signature, known, n: int) -> dict[str, np.ndarray]:
    """Zeros for each input of ``signature`` (serving.client SignatureSpec, or None) not in
    ``known``: [n] (or scalar) of its float dtype. Other unknown inputs raise: no neutral
    value is known for them."""
    out = {}
    for name, tensor in (signature.inputs.items() if signature else ()):
        if name in known:
            continue
        if tensor.dtype not in ("DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16"):
            raise InputError(f"the model asks for input {name!r} ({tensor.dtype}), which this "
                             "benchmark does not know how to fill (only float inputs get zeros)")
        shape = () if tensor.shape == () else (n,)
        out[name] = np.zeros(shape, dtype=tensor.numpy_dtype)
    return out


def predict_inputs(signature: str, user: str, history: list[str], query: str = "",
                   item_inputs: dict | None = None,
                   width: int | None = None) -> dict[str, np.ndarray]:
    """Inputs of a Predict call as the API builds them (serving/api/model_backend.py):
    ``top_k`` batch 1; ``score`` one row per item (user context repeated); ``rank_candidates``
    ONE user context (user_id and query scalars, history [L]) and the items [N]. Histories
    are padded to ``width`` (default: the API's default ``max_history``; the models keep
    their own width's most recent items)."""
    from pipeline.examples import pad_history
    from serving.api.settings import DEFAULT_MAX_HISTORY
    from trainer import features as F

    width = DEFAULT_MAX_HISTORY if width is None else width
    padded = np.empty(width, dtype=object)
    padded[:] = pad_history(history, width)
    if signature == "top_k":
        return {F.USER_ID: np.array([user], object), F.HISTORY_ITEM_IDS: padded[np.newaxis],
                F.QUERY: np.array([query], object)}
    if signature not in ("score", "rank_candidates"):
        raise ValueError(f"no inputs known for signature {signature!r}")
    n = len(item_inputs[F.ITEM_ID])
    if signature == "score":
        return {F.USER_ID: np.array([user] * n, object),
                F.HISTORY_ITEM_IDS: np.repeat(padded[np.newaxis], n, axis=0), **item_inputs}
    return {F.USER_ID: np.array(user, object), F.HISTORY_ITEM_IDS: padded,
            F.QUERY: np.array(query, object), **item_inputs}


def targets(stack, setup: Setup, seed: int):
    """target name -> factory of a per-worker call(rng); and the gRPC client to close."""
    from serving.api.catalog import Catalog
    from serving.client.clients import GrpcPredictClient
    from trainer import features as F

    grpc = GrpcPredictClient(f"127.0.0.1:{stack.grpc_port}", deadline_s=30, retries=0)
    catalog = Catalog(setup.items)
    histories = setup.histories
    users = sorted(histories)
    n = min(CANDIDATES, len(catalog))
    queries = search_queries(catalog.titles, SEARCH_QUERIES, seed)

    def candidates(rng, title: bool):
        """Item inputs of n random catalog items, as the API's ranking stage sends them."""
        rows = np.array(rng.sample(range(len(catalog)), n), dtype=np.int64)
        inputs = catalog.ranking_inputs(rows)
        if title:
            inputs[F.TITLE] = np.asarray(catalog.titles[rows], dtype=object)
        return inputs

    # inputs a ranking signature takes beyond those (e.g. external features): zeros [n]
    signatures = grpc.metadata("ranking").signatures
    extra = {name: extra_inputs(signatures.get(name), set(predict_inputs(
        name, "u", [], "", candidates(random.Random(0), name == "rank_candidates"))), n)
        for name in ("score", "rank_candidates")}

    def api(path: str, params):
        def factory():
            client = httpx.Client(base_url=stack.api_url, timeout=30,
                                  headers=stack.headers("shopfront"))

            def call(rng):
                r = client.get(path, params=params(rng))
                r.raise_for_status()
                return r.json()["degraded"]
            return call
        return factory

    def predict(model: str, signature: str, with_items: bool, outputs=None):
        def factory():
            def call(rng):
                user = rng.choice(users)
                items = candidates(rng, signature == "rank_candidates") if with_items else None
                inputs = predict_inputs(signature, user, histories[user], "", items)
                grpc.predict(model, {**inputs, **extra.get(signature, {})},
                             signature=signature, output_filter=outputs)
            return call
        return factory

    return {"recommend": api("/v1/recommend",
                             lambda rng: {"user_id": rng.choice(users), "k": 10}),
            "search": api("/v1/search", lambda rng: {"q": rng.choice(queries), "k": 10}),
            "top_k": predict("retrieval", "top_k", False),
            "score": predict("ranking", "score", True, ["score"]),
            "rank_candidates": predict("ranking", "rank_candidates", True, ["score"])}, grpc


# ---------------------------------------------------------------- report
def markdown(report: dict) -> str:
    meta = report["meta"]
    pushed = meta.get("mode") == "pushed"
    lines = ["# Serving latency and throughput" + (": models pushed by the TFX pipeline"
                                                   if pushed else ""), ""]
    if pushed:
        versions = ", ".join(f"{m} v{v}" for m, v in meta["model_versions"].items())
        lines += [f"Models {versions} from `{meta['serving_dir']}`, shop `{meta['shop']}` "
                  f"({meta['catalog_items']:,} items; {meta['users']:,} users with engagement "
                  "events are queried).", ""]
    lines += [f"{meta['date']}, {meta['machine']}, duration {meta['duration_s']} s per cell "
              f"after {meta['warmup_s']} s warm-up, load average {meta['load_before']} before "
              "the run. `degraded`: API answers given without a model stage "
              "(its call failed)." + (" API settings: " + ", ".join(
                  f"`{k}={v}`" for k, v in meta["api_settings"].items()) + "."
                  if meta.get("api_settings") else ""), "",
              "| catalog | target | concurrency | requests | errors | degraded | req/s | p50 ms "
              "| p95 ms | p99 ms |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['catalog_items']:,} | {r['target']} | {r['concurrency']} | "
                     f"{r['requests']} | {r['errors']} | {r.get('degraded', '')} | "
                     f"{r['throughput_rps']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} |")
    staged = [r for r in report["results"] if r.get("stage_mean_ms")]
    stages = list(dict.fromkeys(s for r in staged for s in r["stage_mean_ms"]))
    if staged:
        lines += ["", "Mean time per API stage (ms), by catalog, target and concurrency:", "",
                  "| catalog | target | concurrency | " + " | ".join(stages) + " |",
                  "|---|---|---|" + "---|" * len(stages)]
        for r in staged:
            lines.append(f"| {r['catalog_items']:,} | {r['target']} | {r['concurrency']} | "
                         + " | ".join(str(r["stage_mean_ms"].get(s, "")) for s in stages)
                         + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    """Arguments, checked (argparse errors exit with status 2 and say what is wrong)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", choices=("synthetic", "pushed"), default="synthetic",
                   help="synthetic models by catalog size, or the pipeline's pushed models")
    p.add_argument("--sizes", help="synthetic: catalog sizes (default 10000,100000)")
    p.add_argument("--serving-dir", help="pushed: the Pusher's folder with retrieval/<version>/ "
                                         "and ranking/<version>/ (default serving_models)")
    p.add_argument("--shop", help="pushed: the shop folder the models were trained on "
                                  "(default sample_shop)")
    p.add_argument("--pseudonym-key-file",
                   help="pushed: the key the models were trained with (make demo: "
                        "runs/pseudonym.key); the API pseudonymises user ids with it (the "
                        "Predict targets send raw ids: their latency does not depend on it)")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--targets", help=f"comma-separated, of {', '.join(ALL_TARGETS)} (default: "
                                     + "; ".join(f"{m}: {t}" for m, t in
                                                 DEFAULT_TARGETS.items()) + ")")
    p.add_argument("--duration-s", type=float, default=5.0)
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--workdir", help="where synthetic shops and models, and the stack's logs, "
                                     "are written (default: temp)")
    p.add_argument("--api-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="an API setting for the run (docs/api.md), e.g. retrieval_index=scann; "
                        "recorded in the JSON's meta")
    p.add_argument("--name", help="results file stem (default: serving, or serving_pushed)")
    args = p.parse_args(argv)
    from serving.api.settings import Settings
    names = {f.name for f in dataclasses.fields(Settings)}
    args.api_settings = {}
    for pair in args.api_setting:
        name, _, value = pair.partition("=")
        if name not in names or not value:
            p.error(f"--api-setting {pair!r}: expected NAME=VALUE with NAME a setting of "
                    f"serving/api/settings.py")
        args.api_settings[name] = value
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name):
        p.error("--name: letters, digits, '_', '.', '-' only")
    if args.models == "pushed":
        if args.sizes is not None:
            p.error("--sizes is for --models synthetic (pushed models have their shop's "
                    "catalog)")
        args.serving_dir = args.serving_dir or "serving_models"
        args.shop = args.shop or "sample_shop"
    elif args.serving_dir is not None or args.shop is not None:
        p.error("--serving-dir and --shop are for --models pushed")
    try:
        args.sizes = [int(s) for s in (args.sizes or "10000,100000").split(",")]
        args.levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError as e:
        p.error(f"--sizes and --concurrency take comma-separated integers ({e})")
    args.targets = (args.targets or DEFAULT_TARGETS[args.models]).split(",")
    unknown = [t for t in args.targets if t not in ALL_TARGETS]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(ALL_TARGETS)}")
    if not all(1 <= c <= 256 for c in args.levels) or not all(s >= 100 for s in args.sizes):
        p.error("concurrency must be 1..256 and sizes >= 100")
    if not 0 < args.duration_s <= 120 or not 0 <= args.warmup_s <= 60:
        p.error("--duration-s must be in (0, 120] and --warmup-s in [0, 60]")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    disk_versions = {}
    if args.models == "pushed":     # checked before anything slow starts
        try:
            setup, disk_versions = pushed_setup(Path(args.serving_dir), Path(args.shop))
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from serving.demo.local_stack import LocalStack

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="shoprec-bench-"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=REPO).stdout.strip()
    meta = {"mode": args.models, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "commit": commit, "python": platform.python_version(),
        "machine": f"{os.cpu_count()} CPU cores", "duration_s": args.duration_s,
        "warmup_s": args.warmup_s, "seed": args.seed, "candidates": CANDIDATES,
        "api_settings": args.api_settings,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "model_server": "development stand-in (serving.standin.model_server), not TF Serving",
        "setup": {}}
    if args.models == "pushed":
        meta.update(serving_dir=str(args.serving_dir), shop=str(args.shop),
                    pseudonym_key_file=bool(args.pseudonym_key_file),
                    model_versions=disk_versions, catalog_items=len(setup.items),
                    users=len(setup.histories))
        setups = [lambda prepared=setup: prepared]
    else:
        setups = [lambda size=size: build(size, workdir, args.seed) for size in args.sizes]
    report = {"meta": meta, "results": []}
    for make_setup in setups:
        setup = make_setup()
        started = time.perf_counter()
        with LocalStack(str(setup.serving_dir), str(setup.shop_dir),
                        log_dir=str(workdir / f"logs_{setup.label}"), startup_timeout_s=600,
                        api_settings={"rate_limits": "off",               # measure capacity
                                      **args.api_settings},
                        pseudonym_key_file=getattr(args, "pseudonym_key_file", None)) as stack:
            served = httpx.get(f"{stack.api_url}/readyz", timeout=10,
                               headers=stack.headers()).json().get("models", {})
            meta["setup"][setup.label] = {
                "build_s": round(setup.build_s, 1),
                "stack_ready_s": round(time.perf_counter() - started, 1),
                "catalog_items": len(setup.items), "users": len(setup.histories),
                "model_versions": served}
            if args.models == "pushed":
                meta["model_versions"] = served or disk_versions
            factories, grpc = targets(stack, setup, args.seed)
            for target in args.targets:
                for level in args.levels:
                    api = target in API_TARGETS
                    before = stage_means(stack.api_url, stack.headers()) if api else {}
                    row = run_cell(factories[target], level, args.warmup_s, args.duration_s,
                                   seed=args.seed, count_degraded=api)
                    row = {"catalog_items": len(setup.items), "target": target, **row}
                    if api:
                        row["stage_mean_ms"] = stage_deltas(
                            before, stage_means(stack.api_url, stack.headers()))
                    report["results"].append(row)
                    print(json.dumps(row), flush=True)
            grpc.close()
    meta["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or RESULT_NAME[args.models]
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
