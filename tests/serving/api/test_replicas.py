"""Two API processes on one redis-server and one model server (issue #23 part 4): an event
posted to one replica changes the other's next answers — the user's history at once (read
from the store with every request), the popular list within the shared-counts poll
(serving/api/shared_counts.py), the search suggestions within their refresh interval."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import portpicker
import pytest

from tests.serving.api.setup import (api_model_server, api_serving_dir, api_shop,  # noqa: F401
                                     redis_url)

POLL_S = 0.5                    # the default shared_counts_poll_s
SUGGESTIONS_REFRESH_S = 1.0     # shortened from 30 s for the test

# two API processes importing TensorFlow and starting on 2 shared cores: 24-60 s
pytestmark = pytest.mark.slow


def _start_api(shop, grpc_port: int, store: str, log_path) -> tuple[subprocess.Popen, str]:
    port = portpicker.pick_unused_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_USE_LEGACY_KERAS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2",
           "SHOPREC_SHARED_SUGGESTIONS_REFRESH_S": str(SUGGESTIONS_REFRESH_S),
           "SHOPREC_AUTOCOMPLETE_MIN_USERS": "2", "SHOPREC_TFSERVING_DEADLINE_S": "10"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.api", "--shop", str(shop), "--tfserving-grpc",
             f"127.0.0.1:{grpc_port}", "--event-store", store, "--auth", "off",
             "--host", "127.0.0.1", "--port", str(port), "--startup-wait-s", "60"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}"


def _wait_ready(procs, urls, logs, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = set(urls)
    while waiting and time.monotonic() < deadline:
        for proc, url, log in zip(procs, urls, logs):
            if proc.poll() is not None:
                pytest.fail(f"API {url} exited ({proc.returncode}):\n"
                            + log.read_text(errors="replace")[-3000:])
            if url in waiting:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        waiting.discard(url)
                except httpx.HTTPError:
                    pass
        time.sleep(0.3)
    if waiting:
        pytest.fail(f"not ready after {timeout_s:.0f} s: {sorted(waiting)}:\n"
                    + "\n".join(log.read_text(errors="replace")[-2000:] for log in logs))


@pytest.fixture(scope="module")
def two_apis(api_shop, api_model_server, redis_url, tmp_path_factory):  # noqa: F811
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    folder = tmp_path_factory.mktemp("replicas")
    logs = [folder / "api1.log", folder / "api2.log"]
    started = [_start_api(api_shop, api_model_server.grpc_port, redis_url, log) for log in logs]
    procs, urls = [p for p, _ in started], [u for _, u in started]
    try:
        _wait_ready(procs, urls, logs)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _recommend(url: str, user: str, k: int = 5) -> dict:
    response = httpx.get(f"{url}/v1/recommend", params={"user_id": user, "k": k}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _ids(body: dict) -> list[str]:
    return [item["item_id"] for item in body["items"]]


def _post(url: str, events: list[dict]) -> None:
    response = httpx.post(f"{url}/v1/events", json=events, timeout=30)
    assert response.status_code in (200, 202), response.text


def _within(seconds: float, check):
    """Ask ``check`` until it returns a truthy value or ``seconds`` pass; (value, elapsed)."""
    started = time.monotonic()
    while True:
        value = check()
        elapsed = time.monotonic() - started
        if value or elapsed > seconds:
            return value, elapsed
        time.sleep(0.05)


def test_an_event_posted_to_one_replica_changes_the_others_next_history_answer(two_apis):
    one, two = two_apis
    before = _recommend(two, "rep-shopper")
    assert before["strategy"] == "popular" and before["context"]["history"] == []
    _post(one, [{"user_id": "rep-shopper", "item_id": "toy2", "event_type": "click"}])
    after = _recommend(two, "rep-shopper")            # the very next request to replica 2
    assert after["strategy"] == "personalized"
    assert after["context"]["history"] == ["toy2"]
    assert _ids(after) != _ids(before)


def test_popularity_posted_to_one_replica_reaches_the_other_within_the_poll(two_apis):
    one, two = two_apis
    first = _ids(_recommend(two, "rep-newcomer-1"))
    # the tiny shop's fans made beauty0 and beauty1 the most engaged items (6 clicks each)
    assert first[:2] == ["beauty0", "beauty1"] and "food6" not in first
    _post(one, [{"user_id": f"rep-fan{n}", "item_id": "food6", "event_type": "click"}
                for n in range(10)])
    assert _ids(_recommend(one, "rep-newcomer-2"))[0] == "food6", "the receiving replica at once"
    top, elapsed = _within(10 * POLL_S, lambda: _ids(
        _recommend(two, "rep-newcomer-3"))[0] == "food6")
    assert top, "replica 2 never saw replica 1's engagements"
    assert elapsed <= 4 * POLL_S, f"took {elapsed:.2f} s, the poll is {POLL_S} s"
    body = _recommend(two, "rep-newcomer-4")
    assert body["strategy"] == "popular" and body["items"][0]["score"] == 10.0


def test_search_suggestions_posted_to_one_replica_reach_the_other(two_apis):
    one, two = two_apis

    def suggestions(url):
        response = httpx.get(f"{url}/v1/autocomplete", params={"prefix": "silver p"},
                             timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["suggestions"]

    assert suggestions(two) == []
    _post(one, [{"user_id": f"rep-searcher{n}", "item_id": "", "event_type": "search",
                 "query": "Silver pasta sauce"} for n in range(2)])
    assert suggestions(one) == [{"query": "silver pasta sauce", "users": 2}]
    found, elapsed = _within(SUGGESTIONS_REFRESH_S + 10 * POLL_S, lambda: suggestions(two))
    assert found == [{"query": "silver pasta sauce", "users": 2}], f"after {elapsed:.1f} s"
