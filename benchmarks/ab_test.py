"""A simulated A/B test (and an A/A) through the product's experiment code path.

``python -m benchmarks.ab_test [--scale 0.3] [--rounds 3] [--seed 0] [--out benchmarks/results]``

1. The sample shop (``pipeline.sample_shop``) at ``--scale`` with ``--seed``: its catalog,
   its users' events (imported by the API at start-up) and -- rebuilt from the same seed --
   the users' latent tastes: favourite leaf categories (at the end of the time range),
   brands, attribute values and price level.
2. Models served by the stand-in model server: the synthetic retrieval model
   (serving/demo/synthetic_models.py) and two ranking versions: **v1**, the synthetic
   ranking model (top-category affinity of the history + popularity), and **v2**, which also
   scores a candidate by the share of history items of its leaf category and of its brand:
   the better model, since the shoppers choose by leaf category and brand.
3. The real API (``serving.api.app.create_app``, in-process TestClient, SQLite event store)
   with ``experiments_file``: experiment ``ranking_v2`` takes half the users (salted hash)
   and splits them between ``v1`` (ranking version 1, control) and ``v2`` (version 2);
   experiment ``aa`` takes the others and splits them between two identical variants
   (the served ranking, v2).
4. Every user asks ``/v1/recommend`` (k = 10) ``--rounds`` times; the simulated shopper sees
   each item and clicks with probability ``sigmoid(-4 + 3 r + 1.1 a - 0.05 position)``,
   with ``r`` the user's preference for the item's leaf category relative to their favourite
   and ``a`` the generator's own affinity (favourite brand, attribute, price fit: the
   formula the sample shop draws its clicks with); a click leads to a cart with
   ``sigmoid(-1.6 + 0.7 a)`` and a cart to a purchase with ``sigmoid(0.6 a)`` (the
   generator's funnel), quantity 1. Events go through ``POST /v1/events``; the API
   attributes them to the impressions it logged.
5. ``GET /v1/experiments/{name}/report`` of both experiments: the product's numbers and
   p-values, written to ``<out>/ab_test.{md,json,png}`` with the seeds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.outputs import write_outputs

CLICK_BASE, CLICK_PREF, CLICK_AFFINITY, CLICK_POSITION = -4.0, 3.0, 1.1, 0.05
EXPERIMENTS = {"experiments": [
    {"name": "ranking_v2", "salt": "ab-test-ranking-v2", "traffic": 0.5, "control": "v1",
     "description": "ranking version 2 (leaf category and brand of the history) against 1",
     "variants": [{"name": "v1", "weight": 1, "ranking_version": 1},
                  {"name": "v2", "weight": 1, "ranking_version": 2}]},
    {"name": "aa", "salt": "ab-test-aa", "traffic": 1.0, "control": "a1",
     "description": "A/A: two identical variants (the served ranking model)",
     "variants": [{"name": "a1", "weight": 1}, {"name": "a2", "weight": 1}]}]}


def sample_truth(seed: int, scale: float):
    """The sample shop's catalog and users exactly as ``generate_shop(seed, scale)`` drew
    them (same seed sequence), for the simulated shoppers' preferences."""
    from pipeline.sample_shop.catalog import make_catalog
    from pipeline.sample_shop.config import SampleConfig, shop_sizes
    from pipeline.sample_shop.users import make_users

    cfg = SampleConfig()
    sizes = shop_sizes(scale, cfg)
    catalog_rng, users_rng, _ = (np.random.default_rng(s) for s in
                                 np.random.SeedSequence(seed).spawn(3))
    catalog = make_catalog(catalog_rng, sizes["items"], cfg)
    return catalog, make_users(users_rng, sizes["users"], catalog, cfg)


