"""The pages in headless Chromium against the local stack (TF Serving stand-in + API
subprocesses, what `make serve` runs) on the models the session's pipeline run pushed
(tests/conftest.py `runs`, shared with tests/test_tfx_pipeline.py): a shopper journey, every
console view, and both pages while the model server is down. Screenshots land in runs/web_screenshots/."""
from __future__ import annotations

from contextlib import contextmanager
from urllib.parse import urlencode

import httpx
import pytest

# The first test here may carry the session's pipeline run (pytest.ini's 1,800 s per test
# counts fixture setup) before the stack starts.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]
WAIT_S = 60
USER = "web-journey"
CONSOLE_VIEWS = ("models", "runs", "data", "traffic")


@pytest.fixture(scope="module")
def pushed_stack(runs, tmp_path_factory):
    """The local stack on the pipeline's pushed models, its API reading the run's ML
    Metadata (the console), with the stack's three keys (shopfront, ingest, operator)."""
    from serving.demo.local_stack import LocalStack

    cfg = runs["cfg"]
    stack = LocalStack(cfg.serving_dir, cfg.data_dir, log_dir=str(tmp_path_factory.mktemp(
        "web_stack")), pseudonym_key_file=cfg.pseudonym_key_file,
        api_settings={"metadata_path": cfg.metadata_path})
    with stack:
        yield stack


@pytest.fixture(scope="module")
def search_query(runs) -> str:
    """The shop's most frequent search."""
    from pipeline.contract.load import load_shop

    events = load_shop(runs["cfg"].data_dir, on_bad_rows="quarantine").events
    return events.loc[events["event_type"] == "search", "query"].value_counts().index[0]


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(
        lambda d: condition(d), message=f"waited {WAIT_S} s for {what}")


def _css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _answer(driver, where: str) -> tuple[str, list[str]]:
    """(strategy, item ids) of the answer loaded in ``where`` (waits for it)."""
    answer = _wait(driver, lambda d: (_css(d, f"{where} .answer") or [None])[0],
                   f"the answer in {where}")
    return (answer.get_attribute("data-strategy"),
            [c.get_attribute("data-item-id") for c in _css(driver, f"{where} .card")])


def _open_product(driver, link):
    """Open a product from a list (a click event first); returns its item id."""
    item = link.get_attribute("data-item-id")
    link.click()
    _wait(driver, lambda d: _css(d, f'#product article[data-item-id="{item}"]'),
          f"the product page of {item}")
    return item


