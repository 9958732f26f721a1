"""The Tuner on the sample shop and on Beauty: tuned vs default hyper-parameters (issue #22,
part 1).

    python -m benchmarks.tuning [--work-dir DIR] [--seeds 0 1] [--scale 0.3] [--trials 5]
        [--trial-steps 150] [--retrieval-steps 300] [--ranking-steps 300] [--out DIR]
    python -m benchmarks.tuning --data ../shared/data/amazon_beauty_2014_5core [--seeds 0]
        [--trials 5] [--trial-steps 1000] [--retrieval-steps 3000] [--ranking-trial-steps 1000]
        [--no-pipeline]

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

With ``--data`` (an Amazon Beauty folder, benchmarks/README.md protocol) the retrieval model
is searched in this process, on the examples of the Beauty benchmark's "ours" rows
(``benchmarks.beauty_ours.prepare``: train = every user's items but the last two, eval = the
**validation** targets; the test items are never read) with the product's retrieval choices
(frozen MiniLM text, no user-id embedding, the causal history encoder over the last
``features.HISTORY_LENGTH`` items) and the product's 3,000 training steps. The ranking model
is searched inside the real pipeline instead (``ranking_in_pipeline``: two runs on the
export without each user's last item, the second with the TFX Tuner before the ranking
Trainer): Beauty has no impressions, and the product's ranker trains on the pipeline's
two-stage rows, which only the pipeline builds. Written as ``tuning_beauty.{md,json,png}``.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from benchmarks import folders
from benchmarks.outputs import write_outputs
from benchmarks.robust_training import _commit, prepare

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RETRIEVAL = {"text_mode": "none", "related_items": 0, "top_k": 100}
RANKING = {"use_text_embedding": False}
# Beauty: the product's retrieval choices (benchmarks/configs/beauty.json) over "ours".
BEAUTY_RETRIEVAL = {"text_mode": "frozen", "use_user_id": False, "history_encoder": "causal",
                    "related_items": 0, "top_k": 100}
BEAUTY_VALIDATION_CONFIG = os.path.join(folders.REPO, "benchmarks", "configs",
                                        "beauty_validation.json")
HOLDOUT_PERCENT = 15
BEAUTY_DEFAULTS = {"seeds": [0], "trials": 5, "trial_steps": 1000, "retrieval_steps": 3000}
SAMPLE_DEFAULTS = {"seeds": [0, 1], "trials": 5, "trial_steps": 150, "retrieval_steps": 300}


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


def prepare_beauty(data_dir, work):
    """The Beauty benchmark's leave-one-out train part and validation targets as the
    pipeline's transformed examples under ``work/t`` (kept between runs); returns (that
    folder, a description of the data)."""
    # pylint: disable=import-outside-toplevel
    from benchmarks import beauty_data, beauty_ours, protocol, registry
    data = beauty_data.load_beauty(data_dir)
    split = protocol.leave_one_out(data.sequences, data.n_items)
    task = registry.FitTask(split.train, data.items, data.n_items, split.validation)
    tdir = os.path.join(work, "t")
    prepared = beauty_ours.prepare(task, tdir, reuse=True)
    return tdir, {"folder": os.path.basename(os.path.abspath(data_dir)),
                  "users": len(data.sequences), "items": int(data.n_items),
                  "validation_users": len(split.validation), "examples": prepared.counts}


def _newest_json(pattern):
    """The newest file matching ``pattern`` (a TFX artifact per execution), parsed."""
    import glob  # pylint: disable=import-outside-toplevel
    paths = sorted(glob.glob(pattern), key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"no file matches {pattern}")
    with open(paths[-1], encoding="utf-8") as f:
        return json.load(f)


def ranking_in_pipeline(data_dir, work, seed, trials, trial_steps, echo=print):
    """The ranking Tuner as a shop runs it, judged on Beauty's validation users.

    The export without each user's last item (``beauty_data.to_shop(hold_out_last=1)``) goes
    through the real pipeline twice with ``BEAUTY_VALIDATION_CONFIG`` (the product's config,
    split times one day earlier: eval = the validation items, rank = the items before them;
    ``enable_cache``), sharing one pipeline root and ML Metadata: first with the defaults,
    then with ``tuning`` "ranking" (the TFX Tuner before the ranking Trainer). The second
    run reuses every unchanged component (ExampleGen ... retrieval Trainer, the two-stage
    rows), so the two rankers are trained on the same rows, and its Evaluator judges the
    tuned ranker against the blessed default on the same eval contexts (a paired
    comparison). Returns the two reports, the Tuner's trials and its best values."""
    # pylint: disable=import-outside-toplevel
    from benchmarks import beauty_data, product_run
    shop = os.path.join(work, "shop_validation")
    if not os.path.exists(os.path.join(shop, "events.csv")):
        beauty_data.to_shop(beauty_data.load_beauty(data_dir), shop, hold_out_last=1)
    pdir = os.path.join(work, "pipeline")
    os.makedirs(pdir, exist_ok=True)
    reports = {}
    for name, overrides in (("default", {}),
                            ("tuned", {"tuning": "ranking", "tuner_max_trials": trials,
                                       "tuner_steps": trial_steps})):
        names = {"pipeline_root": "root", "serving": f"serving_{name}",
                 "report": f"report_{name}.json"}
        path = os.path.join(pdir, names["report"])
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                reports[name] = json.load(f)
        else:
            reports[name] = product_run.run_pipeline(shop, pdir, BEAUTY_VALIDATION_CONFIG, seed,
                                                     echo, overrides, names,
                                                     require_push=False)
    tuner = os.path.join(pdir, "root", "ranking_tuner")
    return {"reports": reports,
            "trials": _newest_json(os.path.join(tuner, "tuner_results", "*",
                                                "tuner_results.json")),
            "best": _newest_json(os.path.join(tuner, "best_hyperparameters", "*",
                                              "best_hyperparameters.txt"))["values"],
            "config": os.path.relpath(BEAUTY_VALIDATION_CONFIG, folders.REPO)}