class Shoppers:
    """The simulated shoppers: click / cart / purchase probabilities from known tastes."""

    def __init__(self, catalog, population):
        from pipeline.sample_shop.sessions import _affinity

        self.catalog, self.population, self._affinity = catalog, population, _affinity
        self.row_of_item = {item: n for n, item in enumerate(catalog.table["item_id"])}
        self.row_of_user = {user: n for n, user in enumerate(population.table["user_id"])}
        pref = population.pref_end
        self.relative = pref / pref.max(axis=1, keepdims=True)

    def probabilities(self, user: str, items: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(click probability, purchase-after-click probability) of each shown item."""
        u = self.row_of_user[user]
        rows = np.array([self.row_of_item[i] for i in items])
        users = np.array([u])
        affinity = self._affinity(self.catalog, self.population, users, rows,
                                  self.population.price_end[users])[0]
        relative = self.relative[u, self.catalog.leaf[rows]]
        position = np.arange(len(items))
        click = _sigmoid(CLICK_BASE + CLICK_PREF * relative + CLICK_AFFINITY * affinity
                         - CLICK_POSITION * position)
        buy = _sigmoid(-1.6 + 0.7 * affinity) * _sigmoid(0.6 * affinity)
        return click, buy


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def write_ranking_v2(items, popularity: dict, base_path: str, version: int, seed: int):
    """The better ranking model: the synthetic model's logit plus the shares of history
    items of the candidate's leaf category and brand (``rank_candidates`` signature)."""
    import tensorflow as tf

    from pipeline.contract.spec import top_category
    from serving.demo.synthetic_models import SyntheticRanking, _save, warmup_samples
    from trainer import features as F

    class LeafBrandRanking(SyntheticRanking):
        def __init__(self):
            n_cat = len({top_category(p) for p in items["categories"]})
            super().__init__(items, popularity, dim=n_cat + 9, seed=seed)
            ids = items["item_id"].astype(str).tolist()
            self.leaf = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                ids, items["categories"].astype(str).tolist()), default_value="")
            self.brand = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                ids, items["brand"].fillna("").astype(str).tolist()), default_value="")

        def _share(self, table, history, values):
            known = tf.cast(history != "", tf.float32)
            same = tf.cast(tf.equal(table.lookup(history), values[:, None]), tf.float32)
            return tf.reduce_sum(same * known, 1) / tf.maximum(tf.reduce_sum(known, 1), 1.0)

        @tf.function(input_signature=[
            tf.TensorSpec([], tf.string, name=F.USER_ID),
            tf.TensorSpec([None], tf.string, name=F.HISTORY_ITEM_IDS),
            tf.TensorSpec([], tf.string, name=F.QUERY),
            tf.TensorSpec([None], tf.string, name=F.TITLE),
            tf.TensorSpec([None], tf.string, name=F.ITEM_ID),
            tf.TensorSpec([None], tf.string, name=F.BRAND),
            tf.TensorSpec([None], tf.string, name=F.CATEGORY),
            tf.TensorSpec([None], tf.float32, name=F.PRICE),
            tf.TensorSpec([None], tf.int64, name=F.IN_STOCK)])
        def rank_candidates(self, user_id, history_item_ids, query, title, item_id, brand,
                            category, price, in_stock):
            n = tf.shape(item_id)[0]
            history = tf.tile(history_item_ids[tf.newaxis], [n, 1])
            base = self._scores(history, item_id, category, in_stock,
                                self._match(tf.fill([n], query), title, category))
            score = (base["score"] + 2.0 * self._share(self.leaf, history, category)
                     + 1.0 * self._share(self.brand, history, brand))
            return {"score": score}

    model = LeafBrandRanking()
    return _save(model, {"rank_candidates": model.rank_candidates.get_concrete_function()},
                 base_path, version, warmup_samples(items, popularity))


def prepare(work: Path, seed: int, scale: float):
    """The shop folder and the serving folder (retrieval 1, ranking 1 and 2)."""
    from pipeline.contract.load import load_shop
    from pipeline.examples import ENGAGEMENT_EVENTS
    from pipeline.sample_shop.generate import generate_shop
    from serving.demo.synthetic_models import write_models

    shop_dir = work / "shop"
    generate_shop(shop_dir, seed=seed, scale=scale)
    shop = load_shop(shop_dir)
    engaged = shop.events[shop.events["event_type"].isin(sorted(ENGAGEMENT_EVENTS))]
    popularity = engaged["item_id"].value_counts().to_dict()
    serving = work / "models"
    write_models(shop.items, popularity, str(serving), version=1, seed=seed)
    write_ranking_v2(shop.items, popularity, str(serving / "ranking"), 2, seed)
    users = sorted(engaged["user_id"].unique())
    return shop_dir, serving, users


def aa_calibration(impressions, attributions, resplits: int, seed: int) -> dict:
    """The A/A experiment's users split again ``resplits`` times with other salts (the
    product's hash), each split's report computed by the product's code: the share of
    splits with p < 0.05 per metric should be about 5 % (tests that the tests are not
    anti-conservative, e.g. by treating impressions as independent)."""
    from serving.api.experiments import Experiment, Variant
    from serving.events.report import compute_report

    hits = {key: 0 for key, _ in METRICS}
    for n in range(resplits):
        split = Experiment(f"resplit{n}", f"aa-resplit-{seed}-{n}",
                           (Variant("a1", 1), Variant("a2", 1)), "a1")
        variant_of = {}
        rows = []
        for _, user, count in impressions:
            variant_of.setdefault(user, split.assign(user).name)
            rows.append((variant_of[user], user, count))
        moved = [dataclasses.replace(a, variant=variant_of[a.user_id]) for a in attributions
                 if a.user_id in variant_of]
        comparison = compute_report(split.name, ["a1", "a2"], "a1", rows, moved)[
            "comparisons"]["a2"]
        for key in hits:
            p = comparison[key]["p_value"]
            hits[key] += p is not None and p < 0.05
    return {"resplits": resplits,
            "share_significant": {key: round(n / resplits, 4) for key, n in hits.items()}}


