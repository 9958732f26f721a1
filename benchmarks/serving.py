"""Serving latency and throughput: ``/v1/recommend`` and raw Predict calls, by catalog size.

    python -m benchmarks.serving [--sizes 10000,100000] [--concurrency 1,8,32]
        [--duration-s 5] [--warmup-s 1] [--seed 0] [--out benchmarks/results]

For each catalog size: a synthetic shop (items in 20 top categories, users clicking in
their two favourite ones), synthetic retrieval/ranking SavedModels with the production
signatures (``serving/demo/synthetic_models.py``: brute-force top-100 over the whole catalog,
64-d embeddings), then the local stack (stand-in model server + API, subprocesses on free
ports). Each target runs at each concurrency for a bounded time (closed loop: every
worker sends its next request when the last one returns): ``recommend`` (GET
/v1/recommend of a known user), ``top_k`` (retrieval Predict, batch 1) and ``score``
(ranking Predict, batch 100: the ranking stage of a recommendation). Writes
``serving.json`` and ``serving.md`` into ``--out``.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOP_CATEGORIES = 20
USERS, CLICKS_PER_USER = 2000, 8
ADJECTIVES = ("red", "blue", "green", "soft", "large", "mini", "classic", "organic", "smart",
              "wooden", "silver", "eco", "deluxe", "compact", "vintage", "bright")
STAGES = ("context", "retrieval", "filter", "ranking", "diversify", "reasons")


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


def build(size: int, workdir: Path, seed: int) -> tuple[Path, Path, dict]:
    """Shop folder, serving dir with synthetic models, user histories."""
    from pipeline.contract.load import load_shop
    from serving.demo.synthetic_models import write_models

    shop_dir, serving_dir = workdir / f"shop_{size}", workdir / f"models_{size}"
    histories = write_synthetic_shop(shop_dir, size, seed)   # deterministic: same seed, same shop
    if (serving_dir / "ranking" / "1").is_dir():                # --workdir reuse
        return shop_dir, serving_dir, histories
    shop = load_shop(shop_dir)
    write_models(shop.items, shop.events["item_id"].value_counts().to_dict(),
                 str(serving_dir), dim=64, seed=seed)
    return shop_dir, serving_dir, histories


def run_cell(make_call, concurrency: int, warmup_s: float, duration_s: float) -> dict:
    """Closed loop with `concurrency` workers; latencies of requests started in the window."""
    start = time.perf_counter() + warmup_s
    end = start + duration_s
    results = [None] * concurrency

    def worker(n: int):
        call, rng = make_call(), random.Random(n)
        latencies, errors = [], 0
        while True:
            began = time.perf_counter()
            if began >= end:
                break
            try:
                call(rng)
                ok = True
            except Exception:   # noqa: BLE001 - counted and reported as errors
                ok = False
            if began >= start:
                if ok:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1
        results[n] = (latencies, errors)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=warmup_s + duration_s + 60)
    latencies = np.array([x for r in results if r for x in r[0]]) * 1000.0
    errors = sum(r[1] for r in results if r)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if len(latencies) else [np.nan] * 3
    return {"concurrency": concurrency, "requests": int(len(latencies)), "errors": int(errors),
            "throughput_rps": round(len(latencies) / duration_s, 1),
            "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2)}


def stage_means(api_url: str) -> dict[str, tuple[float, float]]:
    """stage -> (sum seconds, count) from the API's metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    text = httpx.get(f"{api_url}/metrics", timeout=10).text
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


