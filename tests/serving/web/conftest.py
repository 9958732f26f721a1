"""Web page fixtures: the API with its pages over the tiny shop and synthetic models (fast
tests), and for the browser tests headless Chromium (Debian's chromium + chromium-driver,
installed by .ci/run) driving the local stack on the models the pipeline test pushed."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.api.setup import (api_model_server, api_serving_dir, api_shop,  # noqa: F401
                                     bearer, make_settings, write_keys)

WEB_KEYS = {"shopfront": "public", "ingest": "events", "ops": "operator",
            "all": "public,events,operator rate=unlimited"}


@pytest.fixture(scope="module")
def web_client(api_shop, api_model_server, tmp_path_factory):  # noqa: F811
    """(TestClient, {key name: headers}) of the API with its pages, keys required, no
    pipeline metadata configured."""
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    folder = tmp_path_factory.mktemp("web_api")
    secrets = write_keys(folder / "api_keys", WEB_KEYS)
    settings = make_settings(api_shop, api_model_server.grpc_port, folder / "events.sqlite3",
                             auth="required", api_keys_file=str(folder / "api_keys"))
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("SHOPREC_METADATA_PATH", raising=False)
        app = create_app(settings)
    with TestClient(app) as client:
        yield client, {name: bearer(secret) for name, secret in secrets.items()}


SCREENSHOTS = Path(__file__).resolve().parents[3] / "runs" / "web_screenshots"  # git-ignored
INSTALL_HINT = ("headless Chromium is not installed: `apt-get install chromium chromium-driver` "
                "(Debian; .ci/run installs both)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium driven by Selenium through Debian's chromedriver (no download); its
    console log is kept for the tests to read."""
    import shutil

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip(INSTALL_HINT)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--no-first-run", "--window-size=1280,1000",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """Where the browser tests save their screenshots (runs/ is git-ignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
