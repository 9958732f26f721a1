"""`create_pipeline`: the shoprec TFX pipeline, wired in reading order.

Runners (tfx_pipeline.py: LocalDagRunner, KubeflowV2DagRunner) only build a runner and call
this; every number and path comes from `pipeline.configs.PipelineConfig`.
"""
import os

from tfx import v1 as tfx

from pipeline import beam_dependencies, eval_configs
from pipeline.components.anomalies_gate import AnomaliesGate
from pipeline.components.candidate_examples import CandidateExamples
from pipeline.components.domain_pretraining import DomainPretraining
from pipeline.components.shop_example_gen import ShopExampleGen
from pipeline.components.search_terms import SearchTerms, SearchTermsPusher
from pipeline.components.user_segments import SegmentsPusher, UserSegments
from pipeline.configs import RANKING_MODEL_NAME, RETRIEVAL_MODEL_NAME, PipelineConfig
from trainer import features

PREPROCESSING_FN = "trainer.preprocessing.preprocessing_fn"
RETRIEVAL_RUN_FN = "trainer.retrieval.run_fn"
RANKING_RUN_FN = "trainer.ranking.run_fn"
TUNER_FNS = {RETRIEVAL_MODEL_NAME: "trainer.tuning.retrieval_tuner_fn",
             RANKING_MODEL_NAME: "trainer.tuning.ranking_tuner_fn"}


def _latest_blessed(kind: str):
    """Resolver for the latest model of one trainer that its own evaluator blessed."""
    return tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model,
                              producer_component_id=f"{kind}_trainer", output_key="model"),
        model_blessing=tfx.dsl.Channel(
            type=tfx.types.standard_artifacts.ModelBlessing,
            producer_component_id=f"{kind}_evaluator", output_key="blessing"),
    ).with_id(f"latest_blessed_{kind}_resolver")


def _tuner(kind, examples, transform, schema_gen, cfg):
    """KerasTuner search over `kind`'s hyper-parameters (trainer/tuning.py): trials of
    cfg.tuner_steps steps on a holdout of the train split; the eval split is not read."""
    return tfx.components.Tuner(
        tuner_fn=TUNER_FNS[kind],
        examples=examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=[features.TRAIN_SPLIT],
                                       num_steps=cfg.tuner_steps),
        custom_config=cfg.tuner_custom_config(kind),
    ).with_id(f"{kind}_tuner")


def _trainer(kind, run_fn, examples, transform, schema_gen, train_steps, eval_steps,
             custom_config, base_model=None, tuner=None, eval_split=features.EVAL_SPLIT):
    return tfx.components.Trainer(
        run_fn=run_fn,
        examples=examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=[features.TRAIN_SPLIT], num_steps=train_steps),
        eval_args=tfx.proto.EvalArgs(splits=[eval_split], num_steps=eval_steps),
        custom_config=custom_config,
        base_model=base_model,
        hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
    ).with_id(f"{kind}_trainer")


def _evaluate_and_push(kind, examples, trainer, eval_config, serving_dir):
    resolver = _latest_blessed(kind)
    evaluator = tfx.components.Evaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=resolver.outputs["model"],
        eval_config=eval_config,
        example_splits=[features.EVAL_SPLIT],
    ).with_id(f"{kind}_evaluator")
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=os.path.join(serving_dir, kind))),
    ).with_id(f"{kind}_pusher")
    return [resolver, evaluator, pusher]


