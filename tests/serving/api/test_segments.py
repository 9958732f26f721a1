"""User segments in the API (serving/api/segments.py): GET /v1/users/{id}/segment for the
operator, and segment popularity before global popularity for users with short histories."""
from __future__ import annotations

import json
import types

import pytest
from fastapi.testclient import TestClient

from pipeline.contract import spec
from pipeline.contract.pseudonym import Pseudonyms, write_new_key
from serving.api.app import create_app
from serving.api.segments import SegmentShelf
from tests.serving.api.setup import (api_model_server, api_serving_dir, api_shop,  # noqa: F401
                                     bearer, make_settings, write_keys)

TOYS = ["toy3", "toy9", "toy4", "toy5"]           # toy9 is out of stock


def _profile(segment, top, items):
    return {"segment": segment, "label": f"{top} · mid price", "size": 25,
            "top_categories": [{"name": top, "share": 0.8}], "brands": [],
            "price": {"median": 8.5, "band": "mid"}, "activity": {},
            "typical_searches": [], "popular_items": items}


def write_segments(base, version, assignments, profiles=None):
    folder = base / str(version)
    folder.mkdir(parents=True)
    profiles = profiles or [_profile(0, "Toys", TOYS), _profile(1, "Books", ["book5"])]
    (folder / "segments.json").write_text(json.dumps({"segments": len(profiles),
                                                      "profiles": profiles}))
    (folder / "assignments.json").write_text(json.dumps({"users": assignments}))
    return folder


@pytest.fixture(scope="module")
def segment_api(api_shop, api_model_server, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("segment_api")
    write_new_key(folder / "pseudonym.key")
    pseudonym = Pseudonyms.from_file(folder / "pseudonym.key")
    # the synthetic models are version 1; "newbie" has no event in the store, "reader" has 4
    write_segments(folder / "segments", 1, {pseudonym("newbie"): 0, pseudonym("reader"): 1})
    keys = write_keys(folder / "api_keys", {"front": "public rate=unlimited",
                                            "operator": "public,operator rate=unlimited"})
    settings = make_settings(api_shop, api_model_server.grpc_port, folder / "events.sqlite3",
                             auth="required", api_keys_file=str(folder / "api_keys"),
                             pseudonym_key_file=str(folder / "pseudonym.key"),
                             segments_dir=str(folder / "segments"))
    with TestClient(create_app(settings)) as client:
        yield client, keys


def test_the_operator_reads_a_users_segment(segment_api):
    client, keys = segment_api
    answer = client.get("/v1/users/newbie/segment", headers=bearer(keys["operator"]))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["user_id"] == "newbie" and body["segment"] == 0 and body["segments"] == 2
    assert body["label"] == "Toys · mid price" and body["segments_version"] == "1"
    assert "popular_items" not in body and not any(
        str(v).startswith("p_") for v in body.values())


def test_a_shop_front_key_cannot_read_segments(segment_api):
    client, keys = segment_api
    assert client.get("/v1/users/newbie/segment",
                      headers=bearer(keys["front"])).status_code == 403


def test_unknown_users_and_bad_ids_are_refused(segment_api):
    client, keys = segment_api
    unknown = client.get("/v1/users/nobody/segment", headers=bearer(keys["operator"]))
    assert unknown.status_code == 404 and "no segment" in unknown.json()["error"]
    long_id = "x" * (spec.MAX_ID_CHARS + 1)
    assert client.get(f"/v1/users/{long_id}/segment",
                      headers=bearer(keys["operator"])).status_code == 422


def test_short_histories_get_their_segments_popular_items_first(segment_api):
    client, keys = segment_api
    body = client.get("/v1/recommend", params={"user_id": "newbie", "k": 5},
                      headers=bearer(keys["front"])).json()
    ids = [item["item_id"] for item in body["items"]]
    assert body["strategy"] == "popular"
    assert ids[:3] == ["toy3", "toy4", "toy5"], ids          # in stock only, in order
    assert [i["reason"]["type"] for i in body["items"][:3]] == ["segment_popular"] * 3
    assert body["items"][3]["reason"]["type"] == "popular"
    # "reader" has 4 engagements (> segment_max_history 2): the model's list, no segment
    reader = client.get("/v1/recommend", params={"user_id": "reader", "k": 10},
                        headers=bearer(keys["front"])).json()
    assert "segment_popular" not in {i["reason"]["type"] for i in reader["items"]}


def test_without_segments_the_endpoint_answers_404(api_shop, api_model_server,  # noqa: F811
                                                   tmp_path):
    settings = make_settings(api_shop, api_model_server.grpc_port, tmp_path / "e.sqlite3")
    with TestClient(create_app(settings)) as client:
        answer = client.get("/v1/users/newbie/segment")
        assert answer.status_code == 404 and "segments_dir" in answer.json()["error"]
        items = client.get("/v1/recommend", params={"user_id": "newbie"}).json()["items"]
        assert {i["reason"]["type"] for i in items} == {"popular"}


def test_the_shelf_follows_the_served_retrieval_version(tmp_path):
    write_segments(tmp_path, 3, {"p_a": 0})
    write_segments(tmp_path, 5, {"p_a": 1})
    (tmp_path / "7").mkdir()                                # incomplete push: ignored
    served = {"version": 3}
    shelf = SegmentShelf(str(tmp_path), lambda: served["version"], max_history=2)
    assert shelf.segment_of("p_a")[1]["segment"] == 0
    served["version"] = 5
    assert shelf.segment_of("p_a")[1]["segment"] == 1
    served["version"] = 9                                   # no segments for it: the newest
    assert shelf.current().version == "5"
    short, long = (types.SimpleNamespace(history=["x"] * n) for n in (2, 3))
    assert shelf.popular_for("p_a", short) == ["book5"]
    assert shelf.popular_for("p_a", long) == [] and shelf.popular_for("p_b", short) == []
    assert SegmentShelf("", lambda: 1).current() is None
