"""The benchmark's models, by name, and what a model is.

A model is one function ``fit(task, seed, **options) -> scorer`` (or ``-> Fitted``):

- ``task`` is a ``FitTask``: train sequences, the catalog, and the validation set (for tuning
  and early stopping only; the test set is never shown to a model);
- ``options`` are keyword arguments with defaults; the run records their values;
- ``scorer(histories) -> float [len(histories), n_items]`` scores every catalog item for
  each history (a list of 0-based item index arrays, oldest first). Higher is better.

Models are imported lazily (so TensorFlow loads only for models that need it). Add one with a
line in ``BUILTIN`` or ``register(name, "package.module:function")``.
"""
import dataclasses
import importlib
import inspect
import typing

from benchmarks import protocol

BUILTIN = {
    "popular": "benchmarks.baselines:fit_popular",
    "transitions": "benchmarks.baselines:fit_transitions",
    "transitions3": "benchmarks.baselines:fit_transitions3",
    "ease": "benchmarks.baselines:fit_ease",
    "ease_filtered": "benchmarks.baselines:fit_ease_filtered",
    "sasrec": "benchmarks.sasrec:fit_sasrec",
    "zero_shot_text": "benchmarks.beauty_ours:fit_zero_shot_text",
    "ours": "benchmarks.beauty_ours:fit_ours",
    "ours_ranked": "benchmarks.beauty_rerank:fit_ours_ranked",
}
_MODELS = dict(BUILTIN)


@dataclasses.dataclass
class FitTask:
    """What a model may see: train sequences, the catalog and the validation set."""

    train: list                    # int32 arrays of 0-based item indices, oldest first
    items: typing.Any              # beauty_data.Items (or any catalog with len() == n_items)
    n_items: int
    validation: protocol.EvalSet
    batch_size: int = 1024         # evaluation batch size
    progress: typing.Any = None    # optional iterator wrapper (tqdm) for long loops

    def validate(self, scorer, variants=protocol.VARIANTS):
        """Validation metrics of a scorer ({"unfiltered": {...}, "filtered": {...}})."""
        return protocol.evaluate(scorer, self.validation, self.n_items, self.batch_size,
                                 variants=variants)


@dataclasses.dataclass
class Fitted:
    """A scorer plus what fitting chose (selected hyper-parameters, epochs, ...)."""

    scorer: typing.Callable
    info: dict = dataclasses.field(default_factory=dict)
    # Other scorers the fit produced, measured alongside as rows "<name>_<key>" (e.g. the
    # first stage of a two-stage model, so both orders of the same model are compared).
    companions: dict = dataclasses.field(default_factory=dict)
    # True when the validation targets were training data (stacking): no validation row.
    trained_on_validation: bool = False


def register(name, target):
    """Add a model: ``target`` is a fit function or a "module:function" string."""
    _MODELS[name] = target


def names():
    return list(_MODELS)


def get(name):
    """The fit function of a model name."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(_MODELS)}")
    target = _MODELS[name]
    if isinstance(target, str):
        module, _, function = target.partition(":")
        target = getattr(importlib.import_module(module), function)
    return target


def options(fit, overrides=None):
    """The resolved keyword options of a fit function (defaults updated by ``overrides``)."""
    params = inspect.signature(fit).parameters
    resolved = {k: p.default for k, p in params.items()
                if p.default is not inspect.Parameter.empty}
    for key, value in (overrides or {}).items():
        if key not in resolved:
            raise KeyError(f"{fit.__name__} has no option {key!r}; options: "
                           f"{', '.join(resolved) or 'none'}")
        resolved[key] = value
    return resolved


def fit(name, task, seed, overrides=None):
    """Fit a model by name: returns (Fitted, resolved options)."""
    function = get(name)
    opts = options(function, overrides)
    result = function(task, seed, **opts)
    if not isinstance(result, Fitted):
        result = Fitted(result)
    return result, opts
