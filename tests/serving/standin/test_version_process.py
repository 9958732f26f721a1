"""Each version loaded and served by a child process (serving/standin/version_process.py):
same answers and error codes as in-process (tensorflow_text's custom ops load there too),
failed loads keep the previous version serving, the server keeps answering while a version
loads, and no child process outlives its version or the server."""
import contextlib
import multiprocessing
import os
import shutil
import signal
import threading
import time

import numpy as np
import portpicker
import pytest
import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving.client.clients import GrpcPredictClient
from serving.client.errors import ServingError
from serving.standin.grpc_service import create_grpc_server
from serving.standin.model_config import ModelConfig, load_model_config
from serving.standin.model_registry import ModelRegistry
from serving.standin.model_server import ModelServer, parse_args
from serving.standin.saved_model_servable import ModelLoadError, SavedModelServable
from serving.standin.version_process import (ProcessLoader, ProcessServable, VersionProcess,
                                             hold_gil)
from serving.standin.warmup import warmup_path
from tests.serving import tiny_models

QUERY = {"query": np.array([b"ab", "héllo".encode()], dtype=object),
         "x": np.arange(6, dtype=np.float32).reshape(2, 3)}
CALLS = [("serving_default", QUERY, None), ("serving_default", QUERY, ["label"]),
         ("embed", {"ids": np.array([3, -4], np.int64)}, None),
         ("echo_bytes", {"payload_bytes": np.array([b"\x00\xff", b""], dtype=object)}, None)]


def live_children() -> set[int]:
    return {p.pid for p in multiprocessing.active_children()}


class TinyWithText(tiny_models.TinyModel):
    """The tiny test model plus a signature running a tensorflow_text custom op."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def normalize(self, text):
        return {"normalized": tf_text.normalize_utf8(text, "NFKC")}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Versions 1 and 2 of TinyWithText, saved once; tests copy them."""
    root = tmp_path_factory.mktemp("tiny_src")
    for version in (1, 2):
        module = TinyWithText(version)
        tf.saved_model.save(module, str(root / str(version)), signatures={
            "serving_default": module.serve, "embed": module.embed,
            "echo_bytes": module.echo_bytes, "normalize": module.normalize})
    return str(root)


def add_version(source, base_path, version, source_version=1) -> str:
    staging = os.path.join(base_path, f".staging-{version}")
    shutil.copytree(os.path.join(source, str(source_version)), staging)
    target = os.path.join(base_path, str(version))
    os.rename(staging, target)
    return target


@pytest.fixture
def loader():
    loader = ProcessLoader()
    yield loader
    loader.close()


class Served:
    """A registry behind a gRPC server, and a client of it."""

    def __init__(self, registry, grpc_port, server=None):
        self.registry, self._server = registry, server
        self.client = GrpcPredictClient(f"127.0.0.1:{grpc_port}", deadline_s=10, retries=0)

    @classmethod
    def start(cls, configs, loader):
        registry = ModelRegistry(configs, loader=loader)
        registry.poll()
        server, port = create_grpc_server(registry, portpicker.pick_unused_port())
        return cls(registry, port, server)

    def servable(self, name, version=None):
        with self.registry.servable(name, version) as (_, servable):
            return servable

    def close(self):
        self.client.close()
        if self._server is not None:
            self._server.stop(0)
            self.registry.unload_all()


@pytest.fixture(scope="module")
def both(tiny_config):
    """``tiny`` (tests/serving/tiny_models.py) served by a registry loading each version in
    a child process (the stand-in's default) and by one loading in-process."""
    loader = ProcessLoader()
    child = Served.start(load_model_config(tiny_config), loader)
    in_process = Served.start(load_model_config(tiny_config), SavedModelServable)
    yield child, in_process
    child.close()
    loader.close()
    in_process.close()


def test_a_child_process_answers_predict_like_the_in_process_servable(both):
    child, in_process = both
    for version in (1, 2):
        servable = child.servable("tiny", version)
        assert isinstance(servable, ProcessServable) and servable.pid in live_children()
        for signature, inputs, output_filter in CALLS:
            got, want = (served.client.predict("tiny", inputs, signature, version=version,
                                               output_filter=output_filter)
                         for served in (child, in_process))
            assert sorted(got) == sorted(want) and got
            for name in want:
                assert got[name].dtype == want[name].dtype, name
                np.testing.assert_array_equal(got[name], want[name])
    assert child.client.predict("tiny", QUERY)["label"].tolist() == [b"AB", "HéLLO".encode()]


def test_concurrent_predicts_get_their_own_answers(both):
    child, _ = both
    errors, done = [], []

    def caller(offset):
        try:
            for n in range(25):
                ids = np.array([offset * 1000 + n], np.int64)
                out = child.client.predict("tiny", {"ids": ids}, "embed", version=2)
                assert out["embedding"].tolist() == [[2.0 * ids[0], -1.0 * ids[0]]]
                done.append(1)
        except Exception as e:  # any mix-up or failure fails the test
            errors.append(repr(e))

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(done) == 200


