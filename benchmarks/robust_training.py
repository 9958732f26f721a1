"""Adversarial training and DP-SGD on the sample shop (issue #22, parts 2 and 3).

    python -m benchmarks.robust_training [--part adversarial|dp|all] [--work-dir DIR]
        [--seed 0] [--scale 0.1] [--retrieval-steps 300] [--ranking-steps 300] [--out DIR]

Every model is trained by the project's trainers (`trainer.retrieval.run_fn`,
`trainer.ranking.run_fn`) on the sample shop's examples (pipeline/in_process.py: generate,
examples with the pipeline's time split, Transform) and judged **from its export**:

- adversarial (benchmarks/results/adversarial.*): retrieval Recall@10/50 over the full catalog
  on the eval split's clicks (`candidate_embedding` of every catalog item, `query_embedding`
  of each click's user, history and search text) and ranking click / purchase AUC on the eval
  units (`serving_default` on the raw examples), clean and with seeded typos (each word of 4+
  letters, with probability `TYPO_RATE`, gets one adjacent swap or one deleted letter) in
  every catalog title and every search query; models: no adversarial term vs FGM at two
  radii (and PGD for retrieval).
- dp (benchmarks/results/dp_sgd.*): ranking AUC without DP and with DP-SGD at three noise
  multipliers (clip 1, one example per microbatch), epsilon at delta = 1 / train units
  (RDP; PLD; user-level by group privacy); one retrieval row (microbatch softmax).

Retrieval uses the trainer's default text mode "none" (hashed bag of words; the pipeline's
frozen MiniLM costs more than this budget), without item-to-item tables (not measured).
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import time

import numpy as np

from benchmarks.outputs import write_outputs

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TYPO_RATE = 0.3
KS = (10, 50)
RETRIEVAL = {"text_mode": "none", "related_items": 0, "top_k": 100}
RANKING = {"use_text_embedding": False}
FGM_RADII = (0.05, 0.25)
NOISE_MULTIPLIERS = (0.5, 1.0, 2.0)


def prepare(work_dir, seed, scale):
    """The sample shop's raw and transformed examples under `work_dir` (kept between runs)."""
    from pipeline import in_process  # pylint: disable=import-outside-toplevel
    return in_process.sample_shop_examples(work_dir, seed, scale)


def train(work_dir, tdir, name, run_fn, config, steps):
    """One trainer run (skipped when its metrics exist); returns (metrics, export dir)."""
    # pylint: disable=import-outside-toplevel
    from pipeline import in_process
    out = os.path.join(work_dir, "runs", name)
    metrics_path = os.path.join(out, "model_run", "metrics.json")
    if not os.path.exists(metrics_path):
        args = in_process.trainer_fn_args(os.path.join(tdir, "transformed"),
                                          os.path.join(tdir, "transform_graph"), out, config,
                                          train_steps=steps)
        run = in_process.run_trainer(run_fn, args)
        return run.metrics, run.export
    with open(metrics_path, encoding="utf-8") as f:
        return json.load(f), os.path.join(out, "serving_model_dir")


def typo(text, rng, rate=TYPO_RATE):
    """Each word of 4+ letters, with probability `rate`: two adjacent letters swapped or one
    letter deleted (seeded by `rng`)."""
    def one(match):
        word = match.group(0)
        if len(word) < 4 or rng.random() >= rate:
            return word
        i = rng.randrange(1, len(word) - 1)
        if rng.random() < 0.5:
            return word[:i] + word[i + 1] + word[i] + word[i + 2:]
        return word[:i] + word[i + 1:]
    return re.sub(r"[A-Za-z]+", one, text)


def _read(raw, split):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    files = tf.io.gfile.glob(os.path.join(raw, f"Split-{split}", "*"))
    return [tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(files, "GZIP")]


def _value(example, key):
    feature = example.features.feature[key]
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if kind == "bytes_list":
        values = [v.decode() for v in values]
    return values


def _with_typos(examples, keys, seed):
    out = []
    for index, example in enumerate(examples):
        copy = type(example)()
        copy.CopyFrom(example)
        for key in keys:
            if key in copy.features.feature:
                rng = random.Random(f"{seed}/{key}/{index}")
                values = [typo(v, rng).encode() for v in _value(copy, key)]
                del copy.features.feature[key].bytes_list.value[:]
                copy.features.feature[key].bytes_list.value.extend(values)
        out.append(copy)
    return out


