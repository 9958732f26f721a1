"""Beyond accuracy of the product's answers on the sample shop, diversification on and off
(issue #21).

    python -m benchmarks.beyond_accuracy [--work-dir DIR] [--seed 0] [--scale 1]
        [--max-users N] [--out benchmarks/results]

1. The sample shop (``pipeline.sample_shop``, ``--seed``, ``--scale``) and the real pipeline
   on it (``tfx_pipeline.py --runner local``, its defaults; skipped when ``--work-dir``
   already holds a run that pushed both models).
2. The pushed models behind the TF Serving stand-in (in this process) and the API's own
   ``Services`` (``benchmarks/product_run.InProcessApi``: the functions ``/v1/recommend``
   calls) answer every shopper with events, k = 10, once per API setting: the default
   diversification (``max_category_share`` 0.5: at most half of a list from one top
   category), a milder one (0.7) and diversification off (1.0).
3. The answers' beyond-accuracy metrics (``trainer/beyond_accuracy.py``, the implementation
   the trainer's offline eval and the Beauty benchmark use): coverage, intra-list diversity
   (MiniLM title embeddings), category entropy (top categories), novelty, share of the
   1 % most popular items, exposure Gini over items and brands, new-item exposure (items
   listed in the last 30 days of the shop's events, ``created_at``). Popularity = engagements (click, cart, purchase) per item
   in the shop's events. A reference row: the shop's 10 most popular items minus each
   shopper's engaged items (what a popularity fallback shows).
4. What it costs in relevance: the expected click-through of each list under the sample
   shop's planted tastes (``benchmarks/ab_test.Shoppers``, the simulated shoppers of the
   A/B benchmark: the generator's own click formula) and the share of list items in the
   shopper's planted favourite top category.

Writes ``<out>/beyond_accuracy.{md,json,png}`` with the seed and the settings.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from benchmarks.outputs import write_outputs
from pipeline.contract import spec

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
K = 10
SETTINGS = {"diversify on": {"max_category_share": 0.5},
            "diversify 0.7": {"max_category_share": 0.7},
            "diversify off": {"max_category_share": 1.0}}
REFERENCE = "popular (reference)"
NEW_ITEM_DAYS = 30


def prepare(work_dir, seed, scale, echo=print):
    """The shop and a pipeline run that pushed both models under ``work_dir``; returns
    (shop dir, serving dir, {"reused": an earlier run's, "seconds": its wall time})."""
    # pylint: disable=import-outside-toplevel
    from benchmarks.product_run import run_pipeline
    from pipeline.sample_shop.generate import generate_shop
    shop = os.path.join(work_dir, "shop")
    serving = os.path.join(work_dir, "serving_models")
    if not os.path.exists(os.path.join(shop, "manifest.json")):
        generate_shop(shop, seed=seed, scale=scale)
    if all(os.path.isdir(os.path.join(serving, m)) and os.listdir(os.path.join(serving, m))
           for m in ("retrieval", "ranking")):
        report = os.path.join(work_dir, "pipeline_report.json")
        earlier = None
        if os.path.exists(report):
            with open(report, encoding="utf-8") as f:
                earlier = json.load(f).get("total_seconds")
        return shop, serving, {"reused": True, "seconds": earlier}
    config = os.path.join(work_dir, "pipeline_config.json")
    with open(config, "w", encoding="utf-8") as f:
        json.dump({}, f)            # the pipeline's defaults (pipeline/configs.py)
    started = time.time()
    run_pipeline(shop, work_dir, config, seed, echo)
    return shop, serving, {"reused": False, "seconds": round(time.time() - started, 1)}


def new_items(items, events, popularity, days=NEW_ITEM_DAYS):
    """New items: listed (``created_at``, epoch seconds as the contract loads it) within
    ``days`` before the shop's last event; a shop without listing dates: at most 2
    engagements (trainer/beyond_accuracy.new_items)."""
    from trainer import beyond_accuracy as B  # pylint: disable=import-outside-toplevel
    created = (items[spec.CREATED_AT].to_numpy(np.float64) if spec.CREATED_AT in items
               else None)
    if created is None or np.isnan(created).all():
        return B.new_items(popularity)
    last = float(events[spec.TIMESTAMP].max())
    return created >= last - days * 86400.0


def shop_facts(shop_tables, encode_titles=True):
    """(ItemFacts of the shop's catalog, item ids in catalog order, each engaged user's
    engaged items)."""
    # pylint: disable=import-outside-toplevel
    from benchmarks import beauty_ours
    from pipeline.examples import ENGAGEMENT_EVENTS
    from trainer import beyond_accuracy as B
    items = shop_tables.items
    ids = items[spec.ITEM_ID].tolist()
    row = {item: i for i, item in enumerate(ids)}
    events = shop_tables.events
    engaged = events[events[spec.EVENT_TYPE].isin(sorted(ENGAGEMENT_EVENTS))]
    popularity = np.zeros(len(ids))
    np.add.at(popularity, engaged[spec.ITEM_ID].map(row).to_numpy(np.int64), 1.0)
    paths = [c.split(spec.CATEGORY_SEPARATOR) if isinstance(c, str) and c else []
             for c in items[spec.CATEGORIES]]
    brands = [b if isinstance(b, str) else "" for b in items[spec.BRAND]]
    facts = B.ItemFacts(
        popularity=popularity, n_users=max(1, engaged[spec.USER_ID].nunique()),
        categories=B.labels([p[0] if p else "" for p in paths]), brands=B.labels(brands),
        embeddings=(beauty_ours.text_embeddings(items[spec.TITLE].astype(str).tolist())
                    if encode_titles else None),
        is_new=new_items(items, events, popularity))
    history = engaged.groupby(spec.USER_ID)[spec.ITEM_ID].agg(list).to_dict()
    return facts, ids, history


def relevance(lists, users, ids, shoppers, preferred, tops):
    """Mean expected clicks per list item under the planted tastes, and the share of list
    items in the shopper's planted favourite top category (``preferred``: user -> name;
    ``tops``: item id -> its top category in the shop's catalog)."""
    if shoppers is None:
        return {}
    ctr, on_top = [], []
    for user, row in zip(users, lists):
        shown = [ids[i] for i in row if i >= 0]
        if not shown:
            continue
        click, _ = shoppers.probabilities(user, shown)
        ctr.append(float(np.mean(click)))
        on_top.append(np.mean([tops[i] == preferred[user] for i in shown]))
    return {"expected_ctr": float(np.mean(ctr)) if ctr else 0.0,
            "preferred_top_share": float(np.mean(on_top)) if on_top else 0.0}


def _answers(shop, serving, work_dir, settings, users, ids, pseudonym_key_file="", tag="api"):
    """The API's answers for ``users`` under ``settings``: ([U, K] catalog rows, degraded
    answers by stage, seconds)."""
    # pylint: disable=import-outside-toplevel
    import portpicker
    from benchmarks.product_run import API_SETTINGS, InProcessApi
    from serving.standin.model_config import ModelConfig
    from serving.standin.model_server import ModelServer
    row = {item: i for i, item in enumerate(ids)}
    server = ModelServer([ModelConfig(m, os.path.join(serving, m)) for m in
                          ("retrieval", "ranking")], port=portpicker.pick_unused_port(),
                         file_system_poll_wait_seconds=0, load_in_process=True).start()
    store = os.path.join(work_dir, f"events_{tag}.sqlite3")
    if os.path.exists(store):
        os.remove(store)
    extra = {"pseudonym_key_file": pseudonym_key_file} if pseudonym_key_file else {}
    try:
        api = InProcessApi(shop, f"127.0.0.1:{server.grpc_port}", f"sqlite:///{store}",
                           startup_timeout_s=300, **API_SETTINGS, **extra, **settings)
        try:
            started = time.time()
            lists = np.full((len(users), K), -1, np.int64)
            degraded = {}
            for n, user in enumerate(users):
                answer, stages, _ = api.recommend(user, K)
                lists[n, :len(answer)] = [row[i] for i in answer]
                for stage in stages:
                    degraded[stage] = degraded.get(stage, 0) + 1
            seconds = time.time() - started
        finally:
            api.close()
    finally:
        server.stop(grace_s=1)
    return lists, degraded, seconds



def measure(shop, serving, work_dir, seed=0, scale=1.0, max_users=None,
            pseudonym_key_file="", truth=True, encode_titles=True):
    """The results dict (module docstring) for the shop and pushed models given."""
    # pylint: disable=import-outside-toplevel
    from pipeline.contract.load import load_shop
    from trainer import beyond_accuracy as B
    tables = load_shop(shop)
    facts, ids, history = shop_facts(tables, encode_titles)
    users = sorted(history)
    if max_users:
        users = users[:max_users]
    shoppers = preferred = None
    tops = dict(zip(tables.items[spec.ITEM_ID],
                    [str(c).split(spec.CATEGORY_SEPARATOR)[0]
                     for c in tables.items[spec.CATEGORIES]]))
    if truth:
        from benchmarks.ab_test import Shoppers, sample_truth
        from pipeline.sample_shop.truth import latent_groups
        catalog, population = sample_truth(seed, scale)
        shoppers = Shoppers(catalog, population)
        groups = latent_groups(seed, scale)
        preferred = dict(zip(groups["user_id"], groups["preferred_top"]))
    rows = {}
    for n, (name, settings) in enumerate(SETTINGS.items()):
        lists, degraded, seconds = _answers(shop, serving, work_dir, settings, users, ids,
                                            pseudonym_key_file, tag=f"setting{n}")
        rows[name] = {"api_settings": settings, "degraded_answers": degraded,
                      "seconds": round(seconds, 1), **B.measure(lists, facts),
                      **relevance(lists, users, ids, shoppers, preferred, tops)}
    order = np.argsort(-facts.popularity, kind="stable")
    row_of = {item: i for i, item in enumerate(ids)}
    popular = np.full((len(users), K), -1, np.int64)
    for n, user in enumerate(users):
        seen = {row_of[i] for i in history[user]}
        popular[n] = [i for i in order[:K + len(seen)] if i not in seen][:K]
    rows[REFERENCE] = {"api_settings": None, **B.measure(popular, facts),
                       **relevance(popular, users, ids, shoppers, preferred, tops)}
    return {"shop": {"seed": seed, "scale": scale, "items": len(ids), "users": len(users),
                     "new_items": int(facts.is_new.sum())},
            "k": K, "rows": rows}


COLUMNS = (("expected_ctr", "expected CTR"), ("preferred_top_share", "in favourite top"),
           ("coverage", "coverage"), ("diversity", "diversity"),
           ("category_entropy", "cat. entropy"), ("novelty", "novelty"),
           ("top1pct_share", "top-1% share"), ("exposure_gini", "exposure Gini"),
           ("brand_exposure_gini", "brand Gini"), ("brands_exposed", "brands shown"),
           ("new_item_exposure_ratio", "new-item exposure"))


def markdown(results):
    shop = results["shop"]
    head = ["answers"] + [label for _, label in COLUMNS]
    lines = [f"# Beyond accuracy of the product's answers: sample shop (seed {shop['seed']}, "
             f"scale {shop['scale']})", "",
             f"{shop['users']} shoppers with events, {shop['items']} items "
             f"({shop['new_items']} new: listed in the last {NEW_ITEM_DAYS} days), k = {results['k']}. "
             "/v1/recommend's code (the API's Services on the models the pipeline pushed) "
             "with diversification on (max_category_share 0.5, the default), milder (0.7) "
             "and off (1.0). "
             "Expected CTR: the simulated shoppers' click probability (planted tastes, "
             "benchmarks/ab_test.py); in favourite top: share of list items in the "
             "shopper's planted favourite top category. Metrics: trainer/beyond_accuracy.py "
             "(definitions in benchmarks/results/beauty.md).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in results["rows"].items():
        lines.append("| " + " | ".join([name] + [
            "—" if row.get(key) is None else f"{row[key]:.3f}" for key, _ in COLUMNS]) + " |")
    degraded = {n: r.get("degraded_answers") for n, r in results["rows"].items()
                if r.get("api_settings")}
    pipeline = results.get("pipeline") or {}
    lines += ["", f"Degraded answers: {degraded}. Pipeline: {pipeline.get('seconds')} s"
                  + (" (an earlier run in the work folder)" if pipeline.get("reused") else "")
                  + f"; command: `{results.get('command', '')}`.", ""]
    return "\n".join(lines)


def chart(results, path):
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    keys = [c for c in COLUMNS if any(r.get(c[0]) is not None
                                      for r in results["rows"].values())]
    names = list(results["rows"])
    fig, axes = plt.subplots(2, (len(keys) + 1) // 2, figsize=(3.2 * ((len(keys) + 1) // 2), 6.5))
    for ax, (key, label) in zip(axes.ravel(), keys):
        values = [results["rows"][n].get(key) or 0.0 for n in names]
        ax.bar(range(len(names)), values, color=[f"C{i}" for i in range(len(names))])
        ax.set_title(label, fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    fig.suptitle("Product answers on the sample shop: diversification on / off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="",
                        help="shop + pipeline run (reused when present); default: a new "
                             "temporary folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    if args.scale <= 0 or (args.max_users is not None and args.max_users < 1):
        parser.error("--scale must be > 0 and --max-users >= 1")
    work = args.work_dir or tempfile.mkdtemp(prefix="shoprec_beyond_")
    os.makedirs(work, exist_ok=True)
    started = time.time()
    shop, serving, pipeline = prepare(work, args.seed, args.scale)
    results = measure(shop, serving, work, args.seed, args.scale, args.max_users)
    results.update(pipeline=pipeline, seconds=round(time.time() - started, 1),
                   work_dir=work, command="python -m benchmarks.beyond_accuracy "
                   + " ".join(argv if argv is not None else sys.argv[1:]))
    paths = write_outputs(results, args.out, "beyond_accuracy", markdown(results), chart)
    print(markdown(results))
    print("wrote", ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
