"""trainer/tuning.py: the TFX Tuner's tuner_fns (KerasTuner) on the synthetic shop with a
tiny trial budget, and the best values reaching the trainers' run_fn."""
import json
import os

import pytest

from tests.trainer import shop_runs
from tests.trainer.conftest import RANKING_CONFIG, RETRIEVAL_CONFIG
from trainer import tuning

TRIAL_STEPS = 5


def test_apply_hyperparameters_reads_keras_tuners_config_and_refuses_other_names():
    config = {"seed": 3, "learning_rate": 0.01}
    best = {"space": [], "values": {"learning_rate": 0.002, "hidden_units": "64x32"}}
    custom, applied = tuning.apply_hyperparameters("ranking", config, best)
    assert applied == {"hidden_units": [64, 32], "learning_rate": 0.002}
    assert custom == {"seed": 3, "learning_rate": 0.002, "hidden_units": [64, 32]}
    assert config == {"seed": 3, "learning_rate": 0.01}, "the given config is not changed"
    assert tuning.apply_hyperparameters("retrieval", config, None) == (config, {})
    with pytest.raises(ValueError, match=r"\['hidden_units'\] are not in the retrieval"):
        tuning.apply_hyperparameters("retrieval", config, {"hidden_units": "64x32"})


def test_search_space_defaults_are_the_configs_values():
    hp = tuning.hyperparameters("ranking", {"embedding_l2": 3e-3, "hidden_units": [64, 32]})
    assert hp.values == {"learning_rate": 0.005, "hidden_units": "64x32",
                         "embedding_l2": 3e-3}
    assert tuning.hyperparameters("retrieval", {}).values == {
        "learning_rate": 0.005, "embedding_dim": 64, "temperature": 0.1}


def test_tuner_config_is_checked():
    with pytest.raises(ValueError, match=r"unknown tuner custom_config key\(s\) \['trials'\]"):
        tuning.check_tuner_config({"trials": 3})
    with pytest.raises(ValueError, match="max_trials must be >= 1"):
        tuning.check_tuner_config({"max_trials": 0})
    with pytest.raises(ValueError, match="algorithm must be one of"):
        tuning.check_tuner_config({"algorithm": "grid"})


def _search(model, config, transformed_shop, tmp_path):
    """What the TFX Tuner executor does: tuner_fn, then search; returns the best
    hyper-parameters' config (as written to best_hyperparameters.txt) and the tuner."""
    from tfx.components.tuner import executor  # pylint: disable=import-outside-toplevel
    args = shop_runs.fn_args(transformed_shop, str(tmp_path / "tuner"),
                             tuning.tuner_custom_config(config, 2, 20, 3),
                             train_steps=TRIAL_STEPS)
    fn = tuning.retrieval_tuner_fn if model == "retrieval" else tuning.ranking_tuner_fn
    result = fn(args)
    result.tuner.search(**result.fit_kwargs)
    trials = result.tuner.oracle.get_best_trials(2)
    return result.tuner.get_best_hyperparameters()[0].get_config(), trials, args


@pytest.mark.parametrize("model", ["retrieval", "ranking"])
def test_tuner_fn_searches_on_a_train_holdout_and_its_best_values_reach_the_trainer(
        model, transformed_shop, tmp_path):
    from trainer import ranking, retrieval  # pylint: disable=import-outside-toplevel
    config = RETRIEVAL_CONFIG if model == "retrieval" else RANKING_CONFIG
    best, trials, args = _search(model, config, transformed_shop, tmp_path)
    assert len(trials) == 2 and all(t.score is not None for t in trials), trials
    assert set(best["values"]) == set(tuning.SEARCH_SPACES[model])
    holdout = os.path.join(args.working_dir, tuning.HOLDOUT_DIR)
    with open(os.path.join(holdout, "holdout.json"), encoding="utf-8") as f:
        counts = json.load(f)["examples"]
    assert counts["eval"] > 0 and counts["train"] > 3 * counts["eval"], counts
    # every trial trained on the holdout's train side and exported nothing
    for trial in trials:
        run_dir = os.path.join(args.working_dir, f"{model}_tuning", f"trial_{trial.trial_id}")
        assert os.path.exists(os.path.join(run_dir, "model_run", "metrics.json"))
        assert not os.path.exists(os.path.join(run_dir, "serving_model_dir"))

    # The Trainer: fn_args.hyperparameters = the best_hyperparameters artifact's JSON
    trainer_args = shop_runs.fn_args(transformed_shop, str(tmp_path / "trainer"), config,
                                     train_steps=TRIAL_STEPS)
    trainer_args.hyperparameters = json.loads(json.dumps(best))
    run_fn = retrieval.run_fn if model == "retrieval" else ranking.run_fn
    run = shop_runs.run(run_fn, trainer_args)
    _, expected = tuning.apply_hyperparameters(model, {}, best)
    assert run.metrics["hyperparameters"] == json.loads(json.dumps(expected))
    for name, value in expected.items():
        recorded = run.metrics["config"][name]
        assert (list(recorded) if isinstance(value, list) else recorded) == value, name
    assert os.path.exists(os.path.join(run.export, "saved_model.pb"))


def test_the_retrieval_and_ranking_searches_draw_their_own_values(transformed_shop, tmp_path):
    """With one seed both random searches used to try the same learning rates (the first
    hyper-parameter of both spaces): a pipeline run with tuning "both" showed 0.0088, 0.0025,
    0.0065 in each. Each model's oracle now has its own seeded stream."""
    drawn = {}
    for model, fn, config in (("retrieval", tuning.retrieval_tuner_fn, RETRIEVAL_CONFIG),
                              ("ranking", tuning.ranking_tuner_fn, RANKING_CONFIG)):
        args = shop_runs.fn_args(transformed_shop, str(tmp_path / model),
                                 tuning.tuner_custom_config(config, 3, 20, 3),
                                 train_steps=TRIAL_STEPS)
        oracle = fn(args).tuner.oracle
        drawn[model] = [oracle.create_trial(f"probe{i}").hyperparameters.values["learning_rate"]
                        for i in range(3)]
    assert not set(drawn["retrieval"]) & set(drawn["ranking"]), drawn
