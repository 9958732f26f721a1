"""Property-based fuzzing of every API endpoint, in-process (FastAPI TestClient + hypothesis).

Each generated request must get an answer below 500; every error must be the API's JSON
error format (``{"error": str, "detail"?: [{"loc", "msg", "type"}]}``), every answer must
be bounded in size, and every status an operation answers must be declared in the OpenAPI
document. Covered: ``GET /v1/recommend``, ``GET /v1/search``, ``GET
/v1/items/{item_id}/similar`` (any parameter text, huge, negative, non-numeric, invalid
percent-escapes, repeated), ``POST /v1/events`` (arbitrary JSON, event-shaped objects with
wrong types, huge strings, NaN/Infinity, huge integers, lone surrogates, unknown fields,
deep nesting, batches around ``max_events_per_request``; malformed bodies and content
types), and the other paths and methods (``/healthz``, ``/readyz``, ``/metrics``, the OpenAPI
document, unknown paths, wrong methods). Generation is derandomized (same cases every run);
the number of cases per test is ``EXAMPLES``, at least 2,000 in total (2,213 with the
explicit examples; about 40 s on the 2-core machine). The end of the file has one focused
regression test per bug the fuzzing found (each answered 500, or an unbounded answer).
"""
from __future__ import annotations

import json
import urllib.parse
from collections import Counter

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.contract import spec
from tests.serving.api.setup import (ALL_ROLES, api_model_server, api_serving_dir,  # noqa: F401
                                     api_shop, bearer, make_settings, write_keys)

EXAMPLES = {"recommend": 450, "search": 400, "similar": 300, "events_json": 650,
            "events_raw": 250, "other": 150}
MAX_ANSWER_BYTES = 256_000     # the tiny shop's answers: < 30 kB; an echoed 900 kB value: not
FUZZ = dict(deadline=None, derandomize=True, database=None, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                   HealthCheck.function_scoped_fixture,
                                   HealthCheck.filter_too_much])


def test_fuzz_budget_is_at_least_2000_cases():
    assert sum(EXAMPLES.values()) >= 2000


@pytest.fixture(scope="module")
def fuzz_client(api_shop, api_model_server, tmp_path_factory):  # noqa: F811
    """The API with its own event store, called with a key holding every role (no rate
    limit); server errors come back as answers, not raised."""
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    folder = tmp_path_factory.mktemp("fuzz_db")
    secret = write_keys(folder / "api_keys", {"fuzzer": ALL_ROLES})["fuzzer"]
    settings_ = make_settings(api_shop, api_model_server.grpc_port, folder / "events.sqlite3",
                              auth="required", api_keys_file=str(folder / "api_keys"))
    with TestClient(create_app(settings_), raise_server_exceptions=False,
                    headers=bearer(secret)) as client:
        yield client


@pytest.fixture(scope="module")
def declared(fuzz_client):
    """(path template, method) -> status codes the OpenAPI document declares."""
    return {(path, method.upper()): set(operation.get("responses", {}))
            for path, operations in fuzz_client.app.openapi()["paths"].items()
            for method, operation in operations.items()}


def check(response, operation=None, declared_codes=None, json_answer=True,
          unavailable_ok=False) -> None:
    """The properties every answer must have (``unavailable_ok``: 503 is an honest answer,
    e.g. of /readyz while a dependency is slow, not a server error)."""
    request = response.request
    what = f"{request.method} {str(request.url)[:300]} -> {response.status_code}: " \
           f"{response.text[:500]}"
    assert response.status_code < 500 or (unavailable_ok and response.status_code == 503), what
    assert len(response.content) <= MAX_ANSWER_BYTES, f"{len(response.content)} bytes: {what}"
    if operation is not None and declared_codes is not None:
        assert str(response.status_code) in declared_codes[operation], \
            f"{response.status_code} not declared for {operation}: {what}"
    if request.method == "HEAD" or not (json_answer or response.status_code >= 400):
        return
    assert response.headers["content-type"].startswith("application/json"), what
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body, dict) and set(body) <= {"error", "detail"}, what
        assert isinstance(body.get("error"), str) and body["error"], what
        for entry in body.get("detail", []):
            assert set(entry) == {"loc", "msg", "type"}, what
            assert isinstance(entry["loc"], list) and isinstance(entry["msg"], str), what


