"""benchmarks/serving.py: the load loop's accounting, the synthetic shop, and a short run."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from benchmarks import serving as bench


def test_run_cell_counts_latencies_errors_and_throughput():
    def make_call():
        def call(rng):
            time.sleep(0.01)
            if rng.random() < 0.25:
                raise RuntimeError("failed call")
        return call

    row = bench.run_cell(make_call, concurrency=2, warmup_s=0.05, duration_s=0.5)
    assert row["concurrency"] == 2 and row["errors"] > 0
    assert 20 <= row["requests"] + row["errors"] <= 110
    assert row["throughput_rps"] == round(row["requests"] / 0.5, 1)
    assert 10 <= row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] < 200


def test_synthetic_shop_is_valid_and_histories_follow_the_rule(tmp_path):
    from pipeline.contract.load import load_shop
    from pipeline.examples import history_before

    histories = bench.write_synthetic_shop(tmp_path, 500, seed=3)
    shop = load_shop(tmp_path)
    assert len(shop.items) == 500 and len(shop.events) == bench.USERS * bench.CLICKS_PER_USER
    user = sorted(histories)[7]
    rows = shop.events[shop.events["user_id"] == user].to_dict("records")
    assert histories[user] == history_before(rows, 2 ** 62)
    assert bench.write_synthetic_shop(tmp_path / "again", 500, seed=3) == histories


@pytest.mark.slow
def test_short_benchmark_run_writes_json_and_table(tmp_path):
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.serving", "--sizes", "300", "--concurrency", "1,2",
         "--duration-s", "1.5", "--warmup-s", "0.5", "--workdir", str(tmp_path / "work"),
         "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((out / "serving.json").read_text())
    cells = {(r["target"], r["concurrency"]) for r in report["results"]}
    assert cells == {(t, c) for t in ("recommend", "top_k", "score") for c in (1, 2)}
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in report["results"])
    assert set(report["results"][0]["stage_mean_ms"]) >= {"retrieval", "ranking"}
    assert "| 300 | recommend | 1 |" in (out / "serving.md").read_text()
