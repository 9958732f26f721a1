"""Compressed exports (trainer/compression.py) against the full export, on a sample shop.

    python -m benchmarks.compression [--scale 0.2] [--seed 7] [--retrieval-steps 300]
        [--ranking-steps 300] [--modes none,float16,int8] [--duration-s 10]
        [--work /tmp/shoprec-compression] [--out benchmarks/results]

A sample shop (pipeline.sample_shop.generate, `--seed`, `--scale`) becomes raw and transformed
examples (pipeline/in_process.py); the retrieval and ranking run_fns train once with the
pipeline's configs (frozen MiniLM text tower, the ranker's MiniLM item text) and export the
full models. Each mode then gets a serving dir with `retrieval/1` and `ranking/1`: the full
exports (`none`) or their compression. Per mode and model:

- size: bytes on disk, and gzip-compressed (a tar.gz of the version folder: what a registry
  or object store transfers, and what pruning would shrink);
- load time: `tf.saved_model.load` and TF Serving's loading path
  (`tf.compat.v1.saved_model.load`: the MetaGraphDef's graph imported and its restore op
  run, as TF Serving's C++ loader does), each in a fresh process, median of `--loads`;
- quality: retrieval recall@10 / @100 of `top_k` over the eval split's clicks (the whole
  catalog ranked), and against the full export the top-10 overlap and the largest score
  difference; ranking click AUC of `serving_default` on the eval units and the largest
  score difference;
- `/v1/recommend` and `/v1/search` p50 / p99 through the local stack (stand-in model server
  + API), with benchmarks/serving.py's machinery (`--models pushed`), concurrency 1; a
  search text no catalog text matches is encoded by the export's MiniLM, so search also
  shows what dequantising the encoder's weights costs.

Writes <out>/compression.{md,json,png}; the JSON's meta has the seed, commit, machine and
load average. `--work` keeps the shop, examples and trained models for a rerun.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from typing import Dict, List

import numpy as np

from benchmarks.outputs import write_outputs

MODES = ("none", "float16", "int8")
MODELS = ("retrieval", "ranking")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOAD_SCRIPT = r"""
import json, sys, time
import tensorflow as tf
import tensorflow_text  # noqa: F401  the tokenizer ops (TF Serving links them)
path, how = sys.argv[1], sys.argv[2]
started = time.perf_counter()
if how == "python":
    tf.saved_model.load(path)
