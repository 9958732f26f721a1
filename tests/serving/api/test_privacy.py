"""The API's personal-data rules (docs/privacy.md): pseudonymised user ids end to end,
idempotent events, erasure and retention."""
from __future__ import annotations

import sqlite3
import time

import pytest
from fastapi.testclient import TestClient

from pipeline.contract.pseudonym import write_new_key
from serving.api.app import create_app
from serving.events.store import open_event_store
from tests.serving.api.setup import (api_model_server, api_serving_dir, api_shop,  # noqa: F401
                                     bearer, make_settings, write_keys)


@pytest.fixture(scope="module")
def private_api(api_shop, api_model_server, tmp_path_factory):  # noqa: F811
    """The API with a pseudonym key, a retention and keys per role."""
    folder = tmp_path_factory.mktemp("private_api")
    names = write_new_key(folder / "pseudonym.key")
    keys = write_keys(folder / "api_keys", {"front": "public rate=unlimited",
                                            "ingest": "events rate=unlimited",
                                            "operator": "public,operator rate=unlimited"})
    db = folder / "events.sqlite3"
    settings = make_settings(api_shop, api_model_server.grpc_port, db, auth="required",
                             api_keys_file=str(folder / "api_keys"),
                             pseudonym_key_file=str(folder / "pseudonym.key"),
                             retention_days=3650)
    with TestClient(create_app(settings)) as client:
        yield client, names, keys, db


def _stored_user_ids(db) -> set[str]:
    with sqlite3.connect(db) as connection:
        return {row[0] for row in connection.execute("SELECT DISTINCT user_id FROM events")}


def test_the_store_holds_pseudonyms_and_answers_stay_personal(private_api):
    client, names, keys, db = private_api
    assert client.post("/v1/events", headers=bearer(keys["ingest"]), json={
        "user_id": "newcomer", "item_id": "toy1", "event_type": "click"}).status_code == 200
    stored = _stored_user_ids(db)
    assert {names("reader"), names("fan0"), names("newcomer")} <= stored
    assert not {"reader", "fan0", "newcomer"} & stored
    assert all(u.startswith("p_") for u in stored)
    body = client.get("/v1/recommend", params={"user_id": "reader", "k": 5},
                      headers=bearer(keys["operator"])).json()
    assert body["strategy"] == "personalized" and body["user_id"] == "reader"
    assert body["context"]["history"][:1] == ["book0"]          # the shop's events, found
    newcomer = client.get("/v1/recommend", params={"user_id": "newcomer", "k": 5},
                          headers=bearer(keys["operator"])).json()
    assert newcomer["context"]["history"] == ["toy1"]


def test_a_retried_batch_is_stored_once_and_counted_once(private_api):
    client, names, keys, db = private_api
    batch = [{"user_id": "retrier", "item_id": "toy2", "event_type": "click",
              "event_id": f"r-{i}"} for i in range(3)]
    first = client.post("/v1/events", headers=bearer(keys["ingest"]), json=batch).json()
    again = client.post("/v1/events", headers=bearer(keys["ingest"]), json=batch).json()
    assert first == {"accepted": 3, "stored": 3, "duplicates": 0}
    assert again == {"accepted": 3, "stored": 0, "duplicates": 3}
    with sqlite3.connect(db) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM events WHERE user_id = ?",
                                      (names("retrier"),)).fetchone()
    assert count == 3


def test_erasure_needs_the_operator_and_forgets_the_user(private_api):
    client, names, keys, db = private_api
    assert client.delete("/v1/users/reader", headers=bearer(keys["front"])).status_code == 403
    assert client.delete("/v1/users/reader").status_code == 401
    erased = client.delete("/v1/users/reader", headers=bearer(keys["operator"]))
    assert erased.status_code == 200 and erased.json() == {"erased": True,
                                                           "events_deleted": 9}
    assert names("reader") not in _stored_user_ids(db)
    again = client.delete("/v1/users/reader", headers=bearer(keys["operator"])).json()
    assert again["events_deleted"] == 0
    body = client.get("/v1/recommend", params={"user_id": "reader", "k": 5},
                      headers=bearer(keys["operator"])).json()
    assert body["strategy"] == "popular" and body["context"]["history"] == []
    store = open_event_store(f"sqlite:///{db}")
    try:
        hashes = {record.user_hash for record in store.erasure_records()}
    finally:
        store.close()
    assert len(hashes) == 1 and "reader" not in next(iter(hashes))


def test_retention_purges_old_events_at_start(api_shop, api_model_server, tmp_path):  # noqa: F811
    db = tmp_path / "events.sqlite3"
    store = open_event_store(f"sqlite:///{db}")
    old = int(time.time()) - 40 * 86400
    import pandas as pd  # pylint: disable=import-outside-toplevel
    store.add(pd.DataFrame({"user_id": ["ancient"], "item_id": ["toy1"],
                            "event_type": ["click"], "value": [float("nan")], "query": [""],
                            "session_id": [""], "timestamp": [old]}), received_at=old)
    store.close()
    settings = make_settings(api_shop, api_model_server.grpc_port, db, retention_days=30)
    with TestClient(create_app(settings)):
        pass
    assert "ancient" not in _stored_user_ids(db)
