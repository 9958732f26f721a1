"""What a local pipeline run did, read back from ML Metadata: per-component wall times, and
per model the evaluation metrics, the blessing and the push."""
import sys

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

# Overall-slice metrics shown per model: (output name, TFMA metric name, label, count metric
# that must be > 0 for the value to mean anything, or None).
SHOWN_METRICS = {
    "retrieval": (("", "mean_prediction", "recall@{k}", "weighted_example_count"),),
    # NDCG@10 of the served `score` order over each context's candidate pool (two-stage
    # rows only; absent otherwise).
    "ranking": (("score", "ndcg", "NDCG@10", None),
                ("click", "auc", "click AUC", None),
                ("purchase", "auc", "purchase AUC", None),
                ("rating", "root_mean_squared_error", "rating RMSE", "weighted_example_count")),
}


def _store(metadata_path: str) -> mlmd.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return mlmd.MetadataStore(config)


def _node_executions(store, pipeline_name: str, since: float):
    """{node id: [executions started after `since`]} of the pipeline's nodes."""
    prefix = pipeline_name + "."
    out = {}
    for context in store.get_contexts_by_type("node"):
        if not context.name.startswith(prefix):
            continue
        executions = [e for e in store.get_executions_by_context(context.id)
                      if e.create_time_since_epoch / 1000.0 + 1.0 >= since]
        out[context.name[len(prefix):]] = executions
    return out


def component_wall_times(metadata_path: str, pipeline_name: str, since: float = 0.0) -> dict:
    """Returns {component id: seconds} for executions that started after `since` (epoch s).

    Each TFX node has an MLMD context of type "node" named "<pipeline>.<node id>"; an
    execution's wall time is last_update_time - create_time.
    """
    times = {}
    for node_id, executions in _node_executions(_store(metadata_path), pipeline_name,
                                                since).items():
        for execution in executions:
            seconds = (execution.last_update_time_since_epoch
                       - execution.create_time_since_epoch) / 1000.0
            times[node_id] = round(times.get(node_id, 0.0) + seconds, 1)
    return dict(sorted(times.items(), key=lambda kv: -kv[1]))


def cached_components(metadata_path: str, pipeline_name: str, since: float = 0.0) -> list:
    """Ids of the components whose executions after `since` reused cached outputs (MLMD
    state CACHED: same inputs and settings as an earlier run, `enable_cache` on)."""
    cached = metadata_store_pb2.Execution.CACHED
    return sorted(node_id for node_id, executions in _node_executions(
        _store(metadata_path), pipeline_name, since).items()
        if executions and all(e.last_known_state == cached for e in executions))


def print_wall_times(times: dict, total: float, file=None) -> None:
    """Prints a table of per-component wall times."""
    file = file or sys.stdout
    width = max([len(k) for k in times] + [9])
    print(f"\n{'component':<{width}}  seconds", file=file)
    print("-" * (width + 9), file=file)
    for node_id, seconds in times.items():
        print(f"{node_id:<{width}}  {seconds:7.1f}", file=file)
    print(f"{'total':<{width}}  {total:7.1f}\n", file=file)


def _outputs(store, executions) -> dict:
    """{artifact type name: [artifacts]} that `executions` output (latest execution last)."""
    ids = [e.id for e in executions]
    if not ids:
        return {}
    artifact_ids = [ev.artifact_id for ev in store.get_events_by_execution_ids(ids)
                    if ev.type == metadata_store_pb2.Event.OUTPUT]
    artifacts = sorted(store.get_artifacts_by_id(artifact_ids), key=lambda a: a.id)
    types = {t.id: t.name for t in store.get_artifact_types_by_id(
        sorted({a.type_id for a in artifacts}))}
    out = {}
    for artifact in artifacts:
        out.setdefault(types[artifact.type_id], []).append(artifact)
    return out


def _overall_metrics(evaluation_uri: str) -> dict:
    """{(output name, metric name): (candidate value, baseline value or None)}, overall slice."""
    import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel
    values = {}
    for record in tfma.load_metrics(evaluation_uri):
        if record.slice_key.single_slice_keys:
            continue
        for entry in record.metric_keys_and_values:
            if entry.key.is_diff or not entry.value.HasField("double_value"):
                continue
            role = 1 if entry.key.model_name == "baseline" else 0
            key = (entry.key.output_name, entry.key.name)
            pair = values.setdefault(key, [None, None])
            pair[role] = entry.value.double_value.value
    return {k: tuple(v) for k, v in values.items()}