@pytest.mark.parametrize("signature, inputs, code, message", [
    ("nope", QUERY, "FAILED_PRECONDITION", 'Serving signature key "nope" not found.'),
    ("embed", {"ids": np.array([1.5])}, "INVALID_ARGUMENT",
     "Expects arg 'ids' to be DT_INT64 but float64 is provided"),
    ("embed", {"ids": np.array([1]), "extra": np.array([1])}, "INVALID_ARGUMENT",
     "input size does not match signature"),
])
def test_errors_keep_their_code_and_message_through_the_child(both, signature, inputs, code,
                                                              message):
    child, in_process = both
    with pytest.raises(ServingError) as got:
        child.client.predict("tiny", inputs, signature)
    with pytest.raises(ServingError) as want:
        in_process.client.predict("tiny", inputs, signature)
    assert (got.value.code, got.value.message) == (want.value.code, want.value.message)
    assert got.value.code == code and got.value.message.startswith(message)
    # and in the server process, the same class as the in-process servable raises
    with pytest.raises(ServingError) as direct:
        child.servable("tiny").predict(signature, inputs)
    with pytest.raises(ServingError) as in_process_direct:
        in_process.servable("tiny").predict(signature, inputs)
    assert type(direct.value) is type(in_process_direct.value)
    assert (direct.value.code, direct.value.message, direct.value.http_status) == (
        in_process_direct.value.code, in_process_direct.value.message,
        in_process_direct.value.http_status)


class InProcessLoader:
    """SavedModelServable, after holding the GIL ``hold_gil_s`` like ProcessLoader's test hook
    (a stand-in for the Python work of a real load)."""

    hold_gil_s = 0.0

    def __call__(self, path):
        hold_gil(self.hold_gil_s)
        return SavedModelServable(path)


@contextlib.contextmanager
def serving_v1(source, root, load):
    """``m`` version 1 served from ``root / "m"`` in this process (it only has to answer),
    and ``c`` from ``root / "c"`` (no version yet); later versions are loaded by ``load``."""
    add_version(source, str(root / "m"), 1)
    os.makedirs(root / "c")

    def loader(path):
        return SavedModelServable(path) if path == str(root / "m" / "1") else load(path)

    served = Served.start([ModelConfig(name, str(root / name)) for name in ("m", "c")],
                          loader)
    try:
        yield served
    finally:
        served.close()


def _latencies_while_loading(served, load, add_versions):
    """Latencies (s) of 4 threads calling ``m`` every 20 ms while the registry loads the
    versions ``add_versions()`` writes side by side, ``load`` first holding its GIL 2 s."""
    latencies, errors, stop = [], [], threading.Event()

    def call():
        while not stop.is_set():
            started = time.perf_counter()
            try:
                served.client.predict("m", {"ids": np.array([1], np.int64)}, "embed")
            except Exception as e:
                errors.append(repr(e))
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)  # leave CPU to the loading children

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        add_versions()
        load.hold_gil_s = 2.0
        latencies.clear()
        served.registry.poll(parallel_loads=2)
    finally:
        load.hold_gil_s = 0.0
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []
    return latencies


def _add_broken_versions(source, root):
    """``m`` version 2 whose warm-up request fails, ``c`` version 1 with corrupt variables."""
    for model, version, corrupt in (("m", 2, _failing_warmup), ("c", 1, _corrupt_variables)):
        staging = add_version(source, str(root), f"staging-{model}")
        corrupt(staging)
        os.rename(staging, str(root / model / str(version)))


def _failing_warmup(path):
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = "embed"
    request.inputs["wrong"].CopyFrom(tf.make_tensor_proto(np.array([1], np.int64)))
    os.makedirs(os.path.dirname(warmup_path(path)))
    with tf.io.TFRecordWriter(warmup_path(path)) as writer:
        writer.write(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())


def _corrupt_variables(path):
    with open(os.path.join(path, "variables", "variables.data-00000-of-00001"), "wb") as f:
        f.write(b"not a checkpoint shard")


def _assert_failed_as_in_process(served, root, model, version, code):
    with pytest.raises(ModelLoadError) as in_process:
        SavedModelServable(str(root / model / str(version)))
    (status,) = served.client.status(model, version=version)
    assert (status.state, status.error_code, status.error_message) == (
        "END", in_process.value.code, str(in_process.value))
    assert status.error_code == code
    assert served.client.predict("m", QUERY)["version"].tolist() == [1, 1], "1 still serves"


def _assert_failed_loads(served, root):
    _assert_failed_as_in_process(served, root, "m", 2, "INVALID_ARGUMENT")  # the warm-up
    _assert_failed_as_in_process(served, root, "c", 1, "UNKNOWN")
    assert "Failed to load SavedModel" in served.client.status("c", 1)[0].error_message


