"""ShopExampleGen on a large sample shop: wall time and peak memory of reading, validating and
turning the export into examples (issue #23, part 1; docs/DESIGN.md "Pipeline data at scale").

    python -m benchmarks.example_gen_scale --scale 10 --label "Beam read" [--shards 8]
    python -m benchmarks.example_gen_scale --scale 10 --label "load_shop (5d9c242)" \
        --code /tmp/wt-before         # the same measurement on another checkout of the code

The shop is the sample shop generator's (``--seed``, ``--scale``; ``--shop DIR`` reuses one
already written); ``--shards N`` also writes its events as N CSV shards
(``events-00000-of-0000N.csv``), as a large export would be. Each run is one child process
calling ``generate_shop_examples`` (the component's executor code) on Beam's DirectRunner in
``--mode`` (multi_processing with ``--workers`` processes by default); a sampler adds up the
resident memory of the child and every process it started (Beam's workers) every 0.1 s.
Rows are merged into ``<out>/example_gen_scale.{md,json,png}`` by label.
"""
import argparse
import csv
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEM = "example_gen_scale"


def _child(code_dir: str, shop: str, work: str, mode: str, workers: int) -> None:
    """Runs inside the measured process: ShopExampleGen's executor code on ``shop``."""
    sys.path.insert(0, code_dir)
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.components import shop_example_gen as seg

    args = [f"--direct_running_mode={mode}"]
    if mode == "multi_processing":
        args.append(f"--direct_num_workers={workers}")

    def make_pipeline():
        return beam.Pipeline(options=PipelineOptions(args))

    # the code before the Beam read took one pipeline instance, not a factory
    takes_factory = "make_pipeline" in inspect.signature(seg.generate_shop_examples).parameters
    for name in ("examples", "report", "work"):
        os.makedirs(os.path.join(work, name), exist_ok=True)
    began = time.perf_counter()
    summary = seg.generate_shop_examples(
        make_pipeline if takes_factory else make_pipeline(), shop, "quarantine", 0.1, 30,
        os.path.join(work, "examples"), os.path.join(work, "report"),
        os.path.join(work, "work"))
    print(json.dumps({"seconds": time.perf_counter() - began, "code": seg.__file__,
                      "splits": {k: v["examples"] for k, v in summary["splits"].items()},
                      "tables": {k: [v["rows_read"], v["rows_kept"]]
                                 for k, v in summary["tables"].items()}}))


def _tree_rss(proc) -> int:
    import psutil  # pylint: disable=import-outside-toplevel

    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(code_dir, shop, mode, workers) -> dict:
    """Run one child and return its result plus peak memory (whole tree and the child)."""
    import psutil  # pylint: disable=import-outside-toplevel

    with tempfile.TemporaryDirectory(prefix="egscale_") as work:
        env = {**os.environ, "PYTHONPATH": code_dir + os.pathsep + REPO}
        began = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; from benchmarks.example_gen_scale import "
             "_child; _child(*sys.argv[1:5], int(sys.argv[5]))",
             code_dir, shop, work, mode, str(workers)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        proc = psutil.Process(child.pid)
        peak = {"tree": 0, "main": 0}
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak["tree"] = max(peak["tree"], _tree_rss(proc))
                    peak["main"] = max(peak["main"], proc.memory_info().rss)
                except psutil.Error:
                    pass
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, _ = child.communicate()
        done.set()
        sampler.join()
        wall = time.perf_counter() - began
    if child.returncode:
        raise RuntimeError(f"the measured run failed (exit {child.returncode}); see its log")
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "wall_seconds": wall, "peak_tree_gib": peak["tree"] / 2**30,
            "peak_main_gib": peak["main"] / 2**30}


