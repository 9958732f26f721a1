"""A new model version pushed while the API runs: the served versions and the catalog
embeddings follow it without a restart."""
from __future__ import annotations

import shutil
import time

import numpy as np
import portpicker
import pytest

from tests.serving.api.setup import api_serving_dir, api_shop  # noqa: F401


@pytest.fixture
def pushed_dir(api_serving_dir, tmp_path):
    """A copy of the tiny serving dir (retrieval/1, ranking/1) that tests may push to."""
    target = tmp_path / "serving"
    shutil.copytree(api_serving_dir, target)
    return target


def test_watcher_follows_a_pushed_version(api_shop, pushed_dir):
    from pipeline.contract.load import load_shop
    from serving.api.catalog import Catalog
    from serving.api.model_backend import ModelBackend, ModelWatcher
    from serving.standin.model_config import single_model_config
    from serving.standin.model_server import ModelServer
    from serving.demo.synthetic_models import write_models

    configs = (single_model_config("retrieval", str(pushed_dir / "retrieval"))
               + single_model_config("ranking", str(pushed_dir / "ranking")))
    server = ModelServer(configs, port=portpicker.pick_unused_port(), host="127.0.0.1",
                         file_system_poll_wait_seconds=0.5,
                         load_in_process=True).start()  # child loads: standin/ tests
    shop = load_shop(api_shop)
    catalog = Catalog(shop.items)
    backend = ModelBackend.connect(f"127.0.0.1:{server.grpc_port}", deadline_s=10, retries=0)
    seen = []
    watcher = ModelWatcher(backend, catalog, poll_s=0.5, batch_size=16,
                           on_versions=seen.append)
    try:
        assert watcher.wait_ready(30)
        assert watcher.versions == {"retrieval": 1, "ranking": 1}
        assert catalog.embeddings_version == 1
        before = catalog.embeddings.copy()
        watcher.start()
        # version 2: a different popularity prior changes every candidate embedding
        write_models(shop.items, {"food0": 50}, str(pushed_dir), version=2, seed=1)
        deadline = time.monotonic() + 60
        while (catalog.embeddings_version != 2 or watcher.versions["ranking"] != 2) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert catalog.embeddings_version == 2
        assert watcher.versions == {"retrieval": 2, "ranking": 2}
        assert seen[-1] == {"retrieval": 2, "ranking": 2}
        assert not np.allclose(before, catalog.embeddings)
        assert catalog.embeddings.shape == before.shape
    finally:
        watcher.stop()
        backend.close()
        server.stop(grace_s=1)
