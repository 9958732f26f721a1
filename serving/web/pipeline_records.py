"""What the TFX pipeline recorded in ML Metadata, read-only: its runs with each component's
wall time and state, the data-contract report of each ShopExampleGen execution, and per
model every evaluation with its blessing and push.

TFX (LocalDagRunner, Kubeflow) gives each run an MLMD context of type ``pipeline_run`` and
each component one of type ``node`` named ``<pipeline>.<node id>``; an execution's wall time
is ``last_update_time - create_time`` (as in pipeline/run_report.py).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

MODELS = ("retrieval", "ranking")
DATA_REPORT_TYPE = "shoprec.ShopDataReport"     # pipeline/components/shop_example_gen.py


class RecordsUnavailable(RuntimeError):
    """The metadata cannot be read; the message says why and what to set."""


@dataclass(frozen=True)
class ComponentRun:
    node: str
    seconds: float
    state: str              # COMPLETE, CACHED, FAILED, RUNNING, ...


@dataclass
class PipelineRun:
    name: str               # the run id TFX gave it (a timestamp for LocalDagRunner)
    started: float
    seconds: float          # first start to last update of its executions
    components: list[ComponentRun] = field(default_factory=list)

    @property
    def state(self) -> str:
        states = {c.state for c in self.components}
        for state in ("FAILED", "RUNNING", "NEW", "CANCELED"):
            if state in states:
                return state
        return "COMPLETE"

    @property
    def cached(self) -> int:
        return sum(c.state == "CACHED" for c in self.components)


@dataclass(frozen=True)
class DataReport:
    run: str
    uri: str
    summary: dict               # summary.json: tables (rows read/kept/quarantined, reasons)
    quarantined: list[dict]     # the first quarantine.jsonl records (policy quarantine)


@dataclass(frozen=True)
class ModelRecord:
    model: str
    run: str
    evaluated: float            # epoch seconds of the evaluator's execution
    blessed: bool | None
    pushed: bool | None
    pushed_version: str | None
    evaluation_uri: str | None


def _int_property(artifact, name: str) -> int | None:
    value = artifact.custom_properties.get(name)
    return None if value is None else value.int_value


class PipelineRecords:
    """One read-only connection to a pipeline's ML Metadata SQLite file."""

    def __init__(self, metadata_path: str):
        if not metadata_path:
            raise RecordsUnavailable("no pipeline metadata configured: start the API with "
                                     "SHOPREC_METADATA_PATH=<the pipeline's metadata.db> "
                                     "(make serve sets runs/metadata.db)")
        if not os.path.isfile(metadata_path):
            raise RecordsUnavailable(f"no ML Metadata file at {metadata_path!r} (SHOPREC_"
                                     "METADATA_PATH): run the pipeline first (make demo)")
        try:
            import ml_metadata as mlmd  # pylint: disable=import-outside-toplevel
            from ml_metadata.proto import metadata_store_pb2  # pylint: disable=C0415
        except ImportError as e:
            raise RecordsUnavailable(f"ML Metadata is not installed here ({e})") from None
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = metadata_path
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
        self._pb2 = metadata_store_pb2
        self.store = mlmd.MetadataStore(config)
        self._nodes: dict[int, str] | None = None

    def _state(self, execution) -> str:
        return self._pb2.Execution.State.Name(execution.last_known_state)

    def _node_of(self) -> dict[int, str]:
        """execution id -> node id (the part after the pipeline name)."""
        if self._nodes is None:
            self._nodes = {}
            for context in self.store.get_contexts_by_type("node"):
                node = context.name.split(".", 1)[-1]
                for execution in self.store.get_executions_by_context(context.id):
                    self._nodes[execution.id] = node
        return self._nodes

    def _run_executions(self, limit: int):
        """[(run name, executions)] of the newest ``limit`` runs, newest first."""
        contexts = sorted(self.store.get_contexts_by_type("pipeline_run"),
                          key=lambda c: c.create_time_since_epoch, reverse=True)[:limit]
        return [(c.name, self.store.get_executions_by_context(c.id)) for c in contexts]

    def runs(self, limit: int = 10) -> list[PipelineRun]:
        """The newest runs, newest first, components in the order they started."""
        nodes, out = self._node_of(), []
        for name, executions in self._run_executions(limit):
            if not executions:
                continue
            started = min(e.create_time_since_epoch for e in executions) / 1000.0
            ended = max(e.last_update_time_since_epoch for e in executions) / 1000.0
            run = PipelineRun(name, started, round(ended - started, 1))
            for e in sorted(executions, key=lambda e: (e.create_time_since_epoch, e.id)):
                run.components.append(ComponentRun(
                    nodes.get(e.id, e.type), round((e.last_update_time_since_epoch
                                                    - e.create_time_since_epoch) / 1000.0, 1),
                    self._state(e)))
            out.append(run)
        return out

    def _outputs(self, execution_id: int) -> dict[str, list]:
        """{artifact type name: [artifacts]} an execution output, oldest first."""
        ids = [ev.artifact_id for ev in self.store.get_events_by_execution_ids([execution_id])
               if ev.type == self._pb2.Event.OUTPUT]
        artifacts = sorted(self.store.get_artifacts_by_id(ids), key=lambda a: a.id)
        types = {t.id: t.name for t in self.store.get_artifact_types_by_id(
            sorted({a.type_id for a in artifacts}))}
        out: dict[str, list] = {}
        for artifact in artifacts:
            out.setdefault(types[artifact.type_id], []).append(artifact)
        return out

    def _node_executions(self, node: str, limit: int):
        """[(run name, execution)] of one node in the newest ``limit`` runs, newest first."""
        nodes = self._node_of()
        return [(run, e) for run, executions in self._run_executions(limit)
                for e in executions if nodes.get(e.id) == node]

    def data_reports(self, limit: int = 10, quarantined_rows: int = 20) -> list[DataReport]:
        """ShopExampleGen's data-contract reports of the newest runs, newest first."""
        out = []
        for run, execution in self._node_executions("ShopExampleGen", limit):
            for artifact in self._outputs(execution.id).get(DATA_REPORT_TYPE, [])[-1:]:
                summary = _read_json(os.path.join(artifact.uri, "summary.json"))
                if summary is not None:
                    out.append(DataReport(run, artifact.uri, summary, _read_jsonl(
                        os.path.join(artifact.uri, "quarantine.jsonl"), quarantined_rows)))
        return out

    def model_records(self, model: str, limit: int = 10) -> list[ModelRecord]:
        """Every evaluation of ``model`` in the newest runs, newest first: blessed or not,
        pushed or not (and the version pushed), where TFMA wrote its results."""
        pushes = {run: self._outputs(e.id).get("PushedModel", [])[-1:]
                  for run, e in self._node_executions(f"{model}_pusher", limit)}
        out = []
        for run, execution in self._node_executions(f"{model}_evaluator", limit):
            outputs = self._outputs(execution.id)
            blessing = outputs.get("ModelBlessing", [])[-1:]
            evaluation = outputs.get("ModelEvaluation", [])[-1:]
            blessed = _int_property(blessing[0], "blessed") if blessing else None
            push = pushes.get(run) or []
            pushed = _int_property(push[0], "pushed") if push else None
            version = push[0].custom_properties.get("pushed_version") if pushed else None
            out.append(ModelRecord(
                model, run, execution.create_time_since_epoch / 1000.0,
                None if blessed is None else bool(blessed),
                None if pushed is None else bool(pushed),
                version.string_value if version is not None else None,
                evaluation[0].uri if evaluation else None))
        return out


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _read_jsonl(path: str, limit: int) -> list[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if len(rows) >= limit:
                    break
                rows.append(json.loads(line))
    except (OSError, ValueError):
        pass
    return rows
