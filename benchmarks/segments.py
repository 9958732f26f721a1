"""User segments on the sample shop (issue #21): do they recover the planted tastes, and does
segment popularity beat global popularity for users with very short histories?

    python -m benchmarks.segments [--work-dir DIR] [--seed 0] [--scale 1] [--out DIR]

Steps (each skipped when its output exists in ``--work-dir``): generate the sample shop,
the pipeline's examples and Transform (pipeline/in_process.py, time split 90/10), the
retrieval model with the pipeline's settings (frozen MiniLM text tower, 600 steps), then
the UserSegments component's computation (pipeline/components/user_segments.py) on the
train split. Measured:

- adjusted Rand index of the segments vs the generator's planted grouping
  (pipeline/sample_shop/truth.py: ``preferred_top``, and ``main_top`` for reference), over
  every segmented user and by activity; whether each segment's description names its
  members' planted category;
- the fallback: Recall@10 on the eval split's engaged units of users with 1-2 engagements
  in the train split (the ones the API's fallback serves), the segment's popular items
  (the report's list, then global popularity) vs global popularity (train engagement
  counts). Users with no train engagement have no segment and get global popularity in
  both; they are counted apart.

Writes benchmarks/results/segments.{md,json,png} and the component's own report and map as
segments_report.json / segments_report.png.
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

from benchmarks.outputs import write_outputs

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RETRIEVAL_CONFIG = {"top_k": 100, "text_mode": "frozen"}   # PipelineConfig's defaults
K = 10


def prepare(work_dir, seed, scale, train_steps=600, model_seed=42, retrieval_config=None):
    """The shop, its examples and a trained retrieval export under ``work_dir``; returns
    the export's path. ``retrieval_config``: the trainer's (default: the pipeline's)."""
    # pylint: disable=import-outside-toplevel
    from pipeline import in_process
    from trainer import retrieval
    _, tdir = in_process.sample_shop_examples(work_dir, seed, scale)
    export = os.path.join(work_dir, "train", "serving_model_dir")
    if not os.path.exists(os.path.join(export, "saved_model.pb")):
        args = in_process.trainer_fn_args(
            os.path.join(tdir, "transformed"), os.path.join(tdir, "transform_graph"),
            os.path.join(work_dir, "train"),
            dict(retrieval_config or RETRIEVAL_CONFIG, seed=model_seed),
            train_steps=train_steps)
        in_process.run_trainer(retrieval.run_fn, args)
    return export


def recovery(assignments, profiles, truth):
    """ARI vs the planted groupings, overall and by train engagements; how many segments'
    first top category is their members' most common planted ``preferred_top``."""
    from sklearn.metrics import adjusted_rand_score  # pylint: disable=import-outside-toplevel
    users = list(assignments)
    labels = np.array([assignments[u] for u in users])
    planted = truth.set_index("user_id").loc[users]
    out = {"users": len(users)}
    for column in ("preferred_top", "main_top"):
        out[f"ari_{column}"] = round(adjusted_rand_score(planted[column], labels), 3)
    out["ari_main_top_vs_preferred_top"] = round(adjusted_rand_score(
        planted["main_top"], planted["preferred_top"]), 3)
    named = []
    for p in profiles:
        members = planted["preferred_top"][labels == p["segment"]]
        majority = members.value_counts().index[0]
        named.append({"segment": p["segment"], "size": p["size"],
                      "described_as": p["top_categories"][0]["name"],
                      "members_planted": majority,
                      "members_planted_share": round(float((members == majority).mean()), 3)})
    out["named"] = named
    out["segments_naming_planted"] = sum(n["described_as"] == n["members_planted"]
                                         for n in named)
    return out


def fallback(train, evaluation, assignments, profiles, k=K):
    """Recall@k on eval engaged units of users with 1-2 train engagements (module
    docstring): segment popularity vs global popularity."""
    engaged = train[train["engaged"]]
    counts = engaged.groupby("user_id").size()
    global_order = engaged.groupby("item_id").size().sort_values(
        ascending=False, kind="stable").index.tolist()
    global_top = global_order[:k]
    lists = {p["segment"]: list(dict.fromkeys(p["popular_items"] + global_order))[:k]
             for p in profiles}
    targets = evaluation[evaluation["engaged"]]
    rows = {"1-2": [], "0": []}
    for user, item in zip(targets["user_id"], targets["item_id"]):
        n = int(counts.get(user, 0))
        if n == 0:
            rows["0"].append((item in global_top, item in global_top))
        elif n <= 2 and user in assignments:
            rows["1-2"].append((item in lists[assignments[user]], item in global_top))
    out = {}
    for group, hits in rows.items():
        hits = np.array(hits, bool).reshape(-1, 2)
        users = targets[targets["user_id"].map(lambda u: int(counts.get(u, 0))).between(
            *((1, 2) if group == "1-2" else (0, 0)))]["user_id"].nunique()
        out[group] = {"eval_units": len(hits), "users": int(users),
                      f"segment_recall@{k}": round(float(hits[:, 0].mean()), 4) if len(hits) else None,
                      f"global_recall@{k}": round(float(hits[:, 1].mean()), 4) if len(hits) else None,
                      "segment_only_hits": int((hits[:, 0] & ~hits[:, 1]).sum()),
                      "global_only_hits": int((hits[:, 1] & ~hits[:, 0]).sum())}
    return out


def measure(work_dir, seed=0, scale=1.0, min_segment_size=20, train_steps=600,
            retrieval_config=None):
    # pylint: disable=import-outside-toplevel
    from pipeline.components import user_segments as U
    from pipeline.sample_shop.truth import latent_groups
    from trainer.segments import SegmentConfig
    began = time.perf_counter()
    export = prepare(work_dir, seed, scale, train_steps, retrieval_config=retrieval_config)
    raw = os.path.join(work_dir, "raw")
    train = U.read_units(os.path.join(raw, "Split-train"))
    evaluation = U.read_units(os.path.join(raw, "Split-eval"))
    cfg = SegmentConfig(min_segment_size=min_segment_size)
    report, assignments, seg, profiles = U.compute(train, export, cfg)
    U.write(os.path.join(work_dir, "segments"), report, assignments, seg, profiles)
    truth = latent_groups(seed, scale)
    results = {
        "shop": {"seed": seed, "scale": scale, "users": len(truth)},
        "segments": {key: report[key] for key in ("users", "segments", "k_chosen",
                                                  "silhouette_by_k",
                                                  "dissolved_below_min_size", "vectors",
                                                  "users_without_engagement")},
        "recovery": recovery(assignments, profiles, truth),
        "fallback": fallback(train, evaluation, assignments, profiles),
        "config": report["config"],
        "seconds": round(time.perf_counter() - began, 1),
    }
    # The vectors alone (category_weight 0), for the record.
    alone, alone_assign, _, _ = U.compute(train, export,
                                          SegmentConfig(min_segment_size=min_segment_size,
                                                        category_weight=0.0))
    results["recovery_vectors_alone"] = {
        key: value for key, value in recovery(alone_assign, alone["profiles"], truth).items()
        if key != "named"} | {"segments": alone["segments"]}
    return results, os.path.join(work_dir, "segments")


def markdown(results):
    rec, fb, seg = results["recovery"], results["fallback"], results["segments"]
    lines = [
        "# User segments on the sample shop (issue #21)", "",
        f"Sample shop seed {results['shop']['seed']}, scale {results['shop']['scale']:g} "
        f"({results['shop']['users']} users); `python -m benchmarks.segments`.", "",
        f"**{seg['segments']} segments** of {seg['users']} users with a train engagement "
        f"(k = {seg['k_chosen']} by silhouette, {seg['dissolved_below_min_size']} dissolved "
        f"below {results['config']['min_segment_size']} users); vectors: {seg['vectors']}.", "",
        "| recovery of the planted grouping | ARI |", "|---|---|",
        f"| segments vs `preferred_top` (acceptance: >= 0.5) | **{rec['ari_preferred_top']}** |",
        f"| segments vs `main_top` | {rec['ari_main_top']} |",
        f"| `main_top` vs `preferred_top` (the generator's own noise) | "
        f"{rec['ari_main_top_vs_preferred_top']} |",
        f"| query-tower vectors alone vs `preferred_top` "
        f"({results['recovery_vectors_alone']['segments']} segments) | "
        f"{results['recovery_vectors_alone']['ari_preferred_top']} |", "",
        f"Segments whose description's first category is their members' planted category: "
        f"**{rec['segments_naming_planted']} of {len(rec['named'])}**.", "",
        "| segment | users | described as | members' planted | share |", "|---|---|---|---|---|",
        *[f"| {n['segment']} | {n['size']} | {n['described_as']} | {n['members_planted']} | "
          f"{n['members_planted_share']} |" for n in rec["named"]], "",
        f"## Fallback: Recall@{K} on the eval split", "",
        "| users (train engagements) | users | eval units | segment popularity | global "
        "popularity | only segment hit | only global hit |", "|---|---|---|---|---|---|---|",
    ]
    for group, row in fb.items():
        lines.append(f"| {group} | {row['users']} | {row['eval_units']} | "
                     f"{row[f'segment_recall@{K}']} | {row[f'global_recall@{K}']} | "
                     f"{row['segment_only_hits']} | {row['global_only_hits']} |")
    lines += ["", "Users without a train engagement have no segment: both columns are global "
              "popularity.", ""]
    return "\n".join(lines)


def chart(results, path):
    # pylint: disable=import-outside-toplevel
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rec = results["recovery"]
    names = ["segments vs\npreferred_top", "segments vs\nmain_top",
             "main_top vs\npreferred_top", "vectors alone vs\npreferred_top"]
    values = [rec["ari_preferred_top"], rec["ari_main_top"],
              rec["ari_main_top_vs_preferred_top"],
              results["recovery_vectors_alone"]["ari_preferred_top"]]
    left.bar(names, values, color=["tab:blue", "tab:cyan", "tab:gray", "tab:orange"])
    left.axhline(0.5, color="red", linestyle="--", linewidth=1)
    left.set_ylabel("adjusted Rand index")
    left.set_title("recovery of the planted grouping")
    left.tick_params(axis="x", labelsize=8)
    row = results["fallback"]["1-2"]
    right.bar(["segment popularity", "global popularity"],
              [row[f"segment_recall@{K}"], row[f"global_recall@{K}"]],
              color=["tab:blue", "tab:gray"])
    right.set_ylabel(f"Recall@{K}")
    right.set_title(f"users with 1-2 train engagements ({row['users']} users, "
                    f"{row['eval_units']} eval units)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.segments",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default=os.path.join("/tmp", "shoprec-segments"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    results, segments_dir = measure(args.work_dir, args.seed, args.scale)
    paths = write_outputs(results, args.out, "segments", markdown(results), chart)
    for name, target in (("segments.json", "segments_report.json"),
                         ("segments.png", "segments_report.png")):
        shutil.copyfile(os.path.join(segments_dir, name), os.path.join(args.out, target))
    print(json.dumps({k: results[k] for k in ("recovery", "fallback")}, indent=1))
    print("wrote", *paths, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
