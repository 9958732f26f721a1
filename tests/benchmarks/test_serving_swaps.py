"""benchmarks/serving_swaps.py: its parts. The smoke run (2 pushes under 8 clients on the
models the pipeline test pushed) is in tests/test_tfx_pipeline.py; the recorded run (10
pushes, the demo's models) in benchmarks/results/serving_swaps.*."""
from benchmarks import serving_swaps


def test_push_copy_adds_a_complete_version_of_each_model(tmp_path):
    for model in ("retrieval", "ranking"):
        (tmp_path / model / "7" / "variables").mkdir(parents=True)
        (tmp_path / model / "7" / "saved_model.pb").write_bytes(b"pb")
    assert serving_swaps.push_copy(tmp_path, 8) == 8
    for model in ("retrieval", "ranking"):
        assert sorted(p.name for p in (tmp_path / model).iterdir()) == ["7", "8"]
        assert (tmp_path / model / "8" / "saved_model.pb").read_bytes() == b"pb"


def test_summary_counts_failed_degraded_and_swap_times():
    records = [(0.0, 0.01, 200, (), (("ranking", 1), ("retrieval", 1))),
               (0.1, 0.02, 200, ("ranking",), (("ranking", 1), ("retrieval", 1))),
               (0.2, 0.03, 503, (), ()), (0.3, 0.01, "ConnectError", (), ())]
    summary = serving_swaps.summarise(records, [{"version": 2, "pushed_at": 0.0,
                                                 "served_after_s": 4.0},
                                                {"version": 3, "pushed_at": 9.0,
                                                 "served_after_s": None}])
    assert summary["answers"] == 4 and summary["failed"] == 2 and summary["degraded"] == 1
    assert summary["failed_kinds"] == ["503", "ConnectError"]
    assert summary["degraded_stages"] == {"ranking": 1}
    assert summary["swaps_served"] == 1 and summary["max_swap_s"] == 4.0
