"""Benchmark results as a markdown table, JSON and a PNG bar chart."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

from benchmarks.outputs import write_outputs  # noqa: E402

# TIGER paper (Rajput et al., NeurIPS 2023), Table 1, Amazon Beauty, full ranking.
PUBLISHED = {
    "SASRec (TIGER paper)": {"recall@10": 0.0605, "ndcg@10": 0.0318},
    "TIGER (TIGER paper)": {"recall@10": 0.0648, "ndcg@10": 0.0384},
}
# The data set they were measured on: the Amazon Beauty 2014 5-core files (sha256sum of
# ../shared/data/amazon_beauty_2014_5core). Published rows are shown only for a run on
# exactly these files, all users (see ``shows_published``).
PUBLISHED_DATASET = "Amazon Beauty 2014 5-core"
PUBLISHED_SHA256 = {
    "sequential_data.txt": "f85a84ab47d70e82bf0e7301804270af10fb51e127ab8f0885697d593f6f6d43",
    "items.tsv": "6efd64c66f43a8255f4961494a25f65b9c7cb393bcfe1637b4567c4090d2a1d6",
}
DEFAULT_TITLE = "Amazon Beauty 2014 5-core"     # result files without dataset["title"]
METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
SHORT = {"recall@5": "R@5", "recall@10": "R@10", "ndcg@5": "N@5", "ndcg@10": "N@10"}


def _fmt(value):
    return "—" if value is None else f"{value:.4f}"


def shows_published(results):
    """Whether the published rows belong next to these results: the run used the files they
    were measured on (same sha256) and all of their users (no ``max_users`` subsample)."""
    ds = results.get("dataset", {})
    sha = ds.get("sha256") or {}
    return (all(sha.get(name) == digest for name, digest in PUBLISHED_SHA256.items())
            and ds.get("max_users") is None)


def _published(results):
    return PUBLISHED if shows_published(results) else {}


def title(results):
    """The data set's name: ``dataset["title"]`` when present, else the Beauty default."""
    return results.get("dataset", {}).get("title") or DEFAULT_TITLE


