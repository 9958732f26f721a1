"""AnomaliesGate: stops the pipeline with a readable report when ExampleValidator found anomalies.

TFX's ExampleValidator only records anomalies; nothing downstream refuses to run. This gate
reads its `SchemaDiff.pb` per split and raises `DataAnomaliesError` listing every anomaly
(split, feature, short description, description). Anomaly types a time-based split produces
by design (new brand/category values appearing after the train period, which the vocabulary
maps to OOV buckets) can be tolerated by config; they are still logged.
"""

import json
import os

from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import standard_artifact_utils as artifact_utils

SCHEMA_DIFF_FILE = "SchemaDiff.pb"
# New categorical values in later data are expected under a time split (cold items, new
# brands); the Transform vocabulary maps them to OOV buckets.
DEFAULT_TOLERATED = ("ENUM_TYPE_UNEXPECTED_STRING_VALUES",)


class DataAnomaliesError(RuntimeError):
    """The data violates the schema inferred from the training split."""


def _reason_names(info: anomalies_pb2.AnomalyInfo) -> list[str]:
    return [anomalies_pb2.AnomalyInfo.Type.Name(r.type) for r in info.reason]


def read_anomalies(split_dir: str) -> anomalies_pb2.Anomalies:
    """Parses one split's SchemaDiff.pb written by ExampleValidator."""
    path = os.path.join(split_dir, SCHEMA_DIFF_FILE)
    anomalies = anomalies_pb2.Anomalies()
    with open(path, "rb") as f:
        anomalies.ParseFromString(f.read())
    return anomalies


def check_anomalies(by_split: dict[str, anomalies_pb2.Anomalies],
                    tolerated: tuple[str, ...] = DEFAULT_TOLERATED) -> list[dict]:
    """Returns the tolerated anomalies; raises DataAnomaliesError listing all others."""
    blocking, tolerated_found = [], []
    for split, anomalies in sorted(by_split.items()):
        infos = list(anomalies.anomaly_info.items())
        if anomalies.HasField("dataset_anomaly_info"):
            infos.append(("<dataset>", anomalies.dataset_anomaly_info))
        for feature, info in infos:
            reasons = _reason_names(info)
            entry = {"split": split, "feature": feature, "types": reasons,
                     "short": info.short_description, "description": info.description}
            if reasons and all(r in tolerated for r in reasons):
                tolerated_found.append(entry)
            else:
                blocking.append(entry)
    for e in tolerated_found:
        logging.warning("tolerated anomaly in split %s, feature %s: %s", e["split"],
                        e["feature"], e["description"])
    if blocking:
        lines = [f"  split '{e['split']}', feature '{e['feature']}': {e['short']} — "
                 f"{e['description']} [{', '.join(e['types'])}]" for e in blocking]
        raise DataAnomaliesError(
            f"ExampleValidator found {len(blocking)} anomalies against the schema inferred "
            "from the training split; fix the data or the schema, then re-run:\n"
            + "\n".join(lines))
    return tolerated_found


@tfx.dsl.components.component
def AnomaliesGate(  # pylint: disable=invalid-name
    anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
    tolerated_types: tfx.dsl.components.Parameter[str] = ",".join(DEFAULT_TOLERATED),
):
    """Fails the run on anomalies (other than `tolerated_types`, comma separated)."""
    by_split = {}
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        by_split[split] = read_anomalies(
            artifact_utils.get_split_uri([anomalies], split))
    tolerated = tuple(t.strip() for t in tolerated_types.split(",") if t.strip())
    found = check_anomalies(by_split, tolerated)
    logging.info("AnomaliesGate passed (%d tolerated): %s", len(found),
                 json.dumps(found)[:2000])
