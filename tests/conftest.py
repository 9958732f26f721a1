"""Test-wide setup: tf-keras (Keras 2) for TFRS must be chosen before TensorFlow is imported."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402  (after the environment above)


# Session fixtures that cost minutes: every test using one runs in the same pytest-xdist
# worker (`make test` runs `-n 2 --dist loadgroup`), so each is built once per session
# instead of once per worker. The first match names the group.
COSTLY_FIXTURES = (
    ("runs", "pipeline_runs"),                     # two sample-shop pipeline runs (~5 min)
    ("transformed_shop", "trainer_shop"), ("transformed_shop_long", "trainer_shop"),
    ("retrieval_run", "trainer_shop"), ("ranking_run", "trainer_shop"),
    ("retrieval_run_long", "trainer_shop"), ("ranking_run_long", "trainer_shop"),
    ("api_serving_dir", "serving_api"),
)


@pytest.hookimpl(wrapper=True)   # around every other plugin's, pytest-xdist's included
def pytest_collection_modifyitems(config, items):
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        group = next((g for fixture, g in COSTLY_FIXTURES if fixture in names), None)
        if group and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))
    result = yield
    # pytest-xdist's worker passes each test's group to the scheduler as a suffix of its node
    # id; where that fails (pytest 9.2 with pytest-xdist 3.8, pytest-xdist#1386) the tests
    # are spread silently, a module's tests can land in two workers and each worker builds
    # the costly fixtures again: every test then fails (_xdist_groups_kept) saying so.
    if hasattr(config, "workerinput") and config.getvalue("loadgroup"):
        lost = [item.nodeid for item in items
                if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
        if lost:
            config.stash[LOST_GROUPS] = (
                f"pytest-xdist --dist loadgroup did not group {len(lost)} tests (e.g. "
                f"{lost[0]}): this pytest / pytest-xdist pair does not pass test groups "
                "(see requirements/requirements.in)")
    return result


LOST_GROUPS = pytest.StashKey[str]()


@pytest.fixture(scope="session", autouse=True)
def _xdist_groups_kept(request):
    """Fails every test of a worker whose tests lost their pytest-xdist groups (before any
    costly fixture is built: autouse session fixtures come first)."""
    problem = request.config.stash.get(LOST_GROUPS, "")
    if problem:
        pytest.fail(problem, pytrace=False)


def pushed_versions(serving_dir, model):
    base = os.path.join(serving_dir, model)
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """The whole TFX pipeline on a tiny sample shop, twice (good, then degraded, reusing the
    first run's cached data components); once per session, shared by tests/test_tfx_pipeline.py
    and the browser tests (tests/serving/web) that serve what it pushed."""
    import tfx_pipeline  # pylint: disable=import-outside-toplevel
    from pipeline.configs import load_config  # pylint: disable=import-outside-toplevel
    from pipeline.contract.pseudonym import write_new_key  # pylint: disable=import-outside-toplevel
    from pipeline.sample_shop.generate import generate_shop  # pylint: disable=import-outside-toplevel

    tmp = tmp_path_factory.mktemp("e2e")
    shop = tmp / "shop"
    generate_shop(str(shop), seed=3, scale=0.05)
    write_new_key(tmp / "pseudonym.key")
    common = dict(data_dir=str(shop), pipeline_root=str(tmp / "root"),
                  pseudonym_key_file=str(tmp / "pseudonym.key"),
                  metadata_path=str(tmp / "metadata.db"), serving_dir=str(tmp / "serving"),
                  retrieval_train_steps=150, retrieval_eval_steps=5,
                  ranking_train_steps=100, ranking_eval_steps=5,
                  min_retrieval_recall=0.0, min_click_auc=0.0, min_purchase_auc=0.0,
                  min_ranking_ndcg=0.0,
                  # early stopping on: the retrieval Trainer checks the rank split every 50
                  # steps (pipeline.configs.PipelineConfig.retrieval_eval_split)
                  retrieval_config={"early_stopping_patience": 2,
                                    "early_stopping_every_steps": 50})
    good = load_config(**common)
    first = tfx_pipeline.run_local(good)
    first_versions = {m: pushed_versions(good.serving_dir, m) for m in ("retrieval", "ranking")}
    # The degraded run learns nothing (learning rate 0), so a few steps give the same model;
    # with the cache on it reuses the first run's ExampleGen, statistics, schema and
    # Transform outputs (same inputs and settings), as a shop's re-run would.
    degraded = load_config(**{**common, "retrieval_train_steps": 10, "ranking_train_steps": 10,
                              "enable_cache": True,
                              "retrieval_config": {**common["retrieval_config"], "degrade": True},
                              # listwise: the ranker reads whole contexts of the
                              # CandidateExamples rows (trainer/data.make_context_dataset)
                              "ranking_config": {"degrade": True, "listwise_weight": 1.0},
                              # and part of its negatives from the pools' first places
                              "ranking_hard_negatives": 5, "ranking_hard_window": 30})
    second = tfx_pipeline.run_local(degraded)
    return {"cfg": good, "first": first, "second": second, "first_versions": first_versions}
