"""Version loading, policies, swaps that never drop in-flight requests, broken versions."""
import os
import shutil
import threading
import time

import numpy as np
import pytest

from serving.client.errors import InvalidArgument, NotFound
from serving.standin.model_config import ModelConfig
from serving.standin.model_registry import ModelRegistry, versions_on_disk
from tests.serving import tiny_models

X = {"ids": np.array([1], np.int64)}


@pytest.fixture(scope="module")
def saved_versions(tmp_path_factory):
    """Versions 1 and 2 of the tiny model, saved once; tests copy them."""
    root = str(tmp_path_factory.mktemp("tiny_src"))
    for version in (1, 2):
        tiny_models.write_version(root, version)
    return root


def add_version(saved_versions, base_path, version, source=1):
    staging = os.path.join(base_path, f".staging-{version}")
    shutil.copytree(os.path.join(saved_versions, str(source)), staging)
    os.rename(staging, os.path.join(base_path, str(version)))


def served_version(registry, name="m", **spec):
    with registry.servable(name, **spec) as (version, servable):
        out = servable.predict("embed", X)
    assert out["embedding"][0, 0] in (1.0, 2.0)
    return version


def test_versions_on_disk_ignores_non_numeric(tmp_path):
    for name in ("1", "12", ".tmp-3", "latest"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert sorted(versions_on_disk(str(tmp_path))) == [1, 12]
    assert versions_on_disk(str(tmp_path / "missing")) == {}


def test_latest_policy_swaps_to_new_version_and_unloads_old(saved_versions, tmp_path):
    add_version(saved_versions, str(tmp_path), 1)
    registry = ModelRegistry([ModelConfig("m", str(tmp_path))])
    registry.poll()
    assert served_version(registry) == 1
    add_version(saved_versions, str(tmp_path), 2, source=2)
    registry.poll()
    assert served_version(registry) == 2
    assert [(s.version, s.state) for s in registry.status("m")] == [(2, "AVAILABLE"),
                                                                    (1, "END")]
    with pytest.raises(NotFound, match=r"Specific\(m, 1\)"):
        served_version(registry, version=1)


def test_specific_policy_labels_and_errors(saved_versions, tmp_path):
    for version in (1, 2, 3):
        add_version(saved_versions, str(tmp_path), version)
    registry = ModelRegistry([ModelConfig("m", str(tmp_path), policy="specific",
                                          versions=(1, 2), labels={"stable": 1})])
    registry.poll()
    assert [s.version for s in registry.status("m")] == [2, 1]
    assert served_version(registry) == 2
    assert served_version(registry, version=1) == 1
    assert served_version(registry, label="stable") == 1
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: x"):
        served_version(registry, label="x")
    with pytest.raises(NotFound, match=r"Latest\(other\)"):
        served_version(registry, name="other")
    with pytest.raises(NotFound, match="Could not find version 3 of model m"):
        registry.status("m", version=3)


def test_broken_new_version_keeps_old_serving_and_is_retried_when_fixed(
        saved_versions, tmp_path):
    add_version(saved_versions, str(tmp_path), 1)
    registry = ModelRegistry([ModelConfig("m", str(tmp_path))])
    registry.poll()
    tiny_models.write_broken_version(str(tmp_path), 2)
    registry.poll()
    assert served_version(registry) == 1
    broken, good = registry.status("m")
    assert (broken.version, broken.state, good.state) == (2, "END", "AVAILABLE")
    assert broken.error_code != "OK" and "saved_model.pb" in broken.error_message
    registry.poll()  # unchanged: not retried, still reported
    assert registry.status("m", version=2)[0].error_code == broken.error_code
    shutil.rmtree(tmp_path / "2")
    add_version(saved_versions, str(tmp_path), 2, source=2)
    registry.poll()
    assert served_version(registry) == 2


def test_empty_version_dir_is_reported_not_fatal(tmp_path):
    (tmp_path / "1").mkdir()
    registry = ModelRegistry([ModelConfig("m", str(tmp_path))])
    registry.poll()
    (status,) = registry.status("m")
    assert (status.state, status.error_code) == ("END", "NOT_FOUND")
    with pytest.raises(NotFound):
        served_version(registry)


class SlowServable:
    """Wraps a real servable; predict waits until released (to hold a request in flight)."""

    def __init__(self, path, release: threading.Event):
        from serving.standin.saved_model_servable import SavedModelServable
        self._inner, self._release = SavedModelServable(path), release
        self.signature_defs = self._inner.signature_defs
        self.dropped = False

    def predict(self, *args, **kwargs):
        self._release.wait(30)
        return self._inner.predict(*args, **kwargs)


def test_old_version_is_dropped_only_after_in_flight_requests_finish(saved_versions, tmp_path):
    release = threading.Event()
    add_version(saved_versions, str(tmp_path), 1)
    registry = ModelRegistry([ModelConfig("m", str(tmp_path))],
                             loader=lambda path: SlowServable(path, release))
    registry.poll()
    results = []
    worker = threading.Thread(target=lambda: results.append(served_version(registry)))
    worker.start()
    time.sleep(0.2)  # the request now holds version 1
    add_version(saved_versions, str(tmp_path), 2, source=2)
    poller = threading.Thread(target=registry.poll)
    poller.start()
    deadline = time.monotonic() + 30
    while registry.status("m", version=1)[0].state != "UNLOADING":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert registry.status("m", version=2)[0].state == "AVAILABLE"
    assert poller.is_alive()  # waiting for the in-flight request
    release.set()
    worker.join(30)
    poller.join(30)
    assert results == [1]
    assert registry.status("m", version=1)[0].state == "END"


def test_config_update_adds_and_removes_models(saved_versions, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    add_version(saved_versions, str(a), 1)
    add_version(saved_versions, str(b), 5)
    registry = ModelRegistry([ModelConfig("a", str(a))])
    registry.poll()
    registry.update_config([ModelConfig("b", str(b))])
    registry.poll()
    assert registry.model_names() == ["b"]
    assert served_version(registry, name="b") == 5
    with pytest.raises(NotFound):
        served_version(registry, name="a")


def test_unload_all(saved_versions, tmp_path):
    add_version(saved_versions, str(tmp_path), 1)
    registry = ModelRegistry([ModelConfig("m", str(tmp_path))])
    registry.poll()
    registry.unload_all()
    assert registry.status("m")[0].state == "END"


def test_parallel_loads_load_versions_of_all_models_side_by_side(saved_versions, tmp_path):
    for name in ("a", "b"):
        add_version(saved_versions, str(tmp_path / name), 1)
    running, most = [], []
    lock = threading.Lock()

    def slow_loader(path):
        with lock:
            running.append(path)
            most.append(len(running))
        time.sleep(0.3)
        with lock:
            running.remove(path)
        return object()

    configs = [ModelConfig(name, str(tmp_path / name)) for name in ("a", "b")]
    registry = ModelRegistry(configs, loader=slow_loader)
    registry.poll(parallel_loads=2)
    assert max(most) == 2
    assert [s.state for name in ("a", "b") for s in registry.status(name)] == ["AVAILABLE"] * 2
    add_version(saved_versions, str(tmp_path / "a"), 2)
    most.clear()
    registry.poll()  # one at a time by default
    assert most == [1]
    assert [(s.version, s.state) for s in registry.status("a")] == [(2, "AVAILABLE"), (1, "END")]


def test_dropped_servables_are_closed_if_they_can_be(saved_versions, tmp_path):
    closed = []

    class Closable:
        def __init__(self, path):
            self.path = path

        def close(self):
            closed.append(os.path.basename(self.path))

    add_version(saved_versions, str(tmp_path), 1)
    registry = ModelRegistry([ModelConfig("m", str(tmp_path))], loader=Closable)
    registry.poll()
    add_version(saved_versions, str(tmp_path), 2)
    registry.poll()
    assert closed == ["1"], "unloading version 1 closed it"
    registry.unload_all()
    assert closed == ["1", "2"]