def markdown_table(results, split="test", published=True):
    """One row per model (then the published rows, if ``published`` and ``shows_published``):
    unfiltered | filtered metrics, times."""
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
    for name, values in (_published(results).items() if published else ()):
        row = [name, "published"] + [_fmt(values.get(m)) for m in METRICS]
        row += ["—"] * len(METRICS) + ["—", "—"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def stages_table(results):
    """The product rows' first two stages on the test users (``info["stages"]``, measured by
    beauty_product.stage_metrics): retrieval alone and the candidate pool's share of the
    targets; "" when no row has them."""
    lines = []
    for name, model in results["models"].items():
        stages = (model.get("info") or {}).get("stages")
        if not stages:
            continue
        retrieval = stages["retrieval"]
        lines.append("| " + " | ".join(
            [name] + [_fmt(retrieval[v][m]) for v in ("unfiltered", "filtered")
                      for m in ("recall@10", "ndcg@10")]
            + [_shares(stages.get("retrieval_share_at")),
               f"{stages['pool_share']:.4f}", f"{stages['mean_pool_size']:.1f}"]) + " |")
    if not lines:
        return ""
    head = ["model", "retrieval R@10 unf.", "retrieval N@10 unf.", "retrieval R@10 filt.",
            "retrieval N@10 filt.", "targets in retrieval's first k", "targets in pool",
            "mean pool size"]
    return "\n".join(["## Product stages (test users)", "",
                      "The served retrieval model's top K alone, and the share of test targets "
                      "among the candidates the ranker orders (its ceiling); in between, the "
                      "share among retrieval's first k items for k from 100 to its K (the "
                      "pool's retrieval part).", "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + lines
                     + [""])


def _shares(shares):
    """"100: 0.1234, 400: 0.2345": retrieval_share_at from k = 100 on; "—" when not
    measured (rows from before it was)."""
    if not shares:
        return "—"
    return ", ".join(f"{int(k)}: {v:.4f}" for k, v in sorted(
        ((int(k), v) for k, v in shares.items())) if int(k) >= 100) or "—"


BEYOND = (("coverage", "coverage"), ("diversity", "diversity"),
          ("category_entropy", "cat. entropy"), ("novelty", "novelty"),
          ("top1pct_share", "top-1% share"), ("exposure_gini", "exposure Gini"),
          ("brand_exposure_gini", "brand Gini"), ("brands_exposed", "brands shown"),
          ("new_item_exposure_ratio", "new-item exposure"))


def _beyond_rows(results):
    return [(name, model["test"].get("beyond_accuracy"))
            for name, model in results["models"].items() if model.get("test")]


def beyond_table(results):
    """Beyond-accuracy metrics of each row's test lists (trainer/beyond_accuracy.py); "—"
    for a row measured before they existed. "" when no row has them."""
    rows = _beyond_rows(results)
    if not any(values for _, values in rows):
        return ""
    head = ["model"] + [label for _, label in BEYOND]
    lines = ["## Beyond accuracy (test users, top 10 with the history removed)", "",
             "Coverage: share of the catalog recommended to anyone; diversity: mean pairwise "
             "cosine distance of the MiniLM title embeddings in a list; category entropy "
             "(bits) at the first category level where items differ; novelty: mean "
             "-log2 of an item's share of train users (add-one); top-1% share: slots held by "
             "the 1 % most popular items; exposure Gini over items and over brands (per "
             "catalog item of the brand); new-item exposure: exposure share / catalog share "
             "of items with at most 2 train interactions. trainer/beyond_accuracy.py. "
             "*product* rows: the API's answers (history and purchases filtered by the API "
             "itself).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, values in rows:
        lines.append("| " + " | ".join([name] + [
            "—" if not values or values.get(key) is None else f"{values[key]:.3f}"
            for key, _ in BEYOND]) + " |")
    return "\n".join(lines + [""])


def beyond_chart(results, path):
    """Accuracy against coverage, novelty and popularity bias, one point per row."""
    rows = [(name, values, results["models"][name]["test"]["unfiltered"]["ndcg@10"])
            for name, values in _beyond_rows(results) if values]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, (key, label) in zip(axes, (("coverage", "catalog coverage"),
                                       ("novelty", "novelty (bits)"),
                                       ("top1pct_share", "share of slots: top-1% items"))):
        for name, values, ndcg in rows:
            ax.scatter(values[key], ndcg)
            ax.annotate(name, (values[key], ndcg), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylabel("N@10 unf. (test)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title(results)}: accuracy vs beyond-accuracy (test users)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(results):
    """The whole report: context, the test table, the validation table."""
    ds = results["dataset"]
    sample = (f"random subset of {ds['max_users']} users" if ds.get("max_users")
              else "all users")
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in results["stage_seconds"].items())
    published = ("Published rows are copied from the TIGER paper (Table 1), not measured here."
                 if shows_published(results) else
                 f"Published rows omitted: they were measured on {PUBLISHED_DATASET}, not on "
                 "this data set.")
    return "\n".join([
        f"# {title(results)}: next-item recommendation ({sample})",
        "",
        f"{ds['users']} users ({ds['evaluated_users']} evaluated), {ds['items']} items, "
        f"{ds['interactions']} interactions. Seed {results['seed']}. Leave-one-out, full "
        "ranking over all items, ties broken by item index. *unf.*: nothing removed; "
        f"*filt.*: the user's history items removed from the ranking. {published}",
        "",
        "## Test",
        "",
        markdown_table(results, "test"),
        "",
        stages_table(results),
        beyond_table(results),
        "## Validation",
        "",
        markdown_table(results, "validation", published=False),
        "",
        f"Stages: {stages}. Options and per-model details: the JSON file next to this one.",
        "",
    ])


def bar_chart(results, path, split="test"):
    """R@10 and N@10 per model, unfiltered and filtered side by side; published hatched
    (only when ``shows_published``)."""
    published = _published(results)
    names = list(results["models"]) + list(published)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.3 * len(names)), 4.5), sharey=True)
    width = 0.4
    for ax, metric in zip(axes, ("recall@10", "ndcg@10")):
        for j, variant in enumerate(("unfiltered", "filtered")):
            values = []
            for name in names:
                if name in results["models"]:
                    values.append(results["models"][name][split][variant][metric])
                else:
                    values.append(published[name].get(metric, 0.0) if variant == "unfiltered"
                                  else 0.0)
            xs = [i + (j - 0.5) * width for i in range(len(names))]
            bars = ax.bar(xs, values, width, label=variant, color=("C0", "C1")[j])
            for bar, name in zip(bars, names):
                if name in published:
                    bar.set_hatch("//")
                    bar.set_alpha(0.5)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{SHORT[metric]} ({split})")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{title(results)}, leave-one-out, full ranking"
                 + (" (hatched: published)" if published else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results, out_dir, stem="beauty"):
    """Write ``stem``.md, .json and .png into ``out_dir`` (and ``stem``_beyond.png when a row
    has beyond-accuracy metrics); returns the paths written."""
    paths = write_outputs(results, out_dir, stem, markdown(results), bar_chart)
    if any(values for _, values in _beyond_rows(results)):
        paths.append(os.path.join(out_dir, f"{stem}_beyond.png"))
        beyond_chart(results, paths[-1])
    return paths
