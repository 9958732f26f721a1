"""Two-stage "ours_ranked" on the Beauty leave-one-out task: the project's retrieval model
("ours", ``beauty_ours.fit_ours``) proposes its top ``top_n`` items, item-to-item transitions
from the train sequences add their best ``transition_candidates`` others, and the project's
ranking model (``trainer.ranking.run_fn``: DCN-v2 + text features + the retrieval and
transition scores as ``score_features``) re-orders them.

Candidates (``Candidates``): per user, the retrieval top ``top_n`` (ties by item index),
then the items the transitions model (``baselines.transition_scorer``: the last
``transition_window`` history items, weight ``transition_decay ** age``, fitted on the train
sequences only, like every baseline) ranks best among the rest. Each candidate carries two
score features: ``retrieval_score`` (the retrieval score minus that of the user's best
candidate, ``relative_scores``) and ``transition_score`` (log1p of the transitions score).
Transitions carry the sequential signal the retrieval towers lack (order-aware pooling, but
no next-item objective): alone they beat retrieval on Beauty (test N@10 .0459 vs .0349), and
on held-out validation users a logistic regression on the two scores alone re-ranks the
retrieval top 100 from N@10 .0458 to .0629.

Training rows for the ranker (Beauty has only positives, so the negatives are retrieval
candidates the user did not choose):

- the ranker trains on the **validation** stage (history = the train part, target = the
  second-to-last item), never on the retrieval model's own training targets: there the
  retrieval scores come from a model fit on those very pairs and are over-confident, while
  on the validation targets they are as honest as at test time (stacking);
- per user, the candidates for the validation history. Users whose target is among them
  give one positive row (the target, clicked = purchased = 1) and ``negatives`` rows sampled
  uniformly without replacement from the other candidates (0 labels); users whose target is
  not a candidate give no row (nothing to re-rank at serving time either). Every row carries
  the candidate's score features;
- a seeded ``holdout_fraction`` of the users is kept out of ranker training: their rows are
  the trainer's eval split (AUC), and their NDCG@10 before / after re-ranking is the
  selection signal recorded in ``info`` (the only honest validation number: the validation
  targets of the other users are ranker training data, so ``beauty.run`` does not report a
  validation row for this model).

Scoring (validation never, test): retrieval scores of every item from the exported
retrieval SavedModel; the candidates are re-scored by the exported ranking SavedModel's
``score`` signature (raw features + the score features) and placed above every other item
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
    "score_features": ["retrieval_score", "transition_score"], "use_user_id": False, "use_text": False,
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


def union_candidates(top, ranking, extra):
    """``top`` [U, N] followed by the first ``extra`` items of each ``ranking`` row [U, >= N +
    extra] (best first) that are not in ``top``: int64 [U, N + extra]."""
    if extra == 0:
        return top
    if ranking.shape[1] < top.shape[1] + extra:
        raise ValueError(f"ranking has {ranking.shape[1]} items per row; {top.shape[1]} + "
                         f"{extra} are needed")
    head = ranking[:, :top.shape[1] + extra]
    fresh = ~(head[:, :, None] == top[:, None, :]).any(axis=2)
    # Stable: the fresh items keep their ranking order; at least `extra` are fresh per row.
    order = np.argsort(~fresh, axis=1, kind="stable")[:, :extra]
    return np.concatenate([top, np.take_along_axis(head, order, axis=1)], axis=1)


class Candidates:
    """What the ranker sees per history: ``(retrieval scores [U, n_items], candidates
    [U, C], score features {name: float32 [U, C]})`` (module docstring)."""

    def __init__(self, retrieval, transitions, top_n, extra):
        if extra < 0:
            raise ValueError(f"transition_candidates must be >= 0, got {extra}")
        self.retrieval, self.transitions, self.top_n, self.extra = (
            retrieval, transitions, top_n, extra)

    def __call__(self, histories):
        # pylint: disable=import-outside-toplevel
        from trainer import features as F
        scores = np.asarray(self.retrieval(histories), np.float64)
        transition = np.asarray(self.transitions(histories), np.float64)
        top = top_candidates(scores, self.top_n)
        if self.extra:
            top = union_candidates(
                top, top_candidates(transition, self.top_n + self.extra), self.extra)
        relative = relative_scores(scores, top)
        features = {
            F.RETRIEVAL_SCORE: np.take_along_axis(relative, top, axis=1),
            F.TRANSITION_SCORE: np.log1p(np.maximum(
                np.take_along_axis(transition, top, axis=1), 0.0))}
        return scores, top, {k: v.astype(np.float32) for k, v in features.items()}


def relative_scores(scores, top):
    """The ranker's ``retrieval_score`` feature: each item's retrieval score minus the user's
    best candidate score (``top[:, 0]``), so 0 = retrieval's first choice. Absolute score
    levels differ between users (they depend on the history); the gap to the best candidate
    is what says how sure retrieval is (held-out candidate rows, 2,000-user subsample: AUC
    0.70 vs 0.66 for the raw score)."""
    return scores - np.take_along_axis(scores, top[:, :1], axis=1)


def training_rows(histories, targets, candidates, negatives, rng, batch_size=1024):
    """Ranker rows of the module docstring from ``candidates`` (a ``Candidates``): list of
    (user index, item index, label, {score feature: value}) and the number of users whose
    target was a candidate."""
    rows, hits = [], 0
    for begin in range(0, len(targets), batch_size):
        _, top, features = candidates(histories[begin:begin + batch_size])
        for j, row in enumerate(top):
            u, target = begin + j, int(targets[begin + j])
            where = np.flatnonzero(row == target)
            if not len(where):
                continue
            hits += 1
            others = np.flatnonzero(row != target)
            chosen = rng.choice(others, size=min(negatives, len(others)), replace=False)
            for position, label in [(where[0], 1)] + [(c, 0) for c in chosen]:
                rows.append((u, int(row[position]), label,
                             {k: float(v[j, position]) for k, v in features.items()}))
    return rows, hits


def write_ranker_examples(task, contexts, rows_by_split, raw_dir):
    """Raw splits for the ranking trainer: train / eval rows (pipeline format + the score
    features) and the catalog. ``contexts``: a row's user index -> (user id, history)."""
    # pylint: disable=import-outside-toplevel
    from trainer import features as F
    from pipeline import examples
    items = beauty_ours.catalog_rows(task.items)
    asins = list(task.items.asin)
    when = beauty_data.EXPORT_END_DAY.timestamp()
    splits = {}
    for split, rows in rows_by_split.items():
        out = []
        for u, item, label, scores in rows:
            user, history = contexts[u]
            unit = beauty_ours.unit_example(user, history, item, items, asins, when)
            unit.update({F.CLICKED: label, F.ADDED_TO_CART: label, F.PURCHASED: label},
                        **scores)
            out.append(unit)
        splits[split] = out
    splits[F.CATALOG_SPLIT] = [
        dict(examples.catalog_example(row), **{k: 0.0 for k in F.OPTIONAL_FLOAT_FEATURES})
        for row in items]
    return beauty_ours.write_splits(raw_dir, splits)