# ---------------------------------------------------------------- strategies

class Big(str):
    """A long string that hypothesis reports by its length, not its text."""

    def __repr__(self):
        return f"Big({self[:1]!r} * {len(self)})"


class BigBytes(bytes):
    """A long body that hypothesis reports by its start and length."""

    def __repr__(self):
        return f"BigBytes({bytes(self[:20])!r}... {len(self)} bytes)"


def _repeat(n_and_char):
    n, char = n_and_char
    return Big(char * n)


CHARS = ["x", "é", "😀", " ", "\x00", "%", "界"]
big_text = st.tuples(st.sampled_from([255, 256, 257, 499, 500, 501, 1_001, 10_001, 100_000]),
                     st.sampled_from(CHARS)).map(_repeat)
# URLs: the HTTP client refuses components over 65,536 characters (servers limit them too);
# "😀" is 12 characters percent-encoded
big_url_text = st.tuples(st.sampled_from([255, 256, 257, 499, 500, 501, 1_001]),
                         st.sampled_from(CHARS)).map(_repeat)
odd_numbers = st.sampled_from(["", " ", " 5", "5 ", "0x10", "1e3", "1_0", "NaN", "nan", "inf",
                               "-inf", "-0", "+3", "٣", "3.0", "1" * 5000, "-" + "9" * 40,
                               "true", "null", "[]", "{}", "5\x00"]).map(Big)
number_text = st.one_of(st.integers(-10 ** 30, 10 ** 30).map(str),
                        st.integers(-3, 60).map(str),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        odd_numbers)
url_text = st.one_of(st.text(max_size=30), big_url_text, number_text,
                     st.sampled_from(["reader", "searcher", "toy1", "book0", "never-seen"]))


def _params(names):
    """Query parameters as (name, value) pairs: any subset, repeats, unknown names."""
    name = st.one_of(st.sampled_from(names), st.text(max_size=8))
    return st.lists(st.tuples(name, url_text), max_size=4)


raw_escapes = st.binary(max_size=40).map(lambda b: urllib.parse.quote_from_bytes(b, safe=""))


def _raw_query(names):
    """A query string with arbitrary bytes percent-escaped (invalid UTF-8 included)."""
    return st.lists(st.tuples(st.sampled_from(names), raw_escapes), min_size=1, max_size=3).map(
        lambda pairs: "&".join(f"{n}={v}" for n, v in pairs))


surrogates = st.sampled_from(["\ud800", "x\udfff", "\udbff\udbff", "toy1\udc80"])
json_text = st.one_of(st.text(max_size=20), big_text, surrogates, number_text)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 30, 10 ** 30),
                         st.integers(-10 ** 400, 10 ** 400),
                         st.floats(allow_nan=True, allow_infinity=True), json_text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.one_of(st.text(max_size=8), surrogates),
                                               children, max_size=4)),
    max_leaves=10)

