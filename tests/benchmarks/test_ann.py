"""benchmarks/ann.py: the synthetic catalog, recall, and a tiny run of main writing the
md/json/png (the recorded run at 100k and 1M items is benchmarks/results/ann.*)."""
from __future__ import annotations

import json

import numpy as np

from benchmarks import ann as bench


def test_synthetic_catalog_is_unit_clustered_skewed_and_seeded():
    items, queries = bench.synthetic(5000, 16, 50, seed=3)
    assert items.shape == (5000, 16) and queries.shape == (50, 16)
    assert items.dtype == queries.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1, atol=1e-5)
    again, _ = bench.synthetic(5000, 16, 50, seed=3)
    np.testing.assert_array_equal(items, again)
    assert not np.array_equal(items, bench.synthetic(5000, 16, 50, seed=4)[0])
    sizes = bench._zipf_sizes(5000, 10, np.random.default_rng(0))
    assert sizes.sum() == 5000 and sizes.min() >= 1 and sizes.max() > 5 * np.median(sizes)
    # queries lie near items: the best item is far closer than a random one
    best = (queries @ items.T).max(axis=1)
    assert best.mean() > 0.8 and abs((queries @ items[:100].T).mean()) < 0.3


def test_recall_counts_the_shared_rows():
    assert bench.recall(np.array([[1, 2, 3, 4]]), np.array([[4, 3, 9, 8]])) == 0.5
    assert bench.recall(np.array([[1, 2], [5, 6]]), np.array([[1, 2], [7, 8]])) == 0.5


def test_main_on_a_tiny_catalog_writes_md_json_and_png(tmp_path):
    assert bench.main(["--sizes", "3000", "--dims", "16", "--queries", "20", "--k", "10",
                       "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "ann.json").read_text())
    meta = report["meta"]
    assert meta["synthetic"] is True and "synthetic" in meta["data"]
    assert meta["seed"] == 0 and meta["k"] == 10 and "CPU cores" in meta["machine"]
    assert meta["scann"] == "1.3.2"
    (result,) = report["results"]
    assert (result["items"], result["dim"], result["queries"]) == (3000, 16, 20)
    brute, scann = result["methods"]["brute_force"], result["methods"]["scann"]
    assert brute["recall"] == 1.0 and 0.5 <= scann["recall"] <= 1.0
    for row in (brute, scann):
        for key in ("p50_ms", "p99_ms", "batch_qps", "build_s", "index_mb", "rss_delta_mb"):
            assert key in row
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert scann["params"]["num_leaves"] == 55 and len(scann["curve"]) == len(bench.DEPTHS)
    assert result["speedup_p50"] == round(brute["p50_ms"] / scann["p50_ms"], 1)
    assert result["meets_target"] is None           # the target is stated at 1M items
    md = (tmp_path / "ann.md").read_text()
    assert "| 3,000 | 16 | scann |" in md and "synthetic" in md.lower()
    assert (tmp_path / "ann.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
