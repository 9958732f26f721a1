"""Quality on real data: next-item recommendation on Amazon Beauty 2014 5-core.

    python -m benchmarks.beauty --data ../shared/data/amazon_beauty_2014_5core \
        [--max-users N] [--seed S] [--models popular,transitions,ease,sasrec] \
        [--set ease.lambdas=[200,400]] [--out benchmarks/results] [--merge]

Protocol: ``benchmarks/protocol.py``; models: ``benchmarks/registry.py``. Writes
``beauty.md``/``.json``/``.png`` (``beauty_u<N>.*`` for a user subsample) into ``--out``.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")   # before anything imports TensorFlow
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks import (beauty_data, beauty_product, product_run, protocol,  # noqa: E402
                        registry, report)

DEFAULT_MODELS = "popular,transitions,transitions3,ease,ease_filtered,sasrec"
# The product row (beauty_product.py): the real pipeline, pushed bundle and API code.
PRODUCT = "product"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_overrides(pairs):
    """["ease.lambdas=[100,200]", ...] -> {"ease": {"lambdas": [100, 200]}} (JSON values)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        model, dot, option = key.partition(".")
        if not (sep and dot and model and option):
            raise ValueError(f"--set {pair!r}: expected MODEL.OPTION=VALUE, e.g. "
                             f"ease.lambdas=[200,400]")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value          # bare strings: sasrec.strategy=mirrored
        out.setdefault(model, {})[option] = parsed
    return out


def _environment():
    env = {"python": platform.python_version(), "numpy": np.__version__,
           "platform": platform.platform(), "cpus": os.cpu_count()}
    if "tensorflow" in sys.modules:
        env["tensorflow"] = sys.modules["tensorflow"].__version__
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, text=True,
                                           capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        env["git_commit"] = None
    return env


def _progress(desc):
    return lambda it: tqdm(it, desc=desc, leave=False, dynamic_ncols=True)


def run(data_dir, models, seed=0, max_users=None, overrides=None, batch_size=1024,
        on_model=None, beyond=True):
    """Load, split, fit and evaluate ``models``; returns the results dict (see report.py).

    ``on_model(results)`` is called after each model with the results so far (to save them).
    ``beyond``: also the beyond-accuracy metrics of each model's test lists
    (protocol.item_facts: encodes the titles with MiniLM once).
    """
    overrides = overrides or {}
    unknown = set(overrides) - set(models)
    if unknown:
        raise ValueError(f"--set for model(s) not run: {', '.join(sorted(unknown))}")
    for name, values in overrides.items():
        if name == PRODUCT:
            _product_options(values)
        else:
            registry.options(registry.get(name), values)     # unknown options fail before work
    stages = {}
    start = time.time()
    data = beauty_data.load_beauty(data_dir, max_users, seed)
    stages["load"] = time.time() - start
    start = time.time()
    split = protocol.leave_one_out(data.sequences, data.n_items)
    stages["split"] = time.time() - start
    task = registry.FitTask(split.train, data.items, data.n_items, split.validation,
                            batch_size=batch_size)
    facts = None
    if beyond:
        start = time.time()
        facts = protocol.item_facts(split.train, data.items)
        stages["beyond_accuracy_facts"] = time.time() - start
    results = {
        "dataset": {
            "name": os.path.basename(os.path.abspath(data_dir)),
            **beauty_data.describe(data_dir, data),
            "evaluated_users": len(split.test), "max_users": max_users,
        },
        "seed": seed,
        "protocol": "leave-one-out; train = all but last two; validation = second to last; "
                    "test = last (history incl. validation item); full ranking; ties by item "
                    "index; filtered = history items removed",
        "models": {}, "stage_seconds": stages,
    }
    for name in tqdm(models, desc="models", dynamic_ncols=True):
        if name == PRODUCT:
            row = beauty_product.product_row(data, data_dir, seed, facts=facts,
                                             **_product_options(overrides.get(name)))
            stages[f"{name}.fit"], stages[f"{name}.eval"] = row["fit_seconds"], row["eval_seconds"]
            results["models"][name] = row
            _report_row(name, row["test"], row["fit_seconds"])
            _finish(results, on_model)
            continue
        task.progress = _progress(f"{name}: fit")
        start = time.time()
        fitted, options = registry.fit(name, task, seed, overrides.get(name))
        fit_seconds = time.time() - start
        # Companions share the fit (its seconds are on the model's row).
        rows = [(name, fitted.scorer, fitted.info, fit_seconds)] + [
            (f"{name}_{key}", scorer, {"companion_of": name}, 0.0)
            for key, scorer in fitted.companions.items()]
        for row_name, scorer, info, fit_seconds in rows:
            start = time.time()
            # A model that trained on the validation targets gets no validation row.
            splits = ((("validation", split.validation),) if not fitted.trained_on_validation
                      else ()) + (("test", split.test),)
            scores = {"validation": None}
            scores.update({split_name: protocol.evaluate(
                scorer, eval_set, data.n_items, batch_size,
                progress=_progress(f"{row_name}: {split_name}"),
                facts=facts if split_name == "test" else None)
                for split_name, eval_set in splits})
            eval_seconds = time.time() - start
            stages[f"{row_name}.fit"], stages[f"{row_name}.eval"] = fit_seconds, eval_seconds
            results["models"][row_name] = {
                "options": options, "info": info, "fit_seconds": fit_seconds,
                "eval_seconds": eval_seconds, **scores}
            _report_row(row_name, scores["test"], fit_seconds)
        _finish(results, on_model)
    return results


