"""The project's own retrieval model ("ours") and a zero-shot MiniLM text baseline on the
Beauty leave-one-out task.

``fit_ours`` runs the project's training code end to end on the leave-one-out train part:

1. raw examples in the pipeline's format (``pipeline/examples.py``): one clicked/purchased
   example per training target with the items before it as its history (most recent first,
   ``features.HISTORY_LENGTH`` at most, the user's order), the whole catalog (ASIN, title,
   brand, category path, price) as the catalog split, and the validation targets as the eval
   split (the trainer's own report only; never the test targets);
2. ``trainer.preprocessing`` with tf.Transform (``pipeline.in_process.transform``);
3. ``trainer.retrieval.run_fn`` with a TFX ``FnArgs`` (``text_mode`` "frozen", the pipeline's
   defaults otherwise, seeded);
4. evaluation **from the exported SavedModel** only: ``tf.saved_model.load``, candidate
   embeddings of every catalog item from its ``candidate_embedding`` signature, one query
   embedding per history from ``query_embedding`` (raw ASIN strings in), score = dot product.

With several candidate configurations (``candidates``) each is trained and the one with the
best validation NDCG@10 (unfiltered) is kept; the test split is never seen here.

The scorer receives histories only (the protocol's model interface), so the query side uses
the history, not a user-id embedding (``use_user_id`` false): a user is their history.

Everything written (examples, Transform output, exports) is derived from the research-only
Amazon data: it goes to a temporary folder outside the repository (``work_dir``).
"""
import contextlib
import json
import os
import tempfile
import time
import types

import numpy as np

from benchmarks import beauty_data, folders
from benchmarks.registry import Fitted
from pipeline.contract import spec
from pipeline.in_process import write_splits   # the pipeline's raw layout (also for beauty_rerank)
from trainer.candidates.sources import TextSimilaritySource


# Trainer config of "ours" on top of the retrieval trainer's defaults: the pipeline's text
# mode (frozen MiniLM); no user-id embedding (see the module docstring). Negatives stay
# in-batch: the full catalog softmax (`{"negatives": "catalog"}`) won on a 4,000-user subsample
# (validation N@10 .0346 vs .0297) but lost on all users (.0452 vs .0482) at 5x the training
# time (benchmarks/README.md).
BASE_CONFIG = {"text_mode": "frozen", "use_user_id": False}


def catalog_rows(items):
    """Item feature dicts (pipeline.examples.item_features) of every catalog item, in item
    index order, as the shop export maps them (ASIN ids, imputed prices, filled titles)."""
    from pipeline import examples  # pylint: disable=import-outside-toplevel
    prices, _ = beauty_data.shop_prices(items)
    return [examples.item_features({
        "item_id": items.asin[i], "title": beauty_data.shop_title(items, i),
        "description": "", "brand": items.brand[i],
        "categories": spec.CATEGORY_SEPARATOR.join(items.categories[i]), "price": float(prices[i]),
        "in_stock": True}) for i in range(len(items))]


def history_ids(asins, history, length=None):
    """A history (item indices, oldest first) -> ASINs, most recent first, padded with "" to
    ``features.HISTORY_LENGTH`` (the pipeline's history feature; items never repeat here)."""
    from trainer import features as F  # pylint: disable=import-outside-toplevel
    length = length or F.HISTORY_LENGTH
    recent = [asins[i] for i in np.asarray(history)[::-1][:length]]
    return recent + [""] * (length - len(recent))


def unit_example(user, history, item, rows, asins, timestamp):
    """A clicked + purchased raw example (pipeline format) of ``item`` for ``user`` after
    ``history`` (item indices, oldest first); ``rows``: catalog_rows."""
    from trainer import features as F  # pylint: disable=import-outside-toplevel
    from pipeline import examples  # pylint: disable=import-outside-toplevel
    unit = {F.USER_ID: user, F.HISTORY_ITEM_IDS: history_ids(asins, history),
            F.NUM_HISTORY: min(len(history), F.HISTORY_LENGTH), F.QUERY: "",
            F.TIMESTAMP: int(timestamp), F.ITEM_ID: asins[item], F.CLICKED: 1,
            F.ADDED_TO_CART: 1, F.PURCHASED: 1, F.RATING: 0.0, F.HAS_RATING: 0}
    if hasattr(examples, "user_activity"):        # slice feature of newer example formats
        unit[examples.USER_ACTIVITY] = examples.user_activity(len(history))
    return examples.join_item(unit, rows[item])


