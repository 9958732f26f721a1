"""The benchmark entry point: a synthetic folder end to end, and a smoke run on the real data."""
import json
import os

import pytest

from benchmarks import beauty, registry
from tests.benchmarks import planted

REAL_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data",
                         "amazon_beauty_2014_5core")


@pytest.fixture
def planted_folder(tmp_path):
    """The planted sequences in the Beauty folder layout (1-based ids)."""
    folder = tmp_path / "beauty"
    folder.mkdir()
    with open(folder / "items.tsv", "w") as f:
        f.write("item_id\tasin\ttitle\tbrand\tcategories\tprice\n")
        for i in range(1, planted.N_ITEMS + 1):
            f.write(f"{i}\tA{i:04d}\tItem {i}\tBrand {i % 7}\tBeauty|Group {(i - 1) // 10}\t"
                    f"{i}.5\n")
    with open(folder / "sequential_data.txt", "w") as f:
        for u, seq in enumerate(planted.planted_sequences(200), start=1):
            f.write(" ".join([str(u)] + [str(i + 1) for i in seq]) + "\n")
    return str(folder)


def test_cli_runs_models_and_writes_results(planted_folder, tmp_path, capsys):
    out = str(tmp_path / "results")
    beauty.main(["--data", planted_folder, "--models", "popular,transitions", "--seed", "3",
                 "--out", out, "--max-users", "150"])
    results = json.load(open(os.path.join(out, "beauty_u150.json")))
    assert results["seed"] == 3 and results["dataset"]["users"] == 150
    assert results["dataset"]["items"] == planted.N_ITEMS
    assert set(results["models"]) == {"popular", "transitions"}
    pop, trans = (results["models"][m]["test"]["unfiltered"]["ndcg@10"]
                  for m in ("popular", "transitions"))
    assert trans > pop
    assert {"load", "split", "popular.fit", "transitions.eval"} <= set(results["stage_seconds"])
    assert os.path.exists(os.path.join(out, "beauty_u150.png"))
    assert "| transitions | measured |" in capsys.readouterr().out
    # Beyond accuracy of the test lists: popularity shows the same 10 items to everyone
    # (minus history), so it covers less of the catalog and leans on the top items.
    pop_b, trans_b = (results["models"][m]["test"]["beyond_accuracy"]
                      for m in ("popular", "transitions"))
    assert pop_b["lists"] == results["models"]["popular"]["test"]["users"]
    assert pop_b["coverage"] < trans_b["coverage"]
    assert pop_b["exposure_gini"] > trans_b["exposure_gini"]
    assert 0 < trans_b["diversity"] <= 2 and trans_b["novelty"] > pop_b["novelty"]
    assert os.path.exists(os.path.join(out, "beauty_u150_beyond.png"))
    assert "## Beyond accuracy" in open(os.path.join(out, "beauty_u150.md")).read()

    # --merge keeps the earlier models and adds the new one; options are recorded.
    beauty.main(["--data", planted_folder, "--models", "ease", "--seed", "3", "--out", out,
                 "--max-users", "150", "--merge", "--set", "ease.lambdas=[5, 50]"])
    merged = json.load(open(os.path.join(out, "beauty_u150.json")))
    assert set(merged["models"]) == {"popular", "transitions", "ease"}
    assert merged["models"]["ease"]["options"]["lambdas"] == [5, 50]
    assert merged["models"]["ease"]["info"]["lambda"] in (5.0, 50.0)
    assert "popular,transitions" in merged["models"]["popular"]["run"]["command"]
    assert "--merge" in merged["models"]["ease"]["run"]["command"]
    assert {"popular.fit", "ease.fit", "load"} <= set(merged["stage_seconds"])
    with pytest.raises(SystemExit, match="--merge: seed differs"):
        beauty.main(["--data", planted_folder, "--models", "popular", "--seed", "4",
                     "--out", out, "--max-users", "150", "--merge"])


