"""TFMA EvalConfigs for the two Evaluators: what is measured, sliced and required for blessing.

Thresholds apply to the overall slice only (MetricConfig.per_slice_thresholds), so a thin
slice cannot veto a model by noise; per-slice numbers are still computed and reported.
Change thresholds compare the candidate with the latest blessed model of the same kind.

Ranking slices: overall, top category, user activity (cold / warm / heavy: distinct items the
user engaged with before the unit, 0 / 1-9 / >= 10) and item novelty (new = created at most 30
days before the unit, else established); the slice features are written by
pipeline/examples.py.
"""
import json

import tensorflow_model_analysis as tfma
from google.protobuf import wrappers_pb2

from pipeline import examples
from pipeline.configs import PipelineConfig
from trainer import features
from trainer.config import RANKING_HEADS as _BINARY_HEADS
from trainer.config import RATING_HEAD, RATING_LABEL, RATING_MASK

OVERALL = tfma.SlicingSpec()
SLICES = [OVERALL, tfma.SlicingSpec(feature_keys=[features.TOP_CATEGORY])]
RANKING_SLICES = SLICES + [tfma.SlicingSpec(feature_keys=[examples.USER_ACTIVITY]),
                           tfma.SlicingSpec(feature_keys=[examples.ITEM_NOVELTY])]

# Signature/output names exported by trainer/ (see trainer/signatures.py).
RETRIEVAL_EVAL_SIGNATURE = "eval_hit_at_k"
RETRIEVAL_HIT_KEY = "hit_at_k"
RANKING_EVAL_SIGNATURE = "serving_default"
RANKING_HEADS = dict(_BINARY_HEADS)                 # binary heads: output -> label key
RANKING_LABELS = dict(RANKING_HEADS, **{RATING_HEAD: RATING_LABEL})
RMSE = "RootMeanSquaredError"                       # tf_keras metric, weighted by has_rating
# Our exports are plain SavedModels called through a signature. Named, TFMA skips its guess
# (tensorflow_model_analysis get_model_type), which tries tf.keras.models.load_model on the
# candidate and the blessed baseline, fails, falls back to "tf_generic" and leaves two
# misleading "SavedModel saved prior to TF 2.5" warnings per model in every Evaluator log.
# (Time: within noise, 42.6/43.4 s guessed vs 45.4 s named on the sample shop's two-stage
# evaluation: the doomed load stops early.)
MODEL_TYPE = tfma.TF_GENERIC

# Ranking blessing besides AUC (pipeline.configs holds the AUC thresholds): calibration of the
# click and purchase heads (mean prediction / mean label) within [MIN, MAX] (off by more than 3x
# either way = broken; the tiny test shop has 6 eval purchases); rating RMSE over
# rated eval units <= MAX_RATING_RMSE (stars) and at most MAX_RATING_RMSE_RISE above the
# blessed baseline's.
MIN_CALIBRATION, MAX_CALIBRATION = 1 / 3, 3.0
MAX_RATING_RMSE = 1.5
MAX_RATING_RMSE_RISE = 0.1


def _overall(threshold: tfma.MetricThreshold) -> list:
    return [tfma.PerSliceMetricThreshold(slicing_specs=[OVERALL], threshold=threshold)]


def _gated(class_name: str, lower_bound: float, max_drop: float) -> tfma.MetricConfig:
    """A metric that must reach `lower_bound` and lose at most `max_drop` vs the baseline.

    The thresholds sit on the MetricConfig (not MetricsSpec.per_slice_thresholds, whose keys
    are for in-graph metrics and never match, which TFMA reports as "Metric not found").
    """
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": lower_bound}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -max_drop}))
    return tfma.MetricConfig(class_name=class_name, per_slice_thresholds=_overall(threshold))


def _gated_error(class_name: str, upper_bound: float, max_rise: float) -> tfma.MetricConfig:
    """An error that must stay <= `upper_bound` and rise at most `max_rise` vs the baseline."""
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(upper_bound={"value": upper_bound}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.LOWER_IS_BETTER,
            absolute={"value": max_rise}))
    return tfma.MetricConfig(class_name=class_name, per_slice_thresholds=_overall(threshold))


def _banded(class_name: str, lower: float, upper: float) -> tfma.MetricConfig:
    """A value that must lie in [lower, upper] (no change threshold)."""
    threshold = tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
        lower_bound={"value": lower}, upper_bound={"value": upper}))
    return tfma.MetricConfig(class_name=class_name, per_slice_thresholds=_overall(threshold))


def _options():
    # Without this TFMA also runs the Keras compiled metrics by calling the model on raw
    # features, which fails (docs/DESIGN.md, "Pipeline").
    return tfma.Options(include_default_metrics=wrappers_pb2.BoolValue(value=False))