def write_shards(shop: str, shards: int) -> str:
    """A copy of ``shop`` whose events CSV is split into ``shards`` files (symlinked rest)."""
    out = f"{shop.rstrip('/')}_events{shards}"
    if os.path.isdir(out):
        return out
    os.makedirs(out)
    for name in os.listdir(shop):
        if not name.startswith("events."):
            os.symlink(os.path.join(os.path.abspath(shop), name), os.path.join(out, name))
    with open(os.path.join(shop, "events.csv"), newline="", encoding="utf-8") as f:
        header, *records = list(csv.reader(f))
    size = math.ceil(len(records) / shards)
    for i in range(shards):
        with open(os.path.join(out, f"events-{i:05d}-of-{shards:05d}.csv"), "w", newline="",
                  encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerows(
                [header] + records[i * size:(i + 1) * size])
    return out


def _git_commit(code_dir: str):
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=code_dir,
                              text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def markdown(results: dict) -> str:
    lines = ["# ShopExampleGen at scale (issue #23, part 1)", "",
             "`python -m benchmarks.example_gen_scale` (see its docstring). One run per row: "
             "read, validate (policy quarantine) and build examples of the sample shop; "
             "Beam DirectRunner, memory = resident set of the run's process and its Beam "
             "worker processes, sampled every 0.1 s.", "",
             "| run | code | shop | events files | mode | wall s | peak GiB (all processes) "
             "| peak GiB (main process) | train / eval / catalog examples |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, r in results["rows"].items():
        s = r["splits"]
        lines.append(
            f"| {label} | {r['commit']} | seed {r['seed']}, scale {r['scale']:g}, "
            f"{r['tables']['events'][0]:,} events | {r['events_files']} | {r['mode']} "
            f"({r['workers']}) | {r['wall_seconds']:.0f} | {r['peak_tree_gib']:.2f} | "
            f"{r['peak_main_gib']:.2f} | {s.get('train', 0):,} / {s.get('eval', 0):,} / "
            f"{s.get('catalog', 0):,} |")
    notes = [f"- {label}: {r['note']}" for label, r in results["rows"].items() if r.get("note")]
    if notes:
        lines += ["", "Notes:", *notes]
    lines += ["", f"Machine: {results['machine']}.", ""]
    return "\n".join(lines)


def chart(results: dict, path: str) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    labels = list(results["rows"])
    rows = [results["rows"][k] for k in labels]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    axes[0].barh(labels, [r["wall_seconds"] for r in rows], color="#4c72b0")
    axes[0].set_xlabel("wall seconds")
    axes[1].barh(labels, [r["peak_tree_gib"] for r in rows], color="#dd8452",
                 label="all processes")
    axes[1].barh(labels, [r["peak_main_gib"] for r in rows], color="#55a868", height=0.4,
                 label="main process")
    axes[1].set_xlabel("peak resident memory, GiB")
    axes[1].legend(loc="lower right", fontsize=8)
    axes[1].set_yticks([])
    fig.suptitle("ShopExampleGen on the sample shop (read, validate, build examples)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.example_gen_scale",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shop", help="an already generated sample shop of --seed/--scale")
    parser.add_argument("--shards", type=int, default=0, help="split the events into N CSVs")
    parser.add_argument("--mode", choices=("in_memory", "multi_processing"),
                        default="multi_processing")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--code", default=REPO, help="checkout whose pipeline/ is measured")
    parser.add_argument("--label", required=True, help="row name (merged by label)")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    args = parser.parse_args(argv)
    if args.shards < 0 or args.workers < 1:
        parser.error("--shards must be >= 0 and --workers >= 1")
    shop = args.shop
    if not shop:
        shop = os.path.join(tempfile.gettempdir(), f"sample_shop_s{args.seed}_x{args.scale:g}")
        if not os.path.isdir(shop):
            subprocess.run([sys.executable, "-m", "pipeline.sample_shop", "--out", shop,
                            "--seed", str(args.seed), "--scale", str(args.scale),
                            "--format", "csv"], cwd=REPO, check=True)
    if args.shards:
        shop = write_shards(shop, args.shards)
    print(f"measuring {args.label!r}: {shop}, {args.mode} ({args.workers}), code {args.code}",
          flush=True)
    row = measure(os.path.abspath(args.code), shop, args.mode, args.workers)
    row.update(commit=_git_commit(args.code), seed=args.seed, scale=args.scale,
               mode=args.mode, workers=args.workers,
               events_files=args.shards or 1, shop=shop)
    path = os.path.join(args.out, f"{STEM}.json")
    results = {"rows": {}}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    results["rows"][args.label] = row
    results["machine"] = f"{os.cpu_count()} CPU cores, {_memory_gib():.0f} GiB RAM"
    from benchmarks.outputs import write_outputs  # pylint: disable=import-outside-toplevel
    text = markdown(results)
    write_outputs(results, args.out, STEM, text, chart)
    print(text)
    return 0


def _memory_gib() -> float:
    import psutil  # pylint: disable=import-outside-toplevel
    return psutil.virtual_memory().total / 2**30


if __name__ == "__main__":
    sys.exit(main())
