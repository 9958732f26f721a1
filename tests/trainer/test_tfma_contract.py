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
        model_specs=[tfma.ModelSpec(signature_name="eval_hit_at_k", prediction_key="hit_at_k",
                                    label_key=F.CLICKED, example_weight_key=F.CLICKED)],
        metrics_specs=[tfma.MetricsSpec(
            metrics=[tfma.MetricConfig(class_name="MeanPrediction")])],
        slicing_specs=[tfma.SlicingSpec()], options=options)
    got = _analyse(tfma, retrieval_run.export, retrieval_config, transformed_shop,
                   str(tmp_path / "retrieval"))
    assert got[""]["mean_prediction"] == pytest.approx(
        retrieval_run.metrics["model"]["recall@20"], abs=1e-6)

    ranking_config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default",
                                    label_keys={"click": F.CLICKED, "purchase": F.PURCHASED},
                                    prediction_keys={"click": "click", "purchase": "purchase"})],
        metrics_specs=[tfma.MetricsSpec(output_names=[head], metrics=[
            tfma.MetricConfig(class_name="AUC", config='"num_thresholds": 100000')])
            for head in ("click", "purchase")],
        slicing_specs=[tfma.SlicingSpec()], options=options)
    got = _analyse(tfma, ranking_run.export, ranking_config, transformed_shop,
                   str(tmp_path / "ranking"))
    for head in ("click", "purchase"):
        assert got[head]["auc"] == pytest.approx(ranking_run.metrics[head]["auc"], abs=2e-3)