ITEMS = ["toy1", "book0", "beauty0", "food1", "toy9", "nope", "", " toy1 "]
PLAUSIBLE = {
    spec.USER_ID: st.one_of(st.sampled_from(["fuzz-user", "reader", "u1", 42]), json_text),
    spec.ITEM_ID: st.one_of(st.sampled_from(ITEMS), json_text, st.integers(0, 10)),
    spec.EVENT_TYPE: st.one_of(st.sampled_from(spec.EVENT_TYPES + ("CLICK", "Search", "like",
                                                                    "")), json_text),
    spec.VALUE: st.one_of(st.sampled_from([1, 2, 4, 5, 0, -1, 2.5, "3", " 4 ", "nan", "NaN",
                                           "inf", "1e400", 10 ** 400, True, None]),
                          json_scalars),
    spec.QUERY: st.one_of(st.sampled_from(["red lipstick", "toy", " ", ""]), json_text),
    spec.SESSION_ID: st.one_of(st.sampled_from(["s1", "", None]), json_text),
    spec.EVENT_ID: st.one_of(st.sampled_from(["e1", "e1", "", None]), json_text),
    spec.TIMESTAMP: st.one_of(st.sampled_from(["2025-01-01T00:00:00Z", "2025-02-30", "yesterday",
                                               1_735_689_600, "1735689600", 1_735_689_600_000,
                                               -1, 1e300, 10 ** 400, "9999-01-01", "1969-12-31",
                                               None]), json_scalars),
}


def _field(name):
    plausible = PLAUSIBLE.get(name, json_text)     # a field added later: any text
    return st.one_of(plausible, plausible, json_values)


def _merge(parts):
    known, extra = parts
    return {**known, **extra}


event = st.tuples(
    st.fixed_dictionaries({}, optional={name: _field(name) for name in spec.EVENTS.allowed}),
    st.one_of(st.just({}), st.just({}), st.dictionaries(
        st.one_of(st.sampled_from(["ts", "userid", "event", "Query", "itemId", ""]),
                  st.text(max_size=10), surrogates, big_text), json_values, max_size=2)),
).map(_merge)
valid_event = st.fixed_dictionaries({
    spec.USER_ID: st.sampled_from(["fuzz-user", "fuzz-2"]),
    spec.ITEM_ID: st.sampled_from(["toy1", "book0", "food1"]),
    spec.EVENT_TYPE: st.sampled_from(["view", "click", "add_to_cart"])})
big_batch = st.tuples(st.one_of(event, valid_event),
                      st.sampled_from([2, 50, 999, 1000, 1001, 1500])).map(
    lambda pair: [pair[0]] * pair[1])
payloads = st.one_of(event, valid_event, st.lists(st.one_of(event, valid_event), max_size=6),
                     big_batch, json_values, st.lists(json_values, max_size=3))
content_types = st.sampled_from([
    "application/json", "application/json", "text/plain", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/json; charset=utf-16", "", None])


def _headers(content_type):
    return {} if content_type is None else {"content-type": content_type}


def _deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return BigBytes(b"[" * depth + b"]" * depth)
    if kind == "object":
        return BigBytes(b'{"a":' * depth + b"1" + b"}" * depth)
    return BigBytes(b'{"user_id": ' + b"[" * depth + b"]" * depth + b', "event_type": "view"}')


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from([10, 900, 1_000, 5_000, 100_000, 400_000]),
              st.sampled_from(["list", "object", "field"])).map(lambda p: _deep(*p)),
    st.sampled_from([b"", b" ", b"null", b"NaN", b"-Infinity", BigBytes(b"1" * 5000),
                     BigBytes(b"[" + b"1" * 5000 + b"]"), b'{"user_id": "u1"', b"\xef\xbb\xbf{}",
                     b"\xff\xfe{\x00}\x00",
                     b'{"user_id": "\\ud800", "item_id": "toy1", "event_type": "view"}',
                     b'{"user_id": "u", "item_id": "toy1", "event_type": "view", '
                     b'"timestamp": 1e999}', b"user_id=u1&event_type=view",
                     json.dumps({"user_id": "u"}).encode("utf-16"),
                     BigBytes(b"[" + b" " * 1_000_001 + b"]")]),
    st.text(max_size=100).map(lambda t: t.encode("utf-8")))


# ---------------------------------------------------------------- the tests

def _run(test, cases, name):
    """Run a hypothesis test; check it ran its cases; print the statuses it saw (-s)."""
    test()
    assert len(cases) >= EXAMPLES[name], (name, len(cases))
    print(f"{name}: {len(cases)} cases, statuses {dict(sorted(Counter(cases).items()))}")


