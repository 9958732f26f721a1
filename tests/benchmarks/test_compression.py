"""benchmarks/compression.py: its table and chart from a result dict (the measurements
themselves need trained models and the local stack: run the benchmark)."""
import pytest

from benchmarks import compression


def _results():
    def model(size):
        return {"size_bytes": size, "gzip_bytes": size * 0.9, "load_s_python": 3.0,
                "load_s_tf_serving": 1.5, "variables_rewritten": 50}

    def mode(size, diff, latency=True):
        row = {"models": {"retrieval": model(size), "ranking": model(size)},
               "quality": {"recall_at_10": 0.5, "recall_at_100": 0.8,
                           "top10_overlap_vs_full": 1.0, "retrieval_max_abs_score_diff": diff,
                           "ranking_click_auc": 0.65, "ranking_max_abs_score_diff": diff}}
        if latency:
            row["latency"] = {"stack_ready_s": 60.0,
                              "recommend": {"p50_ms": 20.0, "p99_ms": 40.0},
                              "search": {"p50_ms": 30.0, "p99_ms": 50.0}}
        return row

    return {"meta": {"date": "2026-01-01", "commit": "abc", "machine": "2 CPU cores",
                     "load_before": [1, 1, 1], "load_after": [2, 2, 2], "seed": 7,
                     "scale": 0.2, "data": {"catalog_items": 2327, "eval_clicks": 229},
                     "steps": {"retrieval": 300, "ranking": 300}, "loads": 3,
                     "duration_s": 10.0},
            "modes": {"none": mode(105e6, 0.0), "float16": mode(55e6, 4e-4),
                      "int8": mode(31e6, 0.02, latency=False)}}


def test_markdown_has_a_row_per_mode_and_model(tmp_path):
    text = compression.markdown(_results())
    assert "| float16 | ranking | 55.0 |" in text and "| int8 | retrieval | 31.0 |" in text
    assert "| none | 0.5 | 0.8 | 1.0 | 0 |" in text
    assert "20.0 / 40.0 | 30.0 / 50.0 | 60.0 |" in text
    assert text.rstrip().endswith("| — | — | — |")       # int8 without latency
    compression.chart(_results(), str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_modes_must_include_the_full_export():
    with pytest.raises(SystemExit):
        compression.parse_args(["--modes", "float16,int8"])
    assert compression.parse_args(["--modes", "none,int8"]).modes == ["none", "int8"]
