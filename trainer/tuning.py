"""Hyper-parameter search for the retrieval and the ranking model: the TFX `Tuner` component's
`tuner_fn`s (KerasTuner), and how the best values reach the trainers.

Pipeline wiring (pipeline/pipeline.py, `PipelineConfig.tuning`): `Tuner(tuner_fn=
"trainer.tuning.retrieval_tuner_fn" | "trainer.tuning.ranking_tuner_fn", examples=<the
trainer's examples>, transform_graph=..., train_args=TrainArgs(num_steps=<steps per trial>),
custom_config=tuner_custom_config(...))`; the trainer then gets `hyperparameters=
tuner.outputs["best_hyperparameters"]` and its run_fn applies them over its config
(`apply_hyperparameters`), logs them and records them in metrics.json `hyperparameters`.

A trial is the trainer's own run_fn (the project's model, input pipeline and evaluation) with
the trial's values over the trainer's custom_config, `steps` training steps and no export,
on a **holdout of the train split**: a seeded `holdout_percent` of the train examples,
grouped by user context (two-stage rows of one click stay together), is the trial's
validation data and the rest its training data. The TFX eval split is never read, so the
Evaluator's blessing numbers stay honest. Objectives: retrieval Recall@K (K = the largest of
`eval_ks`) over the full catalog on the holdout's clicks; ranking click AUC on the holdout.
KerasTuner's `RandomSearch` oracle samples the values (`BayesianOptimization` with
`algorithm` "bayesian"); the search space is `SEARCH_SPACES`, each range around the config's
current value, which is the space's default.
"""
import json
import os
import zlib
from typing import Any, Dict, Mapping, Optional, Tuple

from absl import logging

RETRIEVAL, RANKING = "retrieval", "ranking"
MODELS = (RETRIEVAL, RANKING)
ALGORITHMS = ("random", "bayesian")

# name -> (kind, range or choices); every name is a key of the model's trainer config.
# "float_log": sampled log-uniformly in [low, high]; "choice": one of the values (hidden
# layers as "128x64" strings: KerasTuner's choices are scalars).
SEARCH_SPACES = {
    RETRIEVAL: {
        "learning_rate": ("float_log", (1e-3, 3e-2)),
        "embedding_dim": ("choice", (32, 64, 128)),
        "temperature": ("float_log", (0.03, 0.3)),
    },
    RANKING: {
        "learning_rate": ("float_log", (1e-3, 3e-2)),
        "hidden_units": ("choice", ("64x32", "128x64", "256x128")),
        "embedding_l2": ("float_log", (1e-5, 1e-2)),
    },
}

# Tuner custom_config keys (besides "trainer": the trainer's own custom_config).
DEFAULTS = {"max_trials": 8, "holdout_percent": 15, "seed": 42, "algorithm": "random"}
ORACLE_SEED_OFFSET = {RETRIEVAL: 0, RANKING: 1}
HOLDOUT_DIR = "holdout"
METRICS_FILE = "metrics.json"


def tuner_custom_config(trainer_config: Mapping[str, Any], max_trials: int,
                        holdout_percent: int, seed: int,
                        algorithm: str = "random") -> Dict[str, Any]:
    """The Tuner component's custom_config: the trainer's custom_config under "trainer" and
    the search's own settings."""
    return {"trainer": dict(trainer_config), "max_trials": int(max_trials),
            "holdout_percent": int(holdout_percent), "seed": int(seed), "algorithm": algorithm}


def _encode(name: str, value: Any) -> Any:
    """A config value -> its form in the search space (hidden layers as "128x64")."""
    if name == "hidden_units":
        return "x".join(str(int(u)) for u in value)
    return value


def _decode(name: str, value: Any) -> Any:
    """A search-space value -> the trainer config's form."""
    if name == "hidden_units":
        return [int(u) for u in str(value).split("x")]
    return value


