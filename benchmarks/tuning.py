"""The Tuner on the sample shop: tuned vs default hyper-parameters (issue #22, part 1).

    python -m benchmarks.tuning [--work-dir DIR] [--seeds 0 1] [--scale 0.3] [--trials 5]
        [--trial-steps 150] [--retrieval-steps 300] [--ranking-steps 300] [--out DIR]

For each model the search is what the pipeline's Tuner component runs (trainer/tuning.py:
the `tuner_fn`, then KerasTuner's search): `--trials` random-search trials of
`--trial-steps` steps, each the trainer's own run_fn on a seeded 15 % holdout of the train
split (grouped by user context), objective retrieval Recall@100 / ranking click AUC on that
holdout. Then the trainer runs twice on the whole train split with the full step budget,
with the defaults and with the best values as the Trainer gets them (fn_args.
hyperparameters), and both are judged on the eval split, which the search never read
(the trainers' metrics.json: retrieval Recall@K / NDCG@K over the full catalog on eval
clicks, ranking AUC per head and rating RMSE on eval units).

Data: pipeline/in_process.py (generate, the pipeline's time split, Transform). Retrieval uses
text mode "none" and no item-to-item tables; the ranker trains and is judged on impression
units without the MiniLM text embedding (no two-stage rows in-process) — the pipeline's own
defaults (frozen MiniLM, two-stage rows) cost more than this budget on 2 shared cores.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from benchmarks.outputs import write_outputs
from benchmarks.robust_training import _commit, prepare

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RETRIEVAL = {"text_mode": "none", "related_items": 0, "top_k": 100}
RANKING = {"use_text_embedding": False}
HOLDOUT_PERCENT = 15


def _run(out, run_fn, tdir, config, steps, hyperparameters=None):
    """One trainer run without export (metrics.json only; reused when present)."""
    # pylint: disable=import-outside-toplevel
    from pipeline import in_process
    path = os.path.join(out, "model_run", "metrics.json")
    if not os.path.exists(path):
        args = in_process.trainer_fn_args(os.path.join(tdir, "transformed"),
                                          os.path.join(tdir, "transform_graph"), out, config,
                                          train_steps=steps)
        args.serving_model_dir = ""
        args.hyperparameters = hyperparameters
        started = time.perf_counter()
        run_fn(args)
        with open(path, encoding="utf-8") as f:
            metrics = json.load(f)
        metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(metrics, f)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _quality(model, metrics):
    if model == "retrieval":
        m = metrics["model"]
        return {k: m[k] for k in ("recall@10", "recall@50", "recall@100", "ndcg@10")}
    return {"click_auc": metrics["click"]["auc"], "purchase_auc": metrics["purchase"]["auc"],
            "rating_rmse": metrics["rating"]["rmse"]}


def search(work, tdir, model, config, trials, trial_steps, seed):
    """The Tuner's search for `model`; returns (best hyper-parameters config, trial rows,
    seconds, the holdout's default objective)."""
    # pylint: disable=import-outside-toplevel
    from pipeline import in_process
    from trainer import tuning
    out = os.path.join(work, f"{model}_tuner")
    best_path = os.path.join(out, "best_hyperparameters.json")
    if os.path.exists(best_path):
        with open(best_path, encoding="utf-8") as f:
            return json.load(f)
    args = in_process.trainer_fn_args(
        os.path.join(tdir, "transformed"), os.path.join(tdir, "transform_graph"), out,
        tuning.tuner_custom_config(config, trials, HOLDOUT_PERCENT, seed), trial_steps)
    started = time.perf_counter()
    result = tuning.tuner_fn_for(model, args)
    result.tuner.search(**result.fit_kwargs)
    seconds = round(time.perf_counter() - started, 1)
    objective = tuning.objective_name(model, config)
    rows = [dict(trial=t.trial_id, score=t.score, **t.hyperparameters.values)
            for t in result.tuner.oracle.get_best_trials(trials)]
    # The defaults on the same holdout and budget (what the search had to beat).
    holdout = os.path.join(out, tuning.HOLDOUT_DIR)
    default_args = in_process.trainer_fn_args(
        holdout, os.path.join(tdir, "transform_graph"), os.path.join(out, "defaults"),
        tuning.trial_config(model, config, {}), trial_steps)
    default_args.serving_model_dir = ""
    tuning._run_fn(model)(default_args)  # pylint: disable=protected-access
    with open(os.path.join(default_args.model_run_dir, "metrics.json"), encoding="utf-8") as f:
        default_score = tuning.objective_value(model, objective, json.load(f))
    found = {"best": result.tuner.get_best_hyperparameters()[0].get_config(),
             "trials": rows, "search_seconds": seconds, "objective": objective,
             "holdout_default": default_score,
             "search_space": tuning.hyperparameters(model, config).get_config()}
    with open(best_path, "w", encoding="utf-8") as f:
        json.dump(found, f, default=str)
    return found


