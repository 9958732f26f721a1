"""The record of notebooks/colab_tpu.ipynb's run (issue #23 part 6): executes the notebook top
to bottom on this machine (nbclient, this interpreter as the kernel) with the tiny sample shop
and writes what it reports to benchmarks/results/colab_notebook.{json,md}: wall time per
stage, the strategy it chose, the metrics and the seed.

    python -m benchmarks.colab_notebook [--out benchmarks/results] [--scale 0.05] [--seed 3]

Without a TPU the notebook falls back to the default strategy and still trains through the
TPU path's numeric step (strings to ids on the host, the step compiled by XLA on CPU).
"""
import argparse
import datetime
import json
import os
import tempfile

from notebooks import execute

NOTEBOOK = os.path.join(execute.HERE, "colab_tpu.ipynb")
STEM = "colab_notebook"


def run(scale=0.05, seed=3, steps=100, batch_size=64, tpu="auto"):
    """The notebook's record plus the whole run's wall time and its parameters."""
    with tempfile.TemporaryDirectory(prefix="shoprec-colab-") as tmp:
        parameters = {"DATA": "sample", "SAMPLE_SCALE": scale, "SEED": seed, "TPU": tpu,
                      "RETRIEVAL_STEPS": steps, "RANKING_STEPS": steps,
                      "BATCH_SIZE": batch_size, "WORK_DIR": os.path.join(tmp, "work"),
                      "RESULTS_JSON": os.path.join(tmp, "record.json")}
        _, seconds = execute.run(NOTEBOOK, parameters, cwd=tmp)
        with open(parameters["RESULTS_JSON"], encoding="utf-8") as f:
            record = json.load(f)
    check = record.pop("exports")["check"]      # (the export paths: a deleted folder)
    record["export_check"] = {key: check[key] for key in ("retrieved", "top_items")}
    record.update(notebook="notebooks/colab_tpu.ipynb", notebook_seconds=round(seconds, 1),
                  parameters={k: v for k, v in parameters.items()
                              if k not in ("WORK_DIR", "RESULTS_JSON")},
                  date=datetime.date.today().isoformat())
    return record


def markdown(record) -> str:
    r, k = record["retrieval"], record["ranking"]
    stages = " | ".join(f"{stage} {sec:.1f}" for stage, sec in record["seconds"].items())
    env = record["environment"]
    return "\n".join([
        "# The Colab TPU notebook, run top to bottom",
        "",
        f"`python -m benchmarks.colab_notebook` ({record['date']}): notebooks/colab_tpu.ipynb "
        f"executed with nbclient on {env['cpus']} CPU core(s), {env['machine']}, TensorFlow "
        f"{env['tensorflow']}, Python {env['python']}; sample shop scale "
        f"{record['sample_scale']}, seed {record['seed']}, batch {record['batch_size']}.",
        "",
        f"- Strategy: **{record['strategy']}** ({record['replicas']} replica(s); TPU asked: "
        f"`{record['tpu_asked']}`; no TPU on this machine), numeric step "
        f"{'on' if record['numeric_step'] else 'off'} (strings to ids on the host, step "
        "compiled by XLA).",
        f"- Examples: {record['examples']['train']} train, {record['examples']['eval']} eval, "
        f"{record['examples']['catalog']} catalog items.",
        f"- Whole notebook: {record['notebook_seconds']:.1f} s (kernel start and imports "
        "included). Seconds per stage: " + stages + ".",
        "",
        "| model | steps | loss first → last | eval |",
        "|---|---|---|---|",
        f"| retrieval | {r['steps']} | {r['loss_first']:.3f} → {r['loss_last']:.3f} | "
        f"recall@10 {r['model']['recall@10']:.3f}, recall@20 {r['model']['recall@20']:.3f} "
        f"(popularity {r['popularity']['recall@10']:.3f} / {r['popularity']['recall@20']:.3f}; "
        f"{r['num_eval_queries']} eval clicks) |",
        f"| ranking | {k['steps']} | {k['loss_first']:.3f} → {k['loss_last']:.3f} | "
        f"click AUC {k['click_auc']:.3f}, purchase AUC "
        f"{k['purchase_auc'] if k['purchase_auc'] is None else round(k['purchase_auc'], 3)} "
        f"({k['num_eval_examples']} eval units) |",
        "",
        "A tiny shop and 100 steps: the numbers show the notebook trains and exports working "
        "models, not how good they get (benchmarks/results/beauty.md measures that). XLA "
        "warns that it ignores the seeds of tf.random ops (id dropout); on CPU two runs gave "
        "the same metrics.",
        "",
    ])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.colab_notebook",
                                description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--out", default=os.path.join(execute.REPO, "benchmarks", "results"))
    p.add_argument("--scale", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--tpu", default="auto")
    args = p.parse_args(argv)
    record = run(args.scale, args.seed, args.steps, tpu=args.tpu)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{STEM}.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, f"{STEM}.md"), "w", encoding="utf-8") as f:
        f.write(markdown(record))
    print(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