else:
    tf.compat.v1.disable_eager_execution()
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        tf.compat.v1.saved_model.load(session, ["serve"], path)
print("LOAD " + json.dumps(time.perf_counter() - started))
"""


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
    env.pop("TF_USE_LEGACY_KERAS", None)      # serving needs neither Keras
    return env


def load_seconds(path: str, how: str, repeats: int) -> float:
    """Median seconds of loading `path` ("python" | "tf_serving") in fresh processes."""
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, path, how], env=_env(),
                             capture_output=True, text=True, timeout=900)
        lines = [l for l in out.stdout.splitlines() if l.startswith("LOAD ")]
        if out.returncode or not lines:
            raise RuntimeError(f"loading {path} ({how}) failed: {out.stderr[-2000:]}")
        times.append(json.loads(lines[-1][5:]))
    return round(statistics.median(times), 2)


def gzip_bytes(path: str, scratch: str) -> int:
    """Bytes of a gzip (level 6) tar of the folder."""
    target = os.path.join(scratch, "size.tar.gz")
    with tarfile.open(target, "w:gz", compresslevel=6) as tar:
        tar.add(path, arcname="model")
    size = os.path.getsize(target)
    os.remove(target)
    return size


def prepare(work: str, seed: int, scale: float) -> Dict:
    """The shop, its raw and transformed examples under `work` (reused when present)."""
    marker = os.path.join(work, "data.json")
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            return json.load(f)
    from pipeline import in_process  # pylint: disable=import-outside-toplevel
    from pipeline.sample_shop.generate import generate_shop  # pylint: disable=C0415
    shop = os.path.join(work, "shop")
    generate_shop(shop, seed=seed, scale=scale)
    rows = in_process.write_examples(shop, os.path.join(work, "raw"))
    graph_dir, examples_dir = in_process.transform(os.path.join(work, "raw"), work)
    done = {"shop": shop, "raw": os.path.join(work, "raw"), "transform_graph": graph_dir,
            "examples": examples_dir, "catalog_items": len(rows["catalog"]),
            "eval_clicks": sum(r["clicked"] for r in rows["eval"]),
            "train_units": len(rows["train"])}
    with open(marker, "w", encoding="utf-8") as f:
        json.dump(done, f, indent=1)
    return done


def train(data: Dict, work: str, seed: int, steps: Dict[str, int]) -> Dict[str, str]:
    """model -> full export dir; trained once per --work."""
    from pipeline.configs import PipelineConfig  # pylint: disable=import-outside-toplevel
    from pipeline.in_process import run_trainer, trainer_fn_args  # pylint: disable=C0415
    from trainer import ranking, retrieval  # pylint: disable=import-outside-toplevel
    pipeline_config = PipelineConfig(seed=seed)
    configs = {"retrieval": (retrieval.run_fn, pipeline_config.retrieval_custom_config()),
               # impression units (no rank split here): the ranker's single-stage config
               "ranking": (ranking.run_fn, {"seed": seed})}
    exports = {}
    for model, (run_fn, config) in configs.items():
        out = os.path.join(work, "train", model)
        export = os.path.join(out, "serving_model_dir")
        if not os.path.exists(os.path.join(export, "saved_model.pb")):
            shutil.rmtree(out, ignore_errors=True)
            run_trainer(run_fn, trainer_fn_args(data["examples"], data["transform_graph"],
                                                out, config, steps[model]))
        exports[model] = export
    return exports


def serving_dirs(exports: Dict[str, str], work: str, modes) -> Dict[str, Dict]:
    """mode -> {"dir": serving dir with <model>/1, "reports": compression reports}."""
    from trainer import compression  # pylint: disable=import-outside-toplevel
    out = {}
    for mode in modes:
        root = os.path.join(work, "serving", mode)
        shutil.rmtree(root, ignore_errors=True)
        reports = {}
        for model, export in exports.items():
            target = os.path.join(root, model, "1")
            os.makedirs(os.path.dirname(target))
            if mode == "none":
                shutil.copytree(export, target)
            else:
                started = time.perf_counter()
                report = compression.compress_saved_model(export, target, mode)
                reports[model] = {"seconds": round(time.perf_counter() - started, 1),
                                  "variables_rewritten": report["variables_rewritten"],
                                  "values_rewritten": report["values_rewritten"],
                                  "kept_float32": report["kept_float32"]}
        out[mode] = {"dir": root, "reports": reports}
    return out


def _eval_examples(data: Dict):
    import glob  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    files = glob.glob(os.path.join(data["raw"], "Split-eval", "*"))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def quality(data: Dict, dirs: Dict[str, Dict]) -> Dict[str, Dict]:
    """mode -> retrieval recall@10/100, top-10 overlap and max score diff vs the full export;
    ranking click AUC and max score diff."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    from pipeline import examples as shop_examples  # pylint: disable=import-outside-toplevel
    from trainer import features as F  # pylint: disable=import-outside-toplevel
    from trainer.ranking import auc  # pylint: disable=import-outside-toplevel
    records = _eval_examples(data)
    rows = [shop_examples.decode_example(r) for r in records]
    clicked = [i for i, row in enumerate(rows) if row[F.CLICKED]]
    width = len(rows[0][F.HISTORY_ITEM_IDS])
    user = tf.constant([rows[i][F.USER_ID] for i in clicked])
    history = tf.constant([list(rows[i][F.HISTORY_ITEM_IDS]) + [""] * (width - len(
        rows[i][F.HISTORY_ITEM_IDS])) for i in clicked])
    query = tf.constant([rows[i][F.QUERY] for i in clicked])
    truth = [rows[i][F.ITEM_ID].encode() for i in clicked]
    labels = np.array([row[F.CLICKED] for row in rows])
    outputs = {}
    for mode, served in dirs.items():
        retrieval = tf.saved_model.load(os.path.join(served["dir"], "retrieval", "1"))
        top = retrieval.signatures["top_k"](user_id=user, history_item_ids=history,
                                            query=query)
        ranking = tf.saved_model.load(os.path.join(served["dir"], "ranking", "1"))
        scores = np.concatenate([ranking.signatures["serving_default"](
            examples=tf.constant(records[i:i + 512]))["score"].numpy()
            for i in range(0, len(records), 512)])
        outputs[mode] = (top["item_ids"].numpy(), top["scores"].numpy(), scores)
    full_ids, full_scores, full_ranking = outputs["none"]
    out = {}
    for mode, (ids, scores, ranking_scores) in outputs.items():
        overlap = np.mean([len(set(a[:10]) & set(b[:10])) / 10.0
                           for a, b in zip(ids, full_ids)])
        def recall(k, _ids=ids):
            return round(float(np.mean([t in row[:k] for t, row in zip(truth, _ids)])), 4)
        out[mode] = {
            "recall_at_10": recall(10), "recall_at_100": recall(100),
            "top10_overlap_vs_full": round(float(overlap), 4),
            "retrieval_max_abs_score_diff": float(np.abs(scores - full_scores).max()),
            "ranking_click_auc": round(auc(labels, ranking_scores), 4),
            "ranking_max_abs_score_diff": float(np.abs(ranking_scores - full_ranking).max()),
            "eval_clicks": len(clicked), "eval_units": len(rows)}
    return out