def create_pipeline(cfg: PipelineConfig, metadata_connection_config=None,
                    local_run: bool = False) -> tfx.dsl.Pipeline:
    """Builds the pipeline for `cfg` (validated). `metadata_connection_config` None = runner's.
    `local_run`: LocalDagRunner runs it on this machine, so its Beam args may carry the TFX
    package built once here (pipeline/beam_dependencies.py; not for a compiled pipeline)."""
    cfg.validate()
    # Reads the shop's items/users/events, validates them against the data contract, and
    # joins each impression with item features and the user's history as of that moment
    # (Beam); writes train/eval (time split) and catalog splits.
    example_gen = ShopExampleGen(
        data_dir=cfg.data_dir, on_bad_rows=cfg.on_bad_rows, eval_fraction=cfg.eval_fraction,
        session_gap_minutes=cfg.session_gap_minutes, rank_fraction=cfg.rank_fraction,
        eval_from=cfg.eval_from, rank_from=cfg.rank_from,
        pseudonym_key_file=cfg.pseudonym_key_file, erasures_from=cfg.erasures_from,
        erasure_key_file=cfg.erasure_key_file, history_length=cfg.history_length)
    # Per-split feature statistics (catalog examples have no user side, so they are left out).
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], exclude_splits=[features.CATALOG_SPLIT])
    # Schema inferred from the statistics, with [B, 1]-shaped dense features.
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    # Checks every split against the schema ...
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    # ... and stops the run with a readable report when it found anomalies.
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    # tf.Transform: vocabularies (ids, brands, categories), price scaling, text kept raw.
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        # The history width (preprocessing_fn(inputs, custom_config)); the schema has it too.
        custom_config=cfg.transform_custom_config(),
        splits_config=tfx.proto.SplitsConfig(
            analyze=[features.TRAIN_SPLIT],
            transform=[features.TRAIN_SPLIT, features.EVAL_SPLIT, features.CATALOG_SPLIT]
            + ([cfg.retrieval_eval_split] if cfg.retrieval_eval_split != features.EVAL_SPLIT
               else [])))
    transform.add_upstream_node(anomalies_gate)
    # What shoppers searched before choosing each item (train and rank splits, texts of at
    # least search_terms_min_users users); pushed beside the retrieval version (below) for
    # the API's BM25 word index.
    search_terms = (SearchTerms(
        examples=example_gen.outputs["examples"], min_users=cfg.search_terms_min_users,
        max_per_item=cfg.search_terms_max_per_item) if cfg.search_terms else None)
    if search_terms is not None:
        search_terms.add_upstream_node(anomalies_gate)
    # Optional: masked-LM adaptation of MiniLM on the catalog text (off unless
    # domain_pretraining_steps > 0); the retrieval trainer then encodes with those weights.
    domain_pretraining = (DomainPretraining(
        examples=example_gen.outputs["examples"], steps=cfg.domain_pretraining_steps,
        seed=cfg.seed, description_chars=int(cfg.retrieval_custom_config().get(
            "description_chars", 0))) if cfg.domain_pretraining_steps > 0 else None)
    if domain_pretraining is not None:
        domain_pretraining.add_upstream_node(anomalies_gate)
    # Optional (tuning "retrieval" / "both"): KerasTuner picks the retrieval trainer's
    # learning rate, width and temperature on a holdout of the train split.
    retrieval_tuner = (_tuner(RETRIEVAL_MODEL_NAME, transform.outputs["transformed_examples"],
                              transform, schema_gen, cfg)
                       if cfg.tunes(RETRIEVAL_MODEL_NAME) else None)
    # TFRS two-tower retrieval; exports query/candidate embeddings and top-K over the catalog.
    # With early stopping its eval files are the rank split (cfg.retrieval_eval_split).
    retrieval_trainer = _trainer(
        RETRIEVAL_MODEL_NAME, RETRIEVAL_RUN_FN, transform.outputs["transformed_examples"],
        transform, schema_gen, cfg.retrieval_train_steps, cfg.retrieval_eval_steps,
        cfg.retrieval_custom_config(),
        base_model=domain_pretraining.outputs["model"] if domain_pretraining else None,
        tuner=retrieval_tuner, eval_split=cfg.retrieval_eval_split)
    # User segments from the retrieval query tower over each user's train history (pushed
    # next to the retrieval version they belong to, below); the ranking Evaluator slices by
    # them through the two-stage eval rows.
    user_segments = (UserSegments(
        examples=example_gen.outputs["examples"], model=retrieval_trainer.outputs["model"],
        k_min=cfg.segments_k_min, k_max=cfg.segments_k_max,
        min_segment_size=cfg.segments_min_size,
        category_weight=float(cfg.segments_category_weight), seed=cfg.seed)
        if cfg.segments else None)
    # Two-stage rows: the candidates the API's pool gives for each click of the rank window
    # (which retrieval did not train on) and of the eval split, with the candidate features;
    # the ranking model learns and is judged on them.
    candidate_examples = (CandidateExamples(
        examples=example_gen.outputs["examples"], model=retrieval_trainer.outputs["model"],
        transform_graph=transform.outputs["transform_graph"],
        negatives=cfg.ranking_negatives, hard_negatives=cfg.ranking_hard_negatives,
        hard_window=cfg.ranking_hard_window, transition_candidates=cfg.transition_candidates,
        cooccurrence_candidates=cfg.cooccurrence_candidates,
        text_candidates=cfg.text_candidates, exclude_purchased=int(cfg.filter_purchased),
        seed=cfg.seed,
        max_eval_contexts=cfg.max_eval_contexts,
        **({"segments": user_segments.outputs["segments"]} if user_segments else {}))
        if cfg.two_stage else None)
    ranking_examples = (candidate_examples.outputs["transformed_examples"]
                        if candidate_examples else transform.outputs["transformed_examples"])
    # Optional (tuning "ranking" / "both"): KerasTuner picks the ranker's learning rate,
    # deep layers and embedding L2 on a holdout of its train rows.
    ranking_tuner = (_tuner(RANKING_MODEL_NAME, ranking_examples, transform, schema_gen, cfg)
                     if cfg.tunes(RANKING_MODEL_NAME) else None)
    if ranking_tuner is not None:
        ranking_tuner.add_upstream_node(retrieval_trainer)
    # TFRS multi-task ranking (click, purchase, rating).
    ranking_trainer = _trainer(
        RANKING_MODEL_NAME, RANKING_RUN_FN, ranking_examples,
        transform, schema_gen, cfg.ranking_train_steps, cfg.ranking_eval_steps,
        cfg.ranking_custom_config(), tuner=ranking_tuner)
    ranking_trainer.add_upstream_node(retrieval_trainer)
    # For each model: latest blessed baseline -> TFMA evaluation with thresholds -> push
    # blessed models to <serving_dir>/<model_name>/<version>/.
    components = [example_gen, statistics_gen, schema_gen, example_validator, anomalies_gate,
                  transform, *([search_terms] if search_terms else []),
                  *([domain_pretraining] if domain_pretraining else []),
                  *([retrieval_tuner] if retrieval_tuner else []),
                  retrieval_trainer, *([candidate_examples] if candidate_examples else []),
                  *([ranking_tuner] if ranking_tuner else []), ranking_trainer]
    retrieval_push = _evaluate_and_push(
        RETRIEVAL_MODEL_NAME, example_gen.outputs["examples"], retrieval_trainer,
        eval_configs.retrieval_eval_config(cfg), cfg.serving_dir)
    components += retrieval_push
    if user_segments is not None:
        components += [user_segments, SegmentsPusher(
            segments=user_segments.outputs["segments"],
            pushed_model=retrieval_push[-1].outputs["pushed_model"],
            serving_dir=cfg.serving_dir)]
    if search_terms is not None:
        components.append(SearchTermsPusher(
            search_terms=search_terms.outputs["search_terms"],
            pushed_model=retrieval_push[-1].outputs["pushed_model"],
            serving_dir=cfg.serving_dir))
    components += _evaluate_and_push(
        RANKING_MODEL_NAME,
        (candidate_examples.outputs["candidate_examples"] if candidate_examples
         else example_gen.outputs["examples"]), ranking_trainer,
        (eval_configs.two_stage_eval_config(cfg) if candidate_examples
         else eval_configs.ranking_eval_config(cfg)), cfg.serving_dir)
    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name,
        pipeline_root=cfg.pipeline_root,
        components=components,
        enable_cache=cfg.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=(beam_dependencies.with_tfx_package(cfg.beam_pipeline_args())
                            if local_run else cfg.beam_pipeline_args()))