def hyperparameters(model: str, trainer_config: Mapping[str, Any]):
    """KerasTuner HyperParameters of `model`'s search space; each default is the config's
    current value (clamped into the range), so the space is centred on what runs untuned."""
    import keras_tuner  # pylint: disable=import-outside-toplevel
    config = _config_class(model).from_custom_config(trainer_config)
    hp = keras_tuner.HyperParameters()
    for name, (kind, values) in SEARCH_SPACES[model].items():
        current = _encode(name, getattr(config, name))
        if kind == "float_log":
            low, high = values
            hp.Float(name, low, high, sampling="log",
                     default=min(max(float(current), low), high))
        else:
            hp.Choice(name, list(values),
                      default=current if current in values else values[len(values) // 2])
    return hp


def _config_class(model: str):
    # pylint: disable=import-outside-toplevel
    from trainer.config import RankingConfig, RetrievalConfig
    if model not in MODELS:
        raise ValueError(f"tuning: model must be one of {list(MODELS)}, got {model!r}")
    return RetrievalConfig if model == RETRIEVAL else RankingConfig


def apply_hyperparameters(model: str, custom_config: Optional[Mapping[str, Any]],
                          given: Optional[Mapping[str, Any]]
                          ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(custom_config with the tuned values over it, the applied values in config form).

    `given`: the Trainer's `fn_args.hyperparameters` (KerasTuner's HyperParameters config,
    {"space": [...], "values": {...}}, as the Tuner's best_hyperparameters artifact holds
    it), or a plain {name: value} mapping; None or empty = nothing to apply. Names outside
    `model`'s search space are an error (a retrieval Tuner's output wired to the ranking
    Trainer, say)."""
    custom = dict(custom_config or {})
    if not given:
        return custom, {}
    values = dict(given.get("values", given)) if isinstance(given, Mapping) else None
    if values is None:
        raise ValueError(f"{model}: hyperparameters must be a mapping, got {given!r}")
    unknown = sorted(set(values) - set(SEARCH_SPACES[model]))
    if unknown:
        raise ValueError(f"{model}: hyperparameters {unknown} are not in the {model} search "
                         f"space {sorted(SEARCH_SPACES[model])} (trainer.tuning.SEARCH_SPACES)")
    applied = {name: _decode(name, value) for name, value in sorted(values.items())}
    custom.update(applied)
    return custom, applied


def _group_key(example) -> bytes:
    """The grouping key of a transformed example: its context id (two-stage rows), else its
    user side (user, history, search text: units of one context share them)."""
    # pylint: disable=import-outside-toplevel
    from trainer import features as F
    feature = example.features.feature
    if F.CONTEXT_ID in feature:
        return b"c" + feature[F.CONTEXT_ID].SerializeToString()
    return b"u" + b"|".join(feature[key].SerializeToString() if key in feature else b""
                            for key in (F.idx(F.USER_ID), F.idx(F.HISTORY_ITEM_IDS), F.QUERY))


def holdout_splits(train_files, out_dir: str, percent: int, seed: int) -> Dict[str, Any]:
    """Splits the train examples into `out_dir/Split-train` and `out_dir/Split-eval` (the
    trials' validation data: `percent` % of the user contexts, chosen by a seeded hash) and
    copies the catalog split next to them (the retrieval trainer reads it there). Reused when
    `out_dir` already holds a finished split. Returns the example counts."""
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from trainer import data
    from trainer import features as F
    done = os.path.join(out_dir, "holdout.json")
    if tf.io.gfile.exists(done):
        with tf.io.gfile.GFile(done) as f:
            return json.load(f)
    if not 0 < percent < 100:
        raise ValueError(f"tuning: holdout_percent must be in (0, 100), got {percent}")
    salt = str(seed).encode()
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    counts = {F.TRAIN_SPLIT: 0, F.EVAL_SPLIT: 0}
    paths = {split: os.path.join(out_dir, f"Split-{split}", "data_tfrecord-00000.gz")
             for split in counts}
    for path in paths.values():
        tf.io.gfile.makedirs(os.path.dirname(path))
    files = data._files(train_files)  # pylint: disable=protected-access
    with tf.io.TFRecordWriter(paths[F.TRAIN_SPLIT], options) as train, \
            tf.io.TFRecordWriter(paths[F.EVAL_SPLIT], options) as holdout:
        for record in tf.data.TFRecordDataset(
                files, compression_type=data._compression(files[0])):  # pylint: disable=protected-access
            raw = record.numpy()
            key = _group_key(tf.train.Example.FromString(raw))
            split = F.EVAL_SPLIT if zlib.crc32(salt + key) % 100 < percent else F.TRAIN_SPLIT
            (holdout if split == F.EVAL_SPLIT else train).write(raw)
            counts[split] += 1
    if not counts[F.EVAL_SPLIT] or not counts[F.TRAIN_SPLIT]:
        raise ValueError(f"tuning: the holdout of {percent} % left a side empty: {counts}")
    catalog_dir = os.path.join(out_dir, f"Split-{F.CATALOG_SPLIT}")
    tf.io.gfile.makedirs(catalog_dir)
    for i, path in enumerate(data._files(data.catalog_patterns(train_files))):  # pylint: disable=protected-access
        tf.io.gfile.copy(path, os.path.join(catalog_dir, f"{i:05d}-{os.path.basename(path)}"),
                         overwrite=True)
    report = {"examples": counts, "holdout_percent": percent, "seed": seed}
    with tf.io.gfile.GFile(done, "w") as f:
        json.dump(report, f)
    logging.info("tuning: holdout of the train split %s", report)
    return report


def objective_name(model: str, trainer_config: Mapping[str, Any]) -> str:
    """The trials' objective (maximised): retrieval recall@K with the largest eval K,
    ranking click_auc."""
    if model == RETRIEVAL:
        config = _config_class(model).from_custom_config(trainer_config)
        return f"recall@{max(config.eval_ks)}"
    return "click_auc"


def objective_value(model: str, name: str, metrics: Mapping[str, Any]) -> float:
    """The objective from a trial's metrics.json (AUC None, one class only: 0.5)."""
    if model == RETRIEVAL:
        return float(metrics["model"][name])
    value = metrics["click"]["auc"]
    return 0.5 if value is None else float(value)


def trial_config(model: str, trainer_config: Mapping[str, Any],
                 values: Mapping[str, Any]) -> Dict[str, Any]:
    """A trial's trainer custom_config: the trial's values over the trainer's; retrieval
    trials fit no item-to-item tables (they are exported, not trained)."""
    custom, _ = apply_hyperparameters(model, trainer_config, values)
    if model == RETRIEVAL:
        custom["related_items"] = 0
    return custom


def _make_tuner_class():
    import keras_tuner  # pylint: disable=import-outside-toplevel

    class TrainerTuner(keras_tuner.Tuner):
        """KerasTuner Tuner whose trial is the project's trainer run_fn (see the module doc):
        no Keras hypermodel, so `run_trial` builds the trial's config from its values."""

        def __init__(self, model, trainer_config, trial_fn_args, objective, **kwargs):
            super().__init__(hypermodel=None, **kwargs)
            self.model_kind = model
            self.trainer_config = dict(trainer_config)
            self.trial_fn_args = trial_fn_args
            self.objective_key = objective

        def run_trial(self, trial, *args, **kwargs):  # pylint: disable=unused-argument
            values = dict(trial.hyperparameters.values)
            out = os.path.join(self.project_dir, f"trial_{trial.trial_id}")
            fn_args = _evolve(
                self.trial_fn_args, working_dir=out, serving_model_dir="",
                model_run_dir=os.path.join(out, "model_run"),
                custom_config=trial_config(self.model_kind, self.trainer_config, values),
                hyperparameters=None)
            run_fn = _run_fn(self.model_kind)
            logging.info("tuning %s: trial %s with %s", self.model_kind, trial.trial_id,
                         values)
            run_fn(fn_args)
            import tensorflow as tf  # pylint: disable=import-outside-toplevel
            with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, METRICS_FILE)) as f:
                metrics = json.load(f)
            value = objective_value(self.model_kind, self.objective_key, metrics)
            logging.info("tuning %s: trial %s %s = %.4f", self.model_kind, trial.trial_id,
                         self.objective_key, value)
            return {self.objective_key: value}

        def save_model(self, trial_id, model, step=0):
            """Trials export nothing (the Trainer trains the chosen configuration)."""

    return TrainerTuner


