"""Retrieval top-K: exact brute force vs ScaNN (serving/api/ann.py), by catalog size.

    python -m benchmarks.ann [--sizes 100000,1000000] [--dims 64,448] [--queries 1000]
        [--k 100] [--seed 0] [--out benchmarks/results]

For each size and dimension: the exact index (``BruteForceIndex``) and the ScaNN index
``build_index(method="scann")`` builds with its default rule (``ScannParams.for_size``) over
the same embeddings; per method: recall@k of ScaNN vs the exact top k (mean over queries;
ties do not occur in float data of this kind), p50 / p99 latency of single-query ``search``
(one query at a time, as the API asks), throughput of one batched ``search`` over all
queries, build seconds, memory (the index's ``memory_bytes`` and the process RSS growth
while it was built). ScaNN is also run at other search depths (leaves_to_search × 1/4 … 4,
same index) for the latency-vs-recall chart. Writes ``ann.md``, ``ann.json`` and ``ann.png``
(latency vs recall, one panel per size) into ``--out``.

Embeddings are SYNTHETIC: 1M real items do not exist here. They imitate a catalog's:
unit vectors from a two-level mixture on the sphere (top categories, each with
sub-categories; Zipf-like sizes, exponent 1.1, so a few categories hold most items; items
spread around their sub-category centre), and queries near the items a user engaged with
(the normalised mean of 1-3 items of one sub-category plus noise), as the two-tower model's
query embedding lands near the items it should retrieve. Dimensions: 64 = the retrieval
tower's output (``RetrievalConfig.embedding_dim``); 448 = 64 + 384, the candidate
embedding when the MiniLM text embedding is appended (``text_match``, the pipeline default
with ``text_mode`` "frozen"). The JSON's ``meta`` holds the machine, seed, versions, load
average and the data description.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.outputs import write_outputs
from benchmarks.text_tower_report import environment, git_commit

REPO = Path(__file__).resolve().parent.parent
STEM = "ann"
DEPTHS = (0.25, 0.5, 1, 2, 4)          # leaves_to_search multiples for the recall curve
ZIPF = 1.1
TOP_CATEGORIES = 40
ITEMS_PER_SUBCATEGORY = 500
SPREAD = {"subcategory": 0.6, "item": 0.8, "query": 0.3}   # noise norms around each centre
DATA = ("synthetic: unit vectors from a two-level mixture on the sphere ({top} top "
        "categories, one sub-category per {per} items; Zipf-like sizes, exponent {zipf}; "
        "noise norms: sub-category {sub}, item {item}); queries = normalised mean of 1-3 "
        "items of one sub-category + noise {query}, items drawn uniformly")


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _zipf_sizes(total: int, parts: int, rng) -> np.ndarray:
    """``parts`` positive sizes summing to ``total``, proportional to 1/rank^ZIPF
    (shuffled)."""
    weights = 1.0 / np.arange(1, parts + 1) ** ZIPF
    sizes = 1 + np.floor(weights / weights.sum() * (total - parts)).astype(np.int64)
    sizes[0] += total - sizes.sum()            # every part >= 1 (total >= parts)
    return rng.permutation(sizes)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _noise(rng, shape, norm: float) -> np.ndarray:
    """Gaussian noise of expected norm ``norm`` per row."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(norm / math.sqrt(shape[-1]))


def synthetic(n: int, dim: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(items [n, dim], queries [queries, dim]), float32 unit rows; see the module doc."""
    rng = np.random.default_rng(seed)
    subs = max(1, n // ITEMS_PER_SUBCATEGORY)
    tops = min(TOP_CATEGORIES, subs)
    top_centres = _unit(rng.standard_normal((tops, dim), dtype=np.float32))
    sub_top = np.repeat(np.arange(tops), _zipf_sizes(subs, tops, rng))
    sub_centres = _unit(top_centres[sub_top] + _noise(rng, (subs, dim), SPREAD["subcategory"]))
    item_sub = np.repeat(np.arange(subs), _zipf_sizes(n, subs, rng))
    items = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):                  # bounded temporaries
        part = item_sub[start:start + 100_000]
        items[start:start + len(part)] = _unit(
            sub_centres[part] + _noise(rng, (len(part), dim), SPREAD["item"]))
    members = np.argsort(item_sub, kind="stable")
    first = np.searchsorted(item_sub[members], np.arange(subs))
    count = np.bincount(item_sub, minlength=subs)
    q = np.empty((queries, dim), np.float32)
    for i in range(queries):
        sub = item_sub[rng.integers(n)]
        picks = members[first[sub] + rng.integers(0, count[sub], rng.integers(1, 4))]
        q[i] = items[picks].mean(axis=0)
    q = _unit(q + _noise(rng, q.shape, SPREAD["query"]))
    return items, q.astype(np.float32)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over rows of |found ∩ exact| / |exact| ([B, k] row ids each)."""
    return float(np.mean([len(np.intersect1d(f, e)) / len(e) for f, e in zip(found, exact)]))


def latencies(search, queries: np.ndarray, k: int) -> dict:
    """p50 / p99 / mean ms of ``search(query[None], k)``, one query at a time."""
    times = np.empty(len(queries))
    search(queries[:1], k)                               # warm-up
    for i, q in enumerate(queries):
        began = time.perf_counter()
        search(q[np.newaxis], k)
        times[i] = time.perf_counter() - began
    p50, p99 = np.percentile(times * 1000, [50, 99])
    return {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3),
            "mean_ms": round(float(times.mean() * 1000), 3)}


