"""benchmarks/tuning.py: the report of tuned vs default runs (the runs themselves are the
trainers' and the Tuner's, tested in tests/trainer/test_tuning.py)."""
import os

import pytest

from benchmarks import folders, tuning


def _row(model, seed, default, tuned, space, best):
    return {"model": model, "seed": seed, "steps": 10,
            "search": {"best": {"values": best}, "objective": "obj", "search_seconds": 60.0,
                       "holdout_default": 0.5, "search_space": {"values": space},
                       "trials": [dict(trial="1", score=0.6, **best)]},
            "default": {"quality": default, "seconds": 30.0},
            "tuned": {"quality": tuned, "hyperparameters": best, "seconds": 30.0}}


def _assert_chart(results, folder):
    path = folder / "chart.png"
    tuning.chart(results, str(path))
    assert path.stat().st_size > 1000


def test_markdown_and_chart_show_tuned_minus_defaults(tmp_path):
    retrieval = {"recall@10": 0.3, "recall@50": 0.5, "recall@100": 0.6, "ndcg@10": 0.2}
    ranking = {"click_auc": 0.6, "purchase_auc": 0.6, "rating_rmse": 0.9}
    results = {"settings": {"seeds": [0], "scale": 0.1, "trials": 1, "trial_steps": 5,
                            "steps": {"retrieval": 10, "ranking": 10}},
               "commit": "abc", "seconds": 1.0, "rows": [
                   _row("retrieval", 0, retrieval, dict(retrieval, **{"recall@100": 0.7}),
                        {"temperature": 0.1}, {"temperature": 0.25}),
                   _row("ranking", 0, ranking, dict(ranking, click_auc=0.65),
                        {"hidden_units": "128x64"}, {"hidden_units": "64x32"})]}
    text = tuning.markdown(results)
    assert "| retrieval | 0 | +0.0000 | +0.0000 | +0.1000 | +0.0000 |" in text
    assert "| ranking | 0 |  |  |  |  | +0.0500 | +0.0000 | +0.0000 |" in text
    assert "searches and final runs 4 min" in text
    assert "| tuned: temperature 0.250 |" in text
    _assert_chart(results, tmp_path)


def test_beauty_report_says_which_users_judge_and_what_was_not_searched():
    retrieval = {"recall@10": 0.09, "recall@50": 0.2, "recall@100": 0.3, "ndcg@10": 0.05}
    results = {"settings": {"seeds": [0], "scale": None, "trials": 2, "trial_steps": 7,
                            "steps": {"retrieval": 30, "ranking": 300},
                            "data": {"folder": "beauty", "users": 300, "items": 120,
                                     "validation_users": 290, "examples": None}},
               "commit": "abc", "seconds": 1.0, "rows": [
                   _row("retrieval", 0, retrieval, dict(retrieval, **{"ndcg@10": 0.04}),
                        {"temperature": 0.1}, {"temperature": 0.2})]}
    text = tuning.markdown(results)
    assert text.startswith("# Tuner on Amazon Beauty, validation users")
    assert "the 290 validation targets" in text and "never read" in text
    assert "--trial-steps 7 --retrieval-steps 30" in text
    assert "| retrieval | 0 | +0.0000 | +0.0000 | +0.0000 | -0.0100 |" in text
    assert "not run here (--no-pipeline)" in text


def test_beauty_work_dir_inside_the_repository_is_refused():
    with pytest.raises(SystemExit) as stop:
        tuning.main(["--data", "/nonexistent", "--work-dir",
                     os.path.join(folders.REPO, "tmp_tuning")])
    assert stop.value.code == 2
    assert not os.path.exists(os.path.join(folders.REPO, "tmp_tuning"))


def _report(metrics, baseline=None, blessed=True, seconds=None):
    return {"models": {"ranking": {"metrics": metrics, "baseline": baseline or {},
                                   "blessed": blessed, "pushed": blessed, "failed": []}},
            "component_seconds": seconds or {}}


def test_beauty_report_shows_the_pipeline_ranking_runs_paired(tmp_path):
    default = {"NDCG@10": 0.14, "click AUC": 0.79, "purchase AUC": 0.79}
    tuned = {"NDCG@10": 0.15, "click AUC": 0.80, "purchase AUC": 0.78}
    found = {"reports": {"default": _report(default),
                         "tuned": _report(tuned, baseline=default,
                                          seconds={"ranking_tuner": 600.0,
                                                   "ranking_trainer": 300.0})},
             "trials": [{"trial_id": "02", "score": 0.81, "learning_rate": 0.002,
                         "hidden_units": "64x32"}],
             "best": {"learning_rate": 0.002, "hidden_units": "64x32"},
             "config": "benchmarks/configs/beauty_validation.json"}
    retrieval = {"recall@10": 0.09, "recall@50": 0.2, "recall@100": 0.3, "ndcg@10": 0.05}
    results = {"settings": {"seeds": [0], "scale": None, "trials": 1, "trial_steps": 7,
                            "ranking_trial_steps": 9, "steps": {"retrieval": 30},
                            "data": {"folder": "beauty", "users": 3, "items": 5,
                                     "validation_users": 3, "examples": None}},
               "commit": "abc", "seconds": 1.0, "pipeline_ranking": found, "rows": [
                   _row("retrieval", 0, retrieval, retrieval, {"temperature": 0.1},
                        {"temperature": 0.1})]}
    text = tuning.markdown(results)
    assert "ranking model is searched inside the pipeline" in text
    assert "tuner_max_trials=1 --set tuner_steps=9" in text
    assert "Tuner 600 s, ranking Trainer 300 s; tuned ranker blessed: True" in text
    assert "| defaults (run 1) | 0.1400 | 0.7900 | 0.7900 |" in text
    assert "| defaults, as run 2's baseline | 0.1400 | 0.7900 | 0.7900 |" in text
    assert "| tuned (run 2) | 0.1500 | 0.8000 | 0.7800 |" in text
    assert "| 02 | 0.8100 | 64x32 | 0.002 |" in text
    _assert_chart(results, tmp_path)


def test_validation_config_makes_the_held_out_export_judge_validation_items():
    """benchmarks/configs/beauty_validation.json on the export without each user's last
    item (events keep the full export's timestamps): the validation item is eval, the item
    before it rank, the rest train; the rest of the config is the product's."""
    import json  # pylint: disable=import-outside-toplevel
    from benchmarks import beauty_data  # pylint: disable=import-outside-toplevel
    from pipeline import examples  # pylint: disable=import-outside-toplevel
    from pipeline.configs import load_config  # pylint: disable=import-outside-toplevel
    cfg = load_config(tuning.BEAUTY_VALIDATION_CONFIG)
    assert cfg.two_stage and cfg.enable_cache and cfg.tuning == ""
    cutoffs = examples.check_split_times(cfg.eval_from, cfg.rank_from)
    for user in range(0, 5000, 7):
        kept = beauty_data.event_timestamps(6, user)[:-1]      # hold_out_last=1
        assert [examples.split_of(t, *cutoffs) for t in kept] == ["train"] * 3 + ["rank", "eval"]
    with open(tuning.BEAUTY_VALIDATION_CONFIG, encoding="utf-8") as f:
        validation = json.load(f)
    with open(os.path.join(folders.REPO, "benchmarks", "configs", "beauty.json"),
              encoding="utf-8") as f:
        product = json.load(f)
    changed = {k for k in set(product) | set(validation) if product.get(k) != validation.get(k)}
    assert changed == {"eval_from", "rank_from", "max_eval_contexts", "enable_cache"}
