"""Two-stage "ours_ranked" on the Beauty leave-one-out task: the project's retrieval model
("ours", ``beauty_ours.fit_ours``) proposes its top ``top_n`` items, the project's ranking
model (``trainer.ranking.run_fn``: DCN-v2 + text features + the retrieval score) re-orders
them.

Training rows for the ranker (Beauty has only positives, so the negatives are retrieval
candidates the user did not choose):

- the ranker trains on the **validation** stage (history = the train part, target = the
  second-to-last item), never on the retrieval model's own training targets: there the
  retrieval scores come from a model fit on those very pairs and are over-confident, while
  on the validation targets they are as honest as at test time (stacking);
- per user, the retrieval model's top ``top_n`` for the validation history (ties by item
  index). Users whose target is in it give one positive row (the target, clicked =
  purchased = 1) and ``negatives`` rows sampled uniformly without replacement from the other
  candidates (0 labels); users whose target is not retrieved give no row (nothing to re-rank
  at serving time either). Every row carries its ``retrieval_score``: the retrieval score
  minus that of the user's best candidate (``relative_scores``);
- a seeded ``holdout_fraction`` of the users is kept out of ranker training: their rows are
  the trainer's eval split (AUC), and their NDCG@10 before / after re-ranking is the
  selection signal recorded in ``info`` (the only honest validation number: the validation
  targets of the other users are ranker training data, so ``beauty.run`` does not report a
  validation row for this model).

Scoring (validation never, test): retrieval scores of every item from the exported
retrieval SavedModel; the top ``top_n`` are re-scored by the exported ranking SavedModel's
``score`` signature (raw features + ``retrieval_score``) and placed above every other item
in the re-ranked order; the rest keep the retrieval order. The scorer of the retrieval
order alone is returned as the companion "retrieval" so both orders of the same retrieval
model are measured on the test set.

Everything written derives from the research-only Amazon data and goes to ``work_dir``
(outside the repository).
"""
import os
import tempfile
import time
import types

import numpy as np

from benchmarks import beauty_data, beauty_ours
from benchmarks.registry import Fitted

# Ranking trainer config on top of RankingConfig's defaults. Beauty has no search queries
# (no query-word match), and the scorer sees histories only (no user-id embedding); click and
# purchase are the same event here, so one head trains and scores.
BASE_RANKING_CONFIG = {
    "use_retrieval_score": True, "use_user_id": False, "use_text": False,
    "loss_weights": {"click": 1.0, "purchase": 0.0, "rating": 0.0},
    "score_weights": {"click": 1.0, "purchase": 0.0, "rating": 0.0},
}
# Items outside the re-ranked top-N sit this far below the ranker's scores (in [0, 1]).
_BELOW = 1.0e4


def top_candidates(scores, top_n):
    """Indices of the ``top_n`` highest scores per row, best first, ties by lower item
    index: int64 [U, top_n]."""
    scores = np.asarray(scores)
    if not 1 <= top_n <= scores.shape[1]:
        raise ValueError(f"top_n must be in [1, {scores.shape[1]}], got {top_n}")
    return np.argsort(-scores, axis=1, kind="stable")[:, :top_n]


def relative_scores(scores, top):
    """The ranker's ``retrieval_score`` feature: each item's retrieval score minus the user's
    best candidate score (``top[:, 0]``), so 0 = retrieval's first choice. Absolute score
    levels differ between users (they depend on the history); the gap to the best candidate
    is what says how sure retrieval is (held-out candidate rows, 2,000-user subsample: AUC
    0.70 vs 0.66 for the raw score)."""
    return scores - np.take_along_axis(scores, top[:, :1], axis=1)


def training_rows(histories, targets, scorer, top_n, negatives, rng, batch_size=1024):
    """Ranker rows of the module docstring: list of (user index, item index, label, retrieval
    score) and the number of users whose target was retrieved."""
    rows, hits = [], 0
    for begin in range(0, len(targets), batch_size):
        batch = histories[begin:begin + batch_size]
        scores = np.asarray(scorer(batch))
        top = top_candidates(scores, top_n)
        relative = relative_scores(scores, top)
        for j, candidates in enumerate(top):
            u, target = begin + j, int(targets[begin + j])
            if target not in candidates:
                continue
            hits += 1
            others = candidates[candidates != target]
            chosen = rng.choice(others, size=min(negatives, len(others)), replace=False)
            rows.append((u, target, 1, float(relative[j, target])))
            rows += [(u, int(i), 0, float(relative[j, i])) for i in chosen]
    return rows, hits