def measure(work, tdir, seed, trials, trial_steps, steps, beauty=False):
    # pylint: disable=import-outside-toplevel
    from trainer import ranking, retrieval
    rows = []
    models = ((("retrieval", retrieval.run_fn, BEAUTY_RETRIEVAL),) if beauty else
              (("retrieval", retrieval.run_fn, RETRIEVAL), ("ranking", ranking.run_fn, RANKING)))
    for model, run_fn, config in models:
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


def _hp(value):
    """A hyper-parameter value in a table: floats to 3 significant places."""
    return _f(value, 3) if isinstance(value, float) else str(value)


_SUMMARY = ("recall@10", "recall@50", "recall@100", "ndcg@10", "click_auc", "purchase_auc",
            "rating_rmse")


def _minutes(results):
    """Search plus both final runs, summed over the rows (cached runs keep their times)."""
    return sum(r["search"]["search_seconds"] + r["default"]["seconds"] + r["tuned"]["seconds"]
               for r in results["rows"]) / 60


def _header(results, seeds):
    """The title and the settings paragraph (sample shop or Beauty)."""
    s = results["settings"]
    command = f"`python -m benchmarks.tuning --seeds {' '.join(map(str, s['seeds']))}"
    if s.get("data"):
        d = s["data"]
        return ["# Tuner on Amazon Beauty, validation users (issue #22, part 1)", "",
                f"{d['folder']}: {d['users']:,} users, {d['items']:,} items; examples of the "
                "Beauty benchmark's \"ours\" rows (train = every user's items but the last "
                f"two; eval split = the {d['validation_users']:,} validation targets, scored "
                "over the full catalog; the test items are never read). Retrieval with the "
                "product's choices (frozen MiniLM text, no user-id embedding, causal history "
                "encoder over the last 10 items); model seed "
                f"{seeds}; KerasTuner random search, {s['trials']} trials of "
                f"{s['trial_steps']} steps on a {HOLDOUT_PERCENT} % holdout of the train "
                f"split; final runs {s['steps']['retrieval']} steps (the product's budget) on "
                f"the whole train split, judged on the validation targets; {command} --data "
                f"DIR --trial-steps {s['trial_steps']} --retrieval-steps "
                f"{s['steps']['retrieval']}`; commit {results['commit']}; search and final "
                f"runs {_minutes(results):.0f} min on 2 cores. The ranking model is searched "
                "inside the pipeline (the product's ranker trains on the pipeline's "
                "two-stage rows; Beauty has no impressions)"
                + (": last section." if results.get("pipeline_ranking") else
                   ": not run here (--no-pipeline)."), ""]
    return ["# Tuner on the sample shop (issue #22, part 1)", "",
            f"Sample shop seeds {seeds} (shop and model), scale {s['scale']:g}; KerasTuner "
            "random search per seed, "
            f"{s['trials']} trials of {s['trial_steps']} steps on a {HOLDOUT_PERCENT} % "
            "holdout of the train split (the eval split unseen); final runs retrieval "
            f"{s['steps']['retrieval']} / ranking {s['steps']['ranking']} steps on the whole "
            "train split, judged on the eval split; retrieval text mode \"none\", ranking on "
            f"impression units without MiniLM; {command}`; commit {results['commit']}; "
            f"searches and final runs {_minutes(results):.0f} min on 2 shared cores.", ""]


