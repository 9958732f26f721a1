"""Multi-worker training measured (issue #23, part 3): the same retrieval and ranking runs in
one process and as a chief + worker under MultiWorkerMirroredStrategy on loopback.

    python -m benchmarks.multi_worker [--scale 0.3] [--train-steps 60]

The sample shop (seed, scale) goes through the project's example writer and Transform
(pipeline/in_process.py, as in the pipeline); then ``python -m trainer.distribute`` (the
code a Kubeflow TFJob's pods or Vertex AI's worker pools run) trains both models with the
default configs: once without TF_CONFIG (default strategy), once as two processes with
TF_CONFIG (chief on one port, worker on another; gradients all-reduced). Retrieval's id
dropout is off (CUSTOM_CONFIG): it draws its mask per replica over the replica's rows, so
with it on the runs could not be compared step for step. Synchronous data parallelism
splits each global batch between the workers, so a correct two-worker run trains exactly
as the one-process run. Recorded: wall seconds, the strategy and replicas each run reports,
the last training loss per model on each process, the chief's eval metrics (metrics.json)
and whether its exports answer. Writes ``<out>/multi_worker.{md,json,png}``.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEM = "multi_worker"
MODELS = ("retrieval", "ranking")
CUSTOM_CONFIG = {"retrieval": {"id_dropout": 0.0}}


def _free_ports(n: int) -> list:
    import portpicker  # pylint: disable=import-outside-toplevel
    return [portpicker.pick_unused_port() for _ in range(n)]


def _launch(task, cluster, tdir, out, steps, log_path):
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONHASHSEED": "0",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if cluster:
        env["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                       "task": {"type": task, "index": 0}})
    log = open(log_path, "w", encoding="utf-8")  # pylint: disable=consider-using-with
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer.distribute", "--models", ",".join(MODELS),
         "--examples", os.path.join(tdir, "transformed"),
         "--transform-graph", os.path.join(tdir, "transform_graph"), "--out", out,
         "--custom-config", json.dumps(CUSTOM_CONFIG), "--train-steps", str(steps)], stdout=log, stderr=subprocess.STDOUT, env=env,
        cwd=REPO)
    return proc, log


def _summary(log_text: str) -> dict:
    """What a process reported: per model its strategy line and last epoch loss."""
    lines = re.findall(r"^(retrieval|ranking): trained with (.*)$", log_text, re.M)
    losses = re.findall(r"\d+/\d+ - .*? - loss: ([0-9.e+-]+)", log_text)
    return {"reported": {model: text for model, text in lines},
            "last_losses": [float(x) for x in losses]}


def run_case(name, tasks, tdir, work, steps) -> dict:
    """Train both models with ``tasks`` processes ("" = no TF_CONFIG) and collect results."""
    out = os.path.join(work, name)
    cluster = None
    if len(tasks) > 1:
        ports = _free_ports(len(tasks))
        cluster = {}
        for task, port in zip(tasks, ports):
            cluster.setdefault(task, []).append(f"127.0.0.1:{port}")
    began = time.perf_counter()
    procs = [_launch(task, cluster, tdir, out, steps, os.path.join(work, f"{name}-{i}.log"))
             for i, task in enumerate(tasks)]
    codes = [p.wait(timeout=3600) for p, _ in procs]
    seconds = time.perf_counter() - began
    texts = []
    for (_, log), i in zip(procs, range(len(tasks))):
        log.close()
        with open(os.path.join(work, f"{name}-{i}.log"), encoding="utf-8") as f:
            texts.append(f.read())
    if any(codes):
        tail = "\n\n".join(t[-3000:] for t in texts)
        raise RuntimeError(f"{name}: exit codes {codes}\n{tail}")
    result = {"processes": list(tasks), "wall_seconds": seconds,
              "per_process": [_summary(t) for t in texts], "models": {}}
    for model in MODELS:
        with open(os.path.join(out, model, "model_run", "metrics.json"), encoding="utf-8") as f:
            metrics = json.load(f)
        if model == "retrieval":
            scores = {k: metrics["model"][k] for k in ("recall@10", "recall@100", "ndcg@10")}
        else:
            scores = {"click_auc": metrics["click"]["auc"],
                      "purchase_auc": metrics["purchase"]["auc"],
                      "rating_rmse": metrics["rating"]["rmse"]}
        result["models"][model] = {"training": metrics.get("training", {}), "eval": scores}
    result["exports_answer"] = _exports_answer(out)
    return result


def _exports_answer(out: str) -> bool:
    """The chief's SavedModels load and their serving signatures exist."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    retrieval = tf.saved_model.load(os.path.join(out, "retrieval", "serving_model_dir"))
    ranking = tf.saved_model.load(os.path.join(out, "ranking", "serving_model_dir"))
    return "top_k" in retrieval.signatures and "score" in ranking.signatures


