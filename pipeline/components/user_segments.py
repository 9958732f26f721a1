"""UserSegments and SegmentsPusher: user segments from the retrieval Trainer's query tower.

UserSegments (after the retrieval Trainer). Inputs: ShopExampleGen's examples and the
retrieval Trainer's model. Each user with at least one engaged unit in the "train" split
gets a vector: the export's ``query_embedding`` signature over the user's (pseudonymous) id
and history as of the end of the train split (distinct engaged items, most recent first, as
the API's event store builds it) with an empty search text, since a segment describes
lasting taste, not one session's search. trainer/segments.py reduces, clusters and
describes them. Output ``segments`` (artifact type ``UserSegments``):

- ``segments.json``: the report, aggregates only (no segment below ``min_segment_size``
  users, no user id; docs/privacy.md);
- ``segments.png``: the 2-D map and the per-segment profiles;
- ``assignments.json``: pseudonymous user id -> segment, which the API needs to answer
  ``/v1/users/{id}/segment`` and to pick a user's segment popularity. Personal data
  (pseudonymous), kept out of the report.

SegmentsPusher (after the retrieval Pusher). Copies those files to
``<serving_dir>/segments/<version>/`` when the retrieval Pusher pushed the model they were
computed with, ``<version>`` being the retrieval version it pushed, so the API loads the
segments of the retrieval version it serves; nothing when the model was not blessed.
"""

import collections
import json
import os
import time

import numpy as np
import pandas as pd

from absl import logging
from tfx import v1 as tfx
from tfx.types import artifact as tfx_artifact
from tfx.types import standard_artifact_utils as artifact_utils
from tfx.utils import path_utils

from pipeline.components.bundle_push import push_beside_retrieval
from trainer import features as F
from trainer import segments as S

REPORT_FILE = "segments.json"
PLOT_FILE = "segments.png"
ASSIGNMENTS_FILE = "assignments.json"
BUNDLE_FILES = (REPORT_FILE, PLOT_FILE, ASSIGNMENTS_FILE)
SERVING_SUBDIR = "segments"          # <serving_dir>/segments/<retrieval version>/


class UserSegmentsArtifact(tfx_artifact.Artifact):
    """The folder UserSegments writes (module docstring)."""

    TYPE_NAME = "shoprec.UserSegments"


def read_units(split_uri: str) -> pd.DataFrame:
    """The columns segments need of one raw split: one row per unit with ``engaged``
    (clicked, added to cart or purchased)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    files = sorted(tf.io.gfile.glob(os.path.join(split_uri, "*")))
    if not files:
        raise ValueError(f"UserSegments: no example files under {split_uri}")
    strings = (F.USER_ID, F.ITEM_ID, F.QUERY, F.CATEGORY, F.BRAND)
    ints = (F.TIMESTAMP, F.CLICKED, F.ADDED_TO_CART, F.PURCHASED)
    spec = {**{k: tf.io.FixedLenFeature([], tf.string, "") for k in strings},
            **{k: tf.io.FixedLenFeature([], tf.int64, 0) for k in ints},
            F.PRICE: tf.io.FixedLenFeature([], tf.float32, 0.0)}
    parts = collections.defaultdict(list)
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096).map(
            lambda records: tf.io.parse_example(records, spec)):
        for key, value in batch.items():
            parts[key].append(value.numpy())
    frame = pd.DataFrame({k: np.concatenate(v) for k, v in parts.items()})
    for key in strings:
        frame[key] = frame[key].str.decode("utf-8")
    frame["engaged"] = (frame[F.CLICKED] + frame[F.ADDED_TO_CART] + frame[F.PURCHASED]) > 0
    return frame


def histories(units: pd.DataFrame) -> dict:
    """user -> distinct engaged item ids, most recent first (users with an engagement)."""
    engaged = units[units["engaged"]].sort_values([F.TIMESTAMP, F.ITEM_ID],
                                                  ascending=[False, True], kind="stable")
    out = {}
    for user, items in engaged.groupby(F.USER_ID, sort=True)[F.ITEM_ID]:
        out[user] = list(dict.fromkeys(items))[:F.MAX_HISTORY_LENGTH]
    return out


def embed_users(export_dir: str, user_histories: dict, batch_size: int = 256) -> np.ndarray:
    """[users, D] query-tower vectors (``query_embedding``: user id, history, no search),
    in the order of ``user_histories``."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    fn = tf.saved_model.load(export_dir).signatures["query_embedding"]
    users = list(user_histories)
    out = []
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        width = max(1, max(len(user_histories[u]) for u in batch))
        history = [user_histories[u] + [""] * (width - len(user_histories[u])) for u in batch]
        out.append(fn(user_id=tf.constant(batch), history_item_ids=tf.constant(history),
                      query=tf.constant([""] * len(batch)))["embedding"].numpy())
    return np.concatenate(out) if out else np.zeros((0, 1))


