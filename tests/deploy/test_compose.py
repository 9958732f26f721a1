"""deploy/docker-compose.yml: parsed by a strict Compose-spec parser (compose-spec, the Rust
compose_spec library: unknown keys, bad ports or volume syntax fail) after the variable
interpolation docker compose does, and everything it references exists: the build context,
Dockerfile and target, the config files it mounts, named volumes, depends_on services.
Docker itself is not available on the development machines, so it was never started here."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from compose_spec import PyCompose

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"


def interpolate(text: str, environ: dict[str, str]) -> str:
    """docker compose's ``${VAR}`` / ``${VAR:-default}`` substitution (``$$`` = ``$``)."""
    def value(match):
        name, default = match[1], match[3]
        if environ.get(name):
            return environ[name]
        if default is None:
            raise KeyError(f"{name} is not set and has no default")
        return default
    text = re.sub(r"\$\{(\w+)(:-([^}]*))?\}", value, text.replace("$$", "\0"))
    return text.replace("\0", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    parsed = PyCompose.from_yaml(interpolate(COMPOSE.read_text(), {}))
    return parsed.to_dict()


def _bind_mounts(service: dict) -> dict[str, str]:
    """container path -> host path (resolved against the compose file's folder)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out[target] = str((COMPOSE.parent / source).resolve())
    return out


def test_interpolation_takes_the_environment_then_the_default():
    text = "a: ${X:-../d}\nb: ${Y}\nc: $$HOME\n"
    assert interpolate(text, {"X": "/srv/m", "Y": "1"}) == "a: /srv/m\nb: 1\nc: $HOME\n"
    assert interpolate("a: ${X:-../d}", {}) == "a: ../d"
    with pytest.raises(KeyError, match="Y is not set"):
        interpolate(text, {})


def test_the_strict_parser_refuses_a_misspelt_key():
    """The parse in the fixture can fail: a typo is caught offline."""
    broken = COMPOSE.read_text().replace("    healthcheck:", "    healthchek:", 1)
    with pytest.raises(ValueError, match="healthchek"):
        PyCompose.from_yaml(interpolate(broken, {}))


def test_three_services_and_every_reference_exists(compose):
    services = compose["services"]
    assert set(services) == {"tfserving", "api", "redis"}
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], (name, source)   # a named volume
    build = services["api"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT
    dockerfile = (context / build["dockerfile"]).read_text()
    assert re.search(rf"^FROM \S+ AS {build['target']}$", dockerfile, re.M)


def test_tfserving_mounts_the_repository_configs_and_the_models(compose):
    tfs = compose["services"]["tfserving"]
    assert tfs["image"].startswith("tensorflow/serving:2.16")
    flags = dict(arg.lstrip("-").split("=", 1) for arg in tfs["command"])
    assert flags["enable_batching"] == "true"
    mounts = _bind_mounts(tfs)
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        assert os.path.isfile(mounts[flags[flag]]), flag     # a repository file
        assert Path(mounts[flags[flag]]).parent == ROOT / "serving" / "tfserving"
    assert mounts["/models"] == str(ROOT / "serving_models")   # the Pusher's destination
    assert {"8500:8500", "8501:8501"} <= set(tfs["ports"])


def test_the_api_runs_on_redis_with_the_shop_and_the_keys_folder(compose):
    api = compose["services"]["api"]
    env = api["environment"]
    assert env["SHOPREC_TFSERVING_GRPC"] == "tfserving:8500"
    assert env["SHOPREC_TFSERVING_REST"] == "http://tfserving:8501"
    assert env["SHOPREC_EVENT_STORE"] == "redis://redis:6379/0"
    mounts = _bind_mounts(api)
    assert mounts["/data/shop"] == str(ROOT / "sample_shop")        # `make demo`'s shop
    assert api["command"][api["command"].index("--shop") + 1] == "/data/shop"
    keys = Path(env["SHOPREC_API_KEYS_FILE"])
    assert mounts[str(keys.parent)] == str(ROOT / "deploy" / "keys")  # the folder is mounted
    assert (ROOT / "deploy" / "keys" / ".gitignore").is_file(), "the folder exists in a clone"
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["ports"] == ["127.0.0.1:8000:8000"]


def test_redis_keeps_the_event_store_on_a_named_volume(compose):
    redis = compose["services"]["redis"]
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in compose["volumes"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--dir") + 1] == "/data"
    assert "ports" not in redis, "Redis is reached over the compose network only"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_the_paths_resolve_with_the_variables_set():
    text = interpolate(COMPOSE.read_text(), {"SHOPREC_SHOP": "/srv/shop",
                                             "SHOPREC_SERVING_MODELS": "/srv/models"})
    services = yaml.safe_load(text)["services"]
    assert "/srv/shop:/data/shop:ro" in services["api"]["volumes"]
    assert "/srv/models:/models:ro" in services["tfserving"]["volumes"]
