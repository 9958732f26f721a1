"""The product's answers measured beyond accuracy (benchmarks/beyond_accuracy.py) on the models
the pipeline really pushed (the session's ``runs`` fixture: tiny sample shop, pseudonymous
ids)."""
import json
import os

import pytest

from benchmarks import beyond_accuracy

pytestmark = pytest.mark.slow


def test_answers_with_diversification_on_and_off(runs, tmp_path):
    cfg = runs["cfg"]
    results = beyond_accuracy.measure(cfg.data_dir, cfg.serving_dir, str(tmp_path), seed=3,
                                      scale=0.05, pseudonym_key_file=cfg.pseudonym_key_file)
    rows = results["rows"]
    assert set(rows) == {"diversify on", "diversify 0.7", "diversify off",
                         beyond_accuracy.REFERENCE}
    on, off, popular = (rows[n] for n in ("diversify on", "diversify off",
                                          beyond_accuracy.REFERENCE))
    for row in (on, off):
        assert row["degraded_answers"] == {}            # every stage answered
        assert row["lists"] == results["shop"]["users"] > 0
        assert row["slots"] > 0.9 * row["lists"] * results["k"]
        assert 0 < row["expected_ctr"] < 1 and 0 <= row["preferred_top_share"] <= 1
        assert 0 < row["diversity"] <= 2 and row["novelty"] > 0
    # At most half a list from one top category spreads the lists over more categories.
    assert on["category_entropy"] >= off["category_entropy"]
    assert on["category_entropy"] >= 1.0 - 1e-9       # <= 5 of 10 per category
    # The model personalises: it covers more of the catalog than the popular list and
    # leans less on the most popular items.
    assert on["coverage"] > popular["coverage"]
    assert on["exposure_gini"] < popular["exposure_gini"]

    path = tmp_path / "out"
    beyond_accuracy.write_outputs(results, str(path), "beyond_accuracy",
                                  beyond_accuracy.markdown(results), beyond_accuracy.chart)
    assert "| diversify on |" in (path / "beyond_accuracy.md").read_text()
    assert json.loads((path / "beyond_accuracy.json").read_text())["shop"]["seed"] == 3
    assert os.path.getsize(path / "beyond_accuracy.png") > 0


def test_cli_refuses_bad_arguments():
    with pytest.raises(SystemExit):
        beyond_accuracy.main(["--scale", "0"])