def latency(served_dir: str, shop: str, work: str, mode: str, duration_s: float,
            seed: int) -> Dict:
    """target -> /v1/recommend and /v1/search (its query is encoded by MiniLM in-graph when
    no catalog text matches it) at concurrency 1, through benchmarks/serving.py (pushed
    models); plus the stack's start-up time (stand-in load + warm-up, API ready)."""
    from benchmarks import serving  # pylint: disable=import-outside-toplevel
    out = os.path.join(work, "latency")
    name = f"compression_{mode}"
    code = serving.main(["--models", "pushed", "--serving-dir", served_dir, "--shop", shop,
                         "--targets", "recommend,search", "--concurrency", "1", "--duration-s",
                         str(duration_s), "--warmup-s", "2", "--seed", str(seed),
                         "--out", out, "--name", name,
                         "--workdir", os.path.join(work, "latency_stack", mode)])
    if code:
        raise RuntimeError(f"benchmarks.serving failed for {mode} ({code})")
    with open(os.path.join(out, name + ".json"), encoding="utf-8") as f:
        report = json.load(f)
    out = {"stack_ready_s": report["meta"]["setup"]["pushed"]["stack_ready_s"]}
    for row in report["results"]:
        out[row["target"]] = {key: row.get(key) for key in (
            "requests", "errors", "degraded", "p50_ms", "p95_ms", "p99_ms", "throughput_rps",
            "stage_mean_ms")}
    return out


