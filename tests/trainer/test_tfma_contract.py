"""The exports meet the Evaluator's contract: TFMA over RAW eval examples reproduces the
trainers' own metrics (recall@K as clicked-weighted mean of hit_at_k; AUC per head)."""
import os

import pytest
from google.protobuf import wrappers_pb2

from trainer import features as F

pytestmark = pytest.mark.slow


def _overall(result):
    """{output name: {metric name: value}} of the overall slice."""
    metrics = dict(result.slicing_metrics)[()]          # output -> sub key -> metric -> value
    return {output: {name: next(iter(value.values())) for name, value in by_key[""].items()}
            for output, by_key in metrics.items()}


def _ranking_config():
    """The pipeline's ranking EvalConfig with value thresholds only (no baseline here) and
    the overall slice only (the synthetic shop has no slice features)."""
    from pipeline import eval_configs  # pylint: disable=import-outside-toplevel
    from pipeline.configs import PipelineConfig  # pylint: disable=import-outside-toplevel
    config = eval_configs.ranking_eval_config(PipelineConfig())
    del config.slicing_specs[1:]
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            for threshold in metric.per_slice_thresholds:
                threshold.threshold.ClearField("change_threshold")
    return config


def _analyse(tfma, export, eval_config, shop, out):
    model = tfma.default_eval_shared_model(eval_saved_model_path=export,
                                           eval_config=eval_config)
    return _overall(tfma.run_model_analysis(
        eval_shared_model=model, eval_config=eval_config, file_format="tfrecords",
        data_location=os.path.join(shop.raw, f"Split-{F.EVAL_SPLIT}", "*"), output_path=out))


def test_tfma_reproduces_trainer_metrics(retrieval_run, ranking_run, transformed_shop,
                                         tmp_path):
    import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel
    options = tfma.Options(include_default_metrics=wrappers_pb2.BoolValue(value=False))
    retrieval_config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(model_type=tfma.TF_GENERIC,
                                    signature_name="eval_hit_at_k", prediction_key="hit_at_k",
                                    label_key=F.CLICKED, example_weight_key=F.CLICKED)],
        metrics_specs=[tfma.MetricsSpec(
            metrics=[tfma.MetricConfig(class_name="MeanPrediction")])],
        slicing_specs=[tfma.SlicingSpec()], options=options)
    got = _analyse(tfma, retrieval_run.export, retrieval_config, transformed_shop,
                   str(tmp_path / "retrieval"))
    assert got[""]["mean_prediction"] == pytest.approx(
        retrieval_run.metrics["model"]["recall@20"], abs=1e-6)

    # The pipeline's own ranking EvalConfig (pipeline/eval_configs.py): AUC and calibration
    # per binary head, RMSE of the rating head over rated units only.
    ranking_config = _ranking_config()
    got = _analyse(tfma, ranking_run.export, ranking_config, transformed_shop,
                   str(tmp_path / "ranking"))
    assert tfma.load_validation_result(str(tmp_path / "ranking")).validation_ok
    assert set(got) == {"click", "purchase", "rating"}
    for head in ("click", "purchase"):
        assert got[head]["auc"] == pytest.approx(ranking_run.metrics[head]["auc"], abs=2e-3)
        assert got[head]["calibration"] == pytest.approx(
            ranking_run.metrics[head]["calibration"], rel=1e-3)
        assert got[head]["example_count"] == ranking_run.metrics["num_eval_examples"]
    rating = ranking_run.metrics["rating"]
    assert got["rating"]["root_mean_squared_error"] == pytest.approx(rating["rmse"], rel=1e-3)
    assert got["rating"]["weighted_example_count"] == rating["num_rated"]
    assert got["rating"]["mean_label"] == pytest.approx(rating["mean_label"], rel=1e-4)


def test_ranking_value_thresholds_veto_a_degraded_model(transformed_shop, tmp_path):
    """An untrained ranking model fails the rating RMSE and purchase calibration thresholds
    (its click calibration passes by chance here: clicks are ~45 % of the synthetic units)."""
    import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel
    from tests.trainer import shop_runs  # pylint: disable=import-outside-toplevel
    from tests.trainer.conftest import RANKING_CONFIG  # pylint: disable=C0415
    from trainer import ranking  # pylint: disable=import-outside-toplevel
    degraded = shop_runs.run(ranking.run_fn, shop_runs.fn_args(
        transformed_shop, str(tmp_path / "run"),
        dict(RANKING_CONFIG, degrade=True, use_text_embedding=False), train_steps=2))
    _analyse(tfma, degraded.export, _ranking_config(), transformed_shop, str(tmp_path / "eval"))
    result = tfma.load_validation_result(str(tmp_path / "eval"))
    assert not result.validation_ok
    failed = {(f.metric_key.output_name, f.metric_key.name)
              for per_slice in result.metric_validations_per_slice for f in per_slice.failures}
    assert {("rating", "root_mean_squared_error"), ("purchase", "calibration")} <= failed, failed