def measure(index, queries: np.ndarray, k: int, exact_rows, search=None) -> tuple:
    """One row: recall vs ``exact_rows`` (None: the exact index itself), latency, batch
    throughput."""
    search = search or index.search
    row = latencies(search, queries, k)                  # warms up first
    began = time.perf_counter()
    rows, _ = search(queries, k)
    row["batch_qps"] = round(len(queries) / (time.perf_counter() - began), 1)
    row = {"recall": 1.0 if exact_rows is None else round(recall(rows, exact_rows), 4), **row}
    return row, rows


def run_size(n: int, dim: int, args) -> dict:
    """Brute force and ScaNN over one synthetic catalog; the result block of the JSON."""
    from serving.api.ann import build_index

    began = time.perf_counter()
    items, queries = synthetic(n, dim, args.queries, args.seed)
    result = {"items": n, "dim": dim, "queries": len(queries), "k": args.k,
              "data_seconds": round(time.perf_counter() - began, 1), "methods": {}}
    for method in ("brute_force", "scann"):
        rss = _rss_bytes()
        index = build_index(items, method, seed=args.seed)
        rss = _rss_bytes() - rss
        exact = result.get("_exact")
        row, rows = measure(index, queries, args.k, exact)
        if method == "brute_force":
            result["_exact"] = rows
        row.update(build_s=round(index.build_seconds, 2), index_mb=round(
            index.memory_bytes / 2**20, 1), rss_delta_mb=round(rss / 2**20, 1))
        if method == "scann":
            p = index.params
            row["params"] = {"num_leaves": p.num_leaves, "leaves_to_search": p.leaves_to_search,
                             "reorder": p.reorder_for(args.k),
                             "training_sample_size": p.training_sample_size,
                             "dimensions_per_block": p.dimensions_per_block,
                             "anisotropic_quantization_threshold":
                                 p.anisotropic_quantization_threshold}
            row["curve"] = []
            for factor in DEPTHS:
                leaves = max(1, min(p.num_leaves, round(p.leaves_to_search * factor)))
                point, _ = measure(index, queries, args.k, result["_exact"],
                                   lambda q, k, leaves=leaves: index.search_at(q, k, leaves))
                row["curve"].append({"leaves_to_search": leaves, **point})
        result["methods"][method] = row
        print(f"{n:>9,} x {dim}: {method:<11} {row}", flush=True)
        del index
    result.pop("_exact")
    brute, scann = result["methods"]["brute_force"], result["methods"]["scann"]
    result["speedup_p50"] = round(brute["p50_ms"] / scann["p50_ms"], 1)
    result["speedup_p99"] = round(brute["p99_ms"] / scann["p99_ms"], 1)
    return result


