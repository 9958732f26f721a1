"""A tiny shop, synthetic models over it and the stand-in serving them, for the API tests.

Import the fixtures into a test module (``from tests.serving.api.setup import *``).
The shop has four top categories of ten items; item ids say their category (``toy3``).
Also ``redis_url``: a throwaway redis-server (skips when not installed; fails under CI).
``make_settings`` turns auth off unless told otherwise; ``api_client`` authenticates with a
key holding every role (no rate limit), made by ``write_keys``.
Users: ``reader`` engaged with books (and bought ``book0``), ``searcher`` only searched for
toys, ``fan*`` users made ``beauty0`` and ``beauty1`` the most popular items.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import time
from pathlib import Path

import portpicker
import pytest

CATEGORIES = {
    "book": ("Books > Fiction", "{} mystery novel"),
    "toy": ("Toys > Building", "{} building blocks toy"),
    "beauty": ("Beauty > Makeup", "{} velvet lipstick"),
    "food": ("Grocery > Pantry", "{} organic pasta sauce"),
}
COLOURS = ("red", "blue", "green", "black", "white", "pink", "gold", "silver", "brown", "grey")
OUT_OF_STOCK = ("toy9", "book9")
T0 = 1_735_689_600        # 2025-01-01


def items_rows() -> list[dict]:
    rows = []
    for prefix, (category, title) in CATEGORIES.items():
        for i, colour in enumerate(COLOURS):
            item_id = f"{prefix}{i}"
            rows.append({"item_id": item_id, "title": title.format(colour).capitalize(),
                         "description": "", "brand": f"{prefix.capitalize()}Co",
                         "categories": category, "price": f"{5 + i}.50",
                         "in_stock": "false" if item_id in OUT_OF_STOCK else "true"})
    return rows


def events_rows() -> list[dict]:
    rows, t = [], T0

    def add(user, item, etype, query="", value=""):
        nonlocal t
        t += 60
        rows.append({"user_id": user, "item_id": item, "event_type": etype, "value": value,
                     "query": query, "session_id": "", "timestamp": str(t)})

    for item in ("book1", "book2", "book3", "book0"):
        add("reader", item, "view")
        add("reader", item, "click")
    add("reader", "book0", "purchase", value="1")
    for n in range(6):
        for item in ("beauty0", "beauty1"):
            add(f"fan{n}", item, "click")
    add("fan0", "food0", "add_to_cart", value="2")
    add("searcher", "", "search", query="building blocks toy")
    return rows


def write_shop(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("items", items_rows()), ("events", events_rows())):
        with open(folder / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return folder


@pytest.fixture(scope="session")
def api_shop(tmp_path_factory) -> Path:
    return write_shop(tmp_path_factory.mktemp("api_shop"))


@pytest.fixture(scope="session")
def api_serving_dir(api_shop, tmp_path_factory) -> Path:
    """serving_models-like folder: retrieval/1 and ranking/1 synthetic models."""
    from pipeline.contract.load import load_shop
    from pipeline.examples import ENGAGEMENT_EVENTS
    from serving.demo.synthetic_models import write_models

    shop = load_shop(api_shop)
    engaged = shop.events[shop.events["event_type"].isin(sorted(ENGAGEMENT_EVENTS))]
    out = tmp_path_factory.mktemp("api_models")
    write_models(shop.items, engaged["item_id"].value_counts().to_dict(), str(out), seed=0)
    return out


@pytest.fixture(scope="session")
def api_model_server(api_serving_dir):
    """The stand-in serving both synthetic models on a free 127.0.0.1 port."""
    from serving.standin.model_config import single_model_config
    from serving.standin.model_server import ModelServer

    configs = (single_model_config("retrieval", str(api_serving_dir / "retrieval"))
               + single_model_config("ranking", str(api_serving_dir / "ranking")))
    server = ModelServer(configs, port=portpicker.pick_unused_port(), host="127.0.0.1",
                         file_system_poll_wait_seconds=0,
                         load_in_process=True).start()  # API tests: loading is tested in standin/
    yield server
    server.stop(grace_s=1)


def make_settings(shop: Path, grpc_port: int, event_db: Path, **overrides):
    from serving.api.settings import Settings

    values = {"startup_wait_s": 30, "tfserving_deadline_s": 10, "auth": "off",
              "event_store": f"sqlite:///{event_db}", **overrides}
    return Settings(shop_dir=str(shop), tfserving_grpc=f"127.0.0.1:{grpc_port}", **values)


ALL_ROLES = "public,events,operator rate=unlimited"


def write_keys(path: Path, keys: dict[str, str]) -> dict[str, str]:
    """A keys file at ``path`` (replaced atomically, as an operator should) with one key per
    ``name: "ROLES [rate=...]"``; returns name -> secret."""
    from serving.api.keys import hash_secret, new_secret

    secrets = {name: new_secret() for name in keys}
    lines = []
    for name, roles in keys.items():
        roles, *options = roles.split()
        lines.append(" ".join([name, roles, hash_secret(secrets[name]), *options]))
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("# test keys\n" + "\n".join(lines) + "\n")
    temporary.replace(path)
    return secrets


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def api_client(api_shop, api_model_server, tmp_path_factory):
    """A TestClient of the API (lifespan run) over the tiny shop and models, sending a key
    with every role."""
    from fastapi.testclient import TestClient

    from serving.api.app import create_app

    folder = tmp_path_factory.mktemp("api_db")
    secret = write_keys(folder / "api_keys", {"tester": ALL_ROLES})["tester"]
    settings = make_settings(api_shop, api_model_server.grpc_port, folder / "events.sqlite3",
                             auth="required", api_keys_file=str(folder / "api_keys"))
    with TestClient(create_app(settings), headers=bearer(secret)) as client:
        yield client


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A throwaway redis-server on a free port (skips when the binary is absent)."""
    binary = shutil.which("redis-server")
    if binary is None:
        # `make test` and .ci/run install it: in CI a missing server is a failure, not a skip
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "redis-server is not installed (Debian package redis-server; `make test-deps`)")
    port = portpicker.pick_unused_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    proc.terminate()
    proc.wait(timeout=10)