def retrieval_eval_config(cfg: PipelineConfig) -> tfma.EvalConfig:
    """Recall@K over the full catalog on eval clicks.

    The `eval_hit_at_k` signature returns 1.0 when an example's item is in the model's top-K
    for that example's user context; weighting by `clicked` makes the weighted mean
    prediction exactly recall@K over clicked eval units.
    """
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            model_type=MODEL_TYPE,
            signature_name=RETRIEVAL_EVAL_SIGNATURE, label_key=features.CLICKED,
            prediction_key=RETRIEVAL_HIT_KEY, example_weight_key=features.CLICKED)],
        slicing_specs=SLICES,
        metrics_specs=[tfma.MetricsSpec(
            metrics=[tfma.MetricConfig(class_name="ExampleCount"),
                     tfma.MetricConfig(class_name="WeightedExampleCount"),
                     _gated("MeanPrediction", cfg.min_retrieval_recall,
                            cfg.max_retrieval_recall_drop)])],
        options=_options())


def _head_specs(cfg: PipelineConfig, calibration: bool) -> list:
    """Per binary head: example count, AUC (value + change thresholds), mean label and
    prediction, and with ``calibration`` the calibration band."""
    lower = {"click": cfg.min_click_auc, "purchase": cfg.min_purchase_auc}
    band = [_banded("Calibration", MIN_CALIBRATION, MAX_CALIBRATION)] if calibration else []
    return [tfma.MetricsSpec(
        output_names=[head], example_weights=tfma.ExampleWeightOptions(unweighted=True),
        metrics=[tfma.MetricConfig(class_name="ExampleCount"),
                 _gated("AUC", lower[head], cfg.max_auc_drop),
                 tfma.MetricConfig(class_name="MeanLabel"),
                 tfma.MetricConfig(class_name="MeanPrediction"), *band])
        for head in RANKING_HEADS]


def ranking_eval_config(cfg: PipelineConfig) -> tfma.EvalConfig:
    """Per binary head (click, purchase): AUC (value + change thresholds), calibration = mean
    prediction / mean label (value band), mean label and prediction, counts. Rating: RMSE over
    rated units only (example weight has_rating; value + change thresholds). Thresholds on
    the overall slice; every metric is also computed per slice (RANKING_SLICES)."""
    specs = _head_specs(cfg, calibration=True)
    specs.append(tfma.MetricsSpec(
        output_names=[RATING_HEAD], example_weights=tfma.ExampleWeightOptions(weighted=True),
        metrics=[tfma.MetricConfig(class_name="WeightedExampleCount"),
                 _gated_error(RMSE, MAX_RATING_RMSE, MAX_RATING_RMSE_RISE),
                 tfma.MetricConfig(class_name="MeanLabel"),
                 tfma.MetricConfig(class_name="MeanPrediction")]))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            model_type=MODEL_TYPE,
            signature_name=RANKING_EVAL_SIGNATURE, label_keys=RANKING_LABELS,
            prediction_keys={h: h for h in RANKING_LABELS},
            example_weight_keys={RATING_HEAD: RATING_MASK})],
        slicing_specs=RANKING_SLICES,
        metrics_specs=specs,
        options=_options())


# Two-stage blessing: the served order over each eval context's candidate pool.
SCORE_OUTPUT = "score"           # the exported combined score (trainer/signatures.py)
NDCG_AT = 10
# Slices hold whole contexts (a pool split by candidate source would cut NDCG's lists).
TWO_STAGE_SLICES = [OVERALL, tfma.SlicingSpec(feature_keys=[examples.USER_ACTIVITY])]


def two_stage_eval_config(cfg: PipelineConfig) -> tfma.EvalConfig:
    """On two-stage rows (pipeline/components/candidate_examples.py): NDCG@10 of the combined
    `score` over each context's pool (TFMA's NDCG, query_key = context_id, gain = clicked;
    value + change thresholds) is the blessing, i.e. the order the API serves; per binary
    head AUC over the pool rows (value + change thresholds) and mean label / prediction.
    No calibration band: every eval context holds one chosen item among its whole pool, so
    the label rate is the pool's, not the shop's click rate. Slices: overall, user
    activity and, with ``cfg.segments``, the user's segment (UserSegments; "none" for a user
    without one)."""
    ndcg = _gated("NDCG", cfg.min_ranking_ndcg, cfg.max_ranking_ndcg_drop)
    ndcg.config = json.dumps({"gain_key": features.CLICKED})
    # k through `binarize`, not the metric's own top_k_list: thresholds are keyed by the
    # metric's sub key (top_k), which TFMA derives from the spec's binarize options only.
    specs = [tfma.MetricsSpec(
        output_names=[SCORE_OUTPUT], example_weights=tfma.ExampleWeightOptions(unweighted=True),
        query_key=features.CONTEXT_ID, metrics=[ndcg],
        binarize=tfma.BinarizationOptions(top_k_list={"values": [NDCG_AT]}))]
    specs += _head_specs(cfg, calibration=False)
    labels = dict(RANKING_HEADS, **{SCORE_OUTPUT: features.CLICKED})
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(model_type=MODEL_TYPE, signature_name=RANKING_EVAL_SIGNATURE,
                                    label_keys=labels, prediction_keys={h: h for h in labels})],
        slicing_specs=TWO_STAGE_SLICES + (
            [tfma.SlicingSpec(feature_keys=[features.USER_SEGMENT])] if cfg.segments else []),
        metrics_specs=specs,
        options=_options())