def markdown(results: dict) -> str:
    lines = ["# Multi-worker training (issue #23, part 3)", "",
             f"`python -m benchmarks.multi_worker --scale {results['scale']:g} --train-steps "
             f"{results['train_steps']}`: sample shop seed {results['seed']}, default model "
             f"configs but {json.dumps(results.get('custom_config', {}))} (id dropout draws "
             f"per replica), {results['train_steps']} steps per model, `python -m "
             "trainer.distribute` per process; two processes = chief + worker on 127.0.0.1 "
             "(TF_CONFIG), MultiWorkerMirroredStrategy.", "",
             "| run | processes | wall s | strategy (as reported) | last loss retrieval / "
             "ranking, per process | exports answer |", "|---|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        reported = r["per_process"][0]["reported"].get("retrieval", "").split(", chief")[0]
        losses = "; ".join(" / ".join(f"{x:.4f}" for x in p["last_losses"])
                           for p in r["per_process"])
        lines.append(f"| {name} | {', '.join(t or 'single' for t in r['processes'])} | "
                     f"{r['wall_seconds']:.0f} | {reported} | {losses} | "
                     f"{'yes' if r['exports_answer'] else 'no'} |")
    lines += ["", "Chief's eval metrics (metrics.json):", ""]
    for name, r in results["runs"].items():
        for model, m in r["models"].items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in m["eval"].items())
            train = m["training"]
            lines.append(f"- {name}, {model}: {shown}; training loss first/last "
                         f"{train.get('loss_first', float('nan')):.6f} / "
                         f"{train.get('loss_last', float('nan')):.6f}")
    one, two = (results["runs"].get(k) for k in ("one process", "two workers"))
    if one and two:
        lines += ["", "Observed:", ""]
        for model in MODELS:
            a, b = (r["models"][model]["training"] for r in (one, two))
            gap = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12)
                      for k in ("loss_first", "loss_last"))
            scores = [(k, one["models"][model]["eval"][k], two["models"][model]["eval"][k])
                      for k in one["models"][model]["eval"]]
            shown = ", ".join(f"{k} {x:.4f} vs {y:.4f}" for k, x, y in scores)
            lines.append(
                f"- {model}: " + (f"two workers trained as one process: training losses "
                                  f"within a relative {gap:.0e} (float rounding of the "
                                  f"all-reduce, growing over the steps), eval {shown}; each "
                                  "global batch was split between the workers and their "
                                  "gradients summed, as synchronous data parallelism should"
                                  if gap <= 1e-4 else
                                  f"**the two-worker run differs from one process** "
                                  f"(training losses {gap:.1e} apart, eval {shown}): the "
                                  "model depends on how many workers trained it"))
    lines += ["", f"Machine: {results['machine']}; both processes share its cores, so two "
              "workers here show the mechanism (same all-reduced loss on both, the chief "
              "exports), not a speed-up.", ""]
    return "\n".join(lines)


def chart(results: dict, path: str) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    names = list(results["runs"])
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(names, [results["runs"][n]["wall_seconds"] for n in names], color="#4c72b0")
    ax.set_xlabel("wall seconds (retrieval + ranking)")
    ax.set_title("Training in one process vs two workers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multi_worker",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--work", help="keep the shop, examples and runs here")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    args = parser.parse_args(argv)
    if args.train_steps < 1:
        parser.error("--train-steps must be >= 1")
    from pipeline import in_process  # pylint: disable=import-outside-toplevel
    work = args.work or tempfile.mkdtemp(prefix="multi_worker_")
    _, tdir = in_process.sample_shop_examples(work, args.seed, args.scale)
    runs = {}
    for name, tasks in (("one process", ("",)), ("two workers", ("chief", "worker"))):
        print(f"training: {name}", flush=True)
        runs[name] = run_case(name.replace(" ", "_"), tasks, tdir, work, args.train_steps)
    import psutil  # pylint: disable=import-outside-toplevel
    results = {"seed": args.seed, "scale": args.scale, "train_steps": args.train_steps,
               "custom_config": CUSTOM_CONFIG, "runs": runs, "machine": f"{os.cpu_count()} CPU cores, "
               f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"}
    from benchmarks.outputs import write_outputs  # pylint: disable=import-outside-toplevel
    text = markdown(results)
    write_outputs(results, args.out, STEM, text, chart)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
