"""pipeline.configs: defaults, overrides and validation of the pipeline config."""
import json
import os

import pytest

from pipeline.configs import load_config
from trainer.config import RetrievalConfig


def test_pipeline_retrieval_defaults_to_the_frozen_bert_tower():
    custom = load_config().retrieval_custom_config()
    assert custom["text_mode"] == "frozen"
    assert RetrievalConfig.from_custom_config(custom).uses_bert


def test_retrieval_config_overrides_the_text_mode_and_keeps_seed():
    cfg = load_config(seed=11, retrieval_config={"text_mode": "none", "embedding_dim": 16})
    custom = cfg.retrieval_custom_config()
    assert custom["text_mode"] == "none" and custom["embedding_dim"] == 16
    assert custom["seed"] == 11
    assert not RetrievalConfig.from_custom_config(custom).uses_bert


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown pipeline config keys \['retreival_config'\]"):
        load_config(retreival_config={})
    with pytest.raises(ValueError, match="eval_fraction=1.5"):
        load_config(eval_fraction=1.5)
    with pytest.raises(ValueError, match=r"pseudonym_key_file='nope.key': no such file.*new-key"):
        load_config(pseudonym_key_file="nope.key")
    with pytest.raises(ValueError, match=r"filter_purchased='no': must be true or false"):
        load_config(filter_purchased="no")
    for value in (0, 201, "50"):
        with pytest.raises(ValueError, match=rf"history_length={value!r}: must be a whole "
                                             r"number of items in \[1, 200\]"):
            load_config(history_length=value)
    bad = tmp_path / "cfg.json"
    bad.write_text('{"seed": 1,\n "beam_mode": }')
    with pytest.raises(ValueError, match=r"cfg.json:2: not valid JSON"):
        load_config(str(bad))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"ranking_train_steps": 7}))
    assert load_config(str(good), ranking_train_steps=9).ranking_train_steps == 9


def test_two_stage_ranking_is_the_default_and_rank_fraction_is_checked():
    cfg = load_config()
    assert cfg.rank_fraction == 0.1 and cfg.two_stage
    custom = cfg.ranking_custom_config()
    assert custom["external_features"] == ["retrieval_score", "transition_score",
                                           "cooccurrence_score", "history_brand_share",
                                           "last_item_same_brand", "text_score"]
    no_text = load_config(retrieval_config={"text_mode": "none"}).ranking_custom_config()
    assert "text_score" not in no_text["external_features"]
    assert custom["use_user_id"] is False
    own = load_config(ranking_config={"use_user_id": True, "external_features": []})
    assert own.ranking_custom_config()["use_user_id"] is True
    assert own.ranking_custom_config()["external_features"] == []
    plain = load_config(rank_fraction=0.0)
    assert not plain.two_stage and "external_features" not in plain.ranking_custom_config()
    with pytest.raises(ValueError, match=r"rank_fraction=0.9: must be in \[0, 1 - "):
        load_config(rank_fraction=0.9)
    with pytest.raises(ValueError, match="ranking_negatives=0"):
        load_config(ranking_negatives=0)
    with pytest.raises(ValueError, match=r"ranking_hard_negatives=21: must be in \[0, "
                                         r"ranking_negatives = 20\]"):
        load_config(ranking_hard_negatives=21)
    with pytest.raises(ValueError, match="ranking_hard_window=0"):
        load_config(ranking_hard_window=0)
    with pytest.raises(ValueError, match="transition_candidates=-1"):
        load_config(transition_candidates=-1)


def test_fixed_split_times_decide_the_rank_split():
    fixed = load_config(eval_from="2014-06-30T12:00:00Z", rank_from="2014-06-29T12:00:00Z")
    assert fixed.two_stage
    assert not load_config(eval_from="2014-06-30T12:00:00Z").two_stage
    with pytest.raises(ValueError, match="rank_from needs eval_from"):
        load_config(rank_from="2014-06-29T12:00:00Z")
    with pytest.raises(ValueError, match="eval_from='soon': not an ISO-8601"):
        load_config(eval_from="soon")


def test_two_stage_pipeline_wires_candidate_examples_between_the_trainers():
    from pipeline.pipeline import create_pipeline  # pylint: disable=import-outside-toplevel
    ids = [c.id for c in create_pipeline(load_config()).components]
    assert ids.index("retrieval_trainer") < ids.index("CandidateExamples") < ids.index(
        "ranking_trainer")
    candidates = next(c for c in create_pipeline(load_config(filter_purchased=False)).components
                      if c.id == "CandidateExamples")
    assert candidates.exec_properties["exclude_purchased"] == 0, "the API setting's twin"
    plain = [c.id for c in create_pipeline(load_config(rank_fraction=0.0)).components]
    assert "CandidateExamples" not in plain


