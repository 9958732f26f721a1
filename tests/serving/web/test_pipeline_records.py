"""The console's ML Metadata reader on a small store written the way TFX writes one: two runs,
the second's model not blessed and not pushed."""
from __future__ import annotations

import json

import pytest

from serving.web.pipeline_records import PipelineRecords, RecordsUnavailable


def _write_store(path, tmp_path):
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2 as pb

    config = pb.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = mlmd.MetadataStore(config)
    types = {name: store.put_context_type(pb.ContextType(name=name))
             for name in ("pipeline_run", "node")}
    artifact_types = {name: store.put_artifact_type(pb.ArtifactType(name=name)) for name in (
        "shoprec.ShopDataReport", "ModelBlessing", "ModelEvaluation", "PushedModel")}
    execution_type = store.put_execution_type(pb.ExecutionType(name="component"))
    nodes = {}
    for node in ("ShopExampleGen", "retrieval_evaluator", "retrieval_pusher"):
        [nodes[node]] = store.put_contexts([pb.Context(type_id=types["node"],
                                                       name=f"shoprec.{node}")])
    for run, blessed in (("run-1", 1), ("run-2", 0)):
        [run_id] = store.put_contexts([pb.Context(type_id=types["pipeline_run"], name=run)])
        report = tmp_path / run
        report.mkdir()
        (report / "summary.json").write_text(json.dumps({"policy": "quarantine", "tables": {
            "events": {"file": "events.csv", "rows_read": 10, "rows_kept": 9 + blessed,
                       "rows_quarantined": 1 - blessed}}}))
        outputs = {"ShopExampleGen": [("shoprec.ShopDataReport", str(report), {})],
                   "retrieval_evaluator": [("ModelBlessing", "", {"blessed": blessed}),
                                           ("ModelEvaluation", f"/eval/{run}", {})],
                   "retrieval_pusher": [("PushedModel", "", {"pushed": blessed})]}
        for node, artifacts in outputs.items():
            execution = pb.Execution(type_id=execution_type, last_known_state=pb.Execution.COMPLETE)
            written = []
            for type_name, uri, properties in artifacts:
                artifact = pb.Artifact(type_id=artifact_types[type_name], uri=uri)
                for name, value in properties.items():
                    artifact.custom_properties[name].int_value = value
                if type_name == "PushedModel" and blessed:
                    artifact.custom_properties["pushed_version"].string_value = "17"
                written.append((artifact, pb.Event(type=pb.Event.OUTPUT)))
            store.put_execution(execution, written, [
                pb.Context(id=run_id, type_id=types["pipeline_run"], name=run),
                pb.Context(id=nodes[node], type_id=types["node"], name=f"shoprec.{node}")])


def test_runs_reports_and_models_are_read_newest_first(tmp_path):
    path = tmp_path / "metadata.db"
    _write_store(path, tmp_path)
    records = PipelineRecords(str(path))
    runs = records.runs()
    assert [r.name for r in runs] == ["run-2", "run-1"]
    assert [c.node for c in runs[0].components] == ["ShopExampleGen", "retrieval_evaluator",
                                                    "retrieval_pusher"]
    assert runs[0].state == "COMPLETE" and runs[0].cached == 0
    reports = records.data_reports()
    assert [r.run for r in reports] == ["run-2", "run-1"]
    assert reports[0].summary["tables"]["events"]["rows_quarantined"] == 1
    models = records.model_records("retrieval")
    assert [(m.run, m.blessed, m.pushed, m.pushed_version, m.evaluation_uri) for m in models] \
        == [("run-2", False, False, None, "/eval/run-2"), ("run-1", True, True, "17",
                                                          "/eval/run-1")]
    assert records.model_records("ranking") == []


def test_missing_metadata_says_what_to_set(tmp_path):
    with pytest.raises(RecordsUnavailable, match="SHOPREC_METADATA_PATH"):
        PipelineRecords("")
    with pytest.raises(RecordsUnavailable, match="run the pipeline first"):
        PipelineRecords(str(tmp_path / "nothing.db"))