def markdown(results):
    seeds = ", ".join(str(seed) for seed in results["settings"]["seeds"])
    lines = _header(results, seeds) + [
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
            described = ", ".join(f"{k} {_hp(v)}"
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
                         + " | ".join(_hp(trial[k]) for k in sorted(default_hp)) + " |")
        lines.append("")
    if results.get("pipeline_ranking"):
        lines += _pipeline_markdown(results["pipeline_ranking"], results["settings"])
    return "\n".join(lines)


RANKING_METRICS = ("NDCG@10", "click AUC", "purchase AUC")


def pipeline_ranking_rows(found):
    """(name, metrics) of the pipeline's ranking Evaluator: the default run, the default
    again as the tuned run's baseline (same model, same contexts), the tuned ranker."""
    default, tuned = (found["reports"][k]["models"]["ranking"] for k in ("default", "tuned"))
    return [("defaults (run 1)", default["metrics"]),
            ("defaults, as run 2's baseline", tuned.get("baseline") or {}),
            ("tuned (run 2)", tuned["metrics"])]


def _pipeline_markdown(found, settings):
    reports = found["reports"]
    tuned = reports["tuned"]["models"]["ranking"]
    seconds = reports["tuned"].get("component_seconds", {})
    lines = ["## ranking, tuned inside the pipeline (validation users)", "",
             f"`tfx_pipeline.py --config {found['config']}` (the product's config with split "
             "times one day earlier: eval = each user's validation item, rank = the item "
             "before it; `enable_cache`) on the export without each user's last item, twice "
             "on one pipeline root: the defaults, then `--set tuning=\"ranking\" --set "
             f"tuner_max_trials={settings['trials']} --set tuner_steps="
             f"{settings['ranking_trial_steps']}`. The second run reuses every unchanged "
             "component (its retrieval model and two-stage rows are the first run's), and "
             "its Evaluator judges the tuned ranker against the blessed default on the same "
             "eval contexts. Tuner "
             f"{seconds.get('ranking_tuner', float('nan')):.0f} s, ranking Trainer "
             f"{seconds.get('ranking_trainer', float('nan')):.0f} s; tuned ranker blessed: "
             f"{tuned.get('blessed')}, pushed: {tuned.get('pushed')}"
             + (f" (failed: {'; '.join(map(str, tuned['failed']))})" if tuned.get("failed")
                else "") + ".", "",
             "| ranker | " + " | ".join(RANKING_METRICS) + " |",
             "|---|" + "---|" * len(RANKING_METRICS)]
    for name, metrics in pipeline_ranking_rows(found):
        lines.append(f"| {name} | " + " | ".join(_f(metrics.get(k)) for k in RANKING_METRICS)
                     + " |")
    names = sorted(k for k in found["trials"][0] if k not in ("trial_id", "score")) \
        if found["trials"] else []
    best = ", ".join(f"{k} {_hp(v)}"
                     for k, v in sorted(found["best"].items()))
    lines += ["", f"Best values (handed to the Trainer): {best}. Trials (holdout click AUC, "
              "best first):", "", "| trial | click AUC | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    for trial in found["trials"]:
        lines.append(f"| {trial['trial_id']} | {_f(trial['score'])} | "
                     + " | ".join(_hp(trial[k]) for k in names) + " |")
    lines.append("")
    return lines


def chart(results, path):
    # pylint: disable=import-outside-toplevel
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = len(results["rows"]) + bool(results.get("pipeline_ranking"))
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4))
    axes = np.atleast_1d(axes)
    if results.get("pipeline_ranking"):
        rows = pipeline_ranking_rows(results["pipeline_ranking"])
        x = np.arange(len(RANKING_METRICS))
        for i, (name, metrics) in enumerate(rows):
            axes[-1].bar(x + (i - 1) * 0.27, [metrics.get(k) or 0.0 for k in RANKING_METRICS],
                         0.27, label=name)
        axes[-1].set_xticks(x, RANKING_METRICS, fontsize=8)
        axes[-1].set_title("ranking in the pipeline: eval contexts (validation users)",
                           fontsize=9)
        axes[-1].legend(fontsize=7)
    for ax, r in zip(axes, results["rows"]):
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
    parser.add_argument("--data", default="",
                        help="an Amazon Beauty folder: search retrieval on its validation "
                             "users instead of the sample shop")
    parser.add_argument("--work-dir", default="/tmp/shoprec_tuning")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="shop and model seeds; each gets its own search (default: 0 1; "
                             "Beauty 0)")
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--trials", type=int)
    parser.add_argument("--trial-steps", type=int, help="default 150; Beauty 1000")
    parser.add_argument("--retrieval-steps", type=int, help="default 300; Beauty 3000")
    parser.add_argument("--ranking-steps", type=int, default=300)
    parser.add_argument("--ranking-trial-steps", type=int, default=1000,
                        help="Beauty: steps of each ranking Tuner trial in the pipeline")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="Beauty: skip the two pipeline runs (ranking Tuner)")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    for key, value in (BEAUTY_DEFAULTS if args.data else SAMPLE_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.data:
        if folders.inside_repo(args.work_dir):
            parser.error(f"--work-dir {args.work_dir} is inside the repository; what is "
                         "written there derives from research-only data")
    started = time.perf_counter()
    steps = {"retrieval": args.retrieval_steps, "ranking": args.ranking_steps}
    rows, data = [], None
    for seed in args.seeds:
        if args.data:
            work = os.path.join(args.work_dir, "beauty")
            tdir, data = prepare_beauty(args.data, work)
            work = os.path.join(work, f"s{seed}")
        else:
            work = os.path.join(args.work_dir, f"s{seed}_{args.scale:g}")
            _, tdir = prepare(work, seed, args.scale)
        rows += [dict(row, seed=seed) for row in measure(
            os.path.join(work, f"t{args.trials}x{args.trial_steps}"), tdir, seed,
            args.trials, args.trial_steps, steps, beauty=bool(args.data))]
    pipeline_ranking = None
    if args.data and not args.no_pipeline:
        pipeline_ranking = ranking_in_pipeline(args.data, os.path.join(args.work_dir, "beauty"),
                                               args.seeds[0], args.trials,
                                               args.ranking_trial_steps)
    results = {"settings": {"seeds": args.seeds, "scale": None if args.data else args.scale,
                            "ranking_trial_steps": args.ranking_trial_steps,
                            "trials": args.trials, "trial_steps": args.trial_steps,
                            "steps": steps, "holdout_percent": HOLDOUT_PERCENT, "data": data,
                            "retrieval_config": BEAUTY_RETRIEVAL if args.data else RETRIEVAL,
                            "ranking_config": None if args.data else RANKING},
               "rows": rows, "pipeline_ranking": pipeline_ranking, "commit": _commit(),
               "seconds": round(time.perf_counter() - started, 1)}
    text = markdown(results)
    write_outputs(results, args.out, "tuning_beauty" if args.data else "tuning", text, chart)
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.exit(main())
