"""Report of benchmarks/search.py: markdown table, JSON and a PNG chart."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

from benchmarks.outputs import write_outputs  # noqa: E402
from benchmarks.search_protocol import CONDENSED, METRICS, RECALL, RERANK  # noqa: E402

SHORT = {CONDENSED: "NDCG@10 condensed", RECALL: "Recall@100 (top grade)",
         RERANK: "NDCG@10 rerank"}


def _value(summary):
    return f"{summary['mean']:.4f} ± {summary['se']:.4f}"


def _difference(summary):
    return f"{summary['mean']:+.4f} ± {summary['se']:.4f}"


def markdown_table(results):
    """One row per method: mean ± standard error of each metric, then the paired
    difference to the baseline (BM25) ± its standard error, then seconds."""
    baseline = results["baseline"]
    head = (["method"] + [SHORT[m] for m in METRICS]
            + [f"Δ {SHORT[m]} vs {baseline}" for m in METRICS] + ["seconds"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, method in results["methods"].items():
        paired = method.get("paired_to_baseline")
        row = ([f"{name} ({method['description']})"]
               + [_value(method["test"][m]) for m in METRICS]
               + [_difference(paired[m]) if paired else "—" for m in METRICS]
               + [f"{sum(method['seconds'].values()):.1f}"])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def grid_table(grid):
    """Train-query tuning grid: one row per setting (its parameters first)."""
    keys = [k for k in grid[0] if k not in (CONDENSED, RECALL, "selection", "seconds")]
    head = list(keys) + [SHORT[CONDENSED], SHORT[RECALL], "selection"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in grid:
        lines.append("| " + " | ".join([str(row[k]) for k in keys] + [
            f"{row[CONDENSED]:.4f}", f"{row[RECALL]:.4f}", f"{row['selection']:.4f}"]) + " |")
    return "\n".join(lines)


def markdown(results):
    ds, test = results["dataset"], results["dataset"]["splits"]["test"]
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in results["stage_seconds"].items())
    parts = [
        "# Product search, full-catalog retrieval",
        "",
        f"Data: {ds['title']}.",
        "",
        f"{ds['products']} products (text: {', '.join(ds['text_columns'])}), "
        f"{test['counted_queries']} test queries with a judgment of grade > 0 (of "
        f"{test['queries']}), {test['judgments']} test judgments. Seed {results['seed']}, "
        f"commit {results['environment'].get('git_commit') or 'unknown'}"
        f"{' + uncommitted changes' if results['environment'].get('git_dirty') else ''}.",
        "",
        results["protocol"],
        "",
        "## Test queries",
        "",
        markdown_table(results),
        "",
        "Mean ± standard error over queries; Δ: the mean of per-query differences to "
        f"{results['baseline']} ± its standard error (paired).",
        "",
    ]
    for name, method in results["methods"].items():
        best = method.get("paired_to_best_baseline")
        if best:
            parts += [f"{name} vs the best baseline of each metric (paired): " + "; ".join(
                f"{metric} vs {d['baseline']} {d['mean']:+.4f} ± {d['se']:.4f}"
                for metric, d in best.items()) + ".", ""]
    for name, method in results["methods"].items():
        tuning = method.get("choices", {})
        if "grid" in tuning:
            chosen = ", ".join(f"{k} = {v}" for k, v in tuning.items() if k != "grid")
            parts += [f"## {name}: chosen on train queries ({chosen})", "",
                      grid_table(tuning["grid"]), ""]
        product_tuning = method.get("info", {}).get("tuning")
        if product_tuning:
            chosen = ", ".join(f"{k} = {v}" for k, v in product_tuning["chosen"].items())
            parts += [f"## {name}: API settings chosen on the pipeline's eval-split queries "
                      f"({product_tuning['queries']} train queries neither model trained on; "
                      f"{chosen})", "", grid_table(product_tuning["grid"]), ""]
    parts += [f"Stages: {stages}. Options and details: the JSON file next to this one.", ""]
    return "\n".join(parts)


def chart(results, path):
    """One panel per metric: mean per method with ±2 standard-error bars."""
    names = list(results["methods"])
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 + 1.6 * len(names), 4.5))
    for ax, metric in zip(axes, METRICS):
        means = [results["methods"][n]["test"][metric]["mean"] for n in names]
        errors = [2 * results["methods"][n]["test"][metric]["se"] for n in names]
        ax.bar(range(len(names)), means, yerr=errors, capsize=4,
               color=[f"C{i}" for i in range(len(names))])
        low = min(m - e for m, e in zip(means, errors))
        ax.set_ylim(max(0.0, low - 0.05 * (1.0 - low) - 0.02), min(1.0, max(means) + 0.03))
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(SHORT[metric], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{results['dataset']['title']}: test queries (bars: ±2 SE)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results, out_dir, stem="search"):
    """Write ``stem``.md, .json and .png into ``out_dir``; returns the three paths."""
    return write_outputs(results, out_dir, stem, markdown(results), chart)
