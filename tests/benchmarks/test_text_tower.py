"""benchmarks.text_tower: step parsing and the md/json/png report (the runs themselves are the
trainer's run_fn, tested end to end in tests/trainer/test_retrieval_text.py)."""
import json

import pytest

from benchmarks import text_tower, text_tower_report


def _run(mode, recall10, steps_per_second):
    return {"mode": mode, "config": {"batch_size": 256, "text_top_layers": 2},
            "training": {"steps": 10, "steps_per_second": steps_per_second,
                         "examples_per_second": 256 * steps_per_second,
                         "first_step_seconds": 3.0, "train_seconds": 5.0},
            "text": {"prepare_seconds": 12.5, "cached_texts": 40},
            "model": {"recall@10": recall10, "recall@100": 0.9, "ndcg@10": 0.2,
                      "ndcg@100": 0.3, "recall@10_history_filtered": 0.1},
            "popularity": {"recall@10": 0.04, "recall@100": 0.19, "ndcg@10": 0.02,
                           "ndcg@100": 0.05, "recall@10_history_filtered": 0.03},
            "eval_seconds": 2.0, "wall_seconds": 30.0, "cpu_seconds": 50.0,
            "peak_rss_gib": 1.5}


def test_steps_default_per_mode_and_bad_values_are_named():
    steps = text_tower._parse_steps("full=7, ".replace(" ", ""))
    assert steps["full"] == 7 and steps["frozen"] == text_tower.DEFAULT_STEPS["frozen"]
    for bad in ("full=0", "bogus=3", "frozen=x"):
        with pytest.raises(SystemExit, match=bad):
            text_tower._parse_steps(bad)


def test_report_writes_table_json_and_png(tmp_path):
    results = {"data": {"shop": "/s", "generated": True,
                        "examples": {"catalog": 100, "train": 900, "eval": 80},
                        "clicked": {"train": 300, "eval": 30}},
               "seed": 42, "config": {"batch_size": 256}, "commit": "abc",
               "command": "python -m benchmarks.text_tower", "total_seconds": 60.0,
               "environment": {"cpus": 2},
               "modes": {"none": _run("none", 0.3, 20.0), "top_layers": _run("top_layers",
                                                                            0.45, 1.5)}}
    md, js, png = text_tower_report.write(results, str(tmp_path))
    table = open(md, encoding="utf-8").read()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| none | 10 × 256 | 20.00 | 5120 |")
    assert rows[2].startswith("| top_layers 2 |") and "0.4500" in rows[2]
    assert rows[3].startswith("| popularity (train clicks) |") and "0.0400" in rows[3]
    assert json.load(open(js, encoding="utf-8"))["modes"]["none"]["model"]["recall@10"] == 0.3
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_resume_reuses_only_a_result_with_the_same_steps_and_config(tmp_path):
    run_dir = tmp_path / "runs" / "frozen"
    run_dir.mkdir(parents=True)
    result = dict(_run("frozen", 0.4, 3.0), config={"text_mode": "frozen", "batch_size": 256,
                                                    "seed": 42, "text_top_layers": 2})
    (run_dir / "result.json").write_text(json.dumps(result))
    config = {"batch_size": 256, "seed": 42, "text_top_layers": 2}
    assert text_tower._finished(str(tmp_path), "frozen", 10, config)["model"]["recall@10"] == 0.4
    assert text_tower._finished(str(tmp_path), "frozen", 11, config) is None
    assert text_tower._finished(str(tmp_path), "frozen", 10, dict(config, seed=1)) is None
    assert text_tower._finished(str(tmp_path), "full", 10, config) is None