def simulate(work: Path, seed: int, scale: float, rounds: int, k: int = 10,
             max_users: int | None = None, resplits: int = 200) -> dict:
    """Run the simulation; the reports of both experiments and the run's facts."""
    import portpicker
    from fastapi.testclient import TestClient

    from serving.api.app import create_app
    from serving.api.settings import Settings
    from serving.standin.model_config import ModelConfig
    from serving.standin.model_server import ModelServer

    started = time.perf_counter()
    shop_dir, serving, users = prepare(work, seed, scale)
    if max_users:
        users = users[:max_users]
    catalog, population = sample_truth(seed, scale)
    shoppers = Shoppers(catalog, population)
    experiments_file = work / "experiments.json"
    experiments_file.write_text(json.dumps(EXPERIMENTS, indent=2))
    server = ModelServer([ModelConfig("retrieval", str(serving / "retrieval")),
                          ModelConfig("ranking", str(serving / "ranking"), policy="specific",
                                      versions=(1, 2))],
                         port=portpicker.pick_unused_port(), file_system_poll_wait_seconds=0,
                         load_in_process=True).start()
    rng = np.random.default_rng(seed + 1)
    settings = Settings(shop_dir=str(shop_dir), tfserving_grpc=f"127.0.0.1:{server.grpc_port}",
                        event_store=f"sqlite:///{work / 'events.sqlite3'}", auth="off",
                        startup_wait_s=60, tfserving_deadline_s=10,
                        experiments_file=str(experiments_file), access_log=False,
                        rate_limits="off")
    requests = degraded = 0
    try:
        with TestClient(create_app(settings)) as client:
            prepared = time.perf_counter()
            for _ in range(rounds):
                for user in users:
                    answer = client.get("/v1/recommend", params={"user_id": user, "k": k})
                    answer.raise_for_status()
                    body = answer.json()
                    requests += 1
                    degraded += bool(body["degraded"])
                    items = [i["item_id"] for i in body["items"]]
                    if not items:
                        continue
                    click, buy = shoppers.probabilities(user, items)
                    events = []
                    for item, p_click, p_buy in zip(items, click, buy):
                        if rng.random() < p_click:
                            events.append({"user_id": user, "item_id": item,
                                           "event_type": "click"})
                            if rng.random() < p_buy:
                                events += [{"user_id": user, "item_id": item,
                                            "event_type": kind, "value": 1}
                                           for kind in ("add_to_cart", "purchase")]
                    if events:
                        client.post("/v1/events", json=events).raise_for_status()
            simulated = time.perf_counter()
            reports = {name: client.get(f"/v1/experiments/{name}/report").json()
                       for name in ("ranking_v2", "aa")}
            store = client.app.state.services.store
            calibration = aa_calibration(store.experiment_impressions("aa"),
                                         store.experiment_attributions("aa"), resplits, seed)
    finally:
        server.stop(grace_s=1)
    return {"seed": seed, "scale": scale, "rounds": rounds, "k": k, "users": len(users),
            "requests": requests, "degraded_answers": degraded,
            "simulator": {"click": f"sigmoid({CLICK_BASE} + {CLICK_PREF} r + "
                                   f"{CLICK_AFFINITY} a - {CLICK_POSITION} position)",
                          "purchase_after_click": "sigmoid(-1.6 + 0.7 a) * sigmoid(0.6 a)",
                          "random_seed": seed + 1},
            "experiments": EXPERIMENTS["experiments"], "reports": reports,
            "aa_calibration": calibration,
            "seconds": {"prepare": round(prepared - started, 1),
                        "simulate": round(simulated - prepared, 1)}}


METRICS = (("ctr", "CTR"), ("conversion", "conversion"), ("revenue_per_user", "revenue/user"))


def _fmt(x, digits=4):
    return "—" if x is None else f"{x:.{digits}g}"


