"""The stand-in end to end: CLI, hot version swaps under load, broken versions, rollback by
config, graceful SIGTERM."""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import portpicker
import pytest

from serving.client.clients import GrpcPredictClient, RestPredictClient
from serving.standin.model_config import load_model_config
from serving.standin.model_server import ModelServer, main, parse_args
from tests.serving import tiny_models

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
INPUTS = {"query": np.array([b"ab"], dtype=object), "x": np.ones((1, 3), np.float32)}


def write_config(path, base_path, policy=""):
    path.write_text("model_config_list { config { name: 'swap' "
                    f"base_path: '{base_path}' model_platform: 'tensorflow' {policy} }} }}")
    return str(path)


def wait_for(condition, timeout_s=60.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def swap_server(tmp_path):
    """Serving ``swap`` version 1, polling every 0.2 s; versions load in-process (no TF
    import per version): test_version_process.py covers swaps through child processes."""
    base = tmp_path / "swap"
    tiny_models.write_version(str(base), 1)
    config = write_config(tmp_path / "models.config", base)
    server = ModelServer(load_model_config(config), port=portpicker.pick_unused_port(),
                         rest_api_port=portpicker.pick_unused_port(), host="127.0.0.1",
                         file_system_poll_wait_seconds=0.2, model_config_file=config,
                         model_config_file_poll_wait_seconds=0.2,
                         load_in_process=True).start()
    yield server, base, tmp_path / "models.config"
    server.stop(grace_s=2)


def test_swap_under_concurrent_requests_fails_nothing(swap_server):
    server, base, _ = swap_server
    clients = [GrpcPredictClient(f"127.0.0.1:{server.grpc_port}", deadline_s=30, retries=0),
               RestPredictClient(f"http://127.0.0.1:{server.rest_port}", timeout_s=30,
                                 retries=0)]
    callers = [c for c in clients for _ in range(2)]
    seen = [[] for _ in callers]  # per thread: a request sent before the swap may finish
    failures, stop = [], threading.Event()  # after another thread's first answer from v2

    def hammer(client, versions):
        while not stop.is_set():
            try:
                versions.append(int(client.predict("swap", INPUTS)["version"][0]))
            except Exception as e:  # any failure fails the test
                failures.append(repr(e))

    threads = [threading.Thread(target=hammer, args=(c, v)) for c, v in zip(callers, seen)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    tiny_models.write_version(str(base), 2)  # save elsewhere, then rename into place
    wait_for(lambda: all(s and s[-1] == 2 for s in seen), what="responses from v2")
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert failures == []
    for versions in seen:
        assert versions[0] == 1 and versions[-1] == 2
        assert versions == sorted(versions)  # never back to v1 once v2 answered
    wait_for(lambda: clients[0].status("swap", version=1)[0].state == "END", what="v1 unload")
    for c in clients:
        c.close()


def test_broken_new_version_keeps_old_serving_and_is_reported(swap_server):
    server, base, _ = swap_server
    client = GrpcPredictClient(f"127.0.0.1:{server.grpc_port}", deadline_s=30)
    tiny_models.write_broken_version(str(base), 3)
    wait_for(lambda: client.status("swap")[0].version == 3 and
             client.status("swap")[0].state == "END", what="v3 load failure")
    broken = client.status("swap", version=3)[0]
    assert broken.error_code != "OK" and broken.error_message
    assert client.predict("swap", INPUTS)["version"].tolist() == [1]
    assert client.status("swap", version=1)[0].state == "AVAILABLE"
    client.close()


def test_rollback_by_pinning_a_version_in_the_config(swap_server):
    server, base, config_path = swap_server
    client = RestPredictClient(f"http://127.0.0.1:{server.rest_port}", timeout_s=30)
    tiny_models.write_version(str(base), 2)
    wait_for(lambda: client.predict("swap", INPUTS)["version"].tolist() == [2], what="v2")
    write_config(config_path, base, "model_version_policy { specific { versions: 1 } }")
    wait_for(lambda: client.predict("swap", INPUTS)["version"].tolist() == [1],
             what="rollback to v1")
    wait_for(lambda: client.status("swap", version=2)[0].state == "END", what="v2 unload")
    client.close()


def test_cli_rejects_bad_input(tmp_path, capsys):
    assert main(["--model_config_file", str(tmp_path / "missing.config")]) == 2
    assert "cannot read model config file" in capsys.readouterr().err
    assert main(["--model_base_path", ""]) == 2
    assert main(["--model_config_file", write_config(tmp_path / "c", "/x"),
                 "--base_path_mapping", "no-equals-sign"]) == 2
    for argv in (["--port", "70000"], ["--file_system_poll_wait_seconds", "-1"],
                 ["--port", "9000", "--rest_api_port", "9000"], ["--enable_batching"]):
        with pytest.raises(SystemExit) as e:
            parse_args(argv)
        assert e.value.code == 2


def _children_of(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_cli_serves_then_stops_gracefully_on_sigterm(tiny_config, tmp_path):
    grpc_port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    config = tmp_path / "tiny.config"  # version 1 only: one version process to start
    config.write_text("model_config_list { config { name: 'tiny' base_path: "
                      f"'{os.path.join(os.path.dirname(tiny_config), 'tiny')}' "
                      "model_version_policy { specific { versions: 1 } } } }")
    process = subprocess.Popen(
        [sys.executable, "-m", "serving.standin.model_server", "--model_config_file", str(config),
         "--port", str(grpc_port), "--rest_api_port", str(rest_port), "--host", "127.0.0.1",
         "--file_system_poll_wait_seconds", "1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = RestPredictClient(f"http://127.0.0.1:{rest_port}", timeout_s=10,
                                   retries=0)

        def up():
            assert process.poll() is None, process.stdout.read()
            try:
                return client.status("tiny")[0].state == "AVAILABLE"
            except Exception:
                return False

        wait_for(up, timeout_s=240, what="the model server to start")
        assert client.predict("tiny", {"ids": [1]}, signature="embed")["embedding"].shape == (1, 2)
        with GrpcPredictClient(f"127.0.0.1:{grpc_port}") as g:
            assert g.status("tiny", version=1)[0].state == "AVAILABLE"
        client.close()
        children = _children_of(process.pid)  # the version's process (+ multiprocessing's
        assert children  # resource tracker)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        wait_for(lambda: not any(map(_alive, children)), timeout_s=10,
                 what="the server's child processes to end")
        log = process.stdout.read()
        assert "Running gRPC ModelServer at 127.0.0.1" in log and "Stopped" in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
