"""Reading and checking TF Serving's model config (an ASCII ``ModelServerConfig`` proto).

Only ``model_config_list`` is supported (what ``--model_config_file`` holds in practice).
Errors name the file and, for syntax errors, the line and column.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2


class ConfigError(ValueError):
    """The model config is unusable; the message says where and why."""


@dataclass(frozen=True)
class ModelConfig:
    """One served model: where its versions live and which of them to serve.

    ``policy`` is ``latest`` (the ``num_versions`` highest), ``all`` or ``specific``
    (``versions``); ``labels`` maps version labels to version numbers.
    """

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)

    def aspired(self, on_disk: set[int]) -> set[int]:
        """The versions to serve out of those found under ``base_path``."""
        if self.policy == "all":
            return set(on_disk)
        if self.policy == "specific":
            return set(self.versions) & on_disk
        return set(sorted(on_disk)[-self.num_versions:]) if on_disk else set()


def _apply_mapping(path: str, mapping: dict[str, str]) -> str:
    for source, target in mapping.items():
        if path == source or path.startswith(source.rstrip("/") + "/"):
            return os.path.join(target, os.path.relpath(path, source))
    return path


def _from_proto(config, where: str, mapping: dict[str, str]) -> ModelConfig:
    if not config.name:
        raise ConfigError(f"{where}: 'name' is required")
    if not config.base_path:
        raise ConfigError(f"{where} (model {config.name!r}): 'base_path' is required")
    if config.model_platform not in ("", "tensorflow"):
        raise ConfigError(f"{where} (model {config.name!r}): model_platform "
                          f"{config.model_platform!r} is not supported; use 'tensorflow'")
    policy = config.model_version_policy.WhichOneof("policy_choice") or "latest"
    num_versions, versions = 1, ()
    if policy == "latest":
        num_versions = max(1, config.model_version_policy.latest.num_versions)
    elif policy == "specific":
        versions = tuple(config.model_version_policy.specific.versions)
        if not versions:
            raise ConfigError(f"{where} (model {config.name!r}): model_version_policy "
                              "'specific' needs at least one 'versions' entry")
    labels = dict(config.version_labels)
    for label, version in labels.items():
        if not label:
            raise ConfigError(f"{where} (model {config.name!r}): empty version label")
        if policy == "specific" and version not in versions:
            raise ConfigError(f"{where} (model {config.name!r}): label {label!r} points at "
                              f"version {version}, which the 'specific' policy does not serve")
    return ModelConfig(name=config.name,
                       base_path=_apply_mapping(config.base_path, mapping),
                       policy=policy, num_versions=num_versions, versions=versions,
                       labels=labels)


def parse_model_config(text: str, source: str = "<config>",
                       base_path_mapping: dict[str, str] | None = None) -> list[ModelConfig]:
    """Parse ModelServerConfig text; ``base_path_mapping`` rewrites path prefixes."""
    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as e:
        # ParseError's message already reads "line:column : what".
        raise ConfigError(f"{source}:{e}") from None
    return configs_from_proto(proto, source, base_path_mapping)


def configs_from_proto(proto, source: str = "<config>",
                       base_path_mapping: dict[str, str] | None = None) -> list[ModelConfig]:
    """Check a ModelServerConfig proto and turn it into ModelConfigs."""
    if proto.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{source}: expected a 'model_config_list {{ config {{ ... }} }}' "
                          "block (custom_model_config is not supported)")
    models, seen = [], set()
    for index, config in enumerate(proto.model_config_list.config):
        model = _from_proto(config, f"{source}: config #{index + 1}", base_path_mapping or {})
        if model.name in seen:
            raise ConfigError(f"{source}: model {model.name!r} is configured twice")
        seen.add(model.name)
        models.append(model)
    if not models:
        raise ConfigError(f"{source}: model_config_list has no 'config' entries")
    return models


def load_model_config(path: str,
                      base_path_mapping: dict[str, str] | None = None) -> list[ModelConfig]:
    """Read and parse a ``--model_config_file``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read model config file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_model_config(text, source=path, base_path_mapping=base_path_mapping)


def single_model_config(name: str, base_path: str) -> list[ModelConfig]:
    """The config for ``--model_name`` / ``--model_base_path`` (latest version)."""
    if not name:
        raise ConfigError("--model_name must not be empty")
    if not base_path:
        raise ConfigError("--model_base_path is required unless --model_config_file is set")
    return [ModelConfig(name=name, base_path=base_path)]
