"""Two-stage "ours_ranked" on the Beauty leave-one-out task: the project's retrieval model
("ours", ``beauty_ours.fit_ours``) proposes its top ``top_n`` items, item-to-item
transitions, MiniLM title similarity and co-occurrence add their best others, and the
project's ranking model (``trainer.ranking.run_fn``: DCN-v2 + text features + those scores
and the user's brand affinity as ``external_features``) re-orders them.

Candidates come from the product's candidate stage (``trainer.candidates``, configured by
``candidate_stage``): per user, the retrieval top ``top_n`` (ties by item index), then, in
turn, the best items not yet candidates of each further source, all fitted on the train
sequences only, like every baseline:

- ``transition_candidates`` from the transitions model (``TransitionSource``: the last
  ``transition_window`` history items, weight ``transition_decay ** age``);
- ``text_candidates`` from MiniLM title similarity (``TextSimilaritySource``);
- ``cooccurrence_candidates`` from order-free co-occurrence (``CooccurrenceSource``).

With ``exclude_history`` the user's own items are never candidates (exclusion rule
"history"; Beauty has no repeated items). Each candidate carries the external features
``retrieval_score`` (the retrieval score minus that of the user's best candidate), each
source's score (``transition_score`` and ``cooccurrence_score``: log1p of the counts;
``text_score``: the cosine), ``history_brand_share`` and ``last_item_same_brand`` (brand
affinity: the history encoder sees item ids, not their brands, and Beauty buyers stay with
brands).
Transitions carry the sequential signal the retrieval towers lack (order-aware pooling, but
no next-item objective): alone they beat retrieval on Beauty (test N@10 .0459 vs .0349), and
on held-out validation users a logistic regression on the two scores alone re-ranks the
retrieval top 100 from N@10 .0458 to .0629. The text and co-occurrence sources raise the
share of validation targets among the candidates from 31 % to 38 %.

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
  the candidate's external features;
- a seeded ``holdout_fraction`` of the users is kept out of ranker training: their rows are
  the trainer's eval split (AUC), and their NDCG@10 before / after re-ranking is the
  selection signal (among ``ranking_candidates`` and, with ``ensemble``, the mean score of
  all of them) recorded in ``info`` (the only honest validation number: the validation
  targets of the other users are ranker training data, so ``beauty.run`` does not report a
  validation row for this model).

Scoring (validation never, test): retrieval scores of every item from the exported
retrieval SavedModel; the candidates are re-scored by the exported ranking SavedModel's
``score`` signature (raw features + the external features) and placed above every other item
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

from benchmarks import beauty_data, beauty_ours, folders
from benchmarks.registry import Fitted
from trainer.candidates import (CandidateStage, CooccurrenceSource, RetrievalSource,
                                TextSimilaritySource, TransitionSource, brand_codes)

# Ranking trainer config on top of RankingConfig's defaults. Beauty has no search queries
# (no query-word match), and the scorer sees histories only (no user-id embedding); click and
# purchase are the same event here, so one head trains and scores. With text
# (``text_window``), "text_score" joins the external features.
BASE_RANKING_CONFIG = {
    "external_features": ["retrieval_score", "transition_score", "history_brand_share",
                          "last_item_same_brand"], "use_user_id": False, "use_text": False,
    "loss_weights": {"click": 1.0, "purchase": 0.0, "rating": 0.0},
    "score_weights": {"click": 1.0, "purchase": 0.0, "rating": 0.0},
}
# Items outside the re-ranked top-N sit this far below the ranker's scores (in [0, 1]).
_BELOW = 1.0e4


def candidate_stage(task, retrieval, o, seconds):
    """The product's candidate stage (``trainer.candidates``) as ``fit_ours_ranked``'s
    options ``o`` configure it: ``retrieval`` (a scorer) first, then transitions, text
    similarity of the MiniLM title embeddings (with ``text_window``) and co-occurrence (with
    ``cooccurrence_window``), each fitted on the train sequences. Adds the seconds spent
    encoding the titles to ``seconds``."""
    quotas = [(RetrievalSource(retrieval), o.top_n),
              (TransitionSource.fit(task.train, task.n_items, o.transition_window,
                                    o.transition_decay), o.transition_candidates)]
    if o.text_window:
        start = time.time()
        quotas.append((TextSimilaritySource(
            beauty_ours.text_embeddings(beauty_ours.item_texts(task.items, "title")),
            o.text_window, o.text_decay), o.text_candidates))
        seconds["text_embeddings"] = time.time() - start
    if o.cooccurrence_window:
        quotas.append((CooccurrenceSource.fit(task.train, task.n_items, o.cooccurrence_window),
                       o.cooccurrence_candidates))
    return CandidateStage(quotas, brand_codes(task.items.brand),
                          exclude="history" if o.exclude_history else "none")


def training_rows(histories, targets, candidates, negatives, rng, batch_size=1024):
    """Ranker rows of the module docstring from ``candidates`` (a ``CandidateStage``): list
    of (user index, item index, label, {external feature: value}) and the number of users
    whose target was a candidate."""
    rows, hits = [], 0
    for begin in range(0, len(targets), batch_size):
        found = candidates(histories[begin:begin + batch_size])
        features = found.features
        for j, row in enumerate(found.items):
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


def write_ranker_examples(task, rows_by_split, raw_dir, names):
    """Raw splits for the ranking trainer: train / eval rows (pipeline format + the external
    features ``names``; a row's user index is a validation user) and the catalog."""
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
            unit = beauty_ours.unit_example(f"v{u}", task.validation.histories[u], item,
                                            items, asins, when)
            unit.update({F.CLICKED: label, F.ADDED_TO_CART: label, F.PURCHASED: label},
                        **scores)
            out.append(unit)
        splits[split] = out
    splits[F.CATALOG_SPLIT] = [
        dict(examples.catalog_example(row), **{k: 0.0 for k in names})
        for row in items]
    return beauty_ours.write_splits(raw_dir, splits)


def raw_spec(names):
    """The pipeline's raw feature spec plus the float external features ``names``."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from pipeline import in_process as shop_examples  # pylint: disable=import-outside-toplevel
    return dict(shop_examples.raw_feature_spec(),
                **{k: tf.io.FixedLenFeature([1], tf.float32) for k in names})


def load_ranker(export, features):
    """(the exported ranking model's ``score`` signature, the external features it takes)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    return tf.saved_model.load(export).signatures["score"], tuple(features)


class RerankedScorer:
    """Retrieval scores of every item, the candidates re-scored by the exported ranking
    models (the mean of their combined ``score``s) and moved above the rest (module
    docstring). ``rankers``: ``load_ranker`` results."""

    def __init__(self, candidates, rankers, items, users_per_call=64):
        # pylint: disable=import-outside-toplevel
        import tensorflow as tf
        self.tf = tf
        self.candidates, self.users_per_call = candidates, users_per_call
        self.rankers = list(rankers)
        rows = beauty_ours.catalog_rows(items)
        self.asins = np.asarray(items.asin, dtype=object)
        self.asin_list = list(items.asin)
        self.columns = {key: np.asarray([r[key] for r in rows], dtype=dtype)
                        for key, dtype in (("brand", object), ("category", object),
                                           ("price", np.float32), ("in_stock", np.int64))}

    def rank_scores(self, histories, candidates, features):
        """The rankers' mean combined score of ``candidates`` [U, N] for each history, given
        their external features {name: [U, N]}: [U, N]."""
        tf = self.tf
        users, n = candidates.shape
        flat = candidates.reshape(-1)
        history = np.repeat(np.asarray([beauty_ours.history_ids(self.asin_list, h)
                                        for h in histories], dtype=object), n, axis=0)
        inputs = dict(
            user_id=tf.constant([""] * len(flat)), history_item_ids=tf.constant(history),
            item_id=tf.constant(self.asins[flat].tolist()),
            brand=tf.constant(self.columns["brand"][flat].tolist()),
            category=tf.constant(self.columns["category"][flat].tolist()),
            price=tf.constant(self.columns["price"][flat]),
            in_stock=tf.constant(self.columns["in_stock"][flat]))
        total = np.zeros(len(flat), np.float64)
        for score_fn, names in self.rankers:
            total += score_fn(**inputs, **{k: tf.constant(features[k].reshape(-1), tf.float32)
                                           for k in names})["score"].numpy()
        return (total / len(self.rankers)).reshape(users, n)

    def __call__(self, histories):
        found = self.candidates(histories)
        out, top = found.scores - _BELOW, found.items
        for begin in range(0, len(histories), self.users_per_call):
            part = slice(begin, begin + self.users_per_call)
            ranked = self.rank_scores(histories[part], top[part],
                                      {k: v[part] for k, v in found.features.items()})
            np.put_along_axis(out[part], top[part], ranked.astype(np.float64), axis=1)
        return out


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
                    ranking_config=None, ranking_candidates=({},), ranker_seeds=5,
                    train_steps=None, retrieval_export="", retrieval_candidates=({},),
                    retrieval_config=None, ensemble=True, exclude_history=True,
                    text_candidates=50, text_window=10, text_decay=0.5,
                    cooccurrence_candidates=50, cooccurrence_window=3, work_dir="",
                    select="ndcg@10", deterministic=True):
    """Retrieval (``fit_ours``, or the SavedModel at ``retrieval_export``) + transitions +
    the ranking trainer on their candidates (module docstring). ``top_n``: retrieval
    candidates; ``transition_candidates``: further candidates from the transitions ranking
    (0: retrieval's only; the transition score stays a feature); ``transition_window`` /
    ``transition_decay``: the transitions model (the decay transitions3 selects on
    validation); ``ranking_config``: RankingConfig keys over ``BASE_RANKING_CONFIG`` (seed =
    the benchmark seed); ``ranking_candidates``: variants of it, each trained, the best
    held-out ``select`` (unfiltered, re-ranked) kept, or with ``ensemble`` the mean of all of
    them if that scores better; ``ranker_seeds``: each variant is trained with seeds seed,
    seed + 1, ... (one run each); ``train_steps``: None = the config's epochs;
    ``retrieval_candidates`` / ``retrieval_config``: as ``fit_ours``' ``candidates`` /
    ``config``; ``exclude_history``: the user's history items are never candidates
    (exclusion rule "history"); ``text_window`` / ``text_decay``: the text similarity of the
    candidates (``TextSimilaritySource`` over frozen MiniLM title embeddings; its score is
    the ``text_score`` feature; 0 = no text), whose best ``text_candidates`` new items join
    the candidates; ``cooccurrence_window``: the co-occurrence model
    (``CooccurrenceSource``, fitted on the train sequences; its log count is the
    ``cooccurrence_score`` feature; 0 = none), whose best ``cooccurrence_candidates`` new items
    join the candidates last; ``deterministic``: TF op determinism (reproducible runs)."""
    options = types.SimpleNamespace(**{k: v for k, v in locals().items()
                                       if k not in ("task", "seed")})
    with beauty_ours.op_determinism(deterministic):
        return _fit_ours_ranked(task, seed, options)


def _fit_ours_ranked(task, seed, o):
    # pylint: disable=import-outside-toplevel
    from benchmarks import protocol
    from pipeline import in_process as shop_examples
    from trainer import features as F
    from trainer import ranking
    if not 0 < o.holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {o.holdout_fraction}")
    if o.negatives < 1 or o.ranker_seeds < 1:
        raise ValueError(f"negatives and ranker_seeds must be >= 1, got {o.negatives}, "
                         f"{o.ranker_seeds}")
    if o.transition_window < 1 or not 0 < o.transition_decay <= 1:
        raise ValueError("transition_window must be >= 1 and transition_decay in (0, 1], got "
                         f"{o.transition_window}, {o.transition_decay}")
    if o.text_window < 0 or not 0 < o.text_decay <= 1:
        raise ValueError("text_window must be >= 0 and text_decay in (0, 1], got "
                         f"{o.text_window}, {o.text_decay}")
    for kind in ("text", "cooccurrence"):
        if getattr(o, f"{kind}_candidates") and not getattr(o, f"{kind}_window") > 0:
            raise ValueError(f"{kind}_candidates needs {kind}_window > 0")
    wanted = o.top_n + o.transition_candidates + o.text_candidates + o.cooccurrence_candidates
    if o.top_n < 1 or wanted > task.n_items:
        raise ValueError(f"top_n ({o.top_n}, >= 1) + transition, text and co-occurrence "
                         f"candidates = {wanted} must not exceed the catalog's {task.n_items} "
                         "items")
    work_dir = o.work_dir or tempfile.mkdtemp(prefix="shoprec_beauty_rerank_")
    if folders.inside_repo(work_dir):
        raise ValueError(f"work_dir {work_dir} is inside the repository; the examples derive "
                         "from research-only data: use a folder outside it")
    seconds = {}
    start = time.time()
    retrieval, retrieval_info = _retrieval(task, seed, o.retrieval_export,
                                           o.retrieval_candidates, o.retrieval_config,
                                           os.path.join(work_dir, "retrieval"))
    seconds["retrieval"] = time.time() - start

    candidates = candidate_stage(task, retrieval, o, seconds)
    names = BASE_RANKING_CONFIG["external_features"] + [
        x.name for x in candidates.sources
        if x.name not in BASE_RANKING_CONFIG["external_features"]]

    start = time.time()
    rng = np.random.default_rng(seed)
    n_users = len(task.validation)
    holdout = np.zeros(n_users, bool)
    holdout[rng.permutation(n_users)[:max(1, int(round(o.holdout_fraction * n_users)))]] = True
    rows, hits = training_rows(task.validation.histories, task.validation.targets, candidates,
                               o.negatives, rng, task.batch_size)
    by_split = {F.TRAIN_SPLIT: [r for r in rows if not holdout[r[0]]],
                F.EVAL_SPLIT: [r for r in rows if holdout[r[0]]]}
    raw = os.path.join(work_dir, "ranker_raw")
    counts = write_ranker_examples(task, by_split, raw, names)
    seconds["ranker_examples"] = time.time() - start
    start = time.time()
    transform_dir = os.path.join(work_dir, "ranker")
    os.makedirs(transform_dir, exist_ok=True)
    graph_dir, examples_dir = shop_examples.transform(raw, transform_dir, raw_spec=raw_spec(names))
    seconds["ranker_transform"] = time.time() - start

    held = np.flatnonzero(holdout)
    held_set = protocol.EvalSet([task.validation.histories[u] for u in held],
                                task.validation.targets[held])
    start = time.time()
    retrieval_holdout = protocol.evaluate(retrieval, held_set, task.n_items, task.batch_size)
    seconds["holdout_validate"] = time.time() - start
    runs, rankers, best = [], [], None
    variants = [{**BASE_RANKING_CONFIG, "external_features": names, "seed": seed + s,
                 **(o.ranking_config or {}),
                 **candidate} for candidate in o.ranking_candidates
                for s in range(o.ranker_seeds)]
    for c, config in enumerate(variants):
        start = time.time()
        args = shop_examples.trainer_fn_args(examples_dir, graph_dir,
                                             os.path.join(work_dir, f"ranker_run{c}"), config,
                                             o.train_steps)
        run = shop_examples.run_trainer(ranking.run_fn, args)
        seconds["ranker_train_and_export"] = (seconds.get("ranker_train_and_export", 0)
                                              + time.time() - start)
        rankers.append(load_ranker(run.export, config["external_features"]))
        start = time.time()
        reranked = RerankedScorer(candidates, rankers[-1:], task.items)
        metrics = protocol.evaluate(reranked, held_set, task.n_items, task.batch_size)
        seconds["holdout_validate"] += time.time() - start
        runs.append({"config": config, "holdout_validation": metrics,
                     "ranker": {k: run.metrics.get(k) for k in ("click", "training",
                                                                 "num_eval_examples")}})
        if best is None or metrics["unfiltered"][o.select] > best[0]:
            best = (metrics["unfiltered"][o.select], c, reranked)
    ensemble = None
    if o.ensemble and len(rankers) > 1:
        # The mean score of every ranker run, a candidate like each single run.
        start = time.time()
        reranked = RerankedScorer(candidates, rankers, task.items)
        ensemble = protocol.evaluate(reranked, held_set, task.n_items, task.batch_size)
        seconds["holdout_validate"] += time.time() - start
        if ensemble["unfiltered"][o.select] > best[0]:
            best = (ensemble["unfiltered"][o.select], "ensemble", reranked)
    info = {
        "retrieval": retrieval_info, "ranker_rows": counts,
        "validation_users_with_target_candidate": hits, "validation_users": n_users,
        "holdout_users": int(holdout.sum()),
        "holdout_validation_retrieval": retrieval_holdout, "selected": best[1],
        "ranker_runs": runs, "holdout_validation_ensemble": ensemble,
        "stage_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "work_dir": work_dir,
    }
    return Fitted(best[2], info, companions={"retrieval": retrieval},
                  trained_on_validation=True)
