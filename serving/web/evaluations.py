"""The Evaluator's results read with TFMA: every metric of every slice for the candidate and
the baseline (the latest blessed model), and the thresholds that failed, i.e. why a model
was not blessed. TFMA is imported on first use (it takes seconds); results are cached per
evaluation folder, which the pipeline never rewrites."""
from __future__ import annotations

import functools
from dataclasses import dataclass

OVERALL = "Overall"
Key = tuple[str, str, str]          # output name, metric name, sub key ("" if none)


@dataclass(frozen=True)
class SliceMetrics:
    name: str                       # "Overall" or "column = value"
    candidate: dict                 # Key -> value
    baseline: dict                  # Key -> value (empty without a baseline)


@dataclass(frozen=True)
class Evaluation:
    uri: str
    columns: list                   # Keys in display order (headline metrics first)
    labels: dict                    # Key -> label
    slices: list                    # SliceMetrics, Overall first
    validation_ok: bool | None
    failures: list                  # why not blessed: one sentence per failed threshold
    headline: Key | None            # the metric the blessing is mostly about


def _shown_metrics(model: str) -> dict:
    """{(output, metric): label} of the metrics pipeline/run_report.py shows for ``model``
    (imported here: it needs ML Metadata, which an API image may lack)."""
    from pipeline.run_report import SHOWN_METRICS  # pylint: disable=import-outside-toplevel
    return {(output, name): label.format(k="K")
            for output, name, label, _ in SHOWN_METRICS.get(model, ())}


def _labels(model: str, keys) -> dict:
    """Key -> label for every key: pipeline/run_report.py's names for the metrics it shows
    (first, in its order: the first is the headline), the TFMA names for the others."""
    shown = _shown_metrics(model)
    rank = {pair: i for i, pair in enumerate(shown)}
    ordered = sorted(keys, key=lambda k: (rank.get(k[:2], len(rank)), k))
    return {k: shown.get(k[:2]) or " ".join(p for p in k if p) for k in ordered}


def _slice_name(slice_key) -> str:
    parts = []
    for key in slice_key.single_slice_keys:
        value = getattr(key, key.WhichOneof("kind"))
        parts.append(f"{key.column} = {value.decode() if isinstance(value, bytes) else value}")
    return ", ".join(parts) or OVERALL


def _key(metric_key) -> Key:
    sub = metric_key.sub_key
    sub_text = ", ".join(f"{f.name} {getattr(v, 'value', v)}" for f, v in sub.ListFields())
    return metric_key.output_name, metric_key.name, sub_text


def _bound(wrapper_owner, name: str):
    return getattr(wrapper_owner, name).value if wrapper_owner.HasField(name) else None


def threshold_text(threshold) -> str:
    """A MetricThreshold in words: "at least 0.55", "change vs baseline at least -0.02"."""
    parts = []
    if threshold.HasField("value_threshold"):
        low, high = (_bound(threshold.value_threshold, n) for n in ("lower_bound",
                                                                    "upper_bound"))
        if low is not None:
            parts.append(f"at least {low:g}")
        if high is not None:
            parts.append(f"at most {high:g}")
    if threshold.HasField("change_threshold"):
        change = threshold.change_threshold
        direction = change.DESCRIPTOR.fields_by_name["direction"].enum_type
        higher = direction.values_by_number[change.direction].name == "HIGHER_IS_BETTER"
        for kind in ("absolute", "relative"):
            bound = _bound(change, kind)
            if bound is not None:
                parts.append(f"{kind} change vs baseline {'at least' if higher else 'at most'}"
                             f" {bound:+g}")
    return " and ".join(parts) or "a threshold"


def _failures(result, labels: dict) -> list[str]:
    out = []
    for per_slice in result.metric_validations_per_slice:
        where = _slice_name(per_slice.slice_key)
        for failure in per_slice.failures:
            key = _key(failure.metric_key)
            label = labels.get(key) or " ".join(p for p in key if p)
            value = failure.metric_value.double_value.value
            what = "change vs baseline" if failure.metric_key.is_diff else "value"
            out.append(f"{label} ({where}): {what} {value:+.4f}, needs "
                       f"{threshold_text(failure.metric_threshold)}")
    return out


@functools.lru_cache(maxsize=64)
def load_evaluation(uri: str, model: str) -> Evaluation:
    """The TFMA output folder ``uri`` of one ``<model>_evaluator`` execution."""
    import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel

    slices: dict[str, SliceMetrics] = {}
    keys: dict[Key, None] = {}
    for record in tfma.load_metrics(uri):
        if record.HasField("cross_slice_key"):
            continue
        name = _slice_name(record.slice_key)
        metrics = slices.setdefault(name, SliceMetrics(name, {}, {}))
        for entry in record.metric_keys_and_values:
            if entry.key.is_diff or not entry.value.HasField("double_value"):
                continue
            key = _key(entry.key)
            keys[key] = None
            side = metrics.baseline if entry.key.model_name == "baseline" else metrics.candidate
            side[key] = entry.value.double_value.value
    labels = _labels(model, keys)
    try:
        validation = tfma.load_validation_result(uri)
        validation_ok, failures = validation.validation_ok, _failures(validation, labels)
    except Exception:  # pylint: disable=broad-except  (no validation file: nothing to say)
        validation_ok, failures = None, []
    ordered = sorted(slices.values(), key=lambda s: (s.name != OVERALL, s.name))
    headline = next((k for k in labels if k[:2] in _shown_metrics(model)), None)
    return Evaluation(uri, list(labels), labels, ordered, validation_ok, failures, headline)
