"""The recommendation API over the stand-in serving synthetic models of a tiny shop."""
from __future__ import annotations

import re

import pytest

from tests.serving.api.setup import (api_client, api_model_server, api_serving_dir,  # noqa: F401
                                     api_shop, redis_url)


def _ids(response) -> list[str]:
    return [item["item_id"] for item in response.json()["items"]]


def _recommend(client, user_id, k=10):
    response = client.get("/v1/recommend", params={"user_id": user_id, "k": k})
    assert response.status_code == 200, response.text
    return response


def _assert_field_error(response, status: int, field: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert f"'{field}'" in body["error"], body
    return body


def test_healthz_is_liveness_and_readyz_reports_checks_models_and_catalog(api_client):
    live = api_client.get("/healthz")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = api_client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "model_server": True, "models_available": True, "embeddings": True,
        "event_store": True, "watcher": True}
    assert body["checks"]["models_available"]["reason"] == "retrieval v1, ranking v1 AVAILABLE"
    assert body["models"] == {"retrieval": 1, "ranking": 1}
    assert body["catalog_items"] == 40 and body["embeddings_version"] == 1
    assert "item_to_item_version" in body
    metrics = api_client.get("/metrics").text
    assert "shoprec_api_ready 1.0" in metrics
    assert "shoprec_api_model_watcher_poll_failures_total 0.0" in metrics


def test_recommend_known_user_is_personal_filtered_diverse_and_explained(api_client):
    body = _recommend(api_client, "reader", k=10).json()
    assert body["strategy"] == "personalized" and body["degraded"] == []
    assert body["context"]["history"] == ["book0", "book3", "book2", "book1"]
    ids = [item["item_id"] for item in body["items"]]
    assert len(ids) == len(set(ids)) == 10
    assert "book0" not in ids, "already purchased"
    assert "book9" not in ids and "toy9" not in ids, "out of stock"
    books = [i for i in ids if i.startswith("book")]
    assert ids[:len(books)] == books, "books rank first for a book reader"
    assert len(books) == 5, "diversity cap: at most half of k from one top category"
    first = body["items"][0]["reason"]
    assert first["type"] == "similar_to_history" and first["item_id"] in body["context"]["history"]
    assert first["text"].startswith("Because you ")
    assert body["model_versions"] == {"retrieval": 1, "ranking": 1}


def test_unknown_user_gets_popular_items(api_client):
    body = _recommend(api_client, "never-seen", k=4).json()
    assert body["strategy"] == "popular"
    assert _ids_of(body)[:2] == ["beauty0", "beauty1"]
    assert body["items"][0]["reason"] == {"type": "popular", "text": "Popular in Beauty"}


def _ids_of(body) -> list[str]:
    return [item["item_id"] for item in body["items"]]


def test_user_who_only_searched_gets_search_driven_items(api_client):
    body = _recommend(api_client, "searcher", k=5).json()
    assert body["strategy"] == "search" and body["context"]["query"] == "building blocks toy"
    assert all(i.startswith("toy") for i in _ids_of(body))
    assert body["items"][0]["reason"]["type"] == "matches_search"


@pytest.mark.parametrize("params, field", [
    ({"user_id": "reader", "k": 0}, "k"), ({"user_id": "reader", "k": 51}, "k"),
    ({"user_id": "reader", "k": "ten"}, "k"), ({"k": 3}, "user_id"),
    ({"user_id": "", "k": 3}, "user_id")])
def test_recommend_rejects_bad_parameters_naming_them(api_client, params, field):
    body = _assert_field_error(api_client.get("/v1/recommend", params=params), 422, field)
    assert body["detail"][0]["loc"] == ["query", field]


def test_search_ranks_matching_items_first_with_reasons(api_client):
    body = api_client.get("/v1/search", params={"q": "Lipstick", "k": 5}).json()
    assert body["strategy"] == "search" and body["q"] == "Lipstick"
    assert all(i.startswith("beauty") for i in _ids_of(body))
    assert body["items"][0]["reason"] == {"type": "matches_search",
                                          "text": "Matches “lipstick”"}


