"""Per-component wall times of a local pipeline run, read back from ML Metadata."""
import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2


def component_wall_times(metadata_path: str, pipeline_name: str, since: float = 0.0) -> dict:
    """Returns {component id: seconds} for executions that started after `since` (epoch s).

    Each TFX node has an MLMD context of type "node" named "<pipeline>.<node id>"; an
    execution's wall time is last_update_time - create_time.
    """
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = mlmd.MetadataStore(config)
    times = {}
    prefix = pipeline_name + "."
    for context in store.get_contexts_by_type("node"):
        if not context.name.startswith(prefix):
            continue
        node_id = context.name[len(prefix):]
        for execution in store.get_executions_by_context(context.id):
            started = execution.create_time_since_epoch / 1000.0
            if started + 1.0 < since:
                continue
            seconds = (execution.last_update_time_since_epoch
                       - execution.create_time_since_epoch) / 1000.0
            times[node_id] = round(times.get(node_id, 0.0) + seconds, 1)
    return dict(sorted(times.items(), key=lambda kv: -kv[1]))


def print_wall_times(times: dict, total: float) -> None:
    """Prints a table of per-component wall times."""
    width = max([len(k) for k in times] + [9])
    print(f"\n{'component':<{width}}  seconds")
    print("-" * (width + 9))
    for node_id, seconds in times.items():
        print(f"{node_id:<{width}}  {seconds:7.1f}")
    print(f"{'total':<{width}}  {total:7.1f}\n")