def retrieval_recall(export, catalog, clicks):
    """Recall@KS over the full catalog from the export's embedding signatures."""
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from trainer import features as F
    from trainer.metrics import metrics_from_ranks, target_ranks
    model = tf.saved_model.load(export)
    col = lambda rows, key, dtype=tf.string: tf.constant(
        [(_value(r, key) or [""])[0] if dtype == tf.string else (_value(r, key) or [0])[0]
         for r in rows], dtype)
    items = [(_value(r, F.ITEM_ID) or [""])[0] for r in catalog]
    candidates = model.signatures["candidate_embedding"](
        item_id=col(catalog, F.ITEM_ID), title=col(catalog, F.TITLE),
        description=col(catalog, F.DESCRIPTION), brand=col(catalog, F.BRAND),
        category=col(catalog, F.CATEGORY), price=col(catalog, F.PRICE, tf.float32),
        in_stock=col(catalog, F.IN_STOCK, tf.int64))["embedding"].numpy()
    width = max(len(_value(r, F.HISTORY_ITEM_IDS)) for r in clicks) or 1
    histories = tf.constant([(_value(r, F.HISTORY_ITEM_IDS) + [""] * width)[:width]
                             for r in clicks])
    queries = model.signatures["query_embedding"](
        user_id=col(clicks, F.USER_ID), history_item_ids=histories,
        query=col(clicks, F.QUERY))["embedding"].numpy()
    row = {item: i for i, item in enumerate(items)}
    targets = np.array([row.get((_value(r, F.ITEM_ID) or [""])[0], -1) for r in clicks])
    ranks = target_ranks(queries @ candidates.T, targets)
    return {k: round(v, 4) for k, v in metrics_from_ranks(ranks, KS).items()
            if k.startswith("recall")}


def ranking_auc(export, units):
    """Click and purchase AUC on `units` (raw tf.Examples) from `serving_default`."""
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from trainer import features as F
    from trainer.ranking import auc
    model = tf.saved_model.load(export)
    scores = {"click": [], "purchase": []}
    for start in range(0, len(units), 1024):
        batch = tf.constant([u.SerializeToString() for u in units[start:start + 1024]])
        out = model.signatures["serving_default"](examples=batch)
        for head in scores:
            scores[head].append(out[head].numpy().ravel())
    labels = {"click": F.CLICKED, "purchase": F.PURCHASED}
    return {f"{head}_auc": round(auc(np.array([_value(u, labels[head])[0] for u in units]),
                                     np.concatenate(v)), 4) for head, v in scores.items()}