def test_search_reads_a_misspelled_word_as_the_catalogs_and_says_so(api_client):
    body = api_client.get("/v1/search", params={"q": "Lipstik", "k": 5}).json()
    assert body["did_you_mean"] == "lipstick" and body["spelling"] == {"lipstik": "lipstick"}
    assert _ids_of(body)[0].startswith("beauty"), _ids_of(body)
    plain = api_client.get("/v1/search", params={"q": "lipstick", "k": 5}).json()
    assert plain["did_you_mean"] is None and plain["spelling"] == {}


def test_search_ranks_retrieved_items_with_the_query(api_client):
    """A book reader searching lipstick: retrieval leans to books (history), the ranking
    model's query-word match puts the lipsticks first."""
    body = api_client.get("/v1/search", params={"q": "velvet lipstick", "user_id": "reader",
                                                "k": 12}).json()
    assert body["degraded"] == [] and body["strategy"] == "search"
    ids = _ids_of(body)
    assert all(i.startswith("beauty") for i in ids[:10]), ids
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and 0.0 <= scores[-1] <= scores[0] <= 1.0


def test_recommend_ranks_with_the_session_search(api_client):
    events = [{"user_id": "book-then-lipstick", "item_id": f"book{i}", "event_type": "click"}
              for i in (1, 2, 3)]
    events.append({"user_id": "book-then-lipstick", "event_type": "search",
                   "query": "velvet lipstick"})
    assert api_client.post("/v1/events", json=events).status_code == 200
    body = _recommend(api_client, "book-then-lipstick", k=10).json()
    assert body["strategy"] == "personalized" and body["degraded"] == []
    assert body["context"]["query"] == "velvet lipstick"
    ids = _ids_of(body)
    assert ids[0].startswith("beauty"), ids
    assert sum(i.startswith("beauty") for i in ids) == 5, "the diversity cap still applies"
    assert body["items"][0]["reason"]["type"] == "matches_search"
    without = _recommend(api_client, "reader", k=10).json()
    assert _ids_of(without)[0].startswith("book"), "no search: the history decides"


def test_search_skips_out_of_stock_items(api_client):
    ids = _ids(api_client.get("/v1/search", params={"q": "toy", "k": 20}))
    assert "toy9" not in ids and {f"toy{i}" for i in range(9)} <= set(ids)


@pytest.mark.parametrize("params, field", [
    ({}, "q"), ({"q": ""}, "q"), ({"q": "   "}, "q"), ({"q": "x" * 501}, "q"),
    ({"q": "toy", "k": -1}, "k"), ({"q": "toy", "user_id": ""}, "user_id")])
def test_search_rejects_bad_parameters_naming_them(api_client, params, field):
    _assert_field_error(api_client.get("/v1/search", params=params), 422, field)