def measure(work, tdir, seed, trials, trial_steps, steps):
    # pylint: disable=import-outside-toplevel
    from trainer import ranking, retrieval
    rows = []
    for model, run_fn, config in (("retrieval", retrieval.run_fn, RETRIEVAL),
                                  ("ranking", ranking.run_fn, RANKING)):
        config = dict(config, seed=seed)
        found = search(work, tdir, model, config, trials, trial_steps, seed)
        default = _run(os.path.join(work, f"{model}_default"), run_fn, tdir, config,
                       steps[model])
        tuned = _run(os.path.join(work, f"{model}_tuned"), run_fn, tdir, config,
                     steps[model], hyperparameters=found["best"])
        rows.append({"model": model, "steps": steps[model], "search": found,
                     "default": {"quality": _quality(model, default),
                                 "seconds": default["wall_seconds"]},
                     "tuned": {"quality": _quality(model, tuned),
                               "hyperparameters": tuned["hyperparameters"],
                               "seconds": tuned["wall_seconds"]}})
    return rows


def _f(value, digits=4):
    if value is None:
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}"


_SUMMARY = ("recall@10", "recall@50", "recall@100", "ndcg@10", "click_auc", "purchase_auc",
            "rating_rmse")


def _minutes(results):
    """Search plus both final runs, summed over the rows (cached runs keep their times)."""
    return sum(r["search"]["search_seconds"] + r["default"]["seconds"] + r["tuned"]["seconds"]
               for r in results["rows"]) / 60


