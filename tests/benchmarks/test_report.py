"""Report: the markdown table marks published rows; JSON and PNG are written."""
import json

from benchmarks import report


def fake_results():
    metrics = {"recall@5": 0.01, "recall@10": 0.02, "ndcg@5": 0.005, "ndcg@10": 0.0075}
    model = {"options": {"lambdas": [1.0]}, "info": {}, "fit_seconds": 1.25,
             "eval_seconds": 0.5,
             "validation": {"unfiltered": metrics, "filtered": metrics, "users": 3},
             "test": {"unfiltered": metrics, "filtered": {**metrics, "ndcg@10": 0.5},
                      "users": 3}}
    return {"dataset": {"users": 3, "items": 4, "interactions": 12, "evaluated_users": 3,
                        "max_users": None},
            "seed": 7, "models": {"ease": model}, "stage_seconds": {"load": 0.1}}


def test_markdown_table_rows_and_published_marks():
    lines = report.markdown_table(fake_results()).splitlines()
    assert lines[0].startswith("| model | source | R@5 unf. | R@10 unf.")
    assert lines[2] == ("| ease | measured | 0.0100 | 0.0200 | 0.0050 | 0.0075 | 0.0100 | "
                        "0.0200 | 0.0050 | 0.5000 | 1.2 | 0.5 |")
    assert lines[3].startswith("| SASRec (TIGER paper) | published | — | 0.0605 | — | 0.0318 |")
    assert lines[4].startswith("| TIGER (TIGER paper) | published | — | 0.0648 | — | 0.0384 |")
    valid = report.markdown_table(fake_results(), "validation", published=False)
    assert "published" not in valid and "| ease | measured |" in valid


def test_write_creates_markdown_json_png(tmp_path):
    md, js, png = report.write(fake_results(), str(tmp_path), "beauty_u3")
    text = open(md, encoding="utf-8").read()
    assert "Seed 7" in text and "## Test" in text and "## Validation" in text
    assert json.load(open(js))["seed"] == 7
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