def _search(client, **params):
    response = client.get("/v1/search", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_search_filters_by_category_brand_and_price_and_sorts_by_price(api_client):
    body = _search(api_client, q="toy", category="toys", max_price=8, k=20)
    assert set(_ids_of(body)) == {"toy0", "toy1", "toy2"}, _ids_of(body)  # 8.50 is above
    assert body["filters"] == {"category": "toys", "max_price": 8.0} and body["total"] == 3
    brand = _search(api_client, q="toy", brand=" beautyco ", k=20)
    assert brand["items"] and all(i.startswith("beauty") for i in _ids_of(brand))
    cheap_first = _search(api_client, q="toy", category="Toys > Building", sort="price_asc",
                          k=20)
    prices = [item["price"] for item in cheap_first["items"]]
    assert prices == sorted(prices) and "toy9" not in _ids_of(cheap_first)
    dear_first = _search(api_client, q="toy", category="Toys", sort="price_desc",
                         include_out_of_stock=True, k=20)
    assert _ids_of(dear_first)[0] == "toy9" and not dear_first["items"][0]["in_stock"]
    assert [i["price"] for i in dear_first["items"]] == sorted(
        [i["price"] for i in dear_first["items"]], reverse=True)
    none = _search(api_client, q="toy", category="Garden")
    assert none["items"] == [] and none["total"] == 0 and none["next_cursor"] is None


def test_search_pages_follow_cursors_without_repeats_or_gaps(api_client):
    whole = _search(api_client, q="velvet lipstick", k=30)
    pages, cursor = [], None
    while True:
        params = {"q": "velvet lipstick", "k": 7}
        if cursor:
            params["cursor"] = cursor
        body = _search(api_client, **params)
        pages.append(_ids_of(body))
        assert body["offset"] == 7 * (len(pages) - 1) and body["total"] == whole["total"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    paged = [i for page in pages for i in page]
    assert paged[:30] == _ids_of(whole) and len(paged) == len(set(paged)) == whole["total"]
    assert len(pages) == -(-whole["total"] // 7) and whole["total"] > 30


def test_search_cursor_must_belong_to_the_search_and_its_models(api_client):
    from serving.api.search_options import SearchOptions, encode_cursor

    first = _search(api_client, q="toy", k=2)
    other = api_client.get("/v1/search", params={"q": "book", "cursor": first["next_cursor"]})
    _assert_field_error(other, 422, "cursor")
    filtered = api_client.get("/v1/search", params={"q": "toy", "brand": "ToyCo",
                                                    "cursor": first["next_cursor"]})
    assert "another search" in _assert_field_error(filtered, 422, "cursor")["error"]
    _assert_field_error(api_client.get("/v1/search", params={"q": "toy", "cursor": "%%%"}),
                        422, "cursor")
    stale = encode_cursor("toy", SearchOptions(offset=2),
                          {name: version + 1 for name, version in
                           first["model_versions"].items()})
    expired = api_client.get("/v1/search", params={"q": "toy", "cursor": stale})
    assert expired.status_code == 409 and "search again" in expired.json()["error"]


@pytest.mark.parametrize("params, field", [
    ({"min_price": 9, "max_price": 3}, "min_price"), ({"min_price": -1}, "min_price"),
    ({"sort": "cheapest"}, "sort"), ({"category": " > "}, "category"),
    ({"brand": "  "}, "brand"), ({"include_out_of_stock": "maybe"}, "include_out_of_stock")])
def test_search_rejects_bad_filters_naming_them(api_client, params, field):
    _assert_field_error(api_client.get("/v1/search", params={"q": "toy", **params}), 422,
                        field)


def test_autocomplete_suggests_queries_of_enough_shoppers_and_forgets_erased_ones(api_client):
    searches = [{"user_id": f"ac-shopper-{i}", "event_type": "search",
                 "query": "Velvet Lipstick  Gift"} for i in range(5)]
    searches += [{"user_id": "ac-loner", "event_type": "search", "query": "velvet private"}
                 for _ in range(6)]
    assert api_client.post("/v1/events", json=searches).status_code == 200
    body = api_client.get("/v1/autocomplete", params={"prefix": "VELV", "k": 3}).json()
    assert body["suggestions"] == [{"query": "velvet lipstick gift", "users": 5}]
    assert api_client.delete("/v1/users/ac-shopper-0").status_code == 200
    after = api_client.get("/v1/autocomplete", params={"prefix": "velv"}).json()
    assert after["suggestions"] == [], "4 shoppers are below autocomplete_min_users (5)"
    for params, field in (({}, "prefix"), ({"prefix": "  "}, "prefix"),
                          ({"prefix": "v", "k": 0}, "k")):
        _assert_field_error(api_client.get("/v1/autocomplete", params=params), 422, field)


def test_similar_items_are_nearest_neighbours_in_stock(api_client):
    body = api_client.get("/v1/items/toy0/similar", params={"k": 8}).json()
    ids = _ids_of(body)
    assert body["strategy"] == "similar" and len(ids) == 8
    assert "toy0" not in ids and "toy9" not in ids
    assert all(i.startswith("toy") for i in ids), "same category is nearest"
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and scores[0] <= 1.0 + 1e-6
    assert body["items"][0]["reason"]["text"].startswith("Similar to “")


def test_similar_unknown_item_is_404_naming_it(api_client):
    response = api_client.get("/v1/items/no-such-item/similar")
    assert response.status_code == 404
    assert "'item_id'" in response.json()["error"] and "no-such-item" in response.json()["error"]
    _assert_field_error(api_client.get("/v1/items/toy0/similar", params={"k": 0}), 422, "k")


def test_events_single_and_batch_are_accepted(api_client):
    one = api_client.post("/v1/events", json={"user_id": "poster", "item_id": "food1",
                                              "event_type": "view"})
    assert one.status_code == 200 and one.json() == {"accepted": 1, "stored": 1, "duplicates": 0}
    batch = api_client.post("/v1/events", json=[
        {"user_id": "poster", "event_type": "search", "query": "pasta"},
        {"user_id": "poster", "item_id": "food1", "event_type": "Click",
         "timestamp": "2025-02-01T10:00:00Z"},
        {"user_id": "poster", "item_id": "food1", "event_type": "rating", "value": 4}])
    assert batch.status_code == 200 and batch.json() == {"accepted": 3, "stored": 3,
                                                               "duplicates": 0}


@pytest.mark.parametrize("payload, loc, code", [
    ({"user_id": "u", "item_id": "toy1", "event_type": "like"}, ["body", "event_type"],
     "bad_event_type"),
    ({"user_id": "u", "item_id": "nope", "event_type": "click"}, ["body", "item_id"],
     "unknown_item"),
    ({"user_id": "u", "item_id": "toy1", "event_type": "rating", "value": 9}, ["body", "value"],
     "bad_rating"),
    ({"user_id": "u", "event_type": "search"}, ["body", "query"], "missing_query"),
    ({"item_id": "toy1", "event_type": "view"}, ["body", "user_id"], "missing_value"),
    ({"user_id": "u", "item_id": "toy1", "event_type": "view", "ts": 1}, ["body", "ts"],
     "unknown_field"),
    ([{"user_id": "u", "item_id": "toy1", "event_type": "view"},
      {"user_id": "u", "item_id": "toy1", "event_type": "view", "timestamp": "yesterday"}],
     ["body", 1, "timestamp"], "bad_timestamp"),
    ([{"user_id": "u", "item_id": "toy1", "event_type": "purchase", "value": 0.5}],
     ["body", 0, "value"], "bad_quantity"),
    ([], ["body"], "empty"), ("click", ["body"], "wrong_type"), ([7], ["body", 0], "wrong_type"),
])
def test_bad_events_are_422_naming_the_field(api_client, payload, loc, code):
    response = api_client.post("/v1/events", json=payload)
    assert response.status_code == 422, response.text
    body = response.json()
    assert {"loc": loc, "type": code} in [{"loc": d["loc"], "type": d["type"]}
                                          for d in body["detail"]]
    assert re.search(r"field '[\w.]+'", body["error"]), body["error"]


def test_events_body_errors(api_client):
    bad_json = api_client.post("/v1/events", content=b"{not json",
                               headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"].startswith("body:")
    too_many = [{"user_id": "u", "item_id": "toy1", "event_type": "view"}] * 1001
    _assert_field_error(api_client.post("/v1/events", json=too_many), 422, "body")
    huge = api_client.post("/v1/events", content=b"[" + b" " * 1_000_001 + b"]",
                           headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"].startswith("body: larger than")


def test_an_invalid_batch_stores_nothing(api_client):
    response = api_client.post("/v1/events", json=[
        {"user_id": "halfway", "item_id": "toy1", "event_type": "click"},
        {"user_id": "halfway", "item_id": "toy2", "event_type": "clack"}])
    assert response.status_code == 422
    assert _recommend(api_client, "halfway").json()["strategy"] == "popular"


def test_events_move_the_next_recommendations_toward_a_category(api_client):
    def toys(user):
        return sum(i.startswith("toy") for i in _ids(_recommend(api_client, user)))

    assert toys("newbie") == 0
    reader_before = _recommend(api_client, "reader").json()
    assert _ids_of(reader_before)[0].startswith("book")
    assert sum(i.startswith("toy") for i in _ids_of(reader_before)) <= 1
    for user, clicks in (("newbie", 3), ("reader", 6)):
        events = [{"user_id": user, "item_id": f"toy{i}", "event_type": etype}
                  for i in range(1, clicks + 1) for etype in ("view", "click")]
        assert api_client.post("/v1/events", json=events).status_code == 200
    newbie = _recommend(api_client, "newbie").json()
    assert newbie["strategy"] == "personalized"
    assert newbie["context"]["history"] == ["toy3", "toy2", "toy1"]
    assert all(i.startswith("toy") for i in _ids_of(newbie)[:5])
    reader = _recommend(api_client, "reader").json()
    assert _ids_of(reader)[0].startswith("toy")
    assert toys("reader") == 5, "toys now fill the category cap"


def test_views_alone_do_not_make_a_history(api_client):
    events = [{"user_id": "window-shopper", "item_id": f"food{i}", "event_type": "view"}
              for i in range(5)]
    assert api_client.post("/v1/events", json=events).status_code == 200
    assert _recommend(api_client, "window-shopper").json()["strategy"] == "popular"


def test_purchased_items_are_no_longer_recommended(api_client):
    assert "beauty0" in _ids(_recommend(api_client, "buyer", k=3))
    api_client.post("/v1/events", json={"user_id": "buyer", "item_id": "beauty0",
                                        "event_type": "purchase"})
    assert "beauty0" not in _ids(_recommend(api_client, "buyer", k=10))


def _samples(text: str) -> dict[tuple, float]:
    """(sample name, frozenset of labels) -> value, from the Prometheus text format."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_expose_latency_histograms_and_model_versions(api_client):
    _recommend(api_client, "reader")
    api_client.get("/v1/search", params={"q": "toy"})
    api_client.get("/v1/items/toy0/similar")
    api_client.get("/v1/recommend", params={"user_id": "reader", "k": 0})
    response = api_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE shoprec_api_request_duration_seconds histogram" in response.text
    samples = _samples(response.text)

    def value(name, **labels):
        return samples.get((name, frozenset(labels.items())))

    for endpoint in ("/v1/recommend", "/v1/search", "/v1/items/{item_id:path}/similar"):
        labels = {"endpoint": endpoint, "method": "GET", "status": "200"}
        count = value("shoprec_api_request_duration_seconds_count", **labels)
        assert count >= 1, endpoint
        assert value("shoprec_api_request_duration_seconds_bucket", le="+Inf", **labels) == count
        assert value("shoprec_api_request_duration_seconds_bucket", le="0.001", **labels) \
            is not None
    assert value("shoprec_api_request_duration_seconds_count", endpoint="/v1/recommend",
                 method="GET", status="422") >= 1
    for stage in ("context", "retrieval", "filter", "ranking", "diversify", "reasons",
                  "neighbours"):
        assert value("shoprec_api_stage_duration_seconds_count", stage=stage) >= 1, stage
    assert value("shoprec_api_model_version", model="retrieval") == 1
    assert value("shoprec_api_model_version", model="ranking") == 1
    assert value("shoprec_api_catalog_embeddings_version") == 1
    assert value("shoprec_api_events_ingested_total", event_type="click") >= 1
    assert value("shoprec_api_recommendations_total", endpoint="recommend",
                 strategy="personalized") >= 1


def test_with_the_redis_store_events_change_recommendations(api_shop, api_model_server,
                                                            redis_url, tmp_path):
    import redis
    from fastapi.testclient import TestClient

    from serving.api.app import create_app
    from tests.serving.api.setup import make_settings

    redis.Redis.from_url(redis_url).flushdb()
    settings = make_settings(api_shop, api_model_server.grpc_port, tmp_path / "unused",
                             event_store=redis_url)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["status"] == "ready"
        assert _recommend(client, "reader").json()["context"]["history"] == [
            "book0", "book3", "book2", "book1"], "shop events imported into Redis"
        assert _recommend(client, "r-new").json()["strategy"] == "popular"
        client.post("/v1/events", json=[{"user_id": "r-new", "item_id": f"food{i}",
                                         "event_type": "click"} for i in (1, 2)])
        body = _recommend(client, "r-new").json()
        assert body["strategy"] == "personalized"
        assert body["context"]["history"] == ["food2", "food1"]
        assert _ids_of(body)[0].startswith("food")