def test_fuzz_recommend(fuzz_client, declared):
    cases = []
    operation = ("/v1/recommend", "GET")

    @settings(max_examples=EXAMPLES["recommend"], **FUZZ)
    @given(params=_params(["user_id", "k"]), raw=st.one_of(st.none(),
                                                            _raw_query(["user_id", "k"])))
    @example(params=[("user_id", Big("x" * 60_000)), ("k", "50")], raw=None)
    @example(params=[("user_id", "reader"), ("k", Big("9" * 5000))], raw=None)
    @example(params=[], raw="user_id=%ED%A0%80&k=%FF")
    def run(params, raw):
        if raw is None:
            response = fuzz_client.get("/v1/recommend", params=params)
        else:
            response = fuzz_client.get(f"/v1/recommend?{raw}")
        cases.append(response.status_code)
        check(response, operation, declared)

    _run(run, cases, "recommend")


def test_fuzz_search(fuzz_client, declared):
    cases = []
    operation = ("/v1/search", "GET")

    @settings(max_examples=EXAMPLES["search"], **FUZZ)
    @given(params=_params(["q", "user_id", "k"]),
           raw=st.one_of(st.none(), _raw_query(["q", "user_id", "k"])))
    @example(params=[("q", Big("x" * 60_000))], raw=None)
    @example(params=[("q", "\x00 lipstick"), ("user_id", "reader"), ("k", "50")], raw=None)
    def run(params, raw):
        if raw is None:
            response = fuzz_client.get("/v1/search", params=params)
        else:
            response = fuzz_client.get(f"/v1/search?{raw}")
        cases.append(response.status_code)
        check(response, operation, declared)

    _run(run, cases, "search")


def test_fuzz_similar(fuzz_client, declared):
    cases = []
    operation = ("/v1/items/{item_id}/similar", "GET")
    segment = st.one_of(
        st.text(max_size=30).map(lambda t: urllib.parse.quote(t, safe="")),
        st.text(max_size=30).map(lambda t: urllib.parse.quote(t, safe="/")),
        big_url_text.map(lambda t: Big(urllib.parse.quote(t, safe=""))), raw_escapes,
        st.sampled_from(["toy1", "toy9", "..", ".", "%", "%2F", "a/b", "toy1/similar", "%00",
                         "%ED%A0%80", "", "%20"]))

    @settings(max_examples=EXAMPLES["similar"], **FUZZ)
    @given(item=segment, params=_params(["k"]))
    @example(item=Big("x" * 60_000), params=[])
    def run(item, params):
        response = fuzz_client.get(f"/v1/items/{item}/similar", params=params)
        route_matched = response.status_code != 404 or "item_id" in response.text
        cases.append(response.status_code)
        check(response, operation if route_matched else None, declared)

    _run(run, cases, "similar")


def test_fuzz_events_json(fuzz_client, declared):
    cases = []
    operation = ("/v1/events", "POST")

    @settings(max_examples=EXAMPLES["events_json"], **FUZZ)
    @given(payload=payloads, content_type=content_types)
    @example(payload={"user_id": "u", "item_id": "toy1", "event_type": "rating",
                      "value": 10 ** 400}, content_type="application/json")
    @example(payload={"user_id": "u", "item_id": "toy1", "event_type": "view",
                      "timestamp": "\ud800"}, content_type="application/json")
    @example(payload={"user_id": "u", "event_type": "search", "query": Big("q" * 900_000)},
             content_type="application/json")
    @example(payload=[{Big("\ud800" * 1000): 1}] * 100, content_type="application/json")
    @example(payload=[{}] * 1000, content_type="application/json")
    def run(payload, content_type):
        body = json.dumps(payload).encode()     # NaN/Infinity as JSON extensions, \\ud800
        response = fuzz_client.post("/v1/events", content=body, headers=_headers(content_type))
        cases.append(response.status_code)
        check(response, operation, declared)

    _run(run, cases, "events_json")


