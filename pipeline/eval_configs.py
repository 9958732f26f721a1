"""TFMA EvalConfigs for the two Evaluators: what is measured, sliced and required for blessing.

Thresholds apply to the overall slice only (MetricConfig.per_slice_thresholds), so a thin
category slice cannot veto a model by noise; per-category numbers are still computed and reported.
Change thresholds compare the candidate with the latest blessed model of the same kind.
"""
import tensorflow_model_analysis as tfma
from google.protobuf import wrappers_pb2

from pipeline.configs import PipelineConfig
from trainer import features

OVERALL = tfma.SlicingSpec()
SLICES = [OVERALL, tfma.SlicingSpec(feature_keys=[features.TOP_CATEGORY])]

# Signature/output names exported by trainer/ (see trainer/signatures.py).
RETRIEVAL_EVAL_SIGNATURE = "eval_hit_at_k"
RETRIEVAL_HIT_KEY = "hit_at_k"
RANKING_EVAL_SIGNATURE = "serving_default"
RANKING_HEADS = {"click": features.CLICKED, "purchase": features.PURCHASED}


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
    return tfma.MetricConfig(class_name=class_name, per_slice_thresholds=[
        tfma.PerSliceMetricThreshold(slicing_specs=[OVERALL], threshold=threshold)])


def _options():
    # Without this TFMA also runs the Keras compiled metrics by calling the model on raw
    # features, which fails (DESIGN §5).
    return tfma.Options(include_default_metrics=wrappers_pb2.BoolValue(value=False))


def retrieval_eval_config(cfg: PipelineConfig) -> tfma.EvalConfig:
    """Recall@K over the full catalog on eval clicks.

    The `eval_hit_at_k` signature returns 1.0 when an example's item is in the model's top-K
    for that example's user context; weighting by `clicked` makes the weighted mean
    prediction exactly recall@K over clicked eval units.
    """
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name=RETRIEVAL_EVAL_SIGNATURE, label_key=features.CLICKED,
            prediction_key=RETRIEVAL_HIT_KEY, example_weight_key=features.CLICKED)],
        slicing_specs=SLICES,
        metrics_specs=[tfma.MetricsSpec(
            metrics=[tfma.MetricConfig(class_name="ExampleCount"),
                     tfma.MetricConfig(class_name="WeightedExampleCount"),
                     _gated("MeanPrediction", cfg.min_retrieval_recall,
                            cfg.max_retrieval_recall_drop)])],
        options=_options())


def ranking_eval_config(cfg: PipelineConfig) -> tfma.EvalConfig:
    """AUC, calibration and counts per head (click, purchase), sliced by top category."""
    lower = {"click": cfg.min_click_auc, "purchase": cfg.min_purchase_auc}
    specs = []
    for head in RANKING_HEADS:
        specs.append(tfma.MetricsSpec(
            output_names=[head],
            metrics=[tfma.MetricConfig(class_name="ExampleCount"),
                     _gated("AUC", lower[head], cfg.max_auc_drop),
                     tfma.MetricConfig(class_name="MeanLabel"),
                     tfma.MetricConfig(class_name="MeanPrediction"),
                     tfma.MetricConfig(class_name="Calibration")]))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name=RANKING_EVAL_SIGNATURE, label_keys=dict(RANKING_HEADS),
            prediction_keys={h: h for h in RANKING_HEADS})],
        slicing_specs=SLICES,
        metrics_specs=specs,
        options=_options())