def adversarial_part(work_dir, raw, tdir, seed, retrieval_steps, ranking_steps):
    # pylint: disable=import-outside-toplevel
    from trainer import features as F
    from trainer import ranking, retrieval
    catalog, units = _read(raw, "catalog"), _read(raw, "eval")
    clicks = [u for u in units if (_value(u, F.CLICKED) or [0])[0] == 1]
    typo_catalog = _with_typos(catalog, [F.TITLE], seed)
    typo_clicks = _with_typos(clicks, [F.QUERY], seed)
    typo_units = _with_typos(units, [F.QUERY, F.TITLE], seed)
    variants = [("none", {})] + [(f"FGM eps={r:g}", {"adversarial_epsilon": r})
                                 for r in FGM_RADII]
    rows = []
    for model, run_fn, base, steps, extra in (
            ("retrieval", retrieval.run_fn, RETRIEVAL, retrieval_steps,
             [("PGD eps=0.25, 3 steps", {"adversarial_epsilon": 0.25,
                                          "adversarial_steps": 3})]),
            ("ranking", ranking.run_fn, RANKING, ranking_steps, [])):
        for label, options in variants + extra:
            name = f"{model}_" + re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
            started = time.perf_counter()
            metrics, export = train(work_dir, tdir, name, run_fn,
                                    dict(base, seed=seed, **options), steps)
            if model == "retrieval":
                clean = retrieval_recall(export, catalog, clicks)
                noisy = {"titles": retrieval_recall(export, typo_catalog, clicks),
                         "queries": retrieval_recall(export, catalog, typo_clicks),
                         "both": retrieval_recall(export, typo_catalog, typo_clicks)}
            else:
                clean = ranking_auc(export, units)
                noisy = {"both": ranking_auc(export, typo_units)}
            rows.append({"model": model, "training": label, "options": options,
                         "clean": clean, "typos": noisy,
                         "train_seconds": metrics["training"].get("train_seconds"),
                         "steps": metrics["training"]["steps"],
                         "seconds": round(time.perf_counter() - started, 1)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def dp_part(work_dir, tdir, seed, retrieval_steps, ranking_steps):
    # pylint: disable=import-outside-toplevel
    from trainer import ranking, retrieval
    rows = []
    # 32 microbatches of 8 units: one per unit (the jacobian of 256 losses) took over 7
    # minutes for 200 steps on the shared cores; the accountant halves sigma for it.
    runs = [("ranking", "no DP", ranking.run_fn, dict(RANKING), ranking_steps,
             f"ranking_none_{ranking_steps}")]
    runs += [("ranking", f"DP sigma={s:g}, 32 microbatches of 8", ranking.run_fn,
              dict(RANKING, dp_noise_multiplier=s, dp_microbatches=32), ranking_steps,
              f"ranking_dp_{s:g}_{ranking_steps}") for s in NOISE_MULTIPLIERS]
    microbatch = {"logq_correction": False, "dp_microbatches": 32}
    runs += [("retrieval", "no DP (no logQ)", retrieval.run_fn,
              dict(RETRIEVAL, logq_correction=False), retrieval_steps, "retrieval_nologq"),
             ("retrieval", "DP sigma=1, 32 microbatches of 8", retrieval.run_fn,
              dict(RETRIEVAL, dp_noise_multiplier=1.0, **microbatch), retrieval_steps,
              "retrieval_dp_1")]
    for model, label, run_fn, config, steps, name in runs:
        started = time.perf_counter()
        metrics, _ = train(work_dir, tdir, name, run_fn, dict(config, seed=seed), steps)
        quality = ({f"{h}_auc": metrics[h]["auc"] for h in ("click", "purchase")}
                   if model == "ranking" else
                   {k: metrics["model"][k] for k in ("recall@10", "recall@50")})
        rows.append({"model": model, "training": label, "quality": quality,
                     "privacy": metrics.get("privacy"),
                     "train_seconds": metrics["training"].get("train_seconds"),
                     "steps": metrics["training"]["steps"],
                     "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _fmt(value):
    return "—" if value is None else (f"{value:.3g}" if isinstance(value, float) else value)


def adversarial_markdown(results):
    lines = ["# Adversarial training on the sample shop (issue #22, part 2)", "",
             _header(results), "",
             f"Typos: each word of 4+ letters, with probability {TYPO_RATE}, gets an adjacent "
             "swap or loses a letter (seeded); in every catalog title and search query.", "",
             "## Retrieval: Recall@10 / @50 over the full catalog, eval clicks", "",
             "| training | clean | typo titles | typo queries | both | drop @10 (both) | "
             "train s |", "|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if r["model"] != "retrieval":
            continue
        c, t = r["clean"], r["typos"]
        cell = lambda m: f"{m['recall@10']:.4f} / {m['recall@50']:.4f}"
        lines.append(f"| {r['training']} | {cell(c)} | {cell(t['titles'])} | "
                     f"{cell(t['queries'])} | {cell(t['both'])} | "
                     f"{c['recall@10'] - t['both']['recall@10']:+.4f} | "
                     f"{_fmt(r['train_seconds'])} |")
    lines += ["", "## Ranking: click / purchase AUC on the eval units", "",
              "| training | clean | typos (titles and queries) | drop (click) | train s |",
              "|---|---|---|---|---|"]
    for r in results["rows"]:
        if r["model"] != "ranking":
            continue
        c, t = r["clean"], r["typos"]["both"]
        cell = lambda m: f"{m['click_auc']:.4f} / {m['purchase_auc']:.4f}"
        lines.append(f"| {r['training']} | {cell(c)} | {cell(t)} | "
                     f"{c['click_auc'] - t['click_auc']:+.4f} | {_fmt(r['train_seconds'])} |")
    return "\n".join(lines + [""])


def dp_markdown(results):
    lines = ["# DP-SGD on the sample shop (issue #22, part 3)", "", _header(results), "",
             "tensorflow-privacy's DP Adam, clip 1; epsilon at delta = 1 / train examples "
             "(the privacy unit is one impression unit; retrieval: one clicked unit), "
             "Poisson sampling assumed; user-level epsilon by group privacy over the most "
             "examples one user has.", "",
             "| model | training | quality | epsilon (RDP) | epsilon (PLD) | delta | "
             "user-level epsilon | train s |", "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        p = r["privacy"] or {}
        quality = ", ".join(f"{k} {v:.4f}" for k, v in r["quality"].items())
        lines.append(f"| {r['model']} | {r['training']} | {quality} | "
                     f"{_fmt(p.get('epsilon'))} | {_fmt(p.get('epsilon_pld'))} | "
                     f"{_fmt(p.get('delta'))} | "
                     f"{_fmt(p.get('user_epsilon')) if p else '—'}"
                     f"{' (k=' + str(p['max_examples_per_user']) + ')' if p else ''} | "
                     f"{_fmt(r['train_seconds'])} |")
    return "\n".join(lines + [""])


def _header(results):
    s = results["settings"]
    return (f"Sample shop seed {s['seed']}, scale {s['scale']:g}; retrieval {s['retrieval_steps']} "
            f"steps, ranking {s['ranking_steps']} steps, model seed {s['seed']}; "
            f"`python -m benchmarks.robust_training --part {results['part']}`; "
            f"commit {results['commit']}.")


def adversarial_chart(results, path):
    # pylint: disable=import-outside-toplevel
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, model, key, label in ((left, "retrieval", "recall@10", "Recall@10"),
                                  (right, "ranking", "click_auc", "click AUC")):
        rows = [r for r in results["rows"] if r["model"] == model]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["clean"][key] for r in rows], 0.4, label="clean")
        ax.bar(x + 0.2, [r["typos"]["both"][key] for r in rows], 0.4, label="typos")
        ax.set_xticks(x, [r["training"] for r in rows], rotation=15, fontsize=8)
        ax.set_title(f"{model}: {label}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def dp_chart(results, path):
    # pylint: disable=import-outside-toplevel
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in results["rows"] if r["model"] == "ranking"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for head in ("click_auc", "purchase_auc"):
        private = [r for r in rows if r["privacy"]]
        ax.plot([r["privacy"]["epsilon"] for r in private], [r["quality"][head] for r in private],
                "o-", label=f"{head} (DP)")
        base = [r for r in rows if not r["privacy"]]
        if base:
            ax.axhline(base[0]["quality"][head], ls="--", lw=1, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon (RDP, delta = 1/N)")
    ax.set_ylabel("eval AUC")
    ax.set_title("ranking: quality vs privacy (dashed: no DP)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("adversarial", "dp", "all"), default="all")
    parser.add_argument("--work-dir", default="/tmp/shoprec_robust_training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--retrieval-steps", type=int, default=300)
    parser.add_argument("--ranking-steps", type=int, default=300)
    parser.add_argument("--dp-ranking-steps", type=int, default=100)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    raw, tdir = prepare(os.path.join(args.work_dir, f"s{args.seed}_{args.scale:g}"),
                        args.seed, args.scale)
    work = os.path.join(args.work_dir, f"s{args.seed}_{args.scale:g}")
    settings = {"seed": args.seed, "scale": args.scale, "typo_rate": TYPO_RATE,
                "retrieval_steps": args.retrieval_steps, "ranking_steps": args.ranking_steps,
                "retrieval_config": RETRIEVAL, "ranking_config": RANKING}
    for part in (("adversarial", "dp") if args.part == "all" else (args.part,)):
        started = time.perf_counter()
        if part == "adversarial":
            rows = adversarial_part(work, raw, tdir, args.seed, args.retrieval_steps,
                                    args.ranking_steps)
            stem, md, chart = "adversarial", adversarial_markdown, adversarial_chart
        else:
            rows = dp_part(work, tdir, args.seed, args.retrieval_steps,
                           args.dp_ranking_steps)
            settings = dict(settings, ranking_steps=args.dp_ranking_steps)
            stem, md, chart = "dp_sgd", dp_markdown, dp_chart
        results = {"part": part, "settings": settings, "rows": rows, "commit": _commit(),
                   "seconds": round(time.perf_counter() - started, 1)}
        text = md(results)
        write_outputs(results, args.out, stem, text, chart)
        print(text)


if __name__ == "__main__":
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.exit(main())
