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


def test_tfma_takes_every_model_type_from_the_config_without_loading_the_model(monkeypatch):
    """Without a model_type TFMA tries each model (and the baseline) as Keras before falling
    back to tf_generic; with it, TFMA's own resolution never touches the model."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow_model_analysis.utils import model_util  # pylint: disable=C0415
    loads = []

    def recorded_load(path, *_, **__):
        loads.append(path)
        raise OSError(f"no model at {path}")

    monkeypatch.setattr(tf.keras.models, "load_model", recorded_load)
    cfg = load_config()
    for config in (eval_configs.retrieval_eval_config(cfg), eval_configs.ranking_eval_config(cfg),
                   eval_configs.two_stage_eval_config(cfg)):
        for spec in config.model_specs:
            assert model_util.get_model_type(spec, "/models/candidate") == "tf_generic"
    assert loads == []
    unnamed = type(config.model_specs[0])(signature_name="serving_default")
    assert model_util.get_model_type(unnamed, "/models/candidate") == "tf_generic"
    assert loads == ["/models/candidate"], "TFMA guesses an unnamed type by loading"


def test_two_stage_evaluation_is_sliced_by_user_segment_when_segments_are_on():
    sliced = {tuple(spec.feature_keys) for spec in
              eval_configs.two_stage_eval_config(load_config()).slicing_specs}
    assert ("user_segment",) in sliced and ("user_activity",) in sliced
    off = eval_configs.two_stage_eval_config(load_config(segments=False)).slicing_specs
    assert ("user_segment",) not in {tuple(spec.feature_keys) for spec in off}


def test_eval_rows_carry_the_users_segment_and_the_counts_survive():
    from pipeline.components.candidate_examples import with_segments  # pylint: disable=C0415

    def rows():
        yield {"user_id": "p_a", "item_id": "i1"}
        yield {"user_id": "p_b", "item_id": "i2"}
        return "counts"

    got = []

    def drain():
        got.append((yield from with_segments(rows(), {"p_a": 3})))

    out = list(drain())
    assert [r["user_segment"] for r in out] == ["3", "none"] and got == ["counts"]