def write_raw_examples(task, raw_dir, min_history=0):
    """The leave-one-out train part as the pipeline's raw splits under ``raw_dir``
    (``Split-{train,eval,catalog}/data_tfrecord-00000.gz``).

    train: one example per position t >= ``min_history`` of each user's train sequence
    (target s[t], history s[:t]); eval: each validation target with its history; catalog:
    every item. Returns the example counts.
    """
    from pipeline import examples  # pylint: disable=import-outside-toplevel
    from trainer import features as F  # pylint: disable=import-outside-toplevel
    rows = catalog_rows(task.items)
    asins = list(task.items.asin)
    splits = {F.TRAIN_SPLIT: [], F.EVAL_SPLIT: [], F.CATALOG_SPLIT: []}
    for u, seq in enumerate(task.train):
        times = beauty_data.event_timestamps(len(seq) + 2, u)
        for t in range(min_history, len(seq)):
            splits[F.TRAIN_SPLIT].append(unit_example(f"u{u}", seq[:t], seq[t], rows, asins,
                                                      times[t]))
    for v, (hist, target) in enumerate(zip(task.validation.histories,
                                           task.validation.targets)):
        splits[F.EVAL_SPLIT].append(unit_example(f"v{v}", hist, int(target), rows, asins,
                                                 beauty_data.EXPORT_END_DAY.timestamp()))
    splits[F.CATALOG_SPLIT] = [examples.catalog_example(row) for row in rows]
    return write_splits(raw_dir, splits)


def prepare(task, work_dir, min_history=0, reuse=False):
    """Raw examples + tf.Transform output under ``work_dir``; a namespace the trainer test
    helpers accept (``transform_graph``, ``examples``, ``raw``) plus counts and seconds.
    ``reuse``: the output an earlier run left in ``work_dir`` (counts None)."""
    from pipeline import in_process as shop_examples  # pylint: disable=import-outside-toplevel
    graph_dir = os.path.join(work_dir, "transform_graph")
    if reuse and os.path.isdir(os.path.join(graph_dir, "transform_fn")):
        return types.SimpleNamespace(raw=os.path.join(work_dir, "raw"), transform_graph=graph_dir,
                                     examples=os.path.join(work_dir, "transformed"),
                                     counts=None, seconds={})
    seconds = {}
    start = time.time()
    raw = os.path.join(work_dir, "raw")
    counts = write_raw_examples(task, raw, min_history)
    seconds["examples"] = time.time() - start
    start = time.time()
    graph_dir, examples_dir = shop_examples.transform(raw, work_dir)
    seconds["transform"] = time.time() - start
    return types.SimpleNamespace(raw=raw, transform_graph=graph_dir, examples=examples_dir,
                                 counts=counts, seconds=seconds)


def train(prepared, out_dir, config, train_steps=None, reuse=False):
    """trainer.retrieval.run_fn with the FnArgs the TFX Trainer builds; returns the export
    dir and the trainer's metrics.json. ``reuse``: an export already in ``out_dir`` trained
    with the same config is returned as it is (re-measuring a model, not retraining it)."""
    # pylint: disable=import-outside-toplevel
    from pipeline import in_process as shop_examples
    from trainer import retrieval
    args = shop_examples.trainer_fn_args(prepared.examples, prepared.transform_graph, out_dir,
                                         dict(config), train_steps)
    metrics_path = os.path.join(args.model_run_dir, "metrics.json")
    if reuse and os.path.exists(os.path.join(args.serving_model_dir, "saved_model.pb")):
        with open(metrics_path, encoding="utf-8") as f:
            metrics = json.load(f)
        trained = {k: v for k, v in metrics.get("config", {}).items() if k in config}
        wanted = {k: v for k, v in config.items() if k in trained}
        if trained != wanted:
            raise ValueError(f"reuse_exports: the export in {out_dir} was trained with "
                             f"{trained}, not {wanted}")
        return types.SimpleNamespace(args=args, metrics=metrics,
                                     export=args.serving_model_dir, reused=True)
    return shop_examples.run_trainer(retrieval.run_fn, args)


