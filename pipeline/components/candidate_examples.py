"""CandidateExamples: two-stage ranking rows from the retrieval Trainer's export.

Inputs: ShopExampleGen's examples (with a "rank" split: ``rank_fraction`` > 0) and the
retrieval Trainer's model. For every clicked unit of the "rank" split (a time window the
retrieval model and its item-to-item tables were not fitted on) and of the "eval" split, the
export's ``top_k`` and ``related_items`` signatures and the API's pool code
(trainer/candidates/pool.py) give the candidates the API would rank; pipeline/candidate_rows.py
turns them into raw examples with the candidate features. With ``exclude_purchased`` (the
API's ``filter_purchased``, on by default in both) the pools leave out what the user had
bought before the context, read from the purchased units of every split.

Outputs (standard Examples, gzipped tf.Example TFRecords). ``candidate_examples``: the raw rows, split
"train" (from the rank window: target + ``negatives`` sampled pool items per context) and
"eval" (every pool item of every eval context, or of a seeded sample of
``max_eval_contexts`` of them: TFMA's cost grows with the rows), for the ranking Evaluator (TFMA groups them
by ``context_id``). ``transformed_examples``: the same rows through the Transform graph
(``transform_graph``, analysed on the train split) plus the candidate features and the
context id, and the catalog split transformed, for the ranking Trainer (it reads them as it
reads Transform's output). And ``candidate_examples.json`` in ``candidate_examples``: per split the contexts, how
many had their target in the pool (the candidate stage's recall), rows, mean pool size,
which source found the targets and recall / NDCG@10 of the pool's own order (the baseline
of the ranker's NDCG@10 on the same rows). The same numbers are custom properties of the artifact.
"""
import itertools
import json
import os
import time

import numpy as np

from absl import logging
from tfx import v1 as tfx
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifact_utils as artifact_utils
from tfx.utils import path_utils

from pipeline import candidate_rows, examples
from pipeline.components.user_segments import ASSIGNMENTS_FILE, UserSegmentsArtifact
from trainer import features as F

REPORT_FILE = "candidate_examples.json"
# Output split <- input split.
SOURCE_SPLITS = {"train": F.RANK_SPLIT, "eval": F.EVAL_SPLIT}


