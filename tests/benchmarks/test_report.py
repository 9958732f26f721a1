"""Report: the markdown table marks published rows (only on the data set they were published
on); JSON and PNG are written."""
import json

import pytest

from benchmarks import report

OTHER_SHA256 = {"sequential_data.txt": "0" * 64, "items.tsv": "1" * 64}


def fake_results(sha256=None, max_users=None, title=None):
    """Results of a run on Beauty (its checksums) unless ``sha256`` says otherwise."""
    metrics = {"recall@5": 0.01, "recall@10": 0.02, "ndcg@5": 0.005, "ndcg@10": 0.0075}
    model = {"options": {"lambdas": [1.0]}, "info": {}, "fit_seconds": 1.25,
             "eval_seconds": 0.5,
             "validation": {"unfiltered": metrics, "filtered": metrics, "users": 3},
             "test": {"unfiltered": metrics, "filtered": {**metrics, "ndcg@10": 0.5},
                      "users": 3}}
    dataset = {"users": 3, "items": 4, "interactions": 12, "evaluated_users": 3,
               "max_users": max_users, "sha256": dict(sha256 or report.PUBLISHED_SHA256)}
    if title is not None:
        dataset["title"] = title
    return {"dataset": dataset, "seed": 7, "models": {"ease": model},
            "stage_seconds": {"load": 0.1}}


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


def test_product_stages_table_only_for_rows_that_measured_them():
    results = fake_results()
    assert report.stages_table(results) == ""
    metrics = {"recall@5": 0.1, "recall@10": 0.2, "ndcg@5": 0.05, "ndcg@10": 0.075}
    results["models"]["product"] = {**results["models"]["ease"], "info": {"stages": {
        "retrieval": {"unfiltered": metrics, "filtered": {**metrics, "recall@10": 0.25}},
        "pool_share": 0.4567, "mean_pool_size": 180.25}}}
    table = report.stages_table(results).splitlines()
    assert table[0] == "## Product stages (test users)" and len(table) == 7
    assert table[-1] == "| product | 0.2000 | 0.0750 | 0.2500 | 0.0750 | — | 0.4567 | 180.2 |"
    # JSON keys of the cutoffs are strings once the results went through a file.
    results["models"]["product"]["info"]["stages"]["retrieval_share_at"] = {
        "10": 0.2, "100": 0.3, "400": 0.41}
    table = report.stages_table(results).splitlines()
    assert table[-1] == ("| product | 0.2000 | 0.0750 | 0.2500 | 0.0750 | 100: 0.3000, "
                         "400: 0.4100 | 0.4567 | 180.2 |")
    assert "## Product stages" in report.markdown(results)


def test_published_digests_are_the_beauty_files():
    assert set(report.PUBLISHED_SHA256) == {"sequential_data.txt", "items.tsv"}
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in report.PUBLISHED_SHA256.values())


@pytest.mark.parametrize("results", [
    fake_results(sha256=OTHER_SHA256),                                   # another data set
    fake_results(sha256={**report.PUBLISHED_SHA256, "items.tsv": "1" * 64}),   # one file differs
    fake_results(max_users=2000),                                        # a Beauty subsample
    {**fake_results(), "dataset": {k: v for k, v in fake_results()["dataset"].items()
                                   if k != "sha256"}},                  # checksums unknown
], ids=["other", "one-file-differs", "subsample", "no-sha256"])
def test_published_rows_only_on_the_full_beauty_data_set(results, tmp_path):
    assert not report.shows_published(results)
    table = report.markdown_table(results)
    assert "published" not in table and "TIGER" not in table
    assert len(table.splitlines()) == 3              # header, rule, the measured row
    text = report.markdown(results)
    assert ("Published rows omitted: they were measured on Amazon Beauty 2014 5-core, "
            "not on this data set.") in text
    assert "copied from the TIGER paper" not in text
    md, _, png = report.write(results, str(tmp_path), "other")
    assert "| published |" not in open(md, encoding="utf-8").read()
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_published_rows_on_the_full_beauty_data_set():
    results = fake_results()
    assert report.shows_published(results)
    text = report.markdown(results)
    assert "Published rows are copied from the TIGER paper (Table 1)" in text
    assert "omitted" not in text
    assert text.count("| published |") == len(report.PUBLISHED)      # test table only


def test_title_names_the_data_set_or_keeps_the_old_one():
    named = report.markdown(fake_results(sha256=OTHER_SHA256, title="My Shop 2024"))
    assert named.splitlines()[0] == "# My Shop 2024: next-item recommendation (all users)"
    old = report.markdown(fake_results())
    assert old.splitlines()[0] == ("# Amazon Beauty 2014 5-core: next-item recommendation "
                                   "(all users)")
    sample = report.markdown(fake_results(max_users=50, title="Beauty"))
    assert sample.splitlines()[0] == ("# Beauty: next-item recommendation "
                                      "(random subset of 50 users)")
