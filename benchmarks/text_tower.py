"""Benchmark of the retrieval text tower modes on a sample shop: none, frozen, top_layers, full.

    python -m benchmarks.text_tower --data sample_shop
    python -m benchmarks.text_tower --modes frozen,top_layers --steps top_layers=100

Without --data a sample shop is generated (pipeline.sample_shop.generate, seed 7, as `make demo`).
The shop's examples and their Transform output are built once into --work
(pipeline/in_process.py). Each mode then runs trainer.retrieval.run_fn in its own process
(pipeline default config, `text_mode` = the mode, a bounded step count) and reports train
steps/s and examples/s after the first step, the first step, text-cache and evaluation times,
peak RSS, CPU time, recall@K / NDCG@K on the eval split (model and train popularity).
Writes <out>/text_tower.{md,json,png} (default benchmarks/results).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Dict, Optional

from benchmarks import text_tower_report as report

MODES = ("none", "frozen", "top_layers", "full")
DEFAULT_STEPS = {"none": 600, "frozen": 600, "top_layers": 200, "full": 60}
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prepare_data(data_dir, work_dir, seed=7) -> Dict:
    """Shop folder (generated when None) -> raw and transformed examples under work_dir,
    reused when already built from the same shop. Returns what was used."""
    marker = os.path.join(work_dir, "data.json")
    shop_dir = os.path.abspath(data_dir or os.path.join(work_dir, "shop"))
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            done = json.load(f)
        if done["shop"] == shop_dir:
            return done
    from pipeline import in_process as shop_examples  # pylint: disable=import-outside-toplevel
    os.makedirs(work_dir, exist_ok=True)
    start = time.time()
    if data_dir is None:
        from pipeline.sample_shop.generate import generate_shop  # pylint: disable=import-outside-toplevel
        generate_shop(shop_dir, seed=seed)
    rows = shop_examples.write_examples(shop_dir, os.path.join(work_dir, "raw"))
    shop_examples.transform(os.path.join(work_dir, "raw"), work_dir)
    manifest = os.path.join(shop_dir, "manifest.json")
    done = {"shop": shop_dir, "generated": data_dir is None,
            "manifest": json.load(open(manifest, encoding="utf-8"))
            if os.path.exists(manifest) else None,
            "examples": {split: len(rows[split]) for split in ("train", "eval", "catalog")},
            "clicked": {split: sum(r["clicked"] for r in rows[split])
                        for split in ("train", "eval")},
            "seconds": round(time.time() - start, 1)}
    with open(marker, "w", encoding="utf-8") as f:
        json.dump(done, f, indent=1)
    return done


def run_mode(work_dir, mode, steps, config, out_dir) -> Dict:
    """One retrieval run_fn in this process; returns its metrics plus resource use."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    # pylint: disable=import-outside-toplevel
    from pipeline.in_process import trainer_fn_args
    from trainer import retrieval
    args = trainer_fn_args(os.path.join(work_dir, "transformed"),
                           os.path.join(work_dir, "transform_graph"), out_dir,
                           dict(config, text_mode=mode), steps)
    start, load = time.time(), os.getloadavg()[0]
    retrieval.run_fn(args)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.path.join(args.model_run_dir, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    metrics.update(mode=mode, wall_seconds=round(time.time() - start, 1),
                   cpu_seconds=round(usage.ru_utime + usage.ru_stime, 1),
                   peak_rss_gib=round(usage.ru_maxrss / 2 ** 20, 3),
                   load_average={"start": round(load, 2),
                                 "end": round(os.getloadavg()[0], 2)})
    return metrics


def _mode_subprocess(args, mode, steps, config) -> Dict:
    out_dir = os.path.join(args.work, "runs", mode)
    result = os.path.join(out_dir, "result.json")
    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.text_tower", "--run-one", mode, "--work",
           args.work, "--run-steps", str(steps), "--run-config", json.dumps(config),
           "--run-result", result]
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    with open(os.path.join(out_dir, "log.txt"), "w", encoding="utf-8") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"mode {mode} failed (exit {proc.returncode}); see "
                           f"{os.path.join(out_dir, 'log.txt')}")
    with open(result, encoding="utf-8") as f:
        return json.load(f)


def _finished(work_dir, mode, steps, config) -> Optional[Dict]:
    """A mode's earlier result in `work_dir` if it ran `steps` steps with `config`."""
    path = os.path.join(work_dir, "runs", mode, "result.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    ran = result.get("config", {})
    same = all(ran.get(key) == (list(value) if isinstance(value, tuple) else value)
               for key, value in dict(config, text_mode=mode).items())
    return result if same and result.get("training", {}).get("steps") == steps else None


def _parse_steps(text):
    steps = dict(DEFAULT_STEPS)
    for item in filter(None, (text or "").split(",")):
        mode, _, value = item.partition("=")
        if mode not in MODES or not value.isdigit() or int(value) < 1:
            raise SystemExit(f"--steps {item!r}: expected MODE=N with MODE in {MODES}, N >= 1")
        steps[mode] = int(value)
    return steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.text_tower",
                                description=__doc__.splitlines()[0])
    p.add_argument("--data", help="sample shop folder (default: generate one, seed 7)")
    p.add_argument("--work", default=os.path.join("runs", "text_tower_benchmark"),
                   help="examples, Transform output and runs (reused across runs)")
    p.add_argument("--out", default=os.path.join("benchmarks", "results"))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--steps", help="per-mode step counts, e.g. full=40,top_layers=100 "
                                   f"(default {DEFAULT_STEPS})")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--top-layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resume", action="store_true",
                   help="reuse a mode's result from --work when it ran the same steps and "
                        "config (e.g. after an interrupted run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="any other RetrievalConfig key, e.g. --set text_seq_len=24")
    p.add_argument("--run-one", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--run-steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--run-config", help=argparse.SUPPRESS)
    p.add_argument("--run-result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_one:                                  # child: one mode
        metrics = run_mode(args.work, args.run_one, args.run_steps,
                           json.loads(args.run_config), os.path.dirname(args.run_result))
        with open(args.run_result, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=1)
        return 0
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        p.error(f"--modes {unknown}: choose from {MODES}")
    steps = _parse_steps(args.steps)
    config = {"batch_size": args.batch_size, "seed": args.seed,
              "text_top_layers": args.top_layers}
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = json.loads(value)
    started = time.time()
    data = prepare_data(args.data, args.work)
    results = {"command": " ".join(["python -m benchmarks.text_tower"] + list(
                   argv if argv is not None else sys.argv[1:])),
               "commit": report.git_commit(_ROOT), "seed": args.seed, "config": config,
               "data": data, "environment": report.environment(), "modes": {}}
    for mode in modes:
        done = _finished(args.work, mode, steps[mode], config) if args.resume else None
        print(f"[text_tower] {mode}: {steps[mode]} steps"
              + (" (reused)" if done else " ..."), file=sys.stderr, flush=True)
        results["modes"][mode] = dict(done or _mode_subprocess(args, mode, steps[mode], config),
                                      steps_budget=steps[mode])
    results["total_seconds"] = round(time.time() - started, 1)
    paths = report.write(results, args.out)
    print(report.markdown_table(results))
    print("wrote " + ", ".join(paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