def markdown(results):
    s = results["settings"]
    seeds = ", ".join(str(seed) for seed in s["seeds"])
    lines = ["# Tuner on the sample shop (issue #22, part 1)", "",
             f"Sample shop seeds {seeds} (shop and model), scale {s['scale']:g}; KerasTuner "
             "random search per seed, "
             f"{s['trials']} trials of {s['trial_steps']} steps on a {HOLDOUT_PERCENT} % "
             "holdout of the train split (the eval split unseen); final runs retrieval "
             f"{s['steps']['retrieval']} / ranking {s['steps']['ranking']} steps on the whole "
             "train split, judged on the eval split; retrieval text mode \"none\", ranking on "
             "impression units without MiniLM; "
             f"`python -m benchmarks.tuning --seeds {' '.join(map(str, s['seeds']))}`; "
             f"commit {results['commit']}; searches and final runs {_minutes(results):.0f} "
             "min on 2 shared cores.", "",
             "## Tuned minus defaults on the eval split (rating RMSE: lower is better)", "",
             "| model | seed | " + " | ".join(_SUMMARY) + " |", "|---|---|" + "---|" * len(_SUMMARY)]
    for r in results["rows"]:
        q0, q1 = r["default"]["quality"], r["tuned"]["quality"]
        lines.append(f"| {r['model']} | {r['seed']} | " + " | ".join(
            f"{q1[k] - q0[k]:+.4f}" if k in q0 and q0[k] is not None and q1[k] is not None
            else "" for k in _SUMMARY) + " |")
    lines.append("")
    for r in results["rows"]:
        found, d, t = r["search"], r["default"], r["tuned"]
        keys = list(d["quality"])
        lines += [f"## {r['model']}, seed {r['seed']}", "",
                  f"Search: {len(found['trials'])} trials in {found['search_seconds']:.0f} s; "
                  f"holdout {found['objective']}: defaults {_f(found['holdout_default'])}, "
                  f"best trial {_f(found['trials'][0]['score'])}.", "",
                  "| hyper-parameters | " + " | ".join(keys) + " | train + eval s |",
                  "|---|" + "---|" * (len(keys) + 1)]
        default_hp = found["search_space"]["values"]
        for name, row, hp in (("defaults", d, default_hp), ("tuned", t, t["hyperparameters"])):
            described = ", ".join(f"{k} {_f(v, 3) if isinstance(v, float) else v}"
                                  for k, v in sorted(hp.items()))
            lines.append(f"| {name}: {described} | "
                         + " | ".join(_f(row["quality"][k]) for k in keys)
                         + f" | {row['seconds']:.0f} |")
        lines += ["", "Trials (holdout objective, best first):", "",
                  "| trial | " + found["objective"] + " | "
                  + " | ".join(sorted(default_hp)) + " |",
                  "|---|---|" + "---|" * len(default_hp)]
        for trial in found["trials"]:
            lines.append(f"| {trial['trial']} | {_f(trial['score'])} | "
                         + " | ".join(_f(trial[k], 3) if isinstance(trial[k], float)
                                      else str(trial[k]) for k in sorted(default_hp)) + " |")
        lines.append("")
    return "\n".join(lines)


def chart(results, path):
    # pylint: disable=import-outside-toplevel
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(results["rows"]), figsize=(5.5 * len(results["rows"]), 4))
    for ax, r in zip(np.atleast_1d(axes), results["rows"]):
        keys = [k for k in r["default"]["quality"] if k != "rating_rmse"]
        x = np.arange(len(keys))
        ax.bar(x - 0.2, [r["default"]["quality"][k] for k in keys], 0.4, label="defaults")
        ax.bar(x + 0.2, [r["tuned"]["quality"][k] for k in keys], 0.4, label="tuned")
        ax.set_xticks(x, keys, fontsize=8)
        ax.set_title(f"{r['model']}, seed {r['seed']}: eval split ({r['steps']} steps)",
                     fontsize=9)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--work-dir", default="/tmp/shoprec_tuning")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="shop and model seeds; each gets its own search")
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--trial-steps", type=int, default=150)
    parser.add_argument("--retrieval-steps", type=int, default=300)
    parser.add_argument("--ranking-steps", type=int, default=300)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    steps = {"retrieval": args.retrieval_steps, "ranking": args.ranking_steps}
    rows = []
    for seed in args.seeds:
        work = os.path.join(args.work_dir, f"s{seed}_{args.scale:g}")
        _, tdir = prepare(work, seed, args.scale)
        rows += [dict(row, seed=seed) for row in measure(
            os.path.join(work, f"t{args.trials}x{args.trial_steps}"), tdir, seed,
            args.trials, args.trial_steps, steps)]
    results = {"settings": {"seeds": args.seeds, "scale": args.scale, "trials": args.trials,
                            "trial_steps": args.trial_steps, "steps": steps,
                            "holdout_percent": HOLDOUT_PERCENT,
                            "retrieval_config": RETRIEVAL, "ranking_config": RANKING},
               "rows": rows, "commit": _commit(),
               "seconds": round(time.perf_counter() - started, 1)}
    text = markdown(results)
    write_outputs(results, args.out, "tuning", text, chart)
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.exit(main())
