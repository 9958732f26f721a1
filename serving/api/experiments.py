"""Named experiments: users split deterministically between variants of the API's settings
and ranking model (docs/api.md, "Experiments").

The file the ``experiments_file`` setting names (JSON, or TOML for a ``.toml`` name)::

    {"experiments": [
      {"name": "ranking_v2", "salt": "2026-12-ranking-v2", "traffic": 1.0,
       "surfaces": ["recommend", "search", "similar"], "control": "current",
       "variants": [
         {"name": "current", "weight": 1, "ranking_version": 1},
         {"name": "new", "weight": 1, "ranking_version": 2,
          "settings": {"max_category_share": 0.3}}]}]}

A user is in an experiment when ``bucket(salt, user) < traffic``, where ``bucket`` is the
first 8 bytes of SHA-256("<salt>:<user id>") as a fraction of 2^64 (the user id as the
store knows it: the keyed pseudonym when the API has a pseudonym key); the same fraction,
scaled to the variants' summed weights, picks the variant. So assignment needs no storage,
is the same on every replica and restart, and a new salt reshuffles everyone. Experiments
are tried in file order: a user is in the first one whose traffic takes them (and whose
``surfaces`` include the endpoint). Requests without a user (a search without ``user_id``,
similar items without ``user_id``) are in no experiment: they get the API's own settings.

A variant may change ``settings`` (the per-request safe fields of ``OVERRIDABLE``), and the
ranking model: ``ranking_model`` (another model name TF Serving serves) and/or
``ranking_version`` (a version pinned for the variant's requests; TF Serving must keep it
loaded: a ``specific`` version policy). Retrieval stays the API's: the catalog embeddings
and item-to-item tables belong to the served retrieval version. Every problem of the file
is a SettingsError naming the file and the field, at start-up.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field

from serving.api.settings import SettingsError
from serving.events.impressions import SURFACES

# Settings a variant may override: read per request by the recommender, nothing computed
# from them at start-up (max_history sizes the model inputs, typo_tolerance the text index).
OVERRIDABLE = ("max_category_share", "transition_candidates", "cooccurrence_candidates",
               "text_candidates", "lexical_candidates", "filter_purchased",
               "filter_out_of_stock", "reason_min_similarity", "search_fusion",
               "search_lexical_weight", "search_ngram_weight", "search_feedback_items",
               "search_feedback_weight", "search_candidates", "search_ranker_weight")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
EXPERIMENT_KEYS = {"name", "salt", "traffic", "surfaces", "control", "variants", "description"}
VARIANT_KEYS = {"name", "weight", "settings", "ranking_model", "ranking_version",
                "description"}


class ExperimentConfigError(SettingsError):
    """The experiments file is unusable; the message names the field."""


@dataclass(frozen=True)
class Variant:
    name: str
    weight: float
    settings: dict = field(default_factory=dict)    # Settings field -> value
    ranking_model: str | None = None
    ranking_version: int | None = None
    description: str = ""


@dataclass(frozen=True)
class Experiment:
    name: str
    salt: str
    variants: tuple[Variant, ...]
    control: str
    traffic: float = 1.0
    surfaces: frozenset = frozenset(SURFACES)
    description: str = ""

    def bucket(self, user_id: str) -> float:
        """The user's deterministic place in [0, 1) for this experiment's salt."""
        digest = hashlib.sha256(f"{self.salt}:{user_id}".encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2 ** 64

    def assign(self, user_id: str) -> Variant | None:
        """The user's variant, or None when the experiment's traffic leaves them out."""
        place = self.bucket(user_id)
        if place >= self.traffic:
            return None
        point = place / self.traffic * sum(v.weight for v in self.variants)
        for variant in self.variants:
            point -= variant.weight
            if point < 0:
                return variant
        return self.variants[-1]          # rounding at the very top

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)


@dataclass(frozen=True)
class Experiments:
    experiments: tuple[Experiment, ...] = ()

    def assign(self, user_id: str | None, surface: str) -> tuple[Experiment, Variant] | None:
        """(experiment, variant) of a request, or None (no user, or in no experiment)."""
        if not user_id:
            return None
        for experiment in self.experiments:
            if surface in experiment.surfaces:
                variant = experiment.assign(user_id)
                if variant is not None:
                    return experiment, variant
        return None

    def get(self, name: str) -> Experiment | None:
        return next((e for e in self.experiments if e.name == name), None)

    def __len__(self) -> int:
        return len(self.experiments)


def load_experiments(path: str, settings=None) -> Experiments:
    """The experiments of the file at ``path``, checked strictly (ExperimentConfigError
    naming the file and field); ``settings``: the API's, which variant overrides must leave
    valid."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        data = tomllib.loads(raw.decode("utf-8")) if path.endswith(".toml") \
            else json.loads(raw)
    except OSError as e:
        raise ExperimentConfigError(f"experiments file {path}: {e.strerror}") from None
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ExperimentConfigError(f"experiments file {path}: not valid "
                                    f"{'TOML' if path.endswith('.toml') else 'JSON'}: "
                                    f"{e}") from None
    try:
        return parse_experiments(data, settings)
    except ExperimentConfigError as e:
        raise ExperimentConfigError(f"experiments file {path}: {e}") from None