def _validation_failures(evaluation_uri: str, labels: dict) -> list:
    """Names of the metrics whose TFMA thresholds failed (empty when validation passed);
    `labels`: {(output name, metric name): shown name}."""
    import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel
    try:
        result = tfma.load_validation_result(evaluation_uri)
    except Exception:  # pylint: disable=broad-except  (no validation file: nothing to say)
        return []
    failures = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            key = failure.metric_key
            name = labels.get((key.output_name, key.name)) or (
                f"{key.output_name} {key.name}" if key.output_name else key.name)
            failures.append(name + (" vs baseline" if key.is_diff else ""))
    return sorted(set(failures))


def model_results(metadata_path: str, pipeline_name: str, models=("retrieval", "ranking"),
                  since: float = 0.0, top_k: int = 100) -> dict:
    """Per model, from this run's <model>_evaluator and <model>_pusher executions:
    {"blessed": bool|None, "pushed": bool|None, "pushed_version": str|None,
     "metrics": {label: value}, "baseline": {label: value}, "failed": [metric names]}."""
    store = _store(metadata_path)
    executions = _node_executions(store, pipeline_name, since)
    results = {}
    for model in models:
        result = {"blessed": None, "pushed": None, "pushed_version": None, "metrics": {},
                  "baseline": {}, "failed": []}
        evaluated = _outputs(store, executions.get(f"{model}_evaluator", []))
        for blessing in evaluated.get("ModelBlessing", [])[-1:]:
            if "blessed" in blessing.custom_properties:
                result["blessed"] = bool(blessing.custom_properties["blessed"].int_value)
        for evaluation in evaluated.get("ModelEvaluation", [])[-1:]:
            values = _overall_metrics(evaluation.uri)
            for output, name, label, count in SHOWN_METRICS.get(model, ()):
                candidate, baseline = values.get((output, name), (None, None))
                if count and not (values.get((output, count)) or (0,))[0]:
                    continue                      # e.g. no rated eval units: RMSE is 0/0
                label = label.format(k=top_k)
                if candidate is not None:
                    result["metrics"][label] = round(candidate, 4)
                if baseline is not None:
                    result["baseline"][label] = round(baseline, 4)
            labels = {(output, name): label.format(k=top_k)
                      for output, name, label, _ in SHOWN_METRICS.get(model, ())}
            result["failed"] = _validation_failures(evaluation.uri, labels)
        pushed = _outputs(store, executions.get(f"{model}_pusher", []))
        for push in pushed.get("PushedModel", [])[-1:]:
            props = push.custom_properties
            if "pushed" in props:
                result["pushed"] = bool(props["pushed"].int_value)
            if result["pushed"] and "pushed_version" in props:
                result["pushed_version"] = props["pushed_version"].string_value
        results[model] = result
    return results


def print_model_results(results: dict, file=None) -> None:
    """Per model: blessing and push; overall metrics (baseline = the latest blessed model);
    the thresholds it failed."""
    file = file or sys.stdout
    width = max([len(m) for m in results] + [5])
    for model, r in results.items():
        if r["blessed"] is None:
            verdict = "not evaluated"
        elif r["blessed"]:
            verdict = "BLESSED"
        else:
            verdict = "NOT BLESSED"
        if r["pushed"]:
            push = f"pushed v{r['pushed_version']}" if r["pushed_version"] else "pushed"
        else:
            push = "not pushed"
        metrics = "  ".join(
            f"{label} {value:.3f}" + (f" (baseline {r['baseline'][label]:.3f})"
                                      if label in r["baseline"] else "")
            for label, value in r["metrics"].items())
        print(f"  {model:<{width}}  {verdict}, {push}", file=file)
        if metrics:
            print(f"  {'':<{width}}  eval: {metrics}", file=file)
        if r["failed"]:
            print(f"  {'':<{width}}  failed: {', '.join(r['failed'])}", file=file)