def test_fuzz_events_raw_bodies(fuzz_client, declared):
    cases = []
    operation = ("/v1/events", "POST")

    @settings(max_examples=EXAMPLES["events_raw"], **FUZZ)
    @given(body=raw_bodies, content_type=content_types)
    @example(body=_deep(100_000, "list"), content_type="application/json")
    @example(body=BigBytes(b"1" * 5000), content_type="application/json")
    def run(body, content_type):
        response = fuzz_client.post("/v1/events", content=body, headers=_headers(content_type))
        cases.append(response.status_code)
        check(response, operation, declared)

    _run(run, cases, "events_raw")


def test_fuzz_other_paths_and_methods(fuzz_client):
    cases = []
    paths = st.one_of(
        st.sampled_from(["/v1/recommend", "/v1/search", "/v1/items/toy1/similar", "/v1/events",
                         "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/",
                         "/v1", "/v1/items", "/v1/items/toy1", "/%ED%A0%80", "//", "/v1/events/"]),
        st.text(max_size=20).map(lambda t: "/" + urllib.parse.quote(t, safe="/")))
    methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])

    @settings(max_examples=EXAMPLES["other"], **FUZZ)
    @given(path=paths, method=methods, params=_params(["user_id", "q", "k"]))
    def run(path, method, params):
        response = fuzz_client.request(method, path, params=params)
        documents = path in ("/metrics", "/docs", "/openapi.json") or path.startswith("/docs")
        cases.append(response.status_code)
        check(response, json_answer=not documents, unavailable_ok=path == "/readyz")

    _run(run, cases, "other")


# ------------------------------------------- regressions: what the fuzzing found (issue #19)

def _assert_error(response, status: int, text: str) -> dict:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert text in body["error"], body["error"][:500]
    return body


@pytest.mark.parametrize("body, text", [
    (_deep(5_000, "list"), "nested too deeply"),                  # was 500 (RecursionError)
    (_deep(5_000, "field"), "nested too deeply"),
    (b'{"user_id": ' + b"1" * 5000 + b"}", "Exceeds the limit (4300 digits)"),  # was 500
])
def test_unreadable_json_bodies_are_400(fuzz_client, body, text):
    _assert_error(fuzz_client.post("/v1/events", content=body,
                                   headers={"content-type": "application/json"}), 400, text)


@pytest.mark.parametrize("body, loc, code", [
    # was 500: the answer quoted the field name, which JSON could not encode
    (b'{"user_id": "u", "item_id": "toy1", "event_type": "view", "\\ud800": 1}',
     ["body", "\\ud800"], "unknown_field"),
    # was 500: OverflowError converting the integer to a float
    (b'{"user_id": "u", "item_id": "toy1", "event_type": "rating", "value": 1'
     + b"0" * 400 + b"}", ["body", "value"], "bad_value"),
    (b'{"user_id": "u", "item_id": "toy1", "event_type": "view", "timestamp": -1'
     + b"0" * 400 + b"}", ["body", "timestamp"], "bad_timestamp"),
    # was 500: the timestamp parser could not encode the text
    (b'{"user_id": "u", "item_id": "toy1", "event_type": "view", "timestamp": "\\udfff"}',
     ["body", "timestamp"], "bad_timestamp"),
    # was 500: accepted, then the event store could not encode it
    (b'{"user_id": "\\ud800", "item_id": "toy1", "event_type": "view"}',
     ["body", "user_id"], "bad_text"),
    # was accepted: one such event made a /v1/recommend?k=50 answer 45.9 MB
    (json.dumps({"user_id": "u", "event_type": "search", "query": "q" * 900_000}).encode(),
     ["body", "query"], "too_long"),
])
def test_bad_event_values_are_422_naming_the_field(fuzz_client, body, loc, code):
    response = fuzz_client.post("/v1/events", content=body,
                                headers={"content-type": "application/json"})
    body = _assert_error(response, 422, f"field '{'.'.join(loc)}'")
    assert [{"loc": d["loc"], "type": d["type"]} for d in body["detail"]] == \
        [{"loc": loc, "type": code}]
    assert len(response.content) < 1_000


