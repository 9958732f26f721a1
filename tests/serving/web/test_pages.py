"""The pages' routes over the tiny shop and synthetic models (no browser): open shells,
role-guarded fragments, escaping, input validation, and what the fragments show."""
from __future__ import annotations

import re

import pytest

SCRIPT = "<script>alert(1)</script>"


def _ids(html: str) -> list[str]:
    return re.findall(r'<li class="card" data-item-id="([^"]+)"', html)


def test_page_shells_are_open_hold_no_data_and_send_security_headers(web_client):
    client, _ = web_client
    for path in ("/shop", "/console/models", "/console/runs", "/console/data",
                 "/console/traffic"):
        page = client.get(path)
        assert page.status_code == 200, (path, page.text)
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text          # scripts are files, never inline
    assert 'for="key-public"' in client.get("/shop").text        # labelled inputs
    assert client.get("/console", follow_redirects=False).headers["location"] == \
        "/console/models"
    missing = client.get("/console/nope")
    assert missing.status_code == 404 and "path parameter &#39;view&#39;" in missing.text
    assert client.get("/web/static/shop.js").status_code == 200


def test_fragments_need_the_key_of_their_role(web_client):
    from serving.web.pages import WEB_ROUTE_ROLES

    client, keys = web_client
    web_routes = {getattr(r, "path", None) for r in client.app.routes} - {None}
    guarded = {p for p in web_routes if p.startswith("/web/") and p != "/web/static"}
    assert guarded == set(WEB_ROUTE_ROLES), guarded ^ set(WEB_ROUTE_ROLES)
    shop = "/web/shop/recommendations?user_id=reader"
    assert client.get(shop).status_code == 401
    assert client.get(shop, headers=keys["ingest"]).status_code == 403
    assert client.get(shop, headers=keys["shopfront"]).status_code == 200
    for view in ("models", "runs", "data", "traffic"):
        url = f"/web/console/{view}"
        assert client.get(url).status_code == 401, view
        refused = client.get(url, headers=keys["shopfront"])
        assert refused.status_code == 403 and "'operator'" in refused.json()["error"], view
        assert client.get(url, headers=keys["ops"]).status_code == 200, view


@pytest.mark.parametrize("path, params, status, field", [
    ("/web/shop/recommendations", {}, 422, "user_id"),
    ("/web/shop/recommendations", {"user_id": "u" * 257}, 422, "user_id"),
    ("/web/shop/recommendations", {"user_id": "reader", "k": 0}, 422, "k"),
    ("/web/shop/recommendations", {"user_id": "reader", "k": 51}, 422, "k"),
    ("/web/shop/recommendations", {"user_id": "reader", "k": "ten"}, 422, "k"),
    ("/web/shop/search", {"q": "   "}, 422, "q"),
    ("/web/shop/search", {"q": "x" * 501}, 422, "q"),
    ("/web/shop/search", {"q": "toy", "user_id": ""}, 422, "user_id"),
    ("/web/shop/search", {"q": "toy", "sort": "cheapest"}, 422, "sort"),
    ("/web/shop/items/nope", {}, 404, "item_id"),
    ("/web/shop/items/" + "i" * 257, {}, 422, "item_id"),
    ("/web/shop/items/toy1", {"k": -1}, 422, "k"),
])
def test_invalid_inputs_are_4xx_naming_the_field(web_client, path, params, status, field):
    client, keys = web_client
    response = client.get(path, params=params, headers=keys["shopfront"])
    assert response.status_code == status, response.text
    assert f"'{field}'" in response.json()["error"], response.json()


def test_user_text_is_escaped_in_every_fragment(web_client):
    client, keys = web_client
    user = f'"><img src=x onerror=alert(1)>{SCRIPT}'
    pages = [client.get("/web/shop/search", params={"q": f"{SCRIPT} blocks", "user_id": user},
                        headers=keys["shopfront"]),
             client.get("/web/shop/recommendations", params={"user_id": user},
                        headers=keys["shopfront"]),
             client.get("/web/shop/items/toy1", params={"user_id": user},
                        headers=keys["shopfront"])]
    for page in pages:
        assert page.status_code == 200, page.text
        assert SCRIPT not in page.text and "<img" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; blocks" in pages[0].text
    assert "%3Cscript%3E" in pages[1].text          # inside links: URL-encoded


def test_search_fragment_lists_results_with_their_reasons(web_client):
    client, keys = web_client
    page = client.get("/web/shop/search", params={"q": "building blocks", "k": 5},
                      headers=keys["shopfront"]).text
    ids = _ids(page)
    assert len(ids) == 5 and all(i.startswith("toy") for i in ids), ids
    assert page.count('class="reason"') == 5 and "Matches “blocks”" in page
    assert 'data-strategy="search"' in page and "Degraded" not in page
    assert "Showing matches for" not in page
    typo = client.get("/web/shop/search", params={"q": "buildng blocks", "k": 5},
                      headers=keys["shopfront"]).text
    assert "Showing matches for “building blocks” too" in typo


def test_search_fragment_sorts_by_price_when_asked(web_client):
    client, keys = web_client
    ids = {}
    for sort in ("relevance", "price_asc", "price_desc"):
        page = client.get("/web/shop/search", params={"q": "building blocks toy", "k": 9,
                                                      "sort": sort},
                          headers=keys["shopfront"]).text
        ids[sort] = _ids(page)
    # toy0 .. toy8 cost 5.50 .. 13.50 (toy9 is out of stock)
    assert ids["price_asc"] == [f"toy{i}" for i in range(9)], ids
    assert ids["price_desc"] == ids["price_asc"][::-1]
    assert sorted(ids["relevance"]) == ids["price_asc"]