# ---------------------------------------------------------------- report
def markdown(report: dict) -> str:
    meta = report["meta"]
    target = meta["target"]
    lines = ["# Retrieval top-K: brute force vs ScaNN", "",
             f"{meta['date']}, commit {meta['commit'] or 'unknown'}, {meta['machine']}, "
             f"scann {meta['scann']}, load average {meta['load_before']} before the run and "
             f"{meta.get('load_after')} after (the cores were shared with other work). Seed "
             f"{meta['seed']}; {meta['queries']} queries, k = {meta['k']}.", "",
             f"**Embeddings are synthetic** ({meta['data'].removeprefix('synthetic: ')}); "
             "1M real items do not exist here. 64-d = the retrieval tower's output; "
             "448-d = 64 + the 384-d MiniLM text embedding appended by `text_match` (the "
             "pipeline's default).", "",
             "Recall = recall@k of ScaNN's top k vs the exact top k. Latency = one query per "
             "call (p50 / p99 ms over the queries); batch = all queries in one call. Memory: "
             "`index MB` = what the search keeps (brute force: the embeddings; ScaNN: its "
             "float32 copy, codes, tree), `RSS Δ MB` = process growth while building it.", "",
             "| items | dim | method | recall@k | p50 ms | p99 ms | speed-up p50 | batch q/s "
             "| build s | index MB | RSS Δ MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        for method, m in r["methods"].items():
            speed = f"{r['speedup_p50']}×" if method == "scann" else ""
            lines.append(f"| {r['items']:,} | {r['dim']} | {method} | {m['recall']:.4f} | "
                         f"{m['p50_ms']} | {m['p99_ms']} | {speed} | {m['batch_qps']} | "
                         f"{m['build_s']} | {m['index_mb']} | {m['rss_delta_mb']} |")
    lines += ["", f"Acceptance (issue #20): recall@{meta['k']} ≥ {target['recall']} at ≥ "
              f"{target['speedup']}× lower p50 latency than brute force at "
              f"{target['items']:,} items:", ""]
    judged = [r for r in report["results"] if r["meets_target"] is not None]
    for r in judged:
        lines.append(f"* {r['dim']}-d: recall {r['methods']['scann']['recall']:.4f}, "
                     f"{r['speedup_p50']}× → **{'met' if r['meets_target'] else 'NOT met'}**")
    if not judged:
        lines.append(f"* not judged: this run has no catalog of {target['items']:,} items")
    lines += ["", "ScaNN settings (the default rule, `ScannParams.for_size`) and the "
              "recall/latency at other search depths (same index):", "",
              "| items | dim | leaves | leaves searched | reorder | recall@k | p50 ms | p99 ms |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        s = r["methods"]["scann"]
        for point in s["curve"]:
            mark = " (default)" if point["leaves_to_search"] == s["params"][
                "leaves_to_search"] else ""
            lines.append(f"| {r['items']:,} | {r['dim']} | {s['params']['num_leaves']} | "
                         f"{point['leaves_to_search']}{mark} | {s['params']['reorder']} | "
                         f"{point['recall']:.4f} | {point['p50_ms']} | {point['p99_ms']} |")
    return "\n".join(lines) + "\n"


def chart(report: dict, path: str) -> None:
    """p50 latency (log) vs recall, one panel per catalog size, a line per dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    sizes = sorted({r["items"] for r in report["results"]})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for j, r in enumerate(x for x in report["results"] if x["items"] == size):
            colour = f"C{j}"
            curve = r["methods"]["scann"]["curve"]
            ax.plot([p["recall"] for p in curve], [p["p50_ms"] for p in curve], "o-",
                    color=colour, label=f"ScaNN {r['dim']}-d (search depths)")
            s = r["methods"]["scann"]
            ax.plot([s["recall"]], [s["p50_ms"]], "*", color=colour, markersize=14)
            b = r["methods"]["brute_force"]
            ax.plot([b["recall"]], [b["p50_ms"]], "s", color=colour, markersize=9,
                    label=f"brute force {r['dim']}-d")
        ax.axvline(report["meta"]["target"]["recall"], color="grey", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{report['meta']['k']} vs exact")
        ax.set_ylabel("p50 ms per query (log)")
        ax.set_title(f"{size:,} items (★ = default settings)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Brute force vs ScaNN, synthetic clustered embeddings")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ann", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="catalog sizes, comma-separated")
    p.add_argument("--dims", default="64,448", help="embedding dimensions, comma-separated")
    p.add_argument("--dim", help="one dimension (same as --dims D)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
        args.dims = [int(d) for d in (args.dim or args.dims).split(",")]
    except ValueError as e:
        p.error(f"--sizes and --dims take comma-separated integers ({e})")
    if not all(s >= 1000 for s in args.sizes) or not all(d >= 2 for d in args.dims):
        p.error("sizes must be >= 1000 and dimensions >= 2")
    if not 10 <= args.queries <= 100_000 or not 1 <= args.k <= 1000:
        p.error("--queries must be in 10..100000 and --k in 1..1000")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import scann  # noqa: F401  (loads TensorFlow: before any RSS is measured)
    from importlib import metadata

    env = environment()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(REPO), "machine": f"{os.cpu_count()} CPU cores",
            "python": env["python"], "platform": env["platform"],
            "scann": metadata.version("scann"), "numpy": np.__version__,
            "load_before": [round(x, 2) for x in os.getloadavg()], "seed": args.seed,
            "queries": args.queries, "k": args.k,
            "data": DATA.format(top=TOP_CATEGORIES, per=ITEMS_PER_SUBCATEGORY, zipf=ZIPF,
                                sub=SPREAD["subcategory"], item=SPREAD["item"],
                                query=SPREAD["query"]),
            "synthetic": True,
            "target": {"items": 1_000_000, "recall": 0.95, "speedup": 5}}
    results = []
    for n in args.sizes:
        for dim in args.dims:
            r = run_size(n, dim, args)
            r["meets_target"] = None if n != meta["target"]["items"] else (
                r["methods"]["scann"]["recall"] >= meta["target"]["recall"]
                and r["speedup_p50"] >= meta["target"]["speedup"])
            results.append(r)
    meta["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report = {"meta": meta, "results": results}
    text = markdown(report)
    write_outputs(report, args.out, STEM, text, chart)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