def _split_files(split_uri: str) -> list:
    """The example files of one split directory (an error naming it when there are none)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    files = sorted(tf.io.gfile.glob(os.path.join(split_uri, "*")))
    if not files:
        raise ValueError(f"CandidateExamples: no example files under {split_uri}")
    return files


def read_split(split_uri: str) -> list:
    """The decoded examples (``examples.decode_example``) of one split directory."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    files = _split_files(split_uri)
    return [examples.decode_example(record.numpy())
            for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def read_purchases(split_uri: str):
    """(user_id, item_id, timestamp) of the purchased units of one split directory (only
    those four features are parsed)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    files = _split_files(split_uri)
    spec = {F.USER_ID: tf.io.FixedLenFeature([], tf.string),
            F.ITEM_ID: tf.io.FixedLenFeature([], tf.string),
            F.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
            F.PURCHASED: tf.io.FixedLenFeature([], tf.int64)}
    batches = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096).map(
        lambda records: tf.io.parse_example(records, spec))
    for batch in batches:
        bought = batch[F.PURCHASED].numpy() > 0
        yield from zip((u.decode("utf-8") for u in batch[F.USER_ID].numpy()[bought]),
                       (i.decode("utf-8") for i in batch[F.ITEM_ID].numpy()[bought]),
                       batch[F.TIMESTAMP].numpy()[bought].tolist())


def _writer(split_uri: str):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tf.io.gfile.makedirs(split_uri)
    return tf.io.TFRecordWriter(os.path.join(split_uri, "data_tfrecord-00000-of-00001.gz"),
                                options="GZIP")


def encode_transformed(batch: dict) -> list:
    """Serialized tf.Examples of a batch of transformed features ({name: array [B] or
    [B, n]}): strings as bytes, integers as int64, the rest as float."""
    from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel
    columns = {}
    for key, values in batch.items():
        values = np.asarray(values)
        values = values.reshape(len(values), -1)
        kind = ("bytes" if values.dtype == object or values.dtype.kind in "SU" else
                "int64" if values.dtype.kind in "iub" else "float")
        columns[key] = (kind, values)
    out = []
    for r in range(len(next(iter(batch.values())))):
        example = example_pb2.Example()
        feature = example.features.feature
        for key, (kind, values) in columns.items():
            if kind == "bytes":
                feature[key].bytes_list.value.extend(
                    v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values[r])
            elif kind == "int64":
                feature[key].int64_list.value.extend(int(v) for v in values[r])
            else:
                feature[key].float_list.value.extend(float(v) for v in values[r])
        out.append(example.SerializeToString())
    return out


class Transformer:
    """Raw rows -> transformed rows with the run's Transform graph; the candidate features
    and the context id pass through unchanged (the graph was analysed without them)."""

    def __init__(self, transform_graph_uri: str):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        import tensorflow_transform as tft  # pylint: disable=import-outside-toplevel
        self._tf = tf
        self._output = tft.TFTransformOutput(transform_graph_uri)
        self._raw_spec = self._output.raw_feature_spec()
        # The run's history width (PipelineConfig.history_length, in the schema): the
        # examples' histories have it, and so do the rows built from them.
        self.history_length = F.history_length_of(self._raw_spec)
        # One parse per batch: the raw features and, as lists (catalog rows have none),
        # the candidate features and context strings.
        self._spec = dict(self._raw_spec, **{
            key: tf.io.VarLenFeature(tf.float32) for key in F.OPTIONAL_FLOAT_FEATURES}, **{
            key: tf.io.VarLenFeature(tf.string) for key in F.OPTIONAL_STRING_FEATURES})

    def __call__(self, serialized: list) -> list:
        parsed = self._tf.io.parse_example(self._tf.constant(serialized), self._spec)
        out = {k: v.numpy() for k, v in self._output.transform_raw_features(
            {k: parsed[k] for k in self._raw_spec}, drop_unused_features=True).items()}
        for key in (*F.OPTIONAL_FLOAT_FEATURES, *F.OPTIONAL_STRING_FEATURES):
            values = parsed[key].values.numpy()
            if len(values) == len(serialized):      # every row has it (rows of one kind)
                out[key] = values
            elif len(values):
                raise ValueError(f"CandidateExamples: {len(values)} of {len(serialized)} "
                                 f"rows have {key!r}; rows must all have it or none")
        return encode_transformed(out)


def write_rows(rows, split_uri: str, transformed_uri: str, transform,
               batch_size: int = 1024) -> None:
    """Rows as one gzipped TFRecord file of raw tf.Examples under ``split_uri`` (the layout
    ExampleGen writes) and of transformed ones under ``transformed_uri``; histories have
    ``transform.history_length`` entries (the run's schema)."""
    history_length = getattr(transform, "history_length", F.HISTORY_LENGTH)
    with _writer(split_uri) as raw_out, _writer(transformed_uri) as transformed_out:
        batch = []
        for row in itertools.chain(rows, [None]):
            if row is not None:
                batch.append(examples.to_tf_example(row, history_length).SerializeToString())
            if batch and (row is None or len(batch) == batch_size):
                for record in batch:
                    raw_out.write(record)
                for record in transform(batch):
                    transformed_out.write(record)
                batch = []


def generate(examples_uri_of, export_dir: str, transform_graph_uri: str, out_uri: str,
             transformed_uri: str, negatives: int, transition_candidates: int,
             cooccurrence_candidates: int, seed: int, max_eval_contexts: int = 0,
             text_candidates: int = 50, exclude_purchased: bool = True,
             segment_of: dict = None, hard_negatives: int = 0, hard_window: int = 50) -> dict:
    """Write the output splits under ``out_uri`` (raw) and ``transformed_uri`` and return the
    report. ``examples_uri_of``: split name -> input split directory. ``segment_of``: user ->
    segment (UserSegments), written into the eval rows as ``user_segment``."""
    if negatives < 1:
        raise ValueError(f"CandidateExamples: negatives must be >= 1, got {negatives}")
    if not 0 <= hard_negatives <= negatives or hard_window < 1:
        raise ValueError(f"CandidateExamples: hard_negatives must be in [0, negatives = "
                         f"{negatives}] and hard_window >= 1, got {hard_negatives} and "
                         f"{hard_window}")
    if min(transition_candidates, cooccurrence_candidates, text_candidates) < 0:
        raise ValueError("CandidateExamples: transition_candidates, cooccurrence_candidates "
                         "and text_candidates must be >= 0")
    began = time.perf_counter()
    catalog = candidate_rows.RawCatalog.of(read_split(examples_uri_of(F.CATALOG_SPLIT)))
    transform = Transformer(transform_graph_uri)
    with _writer(os.path.join(transformed_uri, f"Split-{F.CATALOG_SPLIT}")) as out:
        for start in range(0, len(catalog.items), 1024):
            for record in transform([
                    examples.to_tf_example(item, transform.history_length).SerializeToString()
                    for item in catalog.items[start:start + 1024]]):
                out.write(record)
    export = candidate_rows.RetrievalExport(export_dir)
    tables = export.tables(catalog)
    purchases = candidate_rows.Purchases(itertools.chain.from_iterable(
        read_purchases(examples_uri_of(split))
        for split in (F.TRAIN_SPLIT, F.RANK_SPLIT, F.EVAL_SPLIT)), catalog) \
        if exclude_purchased else None
    report = {"negatives": negatives, "hard_negatives": hard_negatives,
              "hard_window": hard_window, "seed": seed, "max_eval_contexts": max_eval_contexts,
              "exclude_purchased": exclude_purchased,
              "purchased_units": len(purchases) if purchases is not None else None,
              "transition_candidates": transition_candidates,
              "cooccurrence_candidates": cooccurrence_candidates,
              "text_candidates": text_candidates,
              "item_to_item": tables.report if tables is not None else None, "splits": {}}
    for out_split, in_split in SOURCE_SPLITS.items():
        units = read_split(examples_uri_of(in_split))

        def progress(done, total, split=out_split):
            logging.info("CandidateExamples %s: %d / %d contexts", split, done, total)

        rows = candidate_rows.split_rows(
            units, export, catalog, tables, out_split, negatives, seed,
            (transition_candidates, cooccurrence_candidates, text_candidates),
            progress=progress,
            max_contexts=max_eval_contexts if out_split == "eval" else 0,
            purchases=purchases, hard_negatives=hard_negatives, hard_window=hard_window)
        if segment_of is not None and out_split == "eval":
            rows = with_segments(rows, segment_of)
        counts = _write_counting(rows, os.path.join(out_uri, f"Split-{out_split}"),
                                 os.path.join(transformed_uri, f"Split-{out_split}"), transform)
        report["splits"][out_split] = dict(counts.summary(), from_split=in_split)
    report["seconds"] = round(time.perf_counter() - began, 1)
    if not report["splits"]["train"]["rows"]:
        raise ValueError(
            "CandidateExamples: no training rows: no clicked unit of the "
            f"{F.RANK_SPLIT!r} split has its item among the candidates ({report['splits']})")
    return report


def with_segments(rows_generator, segment_of: dict):
    """The rows with ``user_segment`` (the user's segment, "none" without one), for the
    ranking Evaluator's slice; returns the generator's value (``yield from``)."""
    while True:
        try:
            row = next(rows_generator)
        except StopIteration as stop:
            return stop.value
        segment = segment_of.get(row[F.USER_ID])
        yield dict(row, **{F.USER_SEGMENT: "none" if segment is None else str(segment)})


def read_assignments(segments_uri: str) -> dict:
    """user -> segment of a UserSegments artifact."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    with tf.io.gfile.GFile(os.path.join(segments_uri, ASSIGNMENTS_FILE)) as f:
        return json.load(f)["users"]


def _write_counting(rows_generator, *where):
    """Write the generator's rows (``write_rows``); return the Counts it returns."""
    result = {}

    def drain():
        result["counts"] = yield from rows_generator

    write_rows(drain(), *where)
    return result["counts"]


@tfx.dsl.components.component
def CandidateExamples(  # pylint: disable=invalid-name
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    transform_graph: tfx.dsl.components.InputArtifact[
        tfx.types.standard_artifacts.TransformGraph],
    candidate_examples: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.Examples],
    transformed_examples: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.Examples],
    negatives: tfx.dsl.components.Parameter[int] = 20,
    transition_candidates: tfx.dsl.components.Parameter[int] = 50,
    cooccurrence_candidates: tfx.dsl.components.Parameter[int] = 50,
    seed: tfx.dsl.components.Parameter[int] = 0,
    max_eval_contexts: tfx.dsl.components.Parameter[int] = 0,
    text_candidates: tfx.dsl.components.Parameter[int] = 50,
    exclude_purchased: tfx.dsl.components.Parameter[int] = 1,
    hard_negatives: tfx.dsl.components.Parameter[int] = 0,
    hard_window: tfx.dsl.components.Parameter[int] = 50,
    segments: tfx.dsl.components.InputArtifact[UserSegmentsArtifact] = None,
):
    """Two-stage ranking rows (module docstring)."""
    splits = artifact_utils.decode_split_names(examples.split_names)
    missing = [s for s in (*SOURCE_SPLITS.values(), F.CATALOG_SPLIT) if s not in splits]
    if missing:
        raise ValueError(f"CandidateExamples: the examples lack the splits {missing} (they "
                         f"have {splits}); give ShopExampleGen a rank_fraction > 0")
    report = generate(lambda split: artifact_utils.get_split_uri([examples], split),
                      path_utils.serving_model_path(model.uri), transform_graph.uri,
                      candidate_examples.uri, transformed_examples.uri, negatives,
                      transition_candidates, cooccurrence_candidates, seed, max_eval_contexts,
                      text_candidates, bool(exclude_purchased),
                      read_assignments(segments.uri) if segments is not None else None,
                      hard_negatives, hard_window)
    for artifact, names in ((candidate_examples, list(SOURCE_SPLITS)),
                            (transformed_examples, [*SOURCE_SPLITS, F.CATALOG_SPLIT])):
        artifact.split_names = artifact_utils.encode_split_names(names)
        examples_utils.set_payload_format(artifact,
                                          example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(artifact, "tfrecords_gzip")
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    with tf.io.gfile.GFile(os.path.join(candidate_examples.uri, REPORT_FILE), "w") as f:
        f.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    for split, summary in report["splits"].items():
        for key in ("contexts", "contexts_with_target_in_pool", "rows"):
            candidate_examples.set_int_custom_property(f"{split}_{key}", summary[key])
        if summary["target_in_pool_share"] is not None:
            candidate_examples.set_float_custom_property(
                f"{split}_target_in_pool_share", summary["target_in_pool_share"])
    logging.info("CandidateExamples: %s", json.dumps(report["splits"], sort_keys=True))