def markdown(results: dict) -> str:
    lines = ["# Simulated A/B test through the experiment code path", "",
             f"Sample shop seed {results['seed']}, scale {results['scale']}: "
             f"{results['users']} users with a history, {results['rounds']} "
             f"`/v1/recommend` (k = {results['k']}) each, {results['requests']} requests "
             f"({results['degraded_answers']} degraded); shopper randomness seed "
             f"{results['simulator']['random_seed']}. Click "
             f"`{results['simulator']['click']}`, purchase after a click "
             f"`{results['simulator']['purchase_after_click']}`. "
             f"Command: `python -m benchmarks.ab_test --seed {results['seed']} --scale "
             f"{results['scale']} --rounds {results['rounds']}` "
             f"({results['seconds']['prepare']} s to prepare, "
             f"{results['seconds']['simulate']} s to simulate).", ""]
    for name, report in results["reports"].items():
        lines += [f"## Experiment `{name}` (control `{report['control']}`)", "",
                  "| variant | users | impressions | clicks | CTR [95% CI] | conversion "
                  "[95% CI] | revenue/user [95% CI] |", "|---|---|---|---|---|---|---|"]
        for variant, m in report["variants"].items():
            cells = [f"{_fmt(m[key]['value'])} [{_fmt(m[key]['ci'][0])}, "
                     f"{_fmt(m[key]['ci'][1])}]" for key, _ in METRICS]
            lines.append(f"| {variant} | {m['users']} | {m['impressions']} | {m['clicks']} | "
                         + " | ".join(cells) + " |")
        lines += ["", "| variant vs control | metric | difference [95% CI] | relative | "
                      "p-value | test |", "|---|---|---|---|---|---|"]
        for variant, comparison in report["comparisons"].items():
            for key, label in METRICS:
                c = comparison[key]
                lines.append(f"| {variant} | {label} | {_fmt(c['difference'])} "
                             f"[{_fmt(c['ci'][0])}, {_fmt(c['ci'][1])}] | "
                             f"{_fmt(c['relative'], 3)} | {_fmt(c['p_value'], 3)}"
                             f"{' **significant**' if c['significant'] else ''} | "
                             f"{c['test']} |")
        lines.append("")
    calibration = results["aa_calibration"]
    lines += [f"A/A calibration: the `aa` users split again with {calibration['resplits']} "
              "other salts; share of splits \"significant\" at p < 0.05 (about 0.05 "
              "expected): " + ", ".join(f"{label} {calibration['share_significant'][key]}"
                                        for key, label in METRICS) + ".", "",
              verdict_text(results["verdict"]), ""]
    return "\n".join(lines)


def verdict_text(verdict: dict) -> str:
    alarms = ", ".join(verdict["aa_false_alarms"]) or "none"
    return (f"Verdict: better model detected at p < 0.05: "
            f"{'yes' if verdict['better_model_detected'] else 'no'}; A/A metrics with "
            f"p < 0.05: {alarms}; {'passed' if verdict['passed'] else 'FAILED'}.")


def draw_chart(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(13, 4))
    colours = ("#4c72b0", "#dd8452", "#8c8c8c", "#55a868")
    for ax, (key, label) in zip(axes, METRICS):
        names, values, lows, highs = [], [], [], []
        for name, report in results["reports"].items():
            for variant, m in report["variants"].items():
                value, (low, high) = m[key]["value"] or 0, m[key]["ci"]
                names.append(f"{name}\n{variant}")
                values.append(value)
                lows.append(value - (low if low is not None else value))
                highs.append((high if high is not None else value) - value)
        ax.bar(range(len(names)), values, yerr=[lows, highs], capsize=4,
               color=colours[:len(names)])
        ax.set_xticks(range(len(names)), names, fontsize=8)
        pvalues = ", ".join(f"{n}: p={_fmt(r['comparisons'][v][key]['p_value'], 2)}"
                            for n, r in results["reports"].items()
                            for v in r["comparisons"])
        ax.set_title(f"{label}\n{pvalues}", fontsize=9)
    fig.suptitle("Simulated A/B (ranking v2 vs v1) and A/A, 95% intervals", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(results: dict, alpha: float = 0.05) -> dict:
    """Was the better model detected (CTR p < alpha, v2 above v1) and the A/A not (no metric
    with p < alpha)?"""
    ab = results["reports"]["ranking_v2"]["comparisons"]["v2"]["ctr"]
    aa = results["reports"]["aa"]["comparisons"]["a2"]
    detected = ab["p_value"] is not None and ab["p_value"] < alpha and ab["difference"] > 0
    false_alarm = [key for key, _ in METRICS
                   if aa[key]["p_value"] is not None and aa[key]["p_value"] < alpha]
    return {"better_model_detected": detected, "aa_false_alarms": false_alarm,
            "passed": detected and not false_alarm}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab_test",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--resplits", type=int, default=200,
                        help="A/A calibration: re-splits of the A/A users")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--stem", default="ab_test")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ab_test-") as work:
        results = simulate(Path(work), args.seed, args.scale, args.rounds,
                           max_users=args.max_users, resplits=args.resplits)
    results["verdict"] = verdict(results)
    paths = write_outputs(results, args.out, args.stem, markdown(results), draw_chart)
    print(markdown(results))
    print("wrote", ", ".join(os.path.relpath(p) for p in paths))
    return 0 if results["verdict"]["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
