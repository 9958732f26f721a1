"""Benchmark results as a markdown table, JSON and a PNG bar chart."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

from benchmarks.outputs import write_outputs  # noqa: E402

# TIGER paper (Rajput et al., NeurIPS 2023), Table 1, Amazon Beauty, full ranking.
PUBLISHED = {
    "SASRec (TIGER paper)": {"recall@10": 0.0605, "ndcg@10": 0.0318},
    "TIGER (TIGER paper)": {"recall@10": 0.0648, "ndcg@10": 0.0384},
}
METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
SHORT = {"recall@5": "R@5", "recall@10": "R@10", "ndcg@5": "N@5", "ndcg@10": "N@10"}


def _fmt(value):
    return "—" if value is None else f"{value:.4f}"


def markdown_table(results, split="test", published=True):
    """One row per model (then the published rows): unfiltered | filtered metrics, times."""
    head = (["model", "source"] + [f"{SHORT[m]} unf." for m in METRICS]
            + [f"{SHORT[m]} filt." for m in METRICS] + ["fit s", "eval s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, model in results["models"].items():
        if model.get(split) is None:        # e.g. no validation row: trained on it
            continue
        row = [name, "measured"]
        for variant in ("unfiltered", "filtered"):
            row += [_fmt(model[split][variant][m]) for m in METRICS]
        row += [f"{model['fit_seconds']:.1f}", f"{model['eval_seconds']:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    for name, values in (PUBLISHED.items() if published else ()):
        row = [name, "published"] + [_fmt(values.get(m)) for m in METRICS]
        row += ["—"] * len(METRICS) + ["—", "—"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown(results):
    """The whole report: context, the test table, the validation table."""
    ds = results["dataset"]
    sample = (f"random subset of {ds['max_users']} users" if ds.get("max_users")
              else "all users")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in results["stage_seconds"].items())
    return "\n".join([
        f"# Amazon Beauty 2014 5-core: next-item recommendation ({sample})",
        "",
        f"{ds['users']} users ({ds['evaluated_users']} evaluated), {ds['items']} items, "
        f"{ds['interactions']} interactions. Seed {results['seed']}. Leave-one-out, full "
        "ranking over all items, ties broken by item index. *unf.*: nothing removed; "
        "*filt.*: the user's history items removed from the ranking. Published rows are "
        "copied from the TIGER paper (Table 1), not measured here.",
        "",
        "## Test",
        "",
        markdown_table(results, "test"),
        "",
        "## Validation",
        "",
        markdown_table(results, "validation", published=False),
        "",
        f"Stages: {stages}. Options and per-model details: the JSON file next to this one.",
        "",
    ])


def bar_chart(results, path, split="test"):
    """R@10 and N@10 per model, unfiltered and filtered side by side; published hatched."""
    names = list(results["models"]) + list(PUBLISHED)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.3 * len(names)), 4.5), sharey=True)
    width = 0.4
    for ax, metric in zip(axes, ("recall@10", "ndcg@10")):
        for j, variant in enumerate(("unfiltered", "filtered")):
            values = []
            for name in names:
                if name in results["models"]:
                    values.append(results["models"][name][split][variant][metric])
                else:
                    values.append(PUBLISHED[name].get(metric, 0.0) if variant == "unfiltered"
                                  else 0.0)
            xs = [i + (j - 0.5) * width for i in range(len(names))]
            bars = ax.bar(xs, values, width, label=variant, color=("C0", "C1")[j])
            for bar, name in zip(bars, names):
                if name in PUBLISHED:
                    bar.set_hatch("//")
                    bar.set_alpha(0.5)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{SHORT[metric]} ({split})")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle("Amazon Beauty 5-core, leave-one-out, full ranking (hatched: published)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results, out_dir, stem="beauty"):
    """Write ``stem``.md, .json and .png into ``out_dir``; returns the three paths."""
    return write_outputs(results, out_dir, stem, markdown(results), bar_chart)