def test_history_length_reaches_example_gen_and_transform(tmp_path):
    """PipelineConfig.history_length goes to ShopExampleGen and, as custom_config, to
    Transform's preprocessing_fn; a config file may set it (Beauty will use 50)."""
    from pipeline.pipeline import create_pipeline  # pylint: disable=import-outside-toplevel
    assert load_config().history_length == 10
    path = tmp_path / "beauty_like.json"
    path.write_text(json.dumps({"history_length": 50}))
    cfg = load_config(str(path))
    components = {c.id: c for c in create_pipeline(cfg).components}
    assert components["ShopExampleGen"].exec_properties["history_length"] == 50
    assert json.loads(components["Transform"].exec_properties["custom_config"]) == {
        "history_length": 50}


def test_the_beauty_configs_accept_a_history_length():
    """benchmarks/configs/beauty*.json stay as they are; history_length 50 is a valid key."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in ("beauty.json", "beauty_smoke.json"):
        with open(os.path.join(root, "benchmarks", "configs", name), encoding="utf-8") as f:
            values = json.load(f)
        values["history_length"] = 50
        assert load_config(**values).history_length == 50


def test_tuning_is_off_by_default_and_its_settings_are_checked():
    from pipeline.pipeline import create_pipeline  # pylint: disable=import-outside-toplevel
    cfg = load_config()
    assert cfg.tuning == "" and not cfg.tunes("retrieval") and not cfg.tunes("ranking")
    assert not [c.id for c in create_pipeline(cfg).components if c.id.endswith("_tuner")]
    with pytest.raises(ValueError, match=r"tuning='all': one of '', 'retrieval'"):
        load_config(tuning="all")
    with pytest.raises(ValueError, match="tuner_max_trials=0: must be a whole number >= 1"):
        load_config(tuning="both", tuner_max_trials=0)
    with pytest.raises(ValueError, match=r"tuner_holdout_percent=80: must be a whole number"):
        load_config(tuner_holdout_percent=80)
    with pytest.raises(ValueError, match="tuner_algorithm='grid'"):
        load_config(tuner_algorithm="grid")


@pytest.mark.parametrize("tuning", ["retrieval", "ranking", "both"])
def test_a_tuner_feeds_its_trainer_the_best_hyperparameters(tuning):
    from pipeline.pipeline import create_pipeline  # pylint: disable=import-outside-toplevel
    cfg = load_config(tuning=tuning, tuner_max_trials=3, tuner_steps=20)
    components = {c.id: c for c in create_pipeline(cfg).components}
    ids = list(components)
    for model in ("retrieval", "ranking"):
        trainer = components[f"{model}_trainer"]
        if not cfg.tunes(model):
            assert f"{model}_tuner" not in components
            assert "hyperparameters" not in trainer.inputs
            continue
        tuner = components[f"{model}_tuner"]
        assert ids.index(f"{model}_tuner") < ids.index(f"{model}_trainer")
        assert trainer.inputs["hyperparameters"].producer_component_id == f"{model}_tuner"
        assert tuner.exec_properties["tuner_fn"] == f"trainer.tuning.{model}_tuner_fn"
        custom = json.loads(tuner.exec_properties["custom_config"])
        assert custom["max_trials"] == 3 and custom["seed"] == cfg.seed
        expected = (cfg.retrieval_custom_config() if model == "retrieval"
                    else cfg.ranking_custom_config())
        assert custom["trainer"] == json.loads(json.dumps(expected))
        assert json.loads(tuner.exec_properties["train_args"])["num_steps"] == 20


@pytest.mark.parametrize("rank_fraction, patience, split", [
    (0.1, 0, "eval"), (0.1, 2, "rank"), (0.0, 2, "eval")])
def test_retrieval_early_stopping_reads_the_rank_split_when_there_is_one(
        rank_fraction, patience, split):
    """The retrieval Trainer's eval files (what its early stopping watches) are the rank
    split, a validation period, when early stopping is on and the split exists; Transform
    then transforms it too. The Evaluators keep blessing on the eval split."""
    from pipeline.pipeline import create_pipeline  # pylint: disable=import-outside-toplevel
    cfg = load_config(rank_fraction=rank_fraction,
                      retrieval_config={"early_stopping_patience": patience})
    assert cfg.retrieval_eval_split == split
    components = {c.id: c for c in create_pipeline(cfg).components}
    eval_args = json.loads(components["retrieval_trainer"].exec_properties["eval_args"])
    assert eval_args["splits"] == [split]
    ranking_args = json.loads(components["ranking_trainer"].exec_properties["eval_args"])
    assert ranking_args["splits"] == ["eval"]
    transformed = json.loads(components["Transform"].exec_properties["splits_config"])
    assert (split in transformed["transform"]) and ("eval" in transformed["transform"])
    assert ("rank" in transformed["transform"]) == (split == "rank")
    for evaluator in ("retrieval_evaluator", "ranking_evaluator"):
        assert json.loads(components[evaluator].exec_properties["example_splits"]) == ["eval"]