def test_product_fragment_shows_the_item_and_its_similar_items(web_client):
    client, keys = web_client
    page = client.get("/web/shop/items/book1", params={"user_id": "reader", "k": 4},
                      headers=keys["shopfront"]).text
    assert "Blue mystery novel" in page and 'data-action="purchase"' in page
    similar = _ids(page)
    assert len(similar) == 4 and "book1" not in similar, similar
    assert "Similar to “Blue mystery novel”" in page
    assert 'href="/shop?user=reader&amp;item=' in page


def test_recommendations_change_after_a_click_event(web_client):
    client, keys = web_client
    url, params = "/web/shop/recommendations", {"user_id": "web-newcomer", "k": 6}
    before = client.get(url, params=params, headers=keys["shopfront"]).text
    assert 'data-strategy="popular"' in before
    stored = client.post("/v1/events", headers=keys["ingest"], json=[
        {"user_id": "web-newcomer", "event_type": "click", "item_id": "food3"}])
    assert stored.status_code == 200, stored.text
    after = client.get(url, params=params, headers=keys["shopfront"]).text
    assert 'data-strategy="personalized"' in after
    assert _ids(after) != _ids(before)
    reasons = re.findall(r'data-reason="([a-z_]+)">([^<]*)<', after)
    assert reasons and all(kind != "popular" for kind, _ in reasons[:3]), reasons


def test_console_views_without_pipeline_metadata_say_what_to_set(web_client):
    client, keys = web_client
    for view in ("models", "runs", "data"):
        page = client.get(f"/web/console/{view}", headers=keys["ops"]).text
        assert "SHOPREC_METADATA_PATH" in page, view
    models = client.get("/web/console/models", headers=keys["ops"]).text
    assert "v1" in models and "check model_server" in models


def test_traffic_view_counts_requests_answers_and_events(web_client):
    client, keys = web_client
    client.get("/v1/search", params={"q": "lipstick"}, headers=keys["all"])
    client.post("/v1/events", headers=keys["all"],
                json={"user_id": "traffic", "event_type": "add_to_cart", "item_id": "toy1"})
    page = client.get("/web/console/traffic", headers=keys["ops"]).text
    assert "/v1/search" in page and "add_to_cart" in page
    assert re.search(r"<td>search</td><td>search</td><td>\d+</td>", page), page
    assert "Latency per recommendation stage (ms)" in page       # the SVG chart's title


def test_experiments_view_without_experiments_says_what_to_set(web_client):
    client, keys = web_client
    page = client.get("/web/console/experiments", headers=keys["ops"])
    assert page.status_code == 200 and "SHOPREC_EXPERIMENTS_FILE" in page.text
    assert client.get("/web/console/experiments",
                      headers=keys["shopfront"]).status_code == 403


def test_latency_percentiles_follow_histogram_quantile():
    from serving.web.traffic import milliseconds, quantile

    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.95, buckets) == pytest.approx(0.1 + 0.9 * 0.5)
    assert quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None
    beyond = quantile(0.99, [(1.0, 1.0), (float("inf"), 10.0)])
    assert milliseconds(beyond, 5.0) == "> 5,000" and milliseconds(None, 5.0) == "–"


def test_data_view_lists_quarantined_rows_by_reason_and_escapes_them(monkeypatch):
    from serving.web import console
    from serving.web.pipeline_records import DataReport
    from serving.web.rendering import render

    summary = {"policy": "quarantine", "data_dir": "shop", "tables": {
        "events": {"file": "events.csv", "rows_read": 1200, "rows_kept": 1195,
                   "rows_quarantined": 5, "reasons": {"bad_timestamp": 3, "unknown_item": 2}},
        "users": {"file": None, "rows_read": 0, "rows_kept": 0, "rows_quarantined": 0,
                  "reasons": {}}}}
    row = {"table": "events", "file": "events.csv", "location": "7", "fields": ["timestamp"],
           "messages": [f"not a time: {SCRIPT}"]}

    class Records:
        def data_reports(self):
            return [DataReport("run-2", "/r/2", summary, [row]),
                    DataReport("run-1", "/r/1", summary, [])]

    monkeypatch.setattr(console, "_records", lambda config: (Records(), ""))
    html = render("console/data.html", **console.data_view(None)).body.decode()
    assert "bad_timestamp: 3, unknown_item: 2" in html and "no file (optional)" in html
    assert "1,195" in html and "events.csv:7" in html and "run-1" in html
    assert SCRIPT not in html and "&lt;script&gt;" in html


def test_a_degraded_answer_says_which_stage_failed():
    from serving.web.rendering import render

    answer = {"strategy": "popular", "degraded": ["retrieval"], "model_versions": {},
              "items": [{"item_id": "toy1", "title": "Toy", "brand": "B", "category": "Toys",
                         "price": 5.5, "in_stock": True,
                         "reason": {"type": "popular", "text": "Popular in Toys"}}]}
    html = render("shop/recommendations.html", root="", answer=answer, user_id="u",
                  degraded=["the retrieval model did not answer"]).body.decode()
    assert "Degraded answer" in html and "the retrieval model did not answer" in html
    assert 'data-degraded="retrieval"' in html and "Popular in Toys" in html