def targets(stack, histories: dict, size: int):
    """target name -> factory of a per-worker call(rng)."""
    from serving.client.clients import GrpcPredictClient
    from trainer import features as F

    grpc = GrpcPredictClient(f"127.0.0.1:{stack.grpc_port}", deadline_s=30, retries=0)
    users = sorted(histories)
    items = np.array([f"i{i:06d}" for i in range(size)], dtype=object)

    def padded(user):
        h = (histories[user] + [""] * 10)[:10]
        return np.array([h], dtype=object)

    def recommend():
        client = httpx.Client(base_url=stack.api_url, timeout=30)

        def call(rng):
            r = client.get("/v1/recommend", params={"user_id": rng.choice(users), "k": 10})
            r.raise_for_status()
        return call

    def top_k():
        def call(rng):
            user = rng.choice(users)
            grpc.predict("retrieval", {F.USER_ID: np.array([user], object),
                                       F.HISTORY_ITEM_IDS: padded(user),
                                       F.QUERY: np.array([""], object)}, signature="top_k")
        return call

    def score():
        def call(rng):
            user = rng.choice(users)
            rows = [rng.randrange(size) for _ in range(100)]
            grpc.predict("ranking", {
                F.USER_ID: np.array([user] * 100, object),
                F.HISTORY_ITEM_IDS: np.repeat(padded(user), 100, axis=0),
                F.ITEM_ID: items[rows], F.BRAND: np.array(["b"] * 100, object),
                F.CATEGORY: np.array(["Cat00 > Sub0"] * 100, object),
                F.PRICE: np.ones(100, np.float32), F.IN_STOCK: np.ones(100, np.int64)},
                signature="score", output_filter=["score"])
        return call

    return {"recommend": recommend, "top_k": top_k, "score": score}, grpc


def markdown(report: dict) -> str:
    lines = ["# Serving latency and throughput", "",
             f"{report['meta']['date']}, {report['meta']['machine']}, duration "
             f"{report['meta']['duration_s']} s per cell after {report['meta']['warmup_s']} s "
             f"warm-up, load average {report['meta']['load_before']} before the run.", "",
             "| catalog | target | concurrency | requests | errors | req/s | p50 ms | p95 ms "
             "| p99 ms |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['catalog_items']:,} | {r['target']} | {r['concurrency']} | "
                     f"{r['requests']} | {r['errors']} | {r['throughput_rps']} | {r['p50_ms']} "
                     f"| {r['p95_ms']} | {r['p99_ms']} |")
    lines += ["", "Mean time per /v1/recommend stage (ms), by catalog and concurrency:", "",
              "| catalog | concurrency | " + " | ".join(STAGES) + " |",
              "|---|---|" + "---|" * len(STAGES)]
    for r in report["results"]:
        if r["target"] == "recommend":
            lines.append(f"| {r['catalog_items']:,} | {r['concurrency']} | " + " | ".join(
                str(r["stage_mean_ms"].get(s, "")) for s in STAGES) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--targets", default="recommend,top_k,score")
    p.add_argument("--duration-s", type=float, default=5.0)
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--workdir", help="where shops and models are written (default: temp)")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    chosen = args.targets.split(",")
    if not all(1 <= c <= 256 for c in levels) or not all(s >= 100 for s in sizes):
        p.error("concurrency must be 1..256 and sizes >= 100")
    if not 0 < args.duration_s <= 120 or not 0 <= args.warmup_s <= 60:
        p.error("--duration-s must be in (0, 120] and --warmup-s in [0, 60]")
    from serving.demo.local_stack import LocalStack

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="shoprec-bench-"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=REPO).stdout.strip()
    report = {"meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "commit": commit, "python": platform.python_version(),
        "machine": f"{os.cpu_count()} CPU cores", "duration_s": args.duration_s,
        "warmup_s": args.warmup_s, "seed": args.seed,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "model_server": "development stand-in (serving.standin.model_server), not TF Serving",
        "setup": {}}, "results": []}
    for size in sizes:
        started = time.perf_counter()
        shop_dir, serving_dir, histories = build(size, workdir, args.seed)
        build_s = time.perf_counter() - started
        with LocalStack(str(serving_dir), str(shop_dir), log_dir=str(workdir / f"logs_{size}"),
                        startup_timeout_s=600) as stack:
            report["meta"]["setup"][str(size)] = {
                "build_s": round(build_s, 1),
                "stack_ready_s": round(time.perf_counter() - started - build_s, 1)}
            factories, grpc = targets(stack, histories, size)
            for target in chosen:
                for level in levels:
                    before = stage_means(stack.api_url) if target == "recommend" else {}
                    row = run_cell(factories[target], level, args.warmup_s, args.duration_s)
                    row = {"catalog_items": size, "target": target, **row}
                    if target == "recommend":
                        after = stage_means(stack.api_url)
                        row["stage_mean_ms"] = {
                            s: round(1000 * (after[s][0] - before.get(s, (0, 0))[0])
                                     / max(after[s][1] - before.get(s, (0, 0))[1], 1), 2)
                            for s in STAGES if s in after}
                    report["results"].append(row)
                    print(json.dumps(row), flush=True)
            grpc.close()
    report["meta"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "serving.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