def _evolve(fn_args, **changes):
    """A copy of TFX FnArgs (an attrs class) with `changes`."""
    import attr  # pylint: disable=import-outside-toplevel
    return attr.evolve(fn_args, **changes)


def _run_fn(model: str):
    # pylint: disable=import-outside-toplevel
    if model == RETRIEVAL:
        from trainer.retrieval import run_fn
    else:
        from trainer.ranking import run_fn
    return run_fn


def check_tuner_config(custom_config: Mapping[str, Any]) -> Dict[str, Any]:
    """The Tuner's custom_config with defaults; ValueError naming a bad key."""
    given = dict(custom_config or {})
    unknown = sorted(set(given) - set(DEFAULTS) - {"trainer"})
    if unknown:
        raise ValueError(f"tuning: unknown tuner custom_config key(s) {unknown}; known: "
                         f"{sorted(DEFAULTS) + ['trainer']}")
    settings = {**DEFAULTS, **given}
    if not isinstance(settings["max_trials"], int) or settings["max_trials"] < 1:
        raise ValueError(f"tuning: max_trials must be >= 1, got {settings['max_trials']!r}")
    if settings["algorithm"] not in ALGORITHMS:
        raise ValueError(f"tuning: algorithm must be one of {list(ALGORITHMS)}, got "
                         f"{settings['algorithm']!r}")
    settings["trainer"] = dict(settings.get("trainer") or {})
    return settings