def write_ranker_examples(task, users, rows_by_split, raw_dir):
    """Raw splits for the ranking trainer: train / eval rows (pipeline format + the
    retrieval score) and the catalog. ``users``: validation user index -> user id."""
    # pylint: disable=import-outside-toplevel
    from trainer import features as F
    from pipeline import examples
    items = beauty_ours.catalog_rows(task.items)
    asins = list(task.items.asin)
    when = beauty_data.EXPORT_END_DAY.timestamp()
    splits = {}
    for split, rows in rows_by_split.items():
        out = []
        for u, item, label, score in rows:
            unit = beauty_ours.unit_example(users[u], task.validation.histories[u], item,
                                            items, asins, when)
            unit.update({F.CLICKED: label, F.ADDED_TO_CART: label, F.PURCHASED: label,
                         F.RETRIEVAL_SCORE: score})
            out.append(unit)
        splits[split] = out
    splits[F.CATALOG_SPLIT] = [dict(examples.catalog_example(row), **{F.RETRIEVAL_SCORE: 0.0})
                               for row in items]
    return beauty_ours.write_splits(raw_dir, splits)


def raw_spec():
    """The pipeline's raw feature spec plus the float retrieval score."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from benchmarks import shop_examples  # pylint: disable=import-outside-toplevel
    from trainer import features as F  # pylint: disable=import-outside-toplevel
    return dict(shop_examples.raw_feature_spec(),
                **{F.RETRIEVAL_SCORE: tf.io.FixedLenFeature([1], tf.float32)})


class RerankedScorer:
    """Retrieval scores of every item, the top ``top_n`` re-scored by the exported ranking
    model (its combined ``score``) and moved above the rest (module docstring)."""

    def __init__(self, retrieval, ranking_export, items, top_n, users_per_call=64):
        # pylint: disable=import-outside-toplevel
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (the export's tokenizer ops)
        self.tf = tf
        self.retrieval, self.top_n, self.users_per_call = retrieval, top_n, users_per_call
        self.score_fn = tf.saved_model.load(ranking_export).signatures["score"]
        rows = beauty_ours.catalog_rows(items)
        self.asins = np.asarray(items.asin, dtype=object)
        self.asin_list = list(items.asin)
        self.columns = {key: np.asarray([r[key] for r in rows], dtype=dtype)
                        for key, dtype in (("brand", object), ("category", object),
                                           ("price", np.float32), ("in_stock", np.int64))}

    def rank_scores(self, histories, candidates, retrieval_scores):
        """The ranker's combined score of ``candidates`` [U, N] for each history: [U, N]."""
        tf = self.tf
        users, n = candidates.shape
        flat = candidates.reshape(-1)
        history = np.repeat(np.asarray([beauty_ours.history_ids(self.asin_list, h)
                                        for h in histories], dtype=object), n, axis=0)
        out = self.score_fn(
            user_id=tf.constant([""] * len(flat)), history_item_ids=tf.constant(history),
            item_id=tf.constant(self.asins[flat].tolist()),
            brand=tf.constant(self.columns["brand"][flat].tolist()),
            category=tf.constant(self.columns["category"][flat].tolist()),
            price=tf.constant(self.columns["price"][flat]),
            in_stock=tf.constant(self.columns["in_stock"][flat]),
            retrieval_score=tf.constant(retrieval_scores.reshape(-1), tf.float32))
        return out["score"].numpy().reshape(users, n)

    def __call__(self, histories):
        scores = np.asarray(self.retrieval(histories), np.float64)
        top = top_candidates(scores, self.top_n)
        out = scores - _BELOW
        for begin in range(0, len(histories), self.users_per_call):
            part = slice(begin, begin + self.users_per_call)
            cand = top[part]
            kept = np.take_along_axis(relative_scores(scores[part], cand), cand, axis=1)
            ranked = self.rank_scores(histories[part], cand, kept.astype(np.float32))
            np.put_along_axis(out[part], cand, ranked.astype(np.float64), axis=1)
        return out


def _retrieval(task, seed, retrieval_export, retrieval_candidates, retrieval_config,
               work_dir):
    """(retrieval scorer, its info): the given export, or fit_ours trained here."""
    if retrieval_export:
        return (beauty_ours.ExportedScorer(retrieval_export, task.items, task.batch_size),
                {"export": retrieval_export})
    fitted = beauty_ours.fit_ours(task, seed, candidates=retrieval_candidates,
                                  config=retrieval_config,
                                  work_dir=os.path.join(work_dir, "retrieval"))
    return fitted.scorer, fitted.info