@pytest.mark.parametrize("argv, message", [
    (["--models", "popular,nope"], "unknown model"),
    (["--models", "popular", "--set", "ease.lambdas=[1]"], "--set for model"),
    (["--models", "ease", "--set", "ease.lamdas=[1]"], "no option 'lamdas'"),
    (["--models", "ease", "--set", "lambdas=1"], "expected MODEL.OPTION=VALUE"),
])
def test_cli_rejects_bad_arguments(planted_folder, tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        beauty.main(["--data", planted_folder, "--out", str(tmp_path)] + argv)


def test_cli_names_missing_data_folder(tmp_path):
    with pytest.raises(SystemExit, match="not a directory"):
        beauty.main(["--data", str(tmp_path / "missing"), "--models", "popular",
                     "--out", str(tmp_path)])


def test_registered_model_is_one_function(planted_folder):
    def fit_last_item_first(task, seed, boost=1.0):
        import numpy as np

        def scorer(histories):
            scores = np.zeros((len(histories), task.n_items))
            for u, h in enumerate(histories):
                scores[u, (h[-1] + 1) % task.n_items] = boost
            return scores
        return scorer

    registry.register("next_id", fit_last_item_first)
    try:
        results = beauty.run(planted_folder, ["next_id"], seed=0,
                             overrides={"next_id": {"boost": 2.0}})
    finally:
        registry._MODELS.pop("next_id")
    assert results["models"]["next_id"]["options"] == {"boost": 2.0}
    assert results["models"]["next_id"]["test"]["unfiltered"]["recall@5"] > 0.3


@pytest.mark.slow
def test_smoke_on_real_beauty_data(tmp_path):
    if not os.path.isdir(REAL_DATA):
        pytest.skip(f"real Amazon Beauty data not found at {os.path.abspath(REAL_DATA)} "
                    f"(research-only data, not in the repository)")
    out = str(tmp_path / "results")
    beauty.main(["--data", REAL_DATA, "--max-users", "2000", "--seed", "0", "--out", out,
                 "--models", "popular,transitions,ease", "--set", "ease.lambdas=[250]",
                 "--no-beyond-accuracy"])    # encoding 12,101 titles: minutes on CI
    results = json.load(open(os.path.join(out, "beauty_u2000.json")))
    test = {m: r["test"]["unfiltered"]["ndcg@10"] for m, r in results["models"].items()}
    assert results["dataset"]["items"] == 12101 and results["dataset"]["users"] == 2000
    assert test["ease"] > test["popular"]
    assert test["transitions"] > test["popular"]
    assert "beyond_accuracy" not in results["models"]["ease"]["test"]


def test_results_are_saved_after_each_model(planted_folder, tmp_path):
    def fit_broken(task, seed):
        raise RuntimeError("killed mid-run")

    registry.register("broken", fit_broken)
    out = str(tmp_path / "results")
    try:
        with pytest.raises(RuntimeError, match="killed mid-run"):
            beauty.main(["--data", planted_folder, "--models", "popular,broken", "--out", out])
    finally:
        registry._MODELS.pop("broken")
    saved = json.load(open(os.path.join(out, "beauty.json")))
    assert list(saved["models"]) == ["popular"]


def test_name_renames_a_model_and_its_companions():
    results = {"models": {"ours_ranked": {}, "ours_ranked_retrieval": {}},
               "stage_seconds": {"load": 1.0, "ours_ranked.fit": 2.0,
                                 "ours_ranked_retrieval.eval": 3.0}}
    beauty.rename(results, "ours_ranked", "ranked_v2")
    assert list(results["models"]) == ["ranked_v2", "ranked_v2_retrieval"]
    assert set(results["stage_seconds"]) == {"load", "ranked_v2.fit",
                                             "ranked_v2_retrieval.eval"}


def test_merge_keeps_order_and_the_fit_seconds_of_a_reused_export():
    dataset = {"users": 1, "items": 1, "interactions": 1, "max_users": None, "sha256": {}}
    row = lambda fit, reused=None: {"fit_seconds": fit, "run": {"command": f"fit {fit}"},
                                    "info": ({"runs": [{"reused_export": reused}]}
                                             if reused is not None else {})}
    previous = {"seed": 0, "dataset": dataset, "stage_seconds": {},
                "models": {"a": row(5.0), "b": row(1200.0), "c": row(7.0)}}
    current = {"seed": 0, "dataset": dataset, "stage_seconds": {},
               "models": {"b": row(3.0, reused=True), "d": row(9.0, reused=False)}}
    merged = beauty.merge(previous, current)
    assert list(merged["models"]) == ["a", "b", "c", "d"]
    assert merged["models"]["b"]["fit_seconds"] == 1200.0      # trained then, not now
    assert merged["models"]["b"]["info"]["fit_seconds_from"] == {"command": "fit 1200.0"}
    assert merged["models"]["d"]["fit_seconds"] == 9.0
