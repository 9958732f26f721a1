"""pipeline/eval_configs.py: what each Evaluator gates on (the runs are in
tests/test_tfx_pipeline.py and tests/trainer/test_tfma_contract.py)."""
from pipeline import eval_configs
from pipeline.configs import load_config


def test_two_stage_blessing_gates_ndcg_at_10_of_the_served_score_per_context():
    from tensorflow_model_analysis.metrics import metric_specs  # pylint: disable=C0415
    cfg = load_config(min_ranking_ndcg=0.07, max_ranking_ndcg_drop=0.01)
    config = eval_configs.two_stage_eval_config(cfg)
    ndcg_spec = config.metrics_specs[0]
    assert ndcg_spec.query_key == "context_id" and list(ndcg_spec.output_names) == ["score"]
    thresholds = metric_specs.metric_thresholds_from_metrics_specs(config.metrics_specs)
    ndcg = {key: value for key, value in thresholds.items() if key.name == "ndcg"}
    # Keyed by the top_k sub key, as TFMA keys the computed metric (else "Metric not found").
    assert {(key.sub_key.top_k, key.is_diff) for key in ndcg} == {(10, False), (10, True)}
    for key, value in ndcg.items():     # [(slicing spec, threshold)]: the overall slice
        (spec, bound), = value
        assert not spec.feature_keys
        if key.is_diff:
            assert bound.absolute.value == -0.01
        else:
            assert bound.lower_bound.value == 0.07
    names = {key.name for key in thresholds}
    assert names == {"ndcg", "auc"}, names          # no calibration band on pool rows
    assert dict(config.model_specs[0].prediction_keys)["score"] == "score"