def compute(units: pd.DataFrame, export_dir: str, cfg: S.SegmentConfig) -> tuple:
    """(report, assignments {user: segment}, Segmentation, profiles) of the train units."""
    began = time.perf_counter()
    user_histories = histories(units)
    users = list(user_histories)
    engaged = units[units["engaged"]].rename(columns={F.USER_ID: "user_id"})
    vectors = embed_users(export_dir, user_histories)
    shares, _ = S.category_shares(users, engaged) if users else (None, [])
    seg = S.segment(S.features(vectors, shares, cfg.category_weight) if users
                    else np.zeros((0, 2)), cfg)
    searches = units[units[F.QUERY] != ""][[F.USER_ID, F.QUERY]].rename(
        columns={F.USER_ID: "user_id", F.QUERY: "query"})
    profiles = S.profiles(users, seg.labels, engaged, searches, cfg) if seg.count else []
    report = S.report(seg, profiles, cfg, vectors="query_embedding (history, no search)"
                      + (f" + top-category shares x {cfg.category_weight:g}"
                         if cfg.category_weight > 0 else ""),
                      users_without_engagement=int(units[F.USER_ID].nunique() - len(users)),
                      seconds=round(time.perf_counter() - began, 1))
    assignments = {u: int(s) for u, s in zip(users, seg.labels) if s >= 0}
    return report, assignments, seg, profiles


def write(out_dir: str, report: dict, assignments: dict, seg, profiles) -> None:
    """The three files of a UserSegments artifact (module docstring)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.io.gfile.makedirs(out_dir)
    with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_FILE), "w") as f:
        f.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    with tf.io.gfile.GFile(os.path.join(out_dir, ASSIGNMENTS_FILE), "w") as f:
        f.write(json.dumps({"version": S.REPORT_VERSION, "segments": report["segments"],
                            "users": assignments}, sort_keys=True) + "\n")
    local = os.path.join(out_dir, PLOT_FILE)
    if "://" in out_dir:                     # matplotlib writes local files only
        import tempfile  # pylint: disable=import-outside-toplevel
        local = os.path.join(tempfile.mkdtemp(), PLOT_FILE)
    if seg.count:
        S.plot(seg, profiles, local, title=f"{report['segments']} segments of "
                                           f"{report['users']} users")
        if local != os.path.join(out_dir, PLOT_FILE):
            tf.io.gfile.copy(local, os.path.join(out_dir, PLOT_FILE), overwrite=True)


@tfx.dsl.components.component
def UserSegments(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    segments: tfx.dsl.components.OutputArtifact[UserSegmentsArtifact],
    k_min: tfx.dsl.components.Parameter[int] = 2,
    k_max: tfx.dsl.components.Parameter[int] = 16,
    min_segment_size: tfx.dsl.components.Parameter[int] = 20,
    category_weight: tfx.dsl.components.Parameter[float] = 2.0,
    seed: tfx.dsl.components.Parameter[int] = 0,
):
    """User segments of the train split (module docstring)."""
    cfg = S.SegmentConfig(k_min=k_min, k_max=k_max, min_segment_size=min_segment_size,
                          category_weight=category_weight, seed=seed).validate()
    units = read_units(artifact_utils.get_split_uri([examples], F.TRAIN_SPLIT))
    report, assignments, seg, profiles = compute(
        units, path_utils.serving_model_path(model.uri), cfg)
    write(segments.uri, report, assignments, seg, profiles)
    segments.set_int_custom_property("segments", report["segments"])
    segments.set_int_custom_property("users", report["users"])
    logging.info("UserSegments: %d segments of %d users (k by silhouette: %s; %d dissolved "
                 "below %d users)", report["segments"], report["users"], report["k_chosen"],
                 report["dissolved_below_min_size"], cfg.min_segment_size)


@tfx.dsl.components.component
def SegmentsPusher(  # pylint: disable=invalid-name
    segments: tfx.dsl.components.InputArtifact[UserSegmentsArtifact],
    pushed_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.PushedModel],
    pushed_segments: tfx.dsl.components.OutputArtifact[UserSegmentsArtifact],
    serving_dir: tfx.dsl.components.Parameter[str],
):
    """Copy the segments next to the retrieval version they belong to (module docstring)."""
    push_beside_retrieval("SegmentsPusher", segments.uri, BUNDLE_FILES, pushed_model,
                          pushed_segments, serving_dir, SERVING_SUBDIR)
