"""Experiments: deterministic assignment, strict config, request ids, impressions,
attribution, the report endpoint and erasure, through the real app."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from serving.api.experiments import (ExperimentConfigError, Experiments, load_experiments,
                                     parse_experiments)
from serving.api.settings import Settings, SettingsError
from serving.events.store import now_seconds
from tests.serving.api.setup import *  # noqa: F401,F403
from tests.serving.api.setup import make_settings

CONFIG = {"experiments": [
    {"name": "exp", "salt": "s1", "control": "A", "surfaces": ["recommend", "similar", "search"],
     "variants": [{"name": "A", "weight": 1},
                  {"name": "B", "weight": 1, "ranking_version": 1,
                   "settings": {"max_category_share": 1.0, "transition_candidates": 0}}]}]}


def test_assignment_is_deterministic_and_follows_the_weights():
    experiments = parse_experiments({"experiments": [
        {"name": "e", "salt": "x", "variants": [{"name": "big", "weight": 3},
                                                 {"name": "small", "weight": 1}]}]})
    users = [f"user{n}" for n in range(8000)]
    first = [experiments.assign(u, "recommend")[1].name for u in users]
    assert first == [experiments.assign(u, "recommend")[1].name for u in users]
    share = Counter(first)["big"] / len(users)
    assert 0.73 < share < 0.77, share          # 0.75 +- 4 standard errors
    resalted = parse_experiments({"experiments": [
        {"name": "e", "salt": "y", "variants": [{"name": "big", "weight": 3},
                                                 {"name": "small", "weight": 1}]}]})
    moved = sum(a != resalted.assign(u, "recommend")[1].name for a, u in zip(first, users))
    assert moved > 1000, "a new salt reshuffles the users"


def test_traffic_leaves_users_to_the_next_experiment_and_anonymous_requests_out():
    experiments = parse_experiments({"experiments": [
        {"name": "first", "salt": "a", "traffic": 0.2, "surfaces": ["recommend"],
         "variants": [{"name": "x"}, {"name": "y"}]},
        {"name": "rest", "salt": "b", "variants": [{"name": "x"}, {"name": "y"}]}]})
    names = Counter(experiments.assign(f"u{n}", "recommend")[0].name for n in range(5000))
    assert 0.17 < names["first"] / 5000 < 0.23 and names["rest"] == 5000 - names["first"]
    assert {experiments.assign(f"u{n}", "search")[0].name for n in range(200)} == {"rest"}
    assert experiments.assign(None, "recommend") is None
    assert experiments.assign("", "search") is None
    assert Experiments().assign("u1", "recommend") is None


def _variants(**change):
    variant = {"name": "B", **change}
    return {"experiments": [{"name": "e", "salt": "s", "variants": [{"name": "A"}, variant]}]}


@pytest.mark.parametrize("data, field", [
    ({"experiment": []}, "top level.experiment"),
    ({"experiments": [{"name": "e", "variants": []}]}, "experiments[0].salt"),
    ({"experiments": [{"name": "bad name", "salt": "s", "variants": []}]},
     "experiments[0].name"),
    ({"experiments": [{"name": "e", "salt": "s", "variants": [{"name": "A"}]}]},
     "experiments[0].variants"),
    ({"experiments": [{"name": "e", "salt": "s", "traffic": 1.5,
                       "variants": [{"name": "A"}, {"name": "B"}]}]}, "experiments[0].traffic"),
    ({"experiments": [{"name": "e", "salt": "s", "control": "C",
                       "variants": [{"name": "A"}, {"name": "B"}]}]}, "experiments[0].control"),
    ({"experiments": [{"name": "e", "salt": "s", "surfaces": ["home"],
                       "variants": [{"name": "A"}, {"name": "B"}]}]}, "experiments[0].surfaces"),
    ({"experiments": [{"name": "e", "salt": "s",
                       "variants": [{"name": "A"}, {"name": "A"}]}]},
     "experiments[0].variants[1].name"),
    (_variants(weight=0), "experiments[0].variants[1].weight"),
    (_variants(colour="red"), "experiments[0].variants[1].colour"),
    (_variants(settings={"max_history": 20}), "experiments[0].variants[1].settings.max_history"),
    (_variants(settings={"max_category_share": 2.0}),
     "experiments[0].variants[1].settings.max_category_share"),
    (_variants(settings={"filter_purchased": "no"}),
     "experiments[0].variants[1].settings.filter_purchased"),
    (_variants(ranking_version=0), "experiments[0].variants[1].ranking_version"),
    (_variants(ranking_model=""), "experiments[0].variants[1].ranking_model"),
])
def test_a_bad_config_names_the_field(tmp_path, data, field):
    path = tmp_path / "experiments.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ExperimentConfigError) as e:
        load_experiments(str(path), Settings(shop_dir="shop"))
    assert f"experiments file {path}: {field}" in str(e.value)


def test_unreadable_files_and_toml(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ExperimentConfigError, match="not valid JSON"):
        load_experiments(str(bad))
    with pytest.raises(SettingsError, match="experiments_file"):
        Settings(shop_dir="shop", experiments_file=str(tmp_path / "missing.json"))
    toml = tmp_path / "experiments.toml"
    toml.write_text('[[experiments]]\nname = "e"\nsalt = "s"\n'
                    '[[experiments.variants]]\nname = "A"\n'
                    '[[experiments.variants]]\nname = "B"\nweight = 2\n'
                    'settings = {max_category_share = 0.3}\n')
    experiment = load_experiments(str(toml)).get("e")
    assert [v.weight for v in experiment.variants] == [1.0, 2.0]
    assert experiment.variant("B").settings == {"max_category_share": 0.3}


@pytest.fixture(scope="module")
def exp_client(api_shop, api_model_server, tmp_path_factory):  # noqa: F811
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    folder = tmp_path_factory.mktemp("exp_api")
    config = folder / "experiments.json"
    config.write_text(json.dumps(CONFIG))
    settings = make_settings(api_shop, api_model_server.grpc_port, folder / "events.sqlite3",
                             experiments_file=str(config), attribution_window_s=3600)
    with TestClient(create_app(settings)) as client:
        yield client


def _variant_of(user: str) -> str:
    return parse_experiments(CONFIG).assign(user, "recommend")[1].name


def _store(client):
    return client.app.state.services.store


def test_every_answer_carries_a_request_id_in_body_and_header(exp_client):
    answer = exp_client.get("/v1/recommend", params={"user_id": "reader", "k": 3})
    body = answer.json()
    assert answer.headers["X-Request-ID"] == body["request_id"] and len(body["request_id"]) == 32
    given = exp_client.get("/v1/search", params={"q": "lipstick"},
                           headers={"X-Request-ID": "shop-42.a:b"})
    assert given.json()["request_id"] == "shop-42.a:b" == given.headers["X-Request-ID"]
    invalid = exp_client.get("/v1/items/book1/similar", headers={"X-Request-ID": "bad id!"})
    assert invalid.headers["X-Request-ID"] == invalid.json()["request_id"] != "bad id!"
    refused = exp_client.get("/v1/recommend")                   # 422: still an id
    assert refused.status_code == 422 and len(refused.headers["X-Request-ID"]) == 32
    for key in ("user_id", "k", "strategy", "items", "degraded", "model_versions"):
        assert key in body, "existing fields stay"


def test_users_in_an_experiment_get_their_variant_on_every_surface(exp_client):
    variant = _variant_of("reader")
    for path, params in (("/v1/recommend", {"user_id": "reader"}),
                         ("/v1/search", {"q": "novel", "user_id": "reader"}),
                         ("/v1/items/book1/similar", {"user_id": "reader"})):
        body = exp_client.get(path, params=params).json()
        assert (body["experiment"], body["variant"]) == ("exp", variant), path
    anonymous = exp_client.get("/v1/search", params={"q": "novel"}).json()
    assert "experiment" not in anonymous and "variant" not in anonymous
    services = exp_client.app.state.services
    b = services._variants[("exp", "B")]
    assert b.settings.max_category_share == 1.0 and b.settings.transition_candidates == 0
    assert services._variants[("exp", "A")] is services.recommender, "A changes nothing"
    users = [f"fan{n}" for n in range(6)] + ["reader", "searcher"]
    for user in users:
        answer = exp_client.get("/v1/recommend", params={"user_id": user}).json()
        assert answer["variant"] == _variant_of(user)
        if answer["variant"] == "B":
            assert answer["model_versions"]["ranking"] == 1, "B pins ranking version 1"


def test_impressions_are_stored_with_positions_and_anonymous_answers_are_not(exp_client):
    # Earlier tests' impressions may still be queued in the asynchronous log: write them
    # first, so the count below sees only this test's requests.
    exp_client.app.state.services.impression_log.flush()
    before = len(_store(exp_client).impressions())
    body = exp_client.get("/v1/recommend", params={"user_id": "fan1", "k": 4}).json()
    exp_client.get("/v1/search", params={"q": "toy"})                   # no user: not logged
    exp_client.app.state.services.impression_log.flush()
    rows = [i for i in _store(exp_client).impressions() if i.request_id == body["request_id"]]
    assert [(i.item_id, i.position) for i in rows] == [
        (item["item_id"], n) for n, item in enumerate(body["items"])]
    assert {(i.user_id, i.surface, i.experiment, i.variant) for i in rows} == {
        ("fan1", "recommend", "exp", body["variant"])}
    assert len(_store(exp_client).impressions()) == before + len(rows)


def test_a_search_page_logs_positions_from_its_offset(exp_client):
    first = exp_client.get("/v1/search", params={"q": "lipstick", "user_id": "fan2", "k": 2})
    cursor = first.json()["next_cursor"]
    page = exp_client.get("/v1/search", params={"q": "lipstick", "user_id": "fan2", "k": 2,
                                                "cursor": cursor}).json()
    exp_client.app.state.services.impression_log.flush()
    rows = [i for i in _store(exp_client).impressions() if i.request_id == page["request_id"]]
    assert [i.position for i in rows] == [2, 3]


def test_engagements_are_attributed_to_the_preceding_impression(exp_client):
    store = _store(exp_client)
    first = exp_client.get("/v1/recommend", params={"user_id": "fan3", "k": 5}).json()
    second = exp_client.get("/v1/recommend", params={"user_id": "fan3", "k": 5}).json()
    item = second["items"][1]
    assert exp_client.post("/v1/events", json=[
        {"user_id": "fan3", "item_id": item["item_id"], "event_type": "click"},
        {"user_id": "fan3", "item_id": item["item_id"], "event_type": "purchase", "value": 2},
    ]).status_code == 200
    credited = [a for a in store.experiment_attributions("exp") if a.user_id == "fan3"]
    assert [(a.event_type, a.request_id, a.position) for a in credited] == [
        ("click", second["request_id"], 1), ("purchase", second["request_id"], 1)], \
        "the latest impression, not the first answer's " + first["request_id"]
    assert credited[1].value == 2 and credited[1].revenue == pytest.approx(2 * item["price"])


def test_events_before_the_impression_or_outside_the_window_are_not_attributed(exp_client):
    from serving.events.impressions import Impression

    store = _store(exp_client)
    body = exp_client.get("/v1/recommend", params={"user_id": "fan4", "k": 3}).json()
    shown = body["items"][0]["item_id"]
    now = now_seconds()
    store.add_impressions([Impression("old", "fan4", "food5", 0, "recommend", "exp",
                                      body["variant"], now - 7200)])
    exp_client.post("/v1/events", json=[
        {"user_id": "fan4", "item_id": shown, "event_type": "click", "timestamp": now - 600},
        {"user_id": "fan4", "item_id": "food5", "event_type": "click"},      # 2 h > window
        {"user_id": "fan4", "item_id": "toy1", "event_type": "click"}])      # never shown
    assert [a for a in store.experiment_attributions("exp") if a.user_id == "fan4"] == []


def test_report_and_experiment_list_are_operator_routes(exp_client, api_shop,
                                                         api_model_server, tmp_path):
    listed = exp_client.get("/v1/experiments").json()["experiments"]
    assert listed[0]["name"] == "exp" and [v["name"] for v in listed[0]["variants"]] == ["A", "B"]
    report = exp_client.get("/v1/experiments/exp/report").json()
    assert set(report["variants"]) == {"A", "B"} and report["control"] == "A"
    assert sum(v["users"] for v in report["variants"].values()) >= 4
    assert report["comparisons"]["B"]["ctr"]["test"].startswith("delta-method")
    missing = exp_client.get("/v1/experiments/nope/report")
    assert missing.status_code == 404 and "no experiment 'nope'" in missing.json()["error"]

    from fastapi.testclient import TestClient

    from serving.api.app import create_app
    from tests.serving.api.setup import bearer, write_keys

    secrets = write_keys(tmp_path / "keys", {"shop": "public", "ops": "operator"})
    settings = make_settings(api_shop, api_model_server.grpc_port, tmp_path / "e.sqlite3",
                             auth="required", api_keys_file=str(tmp_path / "keys"))
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/experiments", headers=bearer(secrets["shop"])).status_code == 403
        answer = client.get("/v1/experiments", headers=bearer(secrets["ops"]))
        assert answer.status_code == 200 and answer.json() == {"experiments": []}


def test_erasure_deletes_the_users_impressions(exp_client):
    store = _store(exp_client)
    body = exp_client.get("/v1/recommend", params={"user_id": "fan5", "k": 3}).json()
    exp_client.post("/v1/events", json={"user_id": "fan5", "event_type": "click",
                                        "item_id": body["items"][0]["item_id"]})
    assert any(i.user_id == "fan5" for i in store.impressions())
    assert exp_client.delete("/v1/users/fan5").status_code == 200
    assert not any(i.user_id == "fan5" for i in store.impressions())
    assert not any(a.user_id == "fan5" for a in store.experiment_attributions("exp"))


def test_a_bad_experiments_file_stops_the_app_before_it_starts(api_shop, tmp_path):
    from serving.api.app import create_app

    config = tmp_path / "experiments.json"
    config.write_text(json.dumps(_variants(settings={"max_k": 5})))
    with pytest.raises(SettingsError, match=r"variants\[1\]\.settings\.max_k"):
        create_app(make_settings(api_shop, 1, tmp_path / "e.sqlite3",
                                 experiments_file=str(config)))


def test_a_store_error_while_logging_impressions_never_fails_the_answer(exp_client,
                                                                        monkeypatch):
    store = _store(exp_client)

    def broken(rows):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "add_impressions", broken)
    answer = exp_client.get("/v1/recommend", params={"user_id": "reader", "k": 2})
    assert answer.status_code == 200 and len(answer.json()["items"]) == 2
    assert exp_client.app.state.services.impression_log.flush()


def test_the_console_shows_the_report_with_its_p_values(exp_client):
    import html
    import re

    report = exp_client.get("/v1/experiments/exp/report").json()
    page = html.unescape(exp_client.get("/web/console/experiments").text)
    assert "<h2>exp</h2>" in page and "max_category_share=1.0" in page and "ranking v1" in page
    for variant, metrics in report["variants"].items():
        assert re.search(rf'<th scope="row">{variant}</th>\s*<td>[^<]*</td>\s*'
                         rf"<td>{metrics['users']:,}</td><td>{metrics['impressions']:,}</td>",
                         page), variant
    p_value = report["comparisons"]["B"]["ctr"]["p_value"]
    assert ("%.3g" % p_value if p_value is not None else "–") in page
    assert page.count('class="bars"') == 3


def test_variants_follow_a_catalog_that_grows(exp_client):
    services = exp_client.app.state.services
    assert exp_client.post("/v1/catalog/updates", json={
        "item_id": "exp-new", "title": "Gold building blocks castle",
        "categories": "Toys > Building"}).status_code == 200
    for key, recommender in services._variants.items():
        assert recommender.catalog is services.catalog, key
        assert recommender.catalog.row("exp-new") is not None
    assert services._variants[("exp", "A")] is services.recommender
    assert services._variants[("exp", "B")].settings.max_category_share == 1.0