def fit_ours_ranked(task, seed, top_n=100, negatives=20, holdout_fraction=0.1,
                    ranking_config=None, ranking_candidates=({},), train_steps=None,
                    retrieval_export="", retrieval_candidates=({},), retrieval_config=None,
                    work_dir="", select="ndcg@10", deterministic=True):
    """Retrieval (``fit_ours``, or the SavedModel at ``retrieval_export``) + the ranking
    trainer on its candidates (module docstring). ``ranking_config``: RankingConfig keys over
    ``BASE_RANKING_CONFIG`` (seed = the benchmark seed); ``ranking_candidates``: variants
    of it, each trained, the best held-out ``select`` (unfiltered, re-ranked) kept;
    ``train_steps``: None = the config's epochs; ``retrieval_candidates`` /
    ``retrieval_config``: as ``fit_ours``' ``candidates`` / ``config``; ``deterministic``:
    TF op determinism (reproducible runs)."""
    with beauty_ours.op_determinism(deterministic):
        return _fit_ours_ranked(task, seed, top_n, negatives, holdout_fraction,
                                ranking_config, ranking_candidates, train_steps,
                                retrieval_export, retrieval_candidates, retrieval_config,
                                work_dir, select)


def _fit_ours_ranked(task, seed, top_n, negatives, holdout_fraction, ranking_config,
                     ranking_candidates, train_steps, retrieval_export, retrieval_candidates,
                     retrieval_config, work_dir, select):
    # pylint: disable=import-outside-toplevel
    from benchmarks import protocol, shop_examples
    from trainer import features as F
    from trainer import ranking
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1, got {negatives}")
    work_dir = work_dir or tempfile.mkdtemp(prefix="shoprec_beauty_rerank_")
    if beauty_ours.inside_repo(work_dir):
        raise ValueError(f"work_dir {work_dir} is inside the repository; the examples derive "
                         "from research-only data: use a folder outside it")
    seconds = {}
    start = time.time()
    retrieval, retrieval_info = _retrieval(task, seed, retrieval_export, retrieval_candidates,
                                           retrieval_config, work_dir)
    seconds["retrieval"] = time.time() - start

    start = time.time()
    rng = np.random.default_rng(seed)
    n_users = len(task.validation)
    holdout = np.zeros(n_users, bool)
    holdout[rng.permutation(n_users)[:max(1, int(round(holdout_fraction * n_users)))]] = True
    rows, hits = training_rows(task.validation.histories, task.validation.targets, retrieval,
                               top_n, negatives, rng, task.batch_size)
    by_split = {F.TRAIN_SPLIT: [r for r in rows if not holdout[r[0]]],
                F.EVAL_SPLIT: [r for r in rows if holdout[r[0]]]}
    raw = os.path.join(work_dir, "ranker_raw")
    counts = write_ranker_examples(task, [f"v{u}" for u in range(n_users)], by_split, raw)
    seconds["ranker_examples"] = time.time() - start
    start = time.time()
    transform_dir = os.path.join(work_dir, "ranker")
    os.makedirs(transform_dir, exist_ok=True)
    graph_dir, examples_dir = shop_examples.transform(raw, transform_dir, raw_spec=raw_spec())
    seconds["ranker_transform"] = time.time() - start

    held = np.flatnonzero(holdout)
    held_set = protocol.EvalSet([task.validation.histories[u] for u in held],
                                task.validation.targets[held])
    start = time.time()
    retrieval_holdout = protocol.evaluate(retrieval, held_set, task.n_items, task.batch_size)
    seconds["holdout_validate"] = time.time() - start
    runs, best = [], None
    for c, candidate in enumerate(ranking_candidates):
        start = time.time()
        config = dict(BASE_RANKING_CONFIG, seed=seed, **(ranking_config or {}))
        config.update(candidate)
        args = shop_examples.trainer_fn_args(examples_dir, graph_dir,
                                             os.path.join(work_dir, f"ranker_run{c}"), config,
                                             train_steps)
        run = shop_examples.run_trainer(ranking.run_fn, args)
        seconds["ranker_train_and_export"] = (seconds.get("ranker_train_and_export", 0)
                                              + time.time() - start)
        start = time.time()
        reranked = RerankedScorer(retrieval, run.export, task.items, top_n)
        metrics = protocol.evaluate(reranked, held_set, task.n_items, task.batch_size)
        seconds["holdout_validate"] += time.time() - start
        runs.append({"config": config, "holdout_validation": metrics,
                     "ranker": {k: run.metrics.get(k) for k in ("click", "training",
                                                                 "num_eval_examples")}})
        if best is None or metrics["unfiltered"][select] > best[0]:
            best = (metrics["unfiltered"][select], c, reranked)
    info = {
        "retrieval": retrieval_info, "top_n": top_n, "negatives": negatives,
        "ranker_rows": counts, "validation_users_retrieved": hits,
        "validation_users": n_users, "holdout_users": int(holdout.sum()),
        "holdout_validation_retrieval": retrieval_holdout, "selected": best[1],
        "ranker_runs": runs,
        "stage_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "work_dir": work_dir,
    }
    return Fitted(best[2], info, companions={"retrieval": retrieval},
                  trained_on_validation=True)