def _fail(where: str, message: str):
    raise ExperimentConfigError(f"{where}: {message}")


def _keys(obj, allowed: set, where: str, required: tuple) -> None:
    if not isinstance(obj, dict):
        _fail(where, f"expected an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        _fail(f"{where}.{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
    for name in required:
        if name not in obj:
            _fail(f"{where}.{name}", "required")


def _name(value, where: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        _fail(where, f"{value!r} is not a name (1-64 letters, digits, '_', '.', '-', "
                     "starting with a letter or digit)")
    return value


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        _fail(where, f"expected a number, got {value!r}")
    return float(value)


def parse_experiments(data, settings=None) -> Experiments:
    """Experiments from the decoded file (see the module docstring)."""
    _keys(data, {"experiments"}, "top level", ("experiments",))
    items = data["experiments"]
    if not isinstance(items, list):
        _fail("experiments", "expected a list of experiments")
    experiments, names = [], set()
    for n, item in enumerate(items):
        where = f"experiments[{n}]"
        _keys(item, EXPERIMENT_KEYS, where, ("name", "salt", "variants"))
        name = _name(item["name"], f"{where}.name")
        if name in names:
            _fail(f"{where}.name", f"experiment {name!r} is declared twice")
        names.add(name)
        salt = item["salt"]
        if not isinstance(salt, str) or not salt.strip() or len(salt) > 200:
            _fail(f"{where}.salt", "expected non-empty text of at most 200 characters")
        traffic = _number(item.get("traffic", 1.0), f"{where}.traffic")
        if not 0 < traffic <= 1:
            _fail(f"{where}.traffic", f"must be in (0, 1] (share of users), got {traffic}")
        surfaces = item.get("surfaces", list(SURFACES))
        if not isinstance(surfaces, list) or not surfaces or any(
                s not in SURFACES for s in surfaces):
            _fail(f"{where}.surfaces", f"expected a non-empty list of {', '.join(SURFACES)}, "
                                       f"got {surfaces!r}")
        variants = _variants(item["variants"], f"{where}.variants", settings)
        control = item.get("control", variants[0].name)
        if control not in {v.name for v in variants}:
            _fail(f"{where}.control", f"{control!r} is none of the variants")
        description = item.get("description", "")
        if not isinstance(description, str):
            _fail(f"{where}.description", "expected text")
        experiments.append(Experiment(name, salt, variants, control, traffic,
                                      frozenset(surfaces), description))
    return Experiments(tuple(experiments))


def _variants(items, where: str, settings) -> tuple[Variant, ...]:
    if not isinstance(items, list) or len(items) < 2:
        _fail(where, "expected a list of at least two variants")
    variants, names = [], set()
    for n, item in enumerate(items):
        at = f"{where}[{n}]"
        _keys(item, VARIANT_KEYS, at, ("name",))
        name = _name(item["name"], f"{at}.name")
        if name in names:
            _fail(f"{at}.name", f"variant {name!r} is declared twice")
        names.add(name)
        weight = _number(item.get("weight", 1), f"{at}.weight")
        if weight <= 0:
            _fail(f"{at}.weight", f"must be > 0, got {weight}")
        overrides = item.get("settings", {})
        if not isinstance(overrides, dict):
            _fail(f"{at}.settings", "expected an object of setting -> value")
        for key in overrides:
            if key not in OVERRIDABLE:
                _fail(f"{at}.settings.{key}", "not a setting a variant may change (allowed: "
                                              f"{', '.join(OVERRIDABLE)})")
        if settings is not None:
            _check_overrides(settings, overrides, f"{at}.settings")
        model = item.get("ranking_model")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            _fail(f"{at}.ranking_model", "expected a TF Serving model name")
        version = item.get("ranking_version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                    or version < 1):
            _fail(f"{at}.ranking_version", f"expected a model version >= 1, got {version!r}")
        description = item.get("description", "")
        if not isinstance(description, str):
            _fail(f"{at}.description", "expected text")
        variants.append(Variant(name, weight, dict(overrides), model, version, description))
    return tuple(variants)


def _check_overrides(settings, overrides: dict, where: str) -> None:
    """The overrides' types match the fields' and the settings they make are valid."""
    kinds = {f.name: f.type for f in dataclasses.fields(settings)}
    for key, value in overrides.items():
        kind = kinds[key] if isinstance(kinds[key], str) else kinds[key].__name__
        ok = (isinstance(value, bool) if kind == "bool" else
              isinstance(value, int) and not isinstance(value, bool) if kind == "int" else
              isinstance(value, (int, float)) and not isinstance(value, bool))
        if not ok:
            _fail(f"{where}.{key}", f"expected a {kind}, got {value!r}")
    try:
        variant_settings(settings, overrides)
    except SettingsError as e:
        key = next((k for k in overrides if f"setting {k}=" in str(e)), None)
        _fail(f"{where}.{key}" if key else where, str(e))


def variant_settings(settings, overrides: dict):
    """The API's settings with a variant's overrides (checked like any Settings)."""
    return dataclasses.replace(settings, **overrides) if overrides else settings