def test_422_detail_is_bounded(fuzz_client):
    """Was 289 kB for a 20 kB body (every problem of 999 events listed)."""
    from serving.api.app import MAX_DETAIL

    response = fuzz_client.post("/v1/events", json=[{"timestamp": False}] * 999)
    body = _assert_error(response, 422, f"(2997 problems, detail lists the first {MAX_DETAIL})")
    assert len(body["detail"]) == MAX_DETAIL and len(response.content) < 30_000


def test_similar_item_id_longer_than_an_id_is_422(fuzz_client):
    """Was a 404 quoting the whole id back."""
    response = fuzz_client.get(f"/v1/items/{'x' * 60_000}/similar")
    body = _assert_error(response, 422, "path parameter 'item_id'")
    assert len(response.content) < 1_000 and body["detail"][0]["type"] == "string_too_long"


def test_recommend_answers_stay_small_with_the_longest_query(fuzz_client):
    query = ("velvet lipstick " * 40)[:spec.MAX_QUERY_CHARS]
    assert fuzz_client.post("/v1/events", json={"user_id": "amplifier", "event_type": "search",
                                                "query": query}).status_code == 200
    response = fuzz_client.get("/v1/recommend", params={"user_id": "amplifier", "k": 50})
    assert response.status_code == 200
    body = response.json()
    assert body["context"]["query"] == query.strip()
    assert len(body["items"]) >= 30 and len(response.content) < 60_000


def test_answers_clip_long_queries_stored_before_the_caps(fuzz_client):
    """Events stored by an older version were not capped: the answer still is bounded."""
    from serving.api.app import MAX_REASON_CHARS

    store = fuzz_client.app.state.services.store
    long_query = "velvet lipstick " * 60_000
    store.add(pd.DataFrame([{"user_id": "legacy", "item_id": "", "event_type": "search",
                             "value": float("nan"), "query": long_query, "session_id": "",
                             "timestamp": 1_900_000_000}])[list(spec.EVENT_COLUMNS)],
              received_at=1_900_000_000)
    response = fuzz_client.get("/v1/recommend", params={"user_id": "legacy", "k": 50})
    assert response.status_code == 200 and len(response.content) < 200_000
    body = response.json()
    assert len(body["context"]["query"]) == spec.MAX_QUERY_CHARS
    assert body["context"]["query"].endswith("…")
    assert all(len(item["reason"]["text"]) <= MAX_REASON_CHARS for item in body["items"])


def test_an_unexpected_error_is_a_json_500_not_text(api_shop, tmp_path):  # noqa: F811
    """Any bug answers in the JSON error format (here: services used before startup)."""
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    app = create_app(make_settings(api_shop, 1, tmp_path / "events.sqlite3"))
    client = TestClient(app, raise_server_exceptions=False)    # no lifespan: no services
    response = client.get("/v1/recommend", params={"user_id": "u"})
    _assert_error(response, 500, "internal error")


def test_openapi_declares_the_error_statuses_of_each_endpoint(declared, fuzz_client):
    expected = {("/v1/recommend", "GET"): {"200", "422", "503"},
                ("/v1/search", "GET"): {"200", "422", "503"},
                ("/v1/items/{item_id}/similar", "GET"): {"200", "404", "422", "503"},
                ("/v1/events", "POST"): {"200", "400", "413", "422", "503"}}
    for operation, statuses in expected.items():
        assert statuses <= declared[operation], operation
    document = fuzz_client.app.openapi()
    for path, method in expected:
        responses = document["paths"][path][method.lower()]["responses"]
        for status in set(responses) - {"200"}:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    body = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    event = body["application/json"]["schema"]["oneOf"][0]
    assert event["properties"]["query"]["maxLength"] == spec.MAX_QUERY_CHARS
    assert event["properties"]["user_id"]["maxLength"] == spec.MAX_ID_CHARS
