"""Request limits (issue #19): token buckets per key or address (429 + Retry-After), the
bounded admission queue (503 + Retry-After at once when full, or after max_queue_wait_s)."""
from __future__ import annotations

import threading
import time

import pytest

from serving.api.limits import (DEFAULT_RATE_LIMITS, Rate, RateLimiter, parse_rate,
                                parse_rate_limits)
from serving.api.settings import SettingsError
from tests.serving.api.setup import (api_model_server, api_serving_dir, api_shop,  # noqa: F401
                                     bearer, make_settings, write_keys)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate():
    clock = Clock()
    limiter = RateLimiter(clock)
    rate = Rate(2.0, 3)
    assert [limiter.retry_after("k", rate) for _ in range(4)] == [0, 0, 0, 1]
    clock.now += 0.5                          # one token back
    assert limiter.retry_after("k", rate) == 0 and limiter.retry_after("k", rate) == 1
    assert limiter.retry_after("other", rate) == 0, "one bucket per caller"
    assert limiter.retry_after("k", None) == 0, "unlimited"
    slow = Rate(0.01, 1)
    assert limiter.retry_after("s", slow) == 0 and limiter.retry_after("s", slow) == 100
    clock.now += 99.5
    assert limiter.retry_after("s", slow) == 1, "whole seconds, rounded up"


def test_a_changed_limit_keeps_the_tokens_left_and_idle_buckets_are_dropped_first():
    clock = Clock()
    limiter = RateLimiter(clock, max_buckets=2)
    for _ in range(5):
        limiter.retry_after("k", Rate(1, 5))
    assert limiter.retry_after("k", Rate(1, 50)) == 1, "no new burst from a new limit"
    limiter.retry_after("a", Rate(1, 1))
    limiter.retry_after("k", Rate(1, 50))
    limiter.retry_after("b", Rate(1, 1))
    assert list(limiter.buckets) == ["k", "b"]


def test_rate_limits_setting_parses_and_names_mistakes():
    defaults = parse_rate_limits(DEFAULT_RATE_LIMITS)
    assert defaults == parse_rate_limits("")
    assert defaults["public"] == Rate(100, 200) and defaults["anonymous"] == Rate(20, 40)
    changed = parse_rate_limits("public=5/10, events=unlimited")
    assert changed["public"] == Rate(5, 10) and changed["events"] is None
    assert changed["operator"] == defaults["operator"]
    assert set(parse_rate_limits("off").values()) == {None}
    assert parse_rate("0.5/1") == Rate(0.5, 1)
    for bad, words in (("public=5", "RATE/BURST"), ("admin=1/1", "ROLE one of"),
                       ("public=-1/3", "RATE must be > 0"), ("public=1/0", "BURST >= 1"),
                       ("public=nan/3", "RATE must be > 0"), ("public", "ROLE=RATE/BURST")):
        with pytest.raises(ValueError, match=words):
            parse_rate_limits(bad)


@pytest.mark.parametrize("overrides, field", [
    ({"rate_limits": "public=fast"}, "rate_limits"), ({"auth": "maybe"}, "auth"),
    ({"max_queued_requests": -1}, "max_queued_requests"),
    ({"max_queue_wait_s": 0}, "max_queue_wait_s"), ({"cors_origins": "*.shop"}, "cors_origins"),
])
def test_limit_settings_reject_bad_values_naming_them(api_shop, tmp_path,  # noqa: F811
                                                      overrides, field):
    with pytest.raises(SettingsError, match=field):
        make_settings(api_shop, 1, tmp_path / "e", **overrides)


@pytest.fixture(scope="module")
def limited(api_shop, api_model_server, tmp_path_factory):  # noqa: F811
    """An API whose admission takes one request at a time with one waiting; keys with a
    tiny bucket (3 requests, then one per 100 s), with the public default, and unlimited."""
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    folder = tmp_path_factory.mktemp("limits")
    secrets = write_keys(folder / "keys", {"tiny": "public rate=0.01/3", "shop": "public",
                                           "free": "public,operator rate=unlimited",
                                           "ingest": "events rate=unlimited"})
    settings = make_settings(api_shop, api_model_server.grpc_port, folder / "events.sqlite3",
                             auth="required", api_keys_file=str(folder / "keys"),
                             max_concurrent_requests=1, max_queued_requests=1,
                             max_queue_wait_s=30, rate_limits="public=0.01/5")
    with TestClient(create_app(settings)) as client:
        yield client, secrets


def _similar(client, secret, **kwargs):
    return client.get("/v1/items/toy0/similar", params={"k": 2}, headers=bearer(secret),
                      **kwargs)


def _rejected(client, endpoint, reason) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = client.app.state.metrics.exposition().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "shoprec_api_rejected_requests_total"
               and s.labels["endpoint"] == endpoint and s.labels["reason"] == reason)