def raw_spec():
    """The pipeline's raw feature spec plus the float score features."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from benchmarks import shop_examples  # pylint: disable=import-outside-toplevel
    from trainer import features as F  # pylint: disable=import-outside-toplevel
    return dict(shop_examples.raw_feature_spec(),
                **{k: tf.io.FixedLenFeature([1], tf.float32) for k in F.OPTIONAL_FLOAT_FEATURES})


class RerankedScorer:
    """Retrieval scores of every item, the candidates re-scored by the exported ranking
    model (its combined ``score``, given the ranker's ``score_features``) and moved above the
    rest (module docstring)."""

    def __init__(self, candidates, ranking_export, items, score_features, users_per_call=64):
        # pylint: disable=import-outside-toplevel
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (the export's tokenizer ops)
        self.tf = tf
        self.candidates, self.users_per_call = candidates, users_per_call
        self.score_features = tuple(score_features)
        self.score_fn = tf.saved_model.load(ranking_export).signatures["score"]
        rows = beauty_ours.catalog_rows(items)
        self.asins = np.asarray(items.asin, dtype=object)
        self.asin_list = list(items.asin)
        self.columns = {key: np.asarray([r[key] for r in rows], dtype=dtype)
                        for key, dtype in (("brand", object), ("category", object),
                                           ("price", np.float32), ("in_stock", np.int64))}

    def rank_scores(self, histories, candidates, features):
        """The ranker's combined score of ``candidates`` [U, N] for each history, given their
        score features {name: [U, N]}: [U, N]."""
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
            **{k: tf.constant(features[k].reshape(-1), tf.float32) for k in self.score_features})
        return out["score"].numpy().reshape(users, n)

    def __call__(self, histories):
        scores, top, features = self.candidates(histories)
        out = scores - _BELOW
        for begin in range(0, len(histories), self.users_per_call):
            part = slice(begin, begin + self.users_per_call)
            ranked = self.rank_scores(histories[part], top[part],
                                      {k: v[part] for k, v in features.items()})
            np.put_along_axis(out[part], top[part], ranked.astype(np.float64), axis=1)
        return out


def earlier_stage(task):
    """The leave-one-out task one step earlier: every train sequence without its last item,
    whose last item becomes the "validation" target (history: the items before it). Users
    with fewer than 2 train items have no target there (their items stay in train)."""
    from benchmarks import protocol  # pylint: disable=import-outside-toplevel
    from benchmarks.registry import FitTask  # pylint: disable=import-outside-toplevel
    train, histories, targets = [], [], []
    for seq in task.train:
        if len(seq) < 2:
            train.append(seq)
            continue
        train.append(seq[:-1])
        histories.append(seq[:-1])
        targets.append(int(seq[-1]))
    return FitTask(train, task.items, task.n_items,
                   protocol.EvalSet(histories, np.asarray(targets, np.int64)),
                   batch_size=task.batch_size, progress=task.progress)


def _retrieval(task, seed, retrieval_export, retrieval_candidates, retrieval_config,
               work_dir):
    """(retrieval scorer, its info): the given export, or fit_ours trained here."""
    if retrieval_export:
        return (beauty_ours.ExportedScorer(retrieval_export, task.items, task.batch_size),
                {"export": retrieval_export})
    fitted = beauty_ours.fit_ours(task, seed, candidates=retrieval_candidates,
                                  config=retrieval_config,
                                  work_dir=work_dir)
    return fitted.scorer, fitted.info


def fit_ours_ranked(task, seed, top_n=100, transition_candidates=50, transition_window=3,
                    transition_decay=0.1, negatives=20, holdout_fraction=0.1,
                    earlier_stage=False, ranking_config=None, ranking_candidates=({},),
                    train_steps=None, retrieval_export="", earlier_retrieval_export="",
                    retrieval_candidates=({},), retrieval_config=None, work_dir="",
                    select="ndcg@10", deterministic=True):
    """Retrieval (``fit_ours``, or the SavedModel at ``retrieval_export``) + transitions +
    the ranking trainer on their candidates (module docstring). ``top_n``: retrieval
    candidates; ``transition_candidates``: further candidates from the transitions ranking
    (0: retrieval's only; the transition score stays a feature); ``transition_window`` /
    ``transition_decay``: the transitions model (the decay transitions3 selects on
    validation); ``earlier_stage``: also train the ranker on the stage one step earlier
    (``earlier_stage``; a second retrieval model fitted on it, or the SavedModel at
    ``earlier_retrieval_export``); ``ranking_config``: RankingConfig keys over
    ``BASE_RANKING_CONFIG`` (seed =
    the benchmark seed); ``ranking_candidates``: variants of it, each trained, the best
    held-out ``select`` (unfiltered, re-ranked) kept; ``train_steps``: None = the config's
    epochs; ``retrieval_candidates`` / ``retrieval_config``: as ``fit_ours``' ``candidates``
    / ``config``; ``deterministic``: TF op determinism (reproducible runs)."""
    options = types.SimpleNamespace(**{k: v for k, v in locals().items()
                                       if k not in ("task", "seed")})
    with beauty_ours.op_determinism(deterministic):
        return _fit_ours_ranked(task, seed, options)


def _fit_ours_ranked(task, seed, o):
    # pylint: disable=import-outside-toplevel
    from benchmarks import baselines, protocol, shop_examples
    from trainer import features as F
    from trainer import ranking
    if not 0 < o.holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {o.holdout_fraction}")
    if o.negatives < 1:
        raise ValueError(f"negatives must be >= 1, got {o.negatives}")
    if o.transition_window < 1 or not 0 < o.transition_decay <= 1:
        raise ValueError("transition_window must be >= 1 and transition_decay in (0, 1], got "
                         f"{o.transition_window}, {o.transition_decay}")
    work_dir = o.work_dir or tempfile.mkdtemp(prefix="shoprec_beauty_rerank_")
    if beauty_ours.inside_repo(work_dir):
        raise ValueError(f"work_dir {work_dir} is inside the repository; the examples derive "
                         "from research-only data: use a folder outside it")
    seconds = {}
    start = time.time()
    retrieval, retrieval_info = _retrieval(task, seed, o.retrieval_export,
                                           o.retrieval_candidates, o.retrieval_config,
                                           os.path.join(work_dir, "retrieval"))
    seconds["retrieval"] = time.time() - start

    def candidates_of(stage_task, stage_retrieval):
        return Candidates(stage_retrieval, baselines.transition_scorer(
            stage_task, o.transition_window, o.transition_decay, normalize=False), o.top_n,
            o.transition_candidates)
    candidates = candidates_of(task, retrieval)
    earlier = None
    if o.earlier_stage:
        start = time.time()
        earlier = earlier_stage(task)
        earlier_retrieval, earlier_info = _retrieval(
            earlier, seed, o.earlier_retrieval_export, o.retrieval_candidates,
            o.retrieval_config, os.path.join(work_dir, "earlier_retrieval"))
        seconds["earlier_retrieval"] = time.time() - start

    start = time.time()
    rng = np.random.default_rng(seed)
    n_users = len(task.validation)
    holdout = np.zeros(n_users, bool)
    holdout[rng.permutation(n_users)[:max(1, int(round(o.holdout_fraction * n_users)))]] = True
    rows, hits = training_rows(task.validation.histories, task.validation.targets, candidates,
                               o.negatives, rng, task.batch_size)
    by_split = {F.TRAIN_SPLIT: [r for r in rows if not holdout[r[0]]],
                F.EVAL_SPLIT: [r for r in rows if holdout[r[0]]]}
    contexts = [(f"v{u}", h) for u, h in enumerate(task.validation.histories)]
    hits = {"validation": hits}
    if earlier is not None:
        # Every user's earlier-stage rows train the ranker: their targets are train items,
        # so the held-out users' validation targets stay unseen.
        early_rows, hits["earlier"] = training_rows(
            earlier.validation.histories, earlier.validation.targets,
            candidates_of(earlier, earlier_retrieval), o.negatives, rng, task.batch_size)
        offset = len(contexts)
        by_split[F.TRAIN_SPLIT] += [(row[0] + offset,) + tuple(row[1:]) for row in early_rows]
        contexts += [(f"e{u}", h) for u, h in enumerate(earlier.validation.histories)]
    raw = os.path.join(work_dir, "ranker_raw")
    counts = write_ranker_examples(task, contexts, by_split, raw)
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
    for c, candidate in enumerate(o.ranking_candidates):
        start = time.time()
        config = dict(BASE_RANKING_CONFIG, seed=seed, **(o.ranking_config or {}))
        config.update(candidate)
        args = shop_examples.trainer_fn_args(examples_dir, graph_dir,
                                             os.path.join(work_dir, f"ranker_run{c}"), config,
                                             o.train_steps)
        run = shop_examples.run_trainer(ranking.run_fn, args)
        seconds["ranker_train_and_export"] = (seconds.get("ranker_train_and_export", 0)
                                              + time.time() - start)
        start = time.time()
        reranked = RerankedScorer(candidates, run.export, task.items,
                                  config["score_features"])
        metrics = protocol.evaluate(reranked, held_set, task.n_items, task.batch_size)
        seconds["holdout_validate"] += time.time() - start
        runs.append({"config": config, "holdout_validation": metrics,
                     "ranker": {k: run.metrics.get(k) for k in ("click", "training",
                                                                 "num_eval_examples")}})
        if best is None or metrics["unfiltered"][o.select] > best[0]:
            best = (metrics["unfiltered"][o.select], c, reranked)
    info = {
        "retrieval": retrieval_info,
        "earlier_retrieval": earlier_info if earlier is not None else None,
        "ranker_rows": counts,
        "users_with_target_candidate": hits,
        "users": {"validation": n_users,
                  "earlier": len(earlier.validation) if earlier is not None else 0},
        "holdout_users": int(holdout.sum()),
        "holdout_validation_retrieval": retrieval_holdout, "selected": best[1],
        "ranker_runs": runs,
        "stage_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "work_dir": work_dir,
    }
    return Fitted(best[2], info, companions={"retrieval": retrieval},
                  trained_on_validation=True)