class ExportedScorer:
    """Scores from an exported retrieval SavedModel: ``candidate_embedding`` of every catalog
    item once, ``query_embedding`` per history batch, score = dot product."""

    def __init__(self, export_dir, items, batch_size=1024):
        # pylint: disable=import-outside-toplevel
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (the export's tokenizer ops)
        self.tf = tf
        self.asins = list(items.asin)
        self.batch_size = batch_size
        self.model = tf.saved_model.load(export_dir)
        query = self.model.signatures["query_embedding"]
        candidate = self.model.signatures["candidate_embedding"]
        self._query = query
        rows = catalog_rows(items)
        parts = []
        for begin in range(0, len(rows), batch_size):
            batch = rows[begin:begin + batch_size]
            col = lambda key, dtype=tf.string: tf.constant([r[key] for r in batch], dtype)
            parts.append(candidate(
                item_id=col("item_id"), title=col("title"), description=col("description"),
                brand=col("brand"), category=col("category"), price=col("price", tf.float32),
                in_stock=col("in_stock", tf.int64))["embedding"].numpy())
        self.candidates = np.concatenate(parts).astype(np.float32)     # [n_items, D]

    def queries(self, histories):
        tf = self.tf
        out = []
        for begin in range(0, len(histories), self.batch_size):
            batch = histories[begin:begin + self.batch_size]
            ids = tf.constant([history_ids(self.asins, h) for h in batch], tf.string)
            empty = tf.constant([""] * len(batch), tf.string)
            out.append(self._query(user_id=empty, history_item_ids=ids,
                                   query=empty)["embedding"].numpy())
        return np.concatenate(out).astype(np.float32)

    def __call__(self, histories):
        return self.queries(histories) @ self.candidates.T


def fit_ours(task, seed, candidates=({},), train_steps=None,
             config=None, work_dir="", min_history=0, deterministic=True,
             select="ndcg@10", reuse_exports=False):
    """The project's retrieval model (see the module docstring).

    ``config``: RetrievalConfig keys over ``BASE_CONFIG`` (seed = the benchmark seed);
    ``candidates``: config variants (each may also set "train_steps"), selected on the
    validation ``select`` metric (unfiltered); ``train_steps``: None = the config's epochs;
    ``work_dir``: where examples, Transform output and exports go ("" = a new temp dir,
    never inside the repository); ``min_history``: skip training targets with fewer
    preceding items; ``deterministic``: TF op determinism (reproducible runs);
    ``reuse_exports``: measure the exports an earlier run left in ``work_dir`` (same configs)
    instead of training again (the row's info says so).
    """
    with op_determinism(deterministic):
        return _fit_ours(task, seed, candidates, train_steps, config, work_dir, min_history,
                         select, reuse_exports)


@contextlib.contextmanager
def op_determinism(enabled=True):
    """TF op determinism inside the block (when ``enabled``), restored afterwards: it is a
    process-wide switch and tests share a process."""
    # pylint: disable-next=import-outside-toplevel
    from tensorflow.python.framework import config as tf_config
    was_deterministic = tf_config.is_op_determinism_enabled()
    if enabled:
        tf_config.enable_op_determinism()
    try:
        yield
    finally:
        if not was_deterministic:
            tf_config.disable_op_determinism()


def _fit_ours(task, seed, candidates, train_steps, config, work_dir, min_history, select,
              reuse_exports=False):
    work_dir = work_dir or tempfile.mkdtemp(prefix="shoprec_beauty_ours_")
    if folders.inside_repo(work_dir):
        raise ValueError(f"work_dir {work_dir} is inside the repository; the examples derive "
                         "from research-only data: use a folder outside it")
    os.makedirs(work_dir, exist_ok=True)
    seconds = {}
    prepared = prepare(task, work_dir, min_history, reuse_exports)
    seconds.update(prepared.seconds)
    runs, best = [], None
    for c, candidate in enumerate(candidates):
        candidate = dict(candidate)
        steps = candidate.pop("train_steps", train_steps)
        cfg = dict(BASE_CONFIG, seed=seed, **(config or {}))
        cfg.update(candidate)
        start = time.time()
        run = train(prepared, os.path.join(work_dir, f"run{c}"), cfg, steps, reuse_exports)
        train_seconds = time.time() - start
        start = time.time()
        scorer = ExportedScorer(run.export, task.items, task.batch_size)
        load_seconds = time.time() - start
        start = time.time()
        metrics = task.validate(scorer)
        validate_seconds = time.time() - start
        record = {"config": cfg, "train_steps": steps,
                  "validation": {v: metrics[v] for v in ("unfiltered", "filtered")},
                  "trainer": {k: run.metrics.get(k) for k in ("training", "text",
                                                              "eval_seconds",
                                                              "early_stopping")},
                  "seconds": {"train_and_export": round(train_seconds, 1),
                              "load_and_embed_catalog": round(load_seconds, 1),
                              "validate": round(validate_seconds, 1)},
                  "export": run.export, "reused_export": getattr(run, "reused", False)}
        runs.append(record)
        score = metrics["unfiltered"][select]
        if best is None or score > best[0]:
            best = (score, c, scorer)
    for key in ("train_and_export", "load_and_embed_catalog", "validate"):
        seconds[key] = round(sum(r["seconds"][key] for r in runs), 1)
    info = {"selected": best[1], "runs": runs, "examples": prepared.counts,
            "stage_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "work_dir": work_dir}
    return Fitted(best[2], info)


def text_embeddings(texts, seq_len=32):
    """Frozen MiniLM embeddings (L2-normalised) of ``texts``: float32 [N, 384]."""
    from trainer.text import encoder as text_encoder  # pylint: disable=import-outside-toplevel
    from trainer.config import RetrievalConfig  # pylint: disable=import-outside-toplevel
    cache = RetrievalConfig(text_seq_len=seq_len).encoder_cache_dir()
    paths = text_encoder.ensure_text_encoder(cache, seq_len)
    return text_encoder.encode_texts(texts, paths)


def item_texts(items, text="title"):
    """Each item's text for the MiniLM encoder: "title", or "item" = "title | brand |
    category path" (trainer.text.cache.item_text, as the trainer reads it)."""
    titles = [beauty_data.shop_title(items, i) for i in range(len(items))]
    if text == "title":
        return titles
    if text == "item":
        from trainer.text.cache import item_text  # pylint: disable=import-outside-toplevel
        paths = [spec.CATEGORY_SEPARATOR.join(levels) for levels in items.categories]
        return [t.decode("utf-8") for t in item_text(titles, list(items.brand), paths).numpy()]
    raise ValueError(f"text must be 'title' or 'item', got {text!r}")


def fit_zero_shot_text(task, seed, text="title", windows=(1, 3, 10),
                       decays=(0.3, 0.5, 0.8), select="ndcg@10"):
    """Zero-shot MiniLM: score(item) = cosine(sum_k decay**k * e(history[-1-k]), e(item))
    over the last ``window`` history items, e = frozen MiniLM embedding of the item's
    ``text`` ("title", or "item" = "title | brand | category path" as the trainer reads
    it). ``window`` and ``decay`` are chosen on the validation ``select`` metric
    (unfiltered)."""
    start = time.time()
    emb = text_embeddings(item_texts(task.items, text))
    encode_seconds = time.time() - start
    best, curve = None, {}
    for window in windows:
        for decay in (decays if window > 1 else (1.0,)):
            score = task.validate(TextSimilaritySource(emb, window, decay),
                                  variants=("unfiltered",))[
                "unfiltered"][select]
            curve[f"window={window},decay={decay}"] = score
            if best is None or score > best[0]:
                best = (score, window, decay)
    return Fitted(TextSimilaritySource(emb, best[1], best[2]), {
        "window": best[1], "decay": best[2], f"validation_{select}": curve,
        "encode_seconds": round(encode_seconds, 1)})