def markdown(results: Dict) -> str:
    meta = results["meta"]
    lines = ["# Compressed exports: float16 and int8 weights vs the full export", "",
             f"{meta['date']}, commit {meta['commit']}, {meta['machine']}, load average "
             f"{meta['load_before']} before / {meta['load_after']} after. Sample shop seed "
             f"{meta['seed']}, scale {meta['scale']}: {meta['data']['catalog_items']:,} items, "
             f"{meta['data']['eval_clicks']:,} eval clicks ranked against the whole catalog. "
             f"Retrieval {meta['steps']['retrieval']} steps (frozen MiniLM tower), ranking "
             f"{meta['steps']['ranking']} steps (MiniLM item text). Load times: median of "
             f"{meta['loads']} fresh processes; TF Serving path = "
             "`tf.compat.v1.saved_model.load` (graph import + restore op, as TF Serving's "
             "loader). Latency: local stack (stand-in model server + API), concurrency "
             f"1, {meta['duration_s']} s per target; stack ready = stand-in loads and warms "
             "both models, API ready.", "",
             "| mode | model | size MB | gzip MB | load s (tf.saved_model) | load s (TF Serving "
             "path) | variables rewritten |", "|---|---|---|---|---|---|---|"]
    for mode, row in results["modes"].items():
        for model in MODELS:
            m = row["models"][model]
            lines.append(f"| {mode} | {model} | {m['size_bytes'] / 1e6:.1f} | "
                         f"{m['gzip_bytes'] / 1e6:.1f} | {m['load_s_python']} | "
                         f"{m['load_s_tf_serving']} | {m.get('variables_rewritten', '—')} |")
    lines += ["", "| mode | R@10 | R@100 | top-10 overlap vs full | retrieval max abs score "
              "diff | ranking click AUC | ranking max abs score diff | /v1/recommend p50 / p99 "
              "ms | /v1/search p50 / p99 ms | stack ready s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, row in results["modes"].items():
        q, l = row["quality"], row.get("latency") or {}
        cells = [f"{l[t]['p50_ms']} / {l[t]['p99_ms']}" if t in l else "—"
                 for t in ("recommend", "search")]
        lines.append(f"| {mode} | {q['recall_at_10']} | {q['recall_at_100']} | "
                     f"{q['top10_overlap_vs_full']} | {q['retrieval_max_abs_score_diff']:.2g} | "
                     f"{q['ranking_click_auc']} | {q['ranking_max_abs_score_diff']:.2g} | "
                     f"{cells[0]} | {cells[1]} | {l.get('stack_ready_s', '—')} |")
    return "\n".join(lines) + "\n"


def chart(results: Dict, path: str) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
    modes = list(results["modes"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    x = np.arange(len(modes))
    for i, model in enumerate(MODELS):
        axes[0].bar(x + (i - 0.5) * 0.38, [results["modes"][m]["models"][model]["size_bytes"]
                                           / 1e6 for m in modes], 0.38, label=model)
    axes[0].set_title("SavedModel size (MB)")
    axes[0].legend()
    for i, (key, label) in enumerate((("load_s_python", "tf.saved_model.load"),
                                      ("load_s_tf_serving", "TF Serving path"))):
        axes[1].bar(x + (i - 0.5) * 0.38, [sum(results["modes"][m]["models"][model][key]
                                               for model in MODELS) for m in modes], 0.38,
                    label=label)
    axes[1].set_title("load time, both models (s)")
    axes[1].legend()
    for i, (target, stat) in enumerate((("recommend", "p50_ms"), ("recommend", "p99_ms"),
                                         ("search", "p50_ms"), ("search", "p99_ms"))):
        values = [((results["modes"][m].get("latency") or {}).get(target) or {}).get(stat, 0)
                  for m in modes]
        axes[2].bar(x + (i - 1.5) * 0.2, values, 0.2, label=f"/v1/{target} {stat[:3]}")
    axes[2].set_title("latency, concurrency 1 (ms)")
    axes[2].legend()
    for ax in axes:
        ax.set_xticks(x, modes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.compression", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--scale", type=float, default=0.2)
    p.add_argument("--retrieval-steps", type=int, default=300)
    p.add_argument("--ranking-steps", type=int, default=300)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--loads", type=int, default=3, help="fresh-process loads per measurement")
    p.add_argument("--duration-s", type=float, default=10.0)
    p.add_argument("--no-latency", action="store_true", help="skip /v1/recommend")
    p.add_argument("--work", default=os.path.join("/tmp", "shoprec-compression"))
    p.add_argument("--out", default=os.path.join(_ROOT, "benchmarks", "results"))
    args = p.parse_args(argv)
    args.modes = args.modes.split(",")
    if "none" not in args.modes or any(m not in MODES for m in args.modes):
        p.error(f"--modes: from {', '.join(MODES)}, including none (the reference)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from trainer import compression  # pylint: disable=import-outside-toplevel
    load_before = [round(x, 2) for x in os.getloadavg()]
    os.makedirs(args.work, exist_ok=True)
    data = prepare(args.work, args.seed, args.scale)
    steps = {"retrieval": args.retrieval_steps, "ranking": args.ranking_steps}
    exports = train(data, args.work, args.seed, steps)
    dirs = serving_dirs(exports, args.work, args.modes)
    scores = quality(data, dirs)
    modes = {}
    for mode in args.modes:
        models = {}
        for model in MODELS:
            path = os.path.join(dirs[mode]["dir"], model, "1")
            models[model] = {
                "size_bytes": compression.directory_bytes(path),
                "variables_bytes": compression.directory_bytes(os.path.join(path, "variables")),
                "gzip_bytes": gzip_bytes(path, args.work),
                "load_s_python": load_seconds(path, "python", args.loads),
                "load_s_tf_serving": load_seconds(path, "tf_serving", args.loads),
                **dirs[mode]["reports"].get(model, {})}
            print(json.dumps({"mode": mode, "model": model, **{
                k: v for k, v in models[model].items() if k != "kept_float32"}}), flush=True)
        modes[mode] = {"models": models, "quality": scores[mode]}
        if not args.no_latency:
            modes[mode]["latency"] = latency(dirs[mode]["dir"], data["shop"], args.work, mode,
                                             args.duration_s, args.seed)
        print(json.dumps({"mode": mode, "quality": scores[mode],
                          "latency": modes[mode].get("latency")}), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=_ROOT).stdout.strip()
    results = {"meta": {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit, "python": platform.python_version(),
        "machine": f"{os.cpu_count()} CPU cores", "seed": args.seed, "scale": args.scale,
        "steps": steps, "loads": args.loads, "duration_s": args.duration_s,
        "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
        "data": {k: v for k, v in data.items() if k in ("catalog_items", "eval_clicks",
                                                         "train_units")},
        "model_server": "development stand-in (serving.standin.model_server), not TF Serving",
        "min_elements": compression.MIN_ELEMENTS}, "modes": modes}
    text = markdown(results)
    write_outputs(results, args.out, "compression", text, chart)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