def _errors(driver) -> list[dict]:
    """The browser console's errors since the last call (JavaScript errors, failed loads)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@contextmanager
def _window(driver, width: int, height: int):
    """The browser window at this size, then back to 1280 x 1000."""
    driver.set_window_size(width, height)
    try:
        yield
    finally:
        driver.set_window_size(1280, 1000)


def _tall_screenshot(driver, path):
    """A screenshot 1,500 px tall (the ones in docs/)."""
    with _window(driver, 1280, 1500):
        driver.save_screenshot(str(path))


def _check_basics(driver, screenshots, name: str):
    """Every input has a label; no horizontal scrolling at phone width (screenshot)."""
    unlabelled = driver.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')]"
        ".filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length)"
        " && !e.getAttribute('aria-label')).map(e => e.id || e.name)")
    assert unlabelled == [], unlabelled
    with _window(driver, 390, 844):
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth")
        driver.save_screenshot(str(screenshots / f"{name}_phone.png"))
    assert overflow <= 1, f"{name}: {overflow} px wider than a phone screen"


def test_shopper_journey_search_open_click_changes_recommendations(
        browser, pushed_stack, search_query, screenshots):
    from selenium.webdriver.common.keys import Keys

    base = pushed_stack.api_url
    browser.get(f"{base}/shop?{urlencode({'user': USER})}")
    browser.switch_to.active_element.send_keys(Keys.TAB)     # keyboard: first stop skips
    assert browser.switch_to.active_element.text == "Skip to content"
    # The keys the stack printed, typed into the page's form (kept in the tab only).
    _css(browser, "#key-public")[0].send_keys(pushed_stack.keys["shopfront"])
    _css(browser, "#key-events")[0].send_keys(pushed_stack.keys["ingest"] + Keys.ENTER)
    _wait(browser, lambda d: d.execute_script(
        "return sessionStorage.getItem('shoprec.key.events')"), "the saved keys")
    strategy, first = _answer(browser, "#recommendations-body")
    # Before the keys, the page's request was refused (and said to enter them); nothing else.
    assert all(" 401 " in e["message"] for e in _errors(browser))
    assert strategy == "popular" and first, (strategy, first)

    # Search by keyboard: results with a reason each; the session's search now counts.
    _css(browser, "#q")[0].send_keys(search_query + Keys.ENTER)
    _wait(browser, lambda d: _css(d, "#results-body .answer"), "search results")
    strategy, results = _answer(browser, "#results-body")
    reasons = [r.text for r in _css(browser, "#results-body .reason")]
    assert results and len(reasons) == len(results) and all(reasons), reasons
    searched, after_search = _answer(browser, "#recommendations-body")
    assert searched == "search" and after_search != first, (searched, after_search)

    # Open the first result by keyboard: a click event, then its page with similar items.
    link = _css(browser, "#results-body a.item-link")[0]
    opened = link.get_attribute("data-item-id")
    link.send_keys(Keys.ENTER)
    _wait(browser, lambda d: _css(d, f'#product article[data-item-id="{opened}"]'),
          "the product page")
    _, similar = _answer(browser, "#product")
    assert similar and opened not in similar, similar
    strategy, after_open = _answer(browser, "#recommendations-body")
    assert strategy == "personalized" and after_open != after_search, after_open

    # Click a similar item: the recommendations change again.
    clicked = _open_product(browser, _css(browser, "#product a.item-link")[0])
    strategy, after_click = _answer(browser, "#recommendations-body")
    assert strategy == "personalized" and after_click != after_open, after_click

    # Add to cart, then buy: each an event; a bought item is not recommended again.
    for button, said in (("add_to_cart", "Added to cart"), ("purchase", "Bought")):
        _css(browser, f'#product button[data-action="{button}"]')[0].click()
        _wait(browser, lambda d, said=said: said in _css(d, "#status")[0].text, said)
    _, after_buy = _answer(browser, "#recommendations-body")
    assert clicked not in after_buy, after_buy
    _tall_screenshot(browser, screenshots / "shop_front.png")
    assert _errors(browser) == []
    _check_basics(browser, screenshots, "shop_front")

    # The events the page sent are the API's history of the user, newest first.
    answer = httpx.get(f"{base}/v1/recommend", params={"user_id": USER, "k": 3},
                       headers=pushed_stack.headers("operator"), timeout=30).json()
    assert answer["context"]["history"][:2] == [clicked, opened], answer["context"]

    # Suggestions while typing: a query five shoppers searched is offered.
    suggested = "velvet gift box for mum"
    posted = httpx.post(f"{base}/v1/events", headers=pushed_stack.headers("ingest"),
                        json=[{"user_id": f"suggest-{i}", "event_type": "search",
                               "query": suggested} for i in range(5)], timeout=30)
    assert posted.status_code == 200, posted.text
    browser.get(f"{base}/shop?{urlencode({'user': USER, 'q': search_query})}")
    _wait(browser, lambda d: _css(d, "#results-body .answer"), "search results")
    box = _css(browser, "#q")[0]
    box.clear()
    box.send_keys("velvet gi")
    _wait(browser, lambda d: suggested in [o.get_attribute("value")
                                           for o in _css(d, "#suggestions option")],
          "the suggestion")

    # Sort by price: the page reloads with the same search, cheapest first.
    from selenium.webdriver.support.ui import Select
    Select(_css(browser, "#sort")[0]).select_by_value("price_asc")
    _wait(browser, lambda d: "sort=price_asc" in d.current_url
          and _css(d, "#results-body .answer"), "the sorted results")
    prices = [float(p.text.split()[0]) for p in _css(browser, "#results-body .price")
              if p.text[:1].isdigit()]
    assert len(prices) > 1 and prices == sorted(prices), prices
    assert _css(browser, "#sort")[0].get_attribute("value") == "price_asc"
    assert _errors(browser) == []


def test_every_console_view_loads_without_javascript_errors(browser, pushed_stack,
                                                            screenshots):
    base = pushed_stack.api_url
    with httpx.Client(base_url=base, headers=pushed_stack.headers("operator"), timeout=30) as api:
        assert api.get("/v1/recommend", params={"user_id": "console-check"}).status_code == 200
        assert api.post("/v1/events", json={"user_id": "console-check", "item_id": api.get(
            "/v1/search", params={"q": "a"}).json()["items"][0]["item_id"],
            "event_type": "add_to_cart"}).status_code == 200
    browser.get(f"{base}/console/models#{urlencode({'operator': pushed_stack.keys['operator']})}")
    assert "#" not in browser.current_url               # the key left the address bar
    texts = {}
    for view in CONSOLE_VIEWS:
        if view != "models":
            _css(browser, f'a[href$="/console/{view}"]')[0].click()
        _wait(browser, lambda d, v=view: _css(d, f'.view[data-loaded="{v}"]'), f"view {view}")
        texts[view] = _css(browser, "#view-body")[0].text
        if view != "experiments":           # the stack runs no experiment: no chart
            assert _css(browser, "#view-body svg.bars"), f"{view}: no chart"
        browser.save_screenshot(str(screenshots / f"console_{view}.png"))
        assert _errors(browser) == [], view
    models = texts["models"]
    assert "blessed" in models and "not blessed" in models, models[:2000]
    assert "Why not blessed" in models and "user_activity = " in models, models[:2000]
    assert texts["runs"].count("COMPLETE") >= 2 and "Transform" in texts["runs"]
    assert "events" in texts["data"] and "quarantined" in texts["data"]
    assert "/v1/events" in texts["traffic"] and "add_to_cart" in texts["traffic"]
    _css(browser, 'a[href$="/console/models"]')[0].click()
    _wait(browser, lambda d: _css(d, '.view[data-loaded="models"]'), "view models")
    _tall_screenshot(browser, screenshots / "console.png")
    _check_basics(browser, screenshots, "console")


def test_pages_degrade_gracefully_when_the_model_server_is_down(browser, pushed_stack,
                                                               search_query, screenshots):
    """Last in this module: it stops the stack's model server. It brings its own shopper
    (one click: a history, so recommendations need the model server; a newcomer gets the
    popular list without it) and its own keys (the URL fragment, which the pages read once):
    it passes run alone too."""
    base, keys, user = pushed_stack.api_url, pushed_stack.keys, "web-degraded"
    with httpx.Client(base_url=base, timeout=30) as api:
        item = api.get("/v1/search", params={"q": search_query},
                       headers=pushed_stack.headers("operator")).json()["items"][0]["item_id"]
        posted = api.post("/v1/events", headers=pushed_stack.headers("ingest"), json=[
            {"user_id": user, "event_type": "click", "item_id": item}])
        assert posted.status_code == 200, posted.text
    server = pushed_stack.processes["model_server"]
    server.terminate()
    server.wait(timeout=30)
    browser.get(f"{base}/shop?{urlencode({'user': user, 'q': search_query})}#"
                f"{urlencode({'public': keys['shopfront'], 'events': keys['ingest']})}")
    _wait(browser, lambda d: len(_css(d, ".answer")) == 2, "both answers")
    for where in ("#results-body", "#recommendations-body"):
        notes = _css(browser, f"{where} .degraded")
        assert notes and "did not answer" in notes[0].text, where
        assert _answer(browser, where)[1], f"{where}: no fallback items"
    browser.save_screenshot(str(screenshots / "shop_degraded.png"))
    browser.get(f"{base}/console/models#{urlencode({'operator': keys['operator']})}")
    _wait(browser, lambda d: _css(d, '.view[data-loaded="models"]'), "view models")
    assert "Not ready" in _css(browser, "#view-body")[0].text
    assert _errors(browser) == []
