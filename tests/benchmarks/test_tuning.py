"""benchmarks/tuning.py: the report of tuned vs default runs (the runs themselves are the
trainers' and the Tuner's, tested in tests/trainer/test_tuning.py)."""
from benchmarks import tuning


def _row(model, seed, default, tuned, space, best):
    return {"model": model, "seed": seed, "steps": 10,
            "search": {"best": {"values": best}, "objective": "obj", "search_seconds": 60.0,
                       "holdout_default": 0.5, "search_space": {"values": space},
                       "trials": [dict(trial="1", score=0.6, **best)]},
            "default": {"quality": default, "seconds": 30.0},
            "tuned": {"quality": tuned, "hyperparameters": best, "seconds": 30.0}}


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
    tuning.chart(results, str(tmp_path / "tuning.png"))
    assert (tmp_path / "tuning.png").stat().st_size > 1000
