"""Liveness and readiness: /healthz answers whenever the process does; /readyz says 503,
naming the failing checks, when the model server is frozen or gone, the models or the
catalog embeddings are missing, the event store cannot write or the model watcher stopped,
and answers within its budget even then."""
from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import pytest

from serving.api.health import CHECKS, Readiness
from serving.api.settings import Settings, SettingsError
from serving.client.errors import NotFound, Unavailable
from serving.client.model_metadata import VersionStatus
from tests.serving.api.setup import api_model_server, api_serving_dir, api_shop  # noqa: F401


def _close_listener(listener: socket.socket) -> None:
    try:
        listener.shutdown(socket.SHUT_RDWR)    # wakes the thread blocked in accept()
    except OSError:
        pass
    listener.close()


class SilentServer:
    """Accepts TCP connections and never answers: a frozen server, as a client sees it."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        _close_listener(self.listener)
        for conn in self.conns:
            conn.close()


class Proxy:
    """TCP relay to ``127.0.0.1:target``; ``freeze()`` keeps every connection open but
    drops what passes (a server that stopped answering), ``close()`` cuts everything."""

    def __init__(self, target: int):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    break
                if not self.frozen.is_set():
                    dst.sendall(data)
            except OSError:
                break
        for conn in (src, dst):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def freeze(self):
        self.frozen.set()

    def close(self):
        _close_listener(self.listener)
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


# ---------------------------------------------------------------- unit level (fakes)

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeClient:
    """GetModelStatus answers: model -> list of VersionStatus, or an exception to raise,
    or a number of seconds to hang before answering AVAILABLE v1."""

    def __init__(self, answers=None):
        self.answers = answers or {}
        self.calls = 0
        self.closed = False

    def status(self, model):
        self.calls += 1
        answer = self.answers.get(model, [VersionStatus(1, "AVAILABLE")])
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, (int, float)):
            time.sleep(answer)
            return [VersionStatus(1, "AVAILABLE")]
        return answer

    def close(self):
        self.closed = True


class FakeStore:
    def __init__(self, error=None, hang_s=0.0):
        self.error, self.hang_s, self.meta = error, hang_s, {}

    def set_meta(self, key, value):
        time.sleep(self.hang_s)
        if self.error:
            raise self.error
        self.meta[key] = value


class FakeCatalog:
    def __init__(self, embeddings_version):
        self.embeddings = None if embeddings_version is None else [[0.0]]
        self.embeddings_version = embeddings_version

    def __len__(self):
        return 40


def fake_services(clock, alive=True, poll_age_s=1.0, versions=None, embeddings_version=1,
                  store=None):
    watcher = SimpleNamespace(
        alive=alive, last_poll=None if poll_age_s is None else clock() - poll_age_s,
        last_error=None,
        versions={"retrieval": 1, "ranking": 1} if versions is None else versions)
    return SimpleNamespace(watcher=watcher, catalog=FakeCatalog(embeddings_version),
                           store=store or FakeStore())


def readiness(services, clock=None, client=None, **settings):
    values = {"readiness_cache_s": 0.0, "model_poll_s": 10.0, **settings}
    return Readiness(services, Settings(shop_dir="shop", **values), client=client or FakeClient(),
                     clock=clock or time.monotonic)


def test_all_checks_pass_on_healthy_fakes():
    clock = FakeClock()
    services = fake_services(clock)
    report = readiness(services, clock).evaluate()
    assert report.ok and report.summary() == "ready", report.as_dict()
    assert list(report.checks) == list(CHECKS)
    assert "retrieval v1, ranking v1 AVAILABLE" == report.checks["models_available"].reason
    assert "readiness_probe" in services.store.meta, "readiness writes to the event store"


@pytest.mark.parametrize("change, failing, words", [
    ({"alive": False}, ["watcher"], "not running"),
    ({"poll_age_s": 31.0}, ["watcher"], "31.0 s ago"),
    ({"poll_age_s": None}, ["watcher"], "not finished a poll"),
    ({"embeddings_version": None}, ["embeddings"], "not loaded"),
    ({"embeddings_version": 1, "versions": {"retrieval": 2, "ranking": 1}}, ["embeddings"],
     "served version is v2"),
    ({"versions": {}}, ["embeddings"], "not read the served versions"),
    ({"store": FakeStore(error=OSError("attempt to write a readonly database"))},
     ["event_store"], "readonly"),
])
def test_each_failing_check_is_named_with_its_reason(change, failing, words):
    clock = FakeClock()
    report = readiness(fake_services(clock, **change), clock).evaluate()
    assert not report.ok and report.failing == failing, report.as_dict()
    assert words in report.checks[failing[0]].reason
    assert report.summary().startswith(f"not ready: {failing[0]} (")


def test_watcher_recency_follows_model_poll_s():
    clock = FakeClock()
    services = fake_services(clock, poll_age_s=2.5)
    assert readiness(services, clock, model_poll_s=1.0).evaluate().ok
    assert readiness(services, clock, model_poll_s=0.5).evaluate().failing == ["watcher"]
    assert readiness(services, clock, model_poll_s=0.5,
                     readiness_max_poll_intervals=6).evaluate().ok


def test_models_without_an_available_version_or_unknown_to_the_server():
    clock = FakeClock()
    client = FakeClient({"ranking": [VersionStatus(2, "LOADING"), VersionStatus(1, "END")]})
    report = readiness(fake_services(clock), clock, client).evaluate()
    assert report.failing == ["models_available"]
    assert report.checks["models_available"].reason == \
        "ranking: no AVAILABLE version (v2 LOADING, v1 END)"
    client = FakeClient({"retrieval": NotFound("Could not find any versions of model "
                                               "retrieval")})
    report = readiness(fake_services(clock), clock, client).evaluate()
    assert report.failing == ["models_available"], "the server answered: it is up"
    assert "NOT_FOUND" in report.checks["models_available"].reason


def test_an_unreachable_model_server_fails_the_server_and_model_checks():
    clock = FakeClock()
    client = FakeClient({"ranking": Unavailable("failed to connect to all addresses")})
    report = readiness(fake_services(clock), clock, client).evaluate()
    assert report.failing == ["model_server", "models_available"]
    assert report.checks["model_server"].reason == \
        "ranking: UNAVAILABLE: failed to connect to all addresses"


def test_slow_dependencies_cost_one_budget_and_are_not_probed_twice_at_once():
    services = fake_services(time.monotonic, store=FakeStore(hang_s=1.5))
    ready = readiness(services, client=FakeClient({"ranking": 1.5}),
                      readiness_deadline_s=0.3)
    started = time.perf_counter()
    report = ready.evaluate()
    assert time.perf_counter() - started < 1.0, "one budget (0.3 s), not the 1.5 s hang"
    assert report.failing == ["model_server", "models_available", "event_store"]
    assert report.checks["model_server"].reason == "ranking: no answer within 300 ms"
    client_calls = ready.client.calls
    report = ready.evaluate()
    assert "still unanswered" in report.checks["event_store"].reason
    assert "still unanswered" in report.checks["model_server"].reason
    assert ready.client.calls == client_calls + 1, "only retrieval was probed again"
    ready.close()


def test_a_burst_of_probes_costs_one_round_trip():
    client = FakeClient({"retrieval": 0.2})
    ready = readiness(fake_services(time.monotonic), client=client)   # cache_s 0
    results = []
    threads = [threading.Thread(target=lambda: results.append(ready.evaluate()))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.ok for r in results)
    assert client.calls <= 2 * 2, "callers that waited reuse the report computed meanwhile"
    cached = readiness(fake_services(time.monotonic), client=FakeClient(),
                       readiness_cache_s=60)
    for _ in range(5):
        cached.evaluate()
    assert cached.client.calls == 2


def test_a_silent_model_server_is_not_ready_within_the_budget():
    """A real gRPC probe against a port that accepts and never answers."""
    from serving.client.clients import GrpcPredictClient

    silent = SilentServer()
    client = GrpcPredictClient(f"127.0.0.1:{silent.port}", deadline_s=0.5, retries=0)
    ready = readiness(fake_services(time.monotonic), client=client, readiness_deadline_s=0.5)
    try:
        started = time.perf_counter()
        report = ready.evaluate()
        elapsed = time.perf_counter() - started
        assert 0.4 < elapsed < 1.0, elapsed
        assert report.failing == ["model_server", "models_available"]
        assert "DEADLINE_EXCEEDED" in report.checks["model_server"].reason \
            or "no answer within" in report.checks["model_server"].reason
    finally:
        ready.close()
        silent.close()
    assert all(not c.ok for c in ready.evaluate().checks.values()), "closed: not ready"


@pytest.mark.parametrize("overrides, field", [
    ({"readiness_deadline_s": 0}, "readiness_deadline_s"),
    ({"readiness_deadline_s": 30}, "readiness_deadline_s"),
    ({"readiness_cache_s": -1}, "readiness_cache_s"),
    ({"readiness_max_poll_intervals": 1}, "readiness_max_poll_intervals")])
def test_readiness_settings_are_checked(overrides, field):
    with pytest.raises(SettingsError, match=field):
        Settings(shop_dir="shop", **overrides)


# ---------------------------------------------------------------- the API

def _readyz(client):
    started = time.perf_counter()
    response = client.get("/readyz")
    return response, time.perf_counter() - started


def _failing(response) -> list[str]:
    return [d["loc"][1] for d in response.json()["detail"] if not d["ok"]]


def _metric(client, name):
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_readiness_follows_the_watcher_and_a_frozen_then_stopped_model_server(
        api_shop, api_model_server, tmp_path):
    from fastapi.testclient import TestClient

    from serving.api.app import create_app
    from tests.serving.api.setup import make_settings

    proxy = Proxy(api_model_server.grpc_port)
    settings = make_settings(api_shop, proxy.port, tmp_path / "events.sqlite3",
                             readiness_cache_s=0, tfserving_deadline_s=2)
    try:
        with TestClient(create_app(settings)) as client:
            response, _ = _readyz(client)
            assert response.status_code == 200, response.text
            assert _metric(client, "shoprec_api_ready") == 1

            client.app.state.services.watcher.stop()          # the watcher thread ends
            response, _ = _readyz(client)
            assert response.status_code == 503
            assert _failing(response) == ["watcher"], response.text
            assert response.json()["error"] == \
                "not ready: watcher (the model watcher thread is not running)"

            proxy.freeze()                                    # TF Serving stops answering
            for _ in range(3):
                response, seconds = _readyz(client)
                body = response.json()
                assert response.status_code == 503 and seconds < 1.0, (seconds, body)
                assert _failing(response)[:2] == ["model_server", "models_available"]
                assert body["error"].startswith("not ready: model_server (")
            assert client.get("/healthz").json() == {"status": "ok"}
            assert _metric(client, "shoprec_api_ready") == 0
            assert _metric(client, 'shoprec_api_readiness_check{check="model_server"}') == 0

            proxy.close()                                     # ... and goes away
            time.sleep(0.6)                                   # let a running probe end
            response, seconds = _readyz(client)
            body = response.json()
            assert response.status_code == 503 and seconds < 1.0, (seconds, body)
            assert "UNAVAILABLE" in body["detail"][0]["msg"], body
            assert client.get("/healthz").status_code == 200
    finally:
        proxy.close()
