"""Report of benchmarks/text_tower.py: markdown table, JSON and a PNG chart."""
import json
import os

from benchmarks.outputs import write_outputs
import platform
import subprocess
from importlib import metadata

QUALITY = ("recall@10", "recall@100", "ndcg@10", "ndcg@100", "recall@10_history_filtered")
SHORT = {"recall@10": "R@10", "recall@100": "R@100", "ndcg@10": "N@10", "ndcg@100": "N@100",
         "recall@10_history_filtered": "R@10 filt."}


def git_commit(root):
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def environment():
    versions = {}
    for name in ("tensorflow", "tf-keras", "tensorflow-recommenders", "tensorflow-text"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0],
            "versions": versions}


def _get(values, *keys, default=None):
    for key in keys:
        if not isinstance(values, dict) or key not in values:
            return default
        values = values[key]
    return values


def _num(value, digits=1):
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_table(results):
    """One row per mode, then train-click popularity on the same eval queries."""
    head = (["mode", "steps × batch", "steps/s", "examples/s", "1st step s", "text cache s",
             "train s", "eval s", "total s", "CPU s", "peak RSS GiB"]
            + [SHORT[m] for m in QUALITY])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    popularity = None
    for mode, run in results["modes"].items():
        training = run.get("training", {})
        row = [mode if mode != "top_layers" else
               f"top_layers {_get(run, 'config', 'text_top_layers')}",
               f"{training.get('steps')} × {_get(run, 'config', 'batch_size')}",
               _num(training.get("steps_per_second"), 2),
               _num(training.get("examples_per_second"), 0),
               _num(training.get("first_step_seconds")),
               _num(_get(run, "text", "prepare_seconds")),
               _num(training.get("train_seconds")), _num(run.get("eval_seconds")),
               _num(run.get("wall_seconds")), _num(run.get("cpu_seconds")),
               _num(run.get("peak_rss_gib"), 2)]
        row += [_num(_get(run, "model", m), 4) for m in QUALITY]
        lines.append("| " + " | ".join(row) + " |")
        popularity = run.get("popularity", popularity)
    if popularity:
        row = ["popularity (train clicks)"] + ["—"] * 10
        row += [_num(popularity.get(m), 4) for m in QUALITY]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown(results):
    data = results["data"]
    counts = data.get("examples", {})
    clicked = data.get("clicked", {})
    first = next(iter(results["modes"].values()), {})
    return "\n".join([
        "# Retrieval text tower: none vs frozen vs top_layers vs full",
        "",
        f"Shop `{data['shop']}` ({'generated, seed 7' if data.get('generated') else 'given'}):"
        f" {counts.get('catalog')} catalog items, {counts.get('train')} train units "
        f"({clicked.get('train')} clicked, the training examples), {counts.get('eval')} eval "
        f"units ({clicked.get('eval')} clicked = the eval queries). Seed {results['seed']}, "
        f"config {json.dumps(results['config'])}, everything else the pipeline's default "
        "retrieval config. Quality: full-catalog retrieval of each clicked eval unit's item "
        "(*filt.*: the user's history items removed from the ranking). steps/s and examples/s "
        "exclude the first step (tracing). Times are wall-clock on a shared machine: see the "
        "load average per run in the JSON. Commit "
        f"`{results.get('commit')}`, `{results['command']}`.",
        "",
        markdown_table(results),
        "",
        f"Text cache (frozen): {_get(first, 'text', 'cached_texts')} texts; CPU "
        f"{results['environment']['cpus']} cores; total {results.get('total_seconds')} s.",
        ""])


def chart(results, path):
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
    modes = list(results["modes"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(QUALITY)
    for i, metric in enumerate(QUALITY):
        values = [_get(results["modes"][m], "model", metric, default=0.0) for m in modes]
        left.bar([x + i * width for x in range(len(modes))], values, width,
                 label=SHORT[metric])
    left.set_xticks([x + 0.4 - width / 2 for x in range(len(modes))], modes)
    left.set_title("eval quality (full catalog)")
    left.legend(fontsize=8)
    speeds = [_get(results["modes"][m], "training", "examples_per_second", default=0.0)
              for m in modes]
    right.bar(modes, speeds, color="tab:gray")
    right.set_yscale("log")
    right.set_title("training examples / s (log)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results, out_dir, stem="text_tower"):
    """Write ``stem``.md, .json and .png into ``out_dir``; returns the three paths."""
    return write_outputs(results, out_dir, stem, markdown(results), chart)
