"""Acceptance of user segments (issue #21) on the scale-1 sample shop: the segments recover
the generator's planted grouping (ARI >= 0.5), each segment's description names its
members' planted category, and segment popularity beats global popularity for users with
1-2 engagements. A cheaper retrieval model than the pipeline's (no text tower, 300 steps)
gives the vectors; benchmarks/results/segments.md has the figures with the pipeline's."""
import pytest

from benchmarks import segments as bench

pytestmark = pytest.mark.slow


def test_segments_recover_the_planted_tastes_and_help_short_histories(tmp_path):
    results, _ = bench.measure(str(tmp_path), seed=0, scale=1.0, train_steps=300,
                               retrieval_config={"top_k": 100, "text_mode": "none"})
    recovery, short = results["recovery"], results["fallback"]["1-2"]
    print(bench.markdown(results))
    assert results["segments"]["segments"] >= 8, results["segments"]
    assert recovery["ari_preferred_top"] >= 0.5, recovery
    assert recovery["segments_naming_planted"] >= len(recovery["named"]) - 1, recovery["named"]
    assert short["eval_units"] >= 50, short
    assert short["segment_recall@10"] > short["global_recall@10"], short