def test_a_key_over_its_limit_gets_429_with_retry_after(limited):
    client, secrets = limited
    assert [_similar(client, secrets["tiny"]).status_code for _ in range(3)] == [200] * 3
    refused = _similar(client, secrets["tiny"])
    assert refused.status_code == 429
    assert 90 <= int(refused.headers["retry-after"]) <= 100
    assert refused.json() == {"error": "rate limit of API key 'tiny' exceeded (0.01 "
                                       "requests/s, burst 3); retry after "
                                       f"{refused.headers['retry-after']} s"}
    assert [_similar(client, secrets["shop"]).status_code for _ in range(6)] == \
        [200] * 5 + [429], "the role's limit (public=0.01/5) for a key without its own"
    assert all(_similar(client, secrets["free"]).status_code == 200 for _ in range(10))
    assert _rejected(client, "/v1/items/{item_id:path}/similar", "rate_limited") == 2
    assert client.get("/healthz").status_code == 200, "open routes are not limited"


def test_without_auth_callers_are_limited_by_address(api_shop, api_model_server,  # noqa: F811
                                                     tmp_path):
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    app = create_app(make_settings(api_shop, api_model_server.grpc_port,
                                   tmp_path / "events.sqlite3",
                                   rate_limits="anonymous=0.01/2"))
    with TestClient(app, client=("10.0.0.1", 5000)) as first:
        second = TestClient(app, client=("10.0.0.2", 5000))
        assert [first.get("/v1/items/toy0/similar").status_code for _ in range(3)] == \
            [200, 200, 429]
        assert second.get("/v1/items/toy0/similar").status_code == 200
        refused = first.get("/v1/search", params={"q": "toy"})
        assert refused.status_code == 429 and "this address" in refused.json()["error"]
        assert int(refused.headers["retry-after"]) >= 1


class Gate:
    """A recommend that holds its slot until released."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def recommend(self, user_id, k):
        self.entered.set()
        assert self.release.wait(60), "the test never released the gate"
        from serving.api.recommender import Recommendations
        return Recommendations(items=[], strategy="popular")


def _wait_for(condition, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_full_queue_sheds_at_once_with_503_and_retry_after(limited, monkeypatch):
    client, secrets = limited
    admission = client.app.state.admission
    gate = Gate()
    monkeypatch.setattr(client.app.state.services.recommender, "recommend", gate.recommend)
    answers = {}

    def call(name):
        answers[name] = client.get("/v1/recommend", params={"user_id": name},
                                   headers=bearer(secrets["free"]))

    running = threading.Thread(target=call, args=("running",))
    running.start()
    assert gate.entered.wait(30)
    waiting = threading.Thread(target=call, args=("waiting",))
    waiting.start()
    _wait_for(lambda: admission.waiting == 1, "the second request never queued")
    try:
        started = time.perf_counter()
        shed = [_similar(client, secrets["free"]), client.post(
            "/v1/events", json={"user_id": "u", "item_id": "toy1", "event_type": "view"},
            headers=bearer(secrets["ingest"]))]
        took = time.perf_counter() - started
        assert all(r.status_code == 503 for r in shed), [r.text for r in shed]
        assert all(r.headers["retry-after"] == "1" for r in shed)
        assert shed[0].json()["error"] == ("overloaded: all 1 slots busy and 1 requests "
                                            "waiting; retry after 1 s")
        assert took < 10, "shed at once, not after waiting"
        metrics = client.get("/metrics", headers=bearer(secrets["free"]))
        assert metrics.status_code == 200, "metrics are not admitted work"
        assert "shoprec_api_queued_requests 1.0" in metrics.text
        assert "shoprec_api_active_requests 1.0" in metrics.text
        assert _rejected(client, "/v1/items/{item_id:path}/similar", "shed") == 1
        assert _rejected(client, "/v1/events", "shed") == 1
    finally:
        gate.release.set()
        running.join(60)
        waiting.join(60)
    assert answers["running"].status_code == 200 and answers["waiting"].status_code == 200
    assert _similar(client, secrets["free"]).status_code == 200, "served again"


def test_a_request_waits_for_a_slot_at_most_max_queue_wait_s(api_shop,  # noqa: F811
                                                             api_model_server, tmp_path,
                                                             monkeypatch):
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    app = create_app(make_settings(api_shop, api_model_server.grpc_port,
                                   tmp_path / "events.sqlite3", max_concurrent_requests=1,
                                   max_queue_wait_s=0.3, rate_limits="off"))
    with TestClient(app) as client:
        gate = Gate()
        monkeypatch.setattr(app.state.services.recommender, "recommend", gate.recommend)
        holder = threading.Thread(target=client.get, args=("/v1/recommend",),
                                  kwargs={"params": {"user_id": "x"}})
        holder.start()
        try:
            assert gate.entered.wait(30)
            started = time.perf_counter()
            late = client.get("/v1/search", params={"q": "toy"})
            waited = time.perf_counter() - started
        finally:
            gate.release.set()
            holder.join(60)
        assert late.status_code == 503 and late.headers["retry-after"] == "1"
        assert late.json()["error"] == "overloaded: no slot free within 0.3 s; retry after 1 s"
        assert 0.3 <= waited < 10
        assert _rejected(client, "/v1/search", "queue_timeout") == 1