def _product_options(values):
    """--set product.OPTION=VALUE as keyword arguments of beauty_product.product_row."""
    values = dict(values or {})
    known = {"config", "work_dir", "replay_users", "threads", "reuse_pipeline", "rerun_from",
             "note"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {PRODUCT}; known: {sorted(known)}")
    return values


def _report_row(name, test, fit_seconds):
    tqdm.write(f"{name}: test R@10 {test['unfiltered']['recall@10']:.4f} "
               f"N@10 {test['unfiltered']['ndcg@10']:.4f} | filtered R@10 "
               f"{test['filtered']['recall@10']:.4f} N@10 "
               f"{test['filtered']['ndcg@10']:.4f} | fit {fit_seconds:.1f} s")


def _finish(results, on_model):
    results["environment"] = _environment()
    results["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")
    if on_model:
        on_model(results)


def merge(previous, current):
    """Models of ``previous`` not re-run in ``current`` are kept (in their order); same data
    and seed only."""
    for key in ("seed",):
        if previous.get(key) != current.get(key):
            raise ValueError(f"--merge: {key} differs ({previous.get(key)} vs "
                             f"{current.get(key)}); use another --out or drop --merge")
    for key in ("users", "items", "interactions", "max_users", "sha256"):
        if previous["dataset"].get(key) != current["dataset"].get(key):
            raise ValueError(f"--merge: dataset {key} differs; use another --out or drop "
                             f"--merge")
    # Re-run models keep their place in the table; new ones come last. A model re-measured
    # from an earlier run's exports keeps that run's fit seconds (it was not trained again).
    for name, row in current["models"].items():
        if _reused(row) and name in previous["models"]:
            row["info"]["fit_seconds_from"] = previous["models"][name].get("run")
            row["fit_seconds"] = previous["models"][name]["fit_seconds"]
    models = {k: current["models"].get(k, v) for k, v in previous["models"].items()}
    models.update(current["models"])
    stages = {k: v for k, v in previous["stage_seconds"].items()
              if k.split(".")[0] not in current["models"] and "." in k}
    stages.update(current["stage_seconds"])
    return {**current, "models": models, "stage_seconds": stages}


def _reused(row):
    """Whether a row measured exports of an earlier run (beauty_ours reuse_exports)."""
    runs = (row.get("info") or {}).get("runs") or []
    return bool(runs) and all(r.get("reused_export") for r in runs)


def rename(results, old, new):
    """``old``'s rows (and its companions' ``old_*``) recorded as ``new`` (``new_*``)."""
    def renamed(key):
        head, dot, tail = key.partition(".")
        if head == old or head.startswith(old + "_"):
            return new + head[len(old):] + dot + tail
        return key
    results["models"] = {renamed(k): v for k, v in results["models"].items()}
    results["stage_seconds"] = {renamed(k): v for k, v in results["stage_seconds"].items()}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True,
                        help="the amazon_beauty_2014_5core folder (research-only data; "
                             "never copy it into the repository)")
    parser.add_argument("--max-users", type=int, default=None,
                        help="seeded random subset of users (development)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated, from: {', '.join(registry.names())}, "
                             f"{PRODUCT} (the real pipeline + API: beauty_product.py)")
    parser.add_argument("--set", action="append", default=[], metavar="MODEL.OPTION=VALUE",
                        help="override a model option (JSON value); repeatable")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"))
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="users per evaluation batch (bounds memory)")
    parser.add_argument("--no-beyond-accuracy", dest="beyond", action="store_false",
                        help="skip the beyond-accuracy metrics (and the MiniLM encoding of "
                             "the titles they need)")
    parser.add_argument("--name", default="",
                        help="record the (one) model's rows under this name, e.g. a variant "
                             "set with --set: --models ours --name ours_causal")
    parser.add_argument("--merge", action="store_true",
                        help="keep models of an existing result file that are not re-run")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    stem = "beauty" if args.max_users is None else f"beauty_u{args.max_users}"
    command = " ".join(["python -m benchmarks.beauty"] + (argv or sys.argv[1:]))
    try:
        unknown = [m for m in models if m not in registry.names() + [PRODUCT]]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: "
                             f"{', '.join(registry.names() + [PRODUCT])}")
        if args.name and len(models) != 1:
            raise ValueError("--name needs exactly one model in --models")
        previous = _previous_results(args, stem)
        final = {}

        def save(results):
            if args.name:
                rename(results, models[0], args.name)
            for model in results["models"].values():
                # So merged files say which run measured each model.
                model.setdefault("run", {"command": command, "created": results["created"],
                                         "git_commit": results["environment"]["git_commit"]})
            final["results"] = merge(previous, results) if previous else results
            report.write(final["results"], args.out, stem)

        run(args.data, models, args.seed, args.max_users, parse_overrides(args.set),
            args.batch_size, on_model=save, beyond=args.beyond)
    except (beauty_data.BeautyDataError, product_run.ProductRunError, ValueError,
            KeyError) as err:
        sys.exit(f"error: {err}")
    for ext in ("md", "json", "png"):
        print("wrote", os.path.join(args.out, f"{stem}.{ext}"))
    print(report.markdown_table(final["results"]))


def _previous_results(args, stem):
    """With --merge, the existing results file (checked for the same seed and subsample)."""
    path = os.path.join(args.out, f"{stem}.json")
    if not (args.merge and os.path.exists(path)):
        return None
    with open(path, encoding="utf-8") as f:
        previous = json.load(f)
    if previous.get("seed") != args.seed:
        raise ValueError(f"--merge: seed differs ({previous.get('seed')} in {path} vs "
                         f"{args.seed}); use another --out or drop --merge")
    return previous


if __name__ == "__main__":
    main()
