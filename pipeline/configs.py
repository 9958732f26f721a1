"""The one source of truth for pipeline configuration: names, paths, step counts, thresholds.

Runners (`tfx_pipeline.py`) build a `PipelineConfig` (defaults below, overridden by flags or a
JSON file) and pass it to `pipeline.pipeline.create_pipeline`; nothing else hard-codes these.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

from pipeline import examples
from trainer import compression
from trainer import features as F

PIPELINE_NAME = "shoprec"
RETRIEVAL_MODEL_NAME = "retrieval"
RANKING_MODEL_NAME = "ranking"
DEFAULT_RETRIEVAL_CONFIG = {"text_mode": "frozen"}

# TFX image for Kubeflow; our Dockerfile builds FROM it (keep in sync with requirements/).
TFX_IMAGE = "gcr.io/tfx-oss-public/tfx:1.16.0"

# The candidate features of two-stage rows (trainer/candidates: the pool's features).
TWO_STAGE_FEATURES = (F.RETRIEVAL_SCORE, F.TRANSITION_SCORE, F.COOCCURRENCE_SCORE,
                      F.HISTORY_BRAND_SHARE, F.LAST_ITEM_SAME_BRAND)

TWO_STAGE_RANKING = {"use_user_id": False, "embedding_l2": 3e-3}

# "external_pool": PortableRunner, Beam's job service in the component, SDK harness processes
# from a worker pool (pipeline/beam_runners.py; docs/DESIGN.md, "Distributed Beam runner").
BEAM_MODES = ("in_memory", "multi_processing", "multi_threading", "external_pool")
RUNNERS = ("local", "kubeflow_v2")
# PipelineConfig.tuning: which trainers get a Tuner ("" = none; trainer/tuning.py).
TUNING = ("", "retrieval", "ranking", "both")
TUNER_ALGORITHMS = ("random", "bayesian")


@dataclasses.dataclass
class PipelineConfig:
    """Everything a pipeline run depends on. Paths may be local or remote (gs://, s3://)."""

    data_dir: str = "sample_shop"
    pipeline_name: str = PIPELINE_NAME
    pipeline_root: str = os.path.join("runs", "pipeline_root")
    metadata_path: str = os.path.join("runs", "metadata.db")
    serving_dir: str = "serving_models"
    seed: int = 42

    # Example generation (pipeline/components/shop_example_gen.py).
    on_bad_rows: str = "fail"            # fail | quarantine
    eval_fraction: float = 0.1           # last 10 % of time is the eval split
    # The 10 % of time before it is the "rank" split: retrieval does not train on it; the
    # CandidateExamples component turns its clicks into two-stage ranking rows (0 = none).
    rank_fraction: float = 0.1
    # Fixed split times (ISO-8601, e.g. "2014-06-30T12:00:00Z") instead of the fractions:
    # units at or after eval_from are "eval", those at or after rank_from "rank" (none
    # without it). The Beauty benchmark's config reproduces leave-one-out with them.
    eval_from: str = ""
    rank_from: str = ""
    session_gap_minutes: int = 30
    # Entries of every example's history_item_ids (most recent engaged items strictly before
    # the unit): the width of the schema, Transform's output and both models' history
    # inputs; the exported signatures take histories of any width and keep the most recent
    # this many. 1..200 (trainer/features.py MAX_HISTORY_LENGTH).
    history_length: int = F.HISTORY_LENGTH
    # Privacy (docs/privacy.md): user ids become keyed pseudonyms in every artifact when a
    # key file is given (python -m pipeline.contract.pseudonym new-key FILE; the API needs
    # the same file); erasures_from = the API's event store URL, whose erased users'
    # events are left out of training.
    pseudonym_key_file: str = ""
    erasures_from: str = ""
    erasure_key_file: str = ""           # the API's erasure_key_file, if it has one

    # Beam: DirectRunner in_memory is faster than multi_processing on 2 cores for small data
    # (docs/DESIGN.md, "Pipeline"). For Flink/Dataflow pass `extra_beam_args` (e.g.
    # --runner=DataflowRunner).
    beam_mode: str = "in_memory"
    beam_workers: int = 0                # 0 = one per core (multi_processing only)
    # external_pool only: "host:port" of a Beam worker pool (python -m
    # apache_beam.runners.worker.worker_pool_main --service_port=PORT); empty = the local
    # runner starts one for the run (pipeline/beam_runners.py).
    beam_worker_pool: str = ""
    extra_beam_args: tuple[str, ...] = ()

    # Trainers (custom_config is passed through to trainer/config.py, which validates it).
    # Robust training is off unless these dicts turn it on (docs/DESIGN.md, "Adversarial
    # training and DP-SGD"): adversarial_epsilon / _weight / _steps, and dp_noise_multiplier,
    # dp_l2_norm_clip, dp_microbatches, dp_delta (a DP retrieval model also needs
    # logq_correction false and related_items 0, so transition_candidates and
    # cooccurrence_candidates 0 here).
    retrieval_train_steps: int = 600
    retrieval_eval_steps: int = 50
    ranking_train_steps: int = 600
    ranking_eval_steps: int = 50
    retrieval_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    # > 0: a DomainPretraining component continues masked-LM training of MiniLM on the
    # catalog text for this many steps before retrieval training (BERT text modes only).
    domain_pretraining_steps: int = 0
    ranking_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Hyper-parameter search (trainer/tuning.py; docs/DESIGN.md, "Tuner"): "" (off),
    # "retrieval", "ranking" or "both" add a TFX Tuner (KerasTuner, `tuner_algorithm` random
    # or bayesian) before that trainer: `tuner_max_trials` trials of `tuner_steps` steps
    # each, judged on a seeded `tuner_holdout_percent` % of the train split (the eval split
    # stays unseen); the trainer applies the best values over its config.
    tuning: str = ""
    tuner_max_trials: int = 8
    tuner_steps: int = 300
    tuner_holdout_percent: int = 15
    tuner_algorithm: str = "random"
    # Storage of both exports' weights (trainer/compression.py; docs/DESIGN.md, "Compressed
    # exports"): "none" (float32), "float16" or "int8"; retrieval_config / ranking_config
    # "compression" overrides it per model. Off: they shrink the exports, but load, serve
    # and rank no better (measured; docs/DESIGN.md).
    export_compression: str = "none"
    # Two-stage rows (pipeline/components/candidate_examples.py): sampled non-chosen pool
    # items per training context, and how many candidates each item-to-item source adds to
    # retrieval's top K (keep equal to the API's settings of the same names).
    ranking_negatives: int = 20
    # Of those, up to `ranking_hard_negatives` are drawn from the pool's first
    # `ranking_hard_window` places (retrieval's best-scored items, which compete with the
    # target for the top of the answer) instead of uniformly; 0 = all uniform.
    ranking_hard_negatives: int = 0
    ranking_hard_window: int = 50
    # Eval contexts the ranking Evaluator judges (a seeded sample; 0 = all): each brings its
    # whole pool (~140 rows on the sample shop), and TFMA took 625 s on all 1,264 of them.
    # The same sample judges the candidate and the blessed baseline (a paired comparison).
    max_eval_contexts: int = 300
    transition_candidates: int = 50
    cooccurrence_candidates: int = 50
    text_candidates: int = 50            # text neighbours (retrieval with a text tower)
    # Leave the user's earlier purchases out of the two-stage pools, as the API's setting of
    # the same name does at serving time (keep the two equal).
    filter_purchased: bool = True

    # Evaluator thresholds (blessing). Retrieval: recall@K over the full catalog on eval
    # clicks; ranking: AUC per head. Change thresholds compare against the latest blessed model.
    retrieval_top_k: int = 100
    min_retrieval_recall: float = 0.05
    max_retrieval_recall_drop: float = 0.02
    min_click_auc: float = 0.55
    min_purchase_auc: float = 0.55
    max_auc_drop: float = 0.02
    # Two-stage blessing: NDCG@10 of the served order (ranking `score` over each eval
    # context's candidate pool, gain = clicked) and its change vs the blessed model.
    min_ranking_ndcg: float = 0.05
    max_ranking_ndcg_drop: float = 0.02

    # User segments (pipeline/components/user_segments.py, docs/DESIGN.md "User segments"):
    # k-means over the retrieval query tower's user vectors next to the users' top-category
    # shares (weight segments_category_weight; 0 = the vectors alone), k in
    # [segments_k_min, segments_k_max] chosen by silhouette; segments smaller than
    # segments_min_size users are dissolved (the report's k-anonymity, docs/privacy.md).
    # Pushed to <serving_dir>/segments/<retrieval version>/ with a pushed retrieval model.
    segments: bool = True
    segments_k_min: int = 2
    segments_k_max: int = 16
    segments_min_size: int = 20
    segments_category_weight: float = 2.0

    # Search terms (pipeline/components/search_terms.py, docs/DESIGN.md "Search terms from
    # the search log"): per item, the search texts after which shoppers engaged with it in
    # the train and rank splits, only texts at least search_terms_min_users distinct users
    # searched (docs/privacy.md), at most search_terms_max_per_item per item. Pushed to
    # <serving_dir>/search_terms/<retrieval version>/; the API's BM25 word index reads them.
    search_terms: bool = True
    search_terms_min_users: int = 2
    search_terms_max_per_item: int = 32

    enable_cache: bool = False

    def validate(self) -> "PipelineConfig":
        """Raise ValueError naming the field when a value is out of range."""
        problems = []
        if self.on_bad_rows not in ("fail", "quarantine"):
            problems.append(f"on_bad_rows={self.on_bad_rows!r}: use 'fail' or 'quarantine'")
        if not 0.0 < self.eval_fraction < 1.0:
            problems.append(f"eval_fraction={self.eval_fraction}: must be in (0, 1)")
        elif not 0.0 <= self.rank_fraction < 1.0 - self.eval_fraction:
            problems.append(f"rank_fraction={self.rank_fraction}: must be in [0, 1 - "
                            f"eval_fraction) = [0, {1.0 - self.eval_fraction:g})")
        try:
            examples.check_split_times(self.eval_from, self.rank_from)
        except ValueError as e:
            problems.append(str(e))
        if self.pseudonym_key_file and "://" not in self.pseudonym_key_file \
                and not os.path.isfile(self.pseudonym_key_file):
            problems.append(f"pseudonym_key_file={self.pseudonym_key_file!r}: no such file "
                            "(create one with python -m pipeline.contract.pseudonym new-key "
                            "FILE)")
        try:
            F.check_history_length(self.history_length)
        except ValueError as e:
            problems.append(str(e))
        if self.beam_mode not in BEAM_MODES:
            problems.append(f"beam_mode={self.beam_mode!r}: one of {', '.join(BEAM_MODES)}")
        for name in ("retrieval_train_steps", "ranking_train_steps",
                     "retrieval_eval_steps", "ranking_eval_steps", "retrieval_top_k",
                     "session_gap_minutes", "ranking_negatives", "ranking_hard_window"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)}: must be >= 1")
        if self.tuning not in TUNING:
            problems.append(f"tuning={self.tuning!r}: one of {', '.join(map(repr, TUNING))} "
                            "('' = off)")
        for name in ("tuner_max_trials", "tuner_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name}={value!r}: must be a whole number >= 1")
        if isinstance(self.tuner_holdout_percent, bool) or not isinstance(
                self.tuner_holdout_percent, int) or not 1 <= self.tuner_holdout_percent <= 50:
            problems.append(f"tuner_holdout_percent={self.tuner_holdout_percent!r}: must be "
                            "a whole number in [1, 50]")
        if self.tuner_algorithm not in TUNER_ALGORITHMS:
            problems.append(f"tuner_algorithm={self.tuner_algorithm!r}: one of "
                            f"{', '.join(TUNER_ALGORITHMS)}")
        for name in ("transition_candidates", "cooccurrence_candidates", "text_candidates",
                     "max_eval_contexts"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)}: must be >= 0")
        if not 0 <= self.ranking_hard_negatives <= self.ranking_negatives:
            problems.append(f"ranking_hard_negatives={self.ranking_hard_negatives}: must be "
                            f"in [0, ranking_negatives = {self.ranking_negatives}]")
        if not 2 <= self.segments_k_min <= self.segments_k_max:
            problems.append(f"segments_k_min={self.segments_k_min}, segments_k_max="
                            f"{self.segments_k_max}: need 2 <= k_min <= k_max")
        if self.segments_min_size < 2:
            problems.append(f"segments_min_size={self.segments_min_size}: must be >= 2")
        if self.segments_category_weight < 0:
            problems.append(f"segments_category_weight={self.segments_category_weight}: "
                            "must be >= 0")
        if self.search_terms_min_users < 2 or self.search_terms_max_per_item < 1:
            problems.append(f"search_terms_min_users={self.search_terms_min_users}, "
                            f"search_terms_max_per_item={self.search_terms_max_per_item}: "
                            "need min_users >= 2 and max_per_item >= 1")
        for name in ("filter_purchased", "enable_cache", "segments", "search_terms"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name}={getattr(self, name)!r}: must be true or false")
        try:
            compression.check_mode(self.export_compression, "export_compression")
        except ValueError as e:
            problems.append(str(e))
        if self.domain_pretraining_steps < 0:
            problems.append(f"domain_pretraining_steps={self.domain_pretraining_steps}: "
                            "must be >= 0 (0 = off)")
        if (self.domain_pretraining_steps > 0
                and self.retrieval_custom_config().get("text_mode") == "none"):
            problems.append("domain_pretraining_steps > 0 needs a BERT text mode, but "
                            "retrieval_config.text_mode is 'none'")
        for name in ("min_retrieval_recall", "max_retrieval_recall_drop", "min_click_auc",
                     "min_purchase_auc", "max_auc_drop", "min_ranking_ndcg",
                     "max_ranking_ndcg_drop"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name}={getattr(self, name)}: must be in [0, 1]")
        if problems:
            raise ValueError("invalid pipeline config:\n  " + "\n  ".join(problems))
        return self

    def beam_pipeline_args(self) -> list[str]:
        """Beam args for every Beam-based component (DirectRunner unless extra args say else)."""
        if self.beam_mode == "external_pool":
            from pipeline import beam_runners  # pylint: disable=import-outside-toplevel
            return (beam_runners.portable_args(self.beam_worker_pool or "localhost:50000")
                    + list(self.extra_beam_args))
        args = [f"--direct_running_mode={self.beam_mode}"]
        workers = self.beam_workers if self.beam_mode == "multi_processing" else 1
        args.append(f"--direct_num_workers={workers}")
        return args + list(self.extra_beam_args)

    def transform_custom_config(self) -> dict[str, Any]:
        """The Transform component's custom_config: trainer/preprocessing.py
        ``preprocessing_fn(inputs, custom_config)`` reads the history width from it."""
        return {"history_length": self.history_length}

    def retrieval_custom_config(self) -> dict[str, Any]:
        # The pipeline's retrieval model uses the frozen MiniLM text tower unless
        # retrieval_config says otherwise (trainer/config.py keeps "none" as the library
        # default so unit tests and ablations opt in explicitly).
        return {"seed": self.seed, "top_k": self.retrieval_top_k,
                **DEFAULT_RETRIEVAL_CONFIG, **self._compression(), **self.retrieval_config}

    def _compression(self) -> dict[str, Any]:
        """The trainers' `compression` key; absent when "none" (their default), so the
        default custom_configs stay what they were."""
        mode = self.export_compression
        return {} if mode == "none" else {"compression": mode}

    def tunes(self, model: str) -> bool:
        """A Tuner searches `model`'s ("retrieval" / "ranking") hyper-parameters."""
        return self.tuning in (model, "both")

    def tuner_custom_config(self, model: str) -> dict[str, Any]:
        """The `model` Tuner's custom_config (trainer/tuning.py): that trainer's
        custom_config and the search's settings."""
        from trainer import tuning  # pylint: disable=import-outside-toplevel
        trainer_config = (self.retrieval_custom_config() if model == RETRIEVAL_MODEL_NAME
                          else self.ranking_custom_config())
        return tuning.tuner_custom_config(trainer_config, self.tuner_max_trials,
                                          self.tuner_holdout_percent, self.seed,
                                          self.tuner_algorithm)

    @property
    def retrieval_eval_split(self) -> str:
        """The split the retrieval Trainer evaluates on (fn_args.eval_files): the rank split
        when its early stopping is on and that split exists (a validation period between
        train and eval, so the Evaluator's eval split never chooses the training length),
        else the eval split."""
        from trainer.config import RetrievalConfig  # pylint: disable=import-outside-toplevel
        stops = RetrievalConfig.from_custom_config(
            self.retrieval_custom_config()).uses_early_stopping
        return F.RANK_SPLIT if stops and self.two_stage else F.EVAL_SPLIT

    @property
    def two_stage(self) -> bool:
        """The ranking model learns and is judged on two-stage rows (a rank split exists)."""
        return examples.has_rank_split(self.rank_fraction, self.eval_from, self.rank_from)

    def two_stage_features(self) -> list[str]:
        """The candidate features of two-stage rows: TWO_STAGE_FEATURES, and ``text_score``
        when retrieval has a text tower (its export then serves text neighbours)."""
        text = self.retrieval_custom_config().get("text_mode") != "none"
        return list(TWO_STAGE_FEATURES) + ([F.TEXT_SCORE] if text else [])

    def ranking_custom_config(self) -> dict[str, Any]:
        # On two-stage rows the ranker reads the candidate stage's features, as the API
        # sends them to rank_candidates, and (TWO_STAGE_RANKING, docs/DESIGN.md "Candidate
        # rows") leaves out the user id and regularises the id embeddings harder: a rank
        # window holds few contexts per user and item. ranking_config overrides both.
        defaults = dict(TWO_STAGE_RANKING, external_features=self.two_stage_features()) \
            if self.two_stage else {}
        return {"seed": self.seed, **defaults, **self._compression(), **self.ranking_config}

    def kubeflow_name(self) -> str:
        """KFP v2 pipeline names must match [a-z0-9][a-z0-9-]* (docs/DESIGN.md, "Pipeline")."""
        name = re.sub(r"[^a-z0-9-]+", "-", self.pipeline_name.lower()).strip("-")
        return name or PIPELINE_NAME

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def load_config(path: str | None = None, **overrides: Any) -> PipelineConfig:
    """Defaults, then a JSON file's keys, then keyword overrides; unknown keys are errors."""
    values: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(PipelineConfig)}
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                values.update(json.load(f))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from e
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown pipeline config keys {unknown}; known: {sorted(known)}")
    if "extra_beam_args" in values:
        values["extra_beam_args"] = tuple(values["extra_beam_args"])
    return PipelineConfig(**values).validate()