def tuner_fn_for(model: str, fn_args):
    """TunerFnResult for `model` (the TFX Tuner's tuner_fn; see the module doc)."""
    import keras_tuner  # pylint: disable=import-outside-toplevel
    from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel
    settings = check_tuner_config(fn_args.custom_config)
    trainer_config = settings["trainer"]
    hp = hyperparameters(model, trainer_config)
    objective = objective_name(model, trainer_config)
    holdout = os.path.join(fn_args.working_dir, HOLDOUT_DIR)
    report = holdout_splits(fn_args.train_files, holdout, settings["holdout_percent"],
                            settings["seed"])
    logging.info("tuning %s: %d trials of %s steps, objective %s on a %d %% holdout of the "
                 "train split (%s); search space %s", model, settings["max_trials"],
                 fn_args.train_steps, objective, settings["holdout_percent"],
                 report["examples"], hp.get_config())
    split = lambda name: [os.path.join(holdout, f"Split-{name}", "*")]
    trial_fn_args = _evolve(fn_args, train_files=split("train"),
                                        eval_files=split("eval"))
    # Each model's search draws from its own seeded stream: with one seed, the retrieval and
    # ranking searches (both starting with a learning rate) tried the same learning rates.
    oracle_args = dict(objective=keras_tuner.Objective(objective, direction="max"),
                       max_trials=settings["max_trials"], hyperparameters=hp,
                       seed=settings["seed"] + ORACLE_SEED_OFFSET[model],
                       allow_new_entries=False)
    oracle = (keras_tuner.oracles.RandomSearchOracle(**oracle_args)
              if settings["algorithm"] == "random"
              else keras_tuner.oracles.BayesianOptimizationOracle(**oracle_args))
    tuner = _make_tuner_class()(
        model, trainer_config, trial_fn_args, objective, oracle=oracle,
        directory=fn_args.working_dir, project_name=f"{model}_tuning", overwrite=True)
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={})


def retrieval_tuner_fn(fn_args):
    """TFX Tuner entry point for the retrieval model."""
    return tuner_fn_for(RETRIEVAL, fn_args)


def ranking_tuner_fn(fn_args):
    """TFX Tuner entry point for the ranking model."""
    return tuner_fn_for(RANKING, fn_args)