def test_loads_in_children_fail_like_in_process_and_never_stall_the_server(source, loader,
                                                                           tmp_path):
    with serving_v1(source, tmp_path, loader) as served:
        latencies = _latencies_while_loading(
            served, loader, lambda: _add_broken_versions(source, tmp_path))
        assert len(latencies) >= 20, "requests were answered during the loads"
        assert max(latencies) < 0.5, sorted(latencies)[-5:]
        _assert_failed_loads(served, tmp_path)
        tiny_models.write_broken_version(str(tmp_path / "m"), 3)  # saved_model.pb: no child
        served.registry.poll()
        _assert_failed_as_in_process(served, tmp_path, "m", 3, "DATA_LOSS")
        assert loader.pids() == [], "the children of failed loads exited"


def test_the_same_loads_in_process_stall_the_server(source, tmp_path):
    load = InProcessLoader()
    with serving_v1(source, tmp_path, load) as served:
        latencies = _latencies_while_loading(
            served, load, lambda: _add_broken_versions(source, tmp_path))
        assert max(latencies) >= 0.5, sorted(latencies)[-5:]
        _assert_failed_loads(served, tmp_path)


def test_model_server_children_end_with_their_version_a_killed_one_fails_its_requests(
        source, tmp_path):
    assert parse_args([]).load_in_process is False
    assert parse_args(["--load_in_process"]).load_in_process is True
    base = tmp_path / "m"
    for version in (1, 2):
        add_version(source, str(base), version, source_version=version)
    configs = [ModelConfig("m", str(base), policy="specific", versions=(1, 2),
                           labels={"stable": 1})]
    server = ModelServer(configs, port=0, file_system_poll_wait_seconds=0).start()
    client = GrpcPredictClient(f"127.0.0.1:{server.grpc_port}", deadline_s=10, retries=0)
    outcome = []
    try:
        old, new = (_servable(server, version) for version in (1, 2))
        assert isinstance(old, ProcessServable) and isinstance(new, ProcessServable)
        assert sorted(server._loader.pids()) == sorted([old.pid, new.pid])

        def stable_to_2():  # as a config reload does (ModelServer.reload_config)
            server.registry.update_config([ModelConfig(
                "m", str(base), policy="specific", versions=(2,), labels={"stable": 2})])
            server.registry.poll()

        seen, errors = _swap_under_requests(client, stable_to_2)
        assert errors == []
        for versions in seen:  # each caller: 1, then 2 only
            assert versions[0] == 1 and versions[-1] == 2 and versions == sorted(versions)
        assert client.predict("m", QUERY)["version"].tolist() == [2, 2]
        text = {"text": np.array(["ﬁ①".encode()], dtype=object)}  # a tensorflow_text op
        assert client.predict("m", text, "normalize")["normalized"].tolist() == [b"fi1"]
        # unloading version 1 closed its pipe: its child saw the end of it (as when the
        # server dies) and exited
        assert old._child.exitcode(wait_s=0) == 0
        pids = set(server._loader.pids())
        assert new.pid in pids and old.pid not in pids | live_children()
        os.kill(new.pid, signal.SIGSTOP)  # requests now wait in the child's pipe
        waiting = threading.Thread(target=lambda: outcome.append(_error(client)))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive(), "the request waits for the stopped child"
        os.kill(new.pid, signal.SIGKILL)
        waiting.join(10)
        assert not waiting.is_alive(), "a pending request fails when its child dies"
        started = time.perf_counter()
        outcome.append(_error(client))
        assert time.perf_counter() - started < 1.0
        for error in outcome:
            assert error.code == "INTERNAL"
            assert f"(pid {new.pid}) exited unexpectedly (exit code -9)" in error.message
    finally:
        client.close()
        server.stop(grace_s=0)
    assert not pids & live_children(), "no child outlives the server"
    in_process = ModelServer(configs, port=0, file_system_poll_wait_seconds=0,
                             load_in_process=True).start()
    try:
        with in_process.registry.servable("m") as (_, servable):
            assert isinstance(servable, SavedModelServable)
    finally:
        in_process.stop(grace_s=0)


def _swap_under_requests(client, swap):
    """Versions answered to each of 2 threads calling ``m`` (label ``stable``) while
    ``swap()`` runs, and the errors."""
    seen, errors, stop = ([], []), [], threading.Event()

    def call(versions):
        while not stop.is_set():
            try:
                answer = client.predict("m", QUERY, version_label="stable")
                versions.append(int(answer["version"][0]))
            except Exception as e:  # any failure fails the test
                errors.append(repr(e))
            time.sleep(0.01)

    threads = [threading.Thread(target=call, args=(versions,)) for versions in seen]
    for t in threads:
        t.start()
    try:
        time.sleep(0.1)
        swap()
        time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    return seen, errors


def _servable(server, version):
    with server.registry.servable("m", version) as (_, servable):
        return servable


def _error(client) -> ServingError:
    with pytest.raises(ServingError) as info:
        client.predict("m", QUERY)
    return info.value


def test_stop_ends_a_child_that_does_not_exit_by_itself():
    child = VersionProcess()
    os.kill(child.pid, signal.SIGSTOP)  # deaf to the closed pipe
    started = time.perf_counter()
    child.stop(wait_s=0.5)
    assert child.exited() and time.perf_counter() - started < 5

