"""The Beam pipeline that turns canonical shop tables into train / eval / catalog examples.

Reads the canonical events and items (Parquet written by `write_canonical_tables`), groups
events by user, builds impression units (rules in pipeline/examples.py), joins item features
(items as a side input), splits by the time cutoff and writes gzipped TFRecords of
tf.train.Examples laid out like TFX's ExampleGen: ``<uri>/Split-<name>/data_tfrecord-*.gz``.
Counts for the report are written by the pipeline itself (``summary_path``, one JSON line), so
they work on every runner.
"""
import json
import os

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline import examples
from trainer import features

EVENT_COLUMNS = ("user_id", "item_id", "event_type", "value", "query", "session_id",
                 "timestamp")
ITEM_COLUMNS = ("item_id", "title", "description", "brand", "categories", "price", "in_stock")
FILE_PREFIX = "data_tfrecord"
SPLITS = (features.TRAIN_SPLIT, features.EVAL_SPLIT, features.CATALOG_SPLIT)
_UNKNOWN_ITEM = "unknown_item"
_RATE_LABELS = (features.CLICKED, features.ADDED_TO_CART, features.PURCHASED,
                features.HAS_RATING)


def split_uri(examples_uri: str, split: str) -> str:
    """Directory of one split, as tfx.types.artifact_utils.get_split_uri lays it out."""
    return os.path.join(examples_uri, f"Split-{split}")


def _write_parquet(frame, path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    with FileSystems.create(path) as out:
        out.write(buffer.getvalue().to_pybytes())


def write_canonical_tables(events, items, work_dir: str):
    """Write the canonical events (plus `seq`, their row order) and items as Parquet.

    Returns (events_path, items_path). Works for local and remote (gs://, s3://) dirs.
    """
    for name, frame, columns in (("events", events, EVENT_COLUMNS),
                                 ("items", items, ITEM_COLUMNS)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"canonical {name} table lacks columns {missing}; "
                             f"it has {list(frame.columns)}")
    events = events.loc[:, list(EVENT_COLUMNS)].reset_index(drop=True)
    events["seq"] = range(len(events))
    events = events.astype({"value": "float64", "timestamp": "int64", "seq": "int64"})
    items = items.loc[:, list(ITEM_COLUMNS)].reset_index(drop=True)
    items = items.astype({"price": "float64", "in_stock": "bool"})
    if not FileSystems.exists(work_dir):
        FileSystems.mkdirs(work_dir)
    events_path = os.path.join(work_dir, "events.parquet")
    items_path = os.path.join(work_dir, "items.parquet")
    _write_parquet(events, events_path)
    _write_parquet(items, items_path)
    return events_path, items_path


class _CutoffFn(beam.CombineFn):
    """Exact (1 - eval_fraction) quantile of unit timestamps via a timestamp histogram."""

    def __init__(self, eval_fraction: float):
        self._eval_fraction = examples.check_eval_fraction(eval_fraction)

    def create_accumulator(self):
        return {}

    def add_input(self, counts, timestamp):
        counts[timestamp] = counts.get(timestamp, 0) + 1
        return counts

    def merge_accumulators(self, accumulators):
        merged = {}
        for counts in accumulators:
            for timestamp, n in counts.items():
                merged[timestamp] = merged.get(timestamp, 0) + n
        return merged

    def extract_output(self, counts):
        return examples.cutoff_from_counts(counts, self._eval_fraction)


class _JoinItem(beam.DoFn):
    """Adds item features; units of items missing from the catalog go to _UNKNOWN_ITEM."""

    def process(self, unit, items):
        item = items.get(unit[features.ITEM_ID])
        if item is None:
            yield beam.pvalue.TaggedOutput(_UNKNOWN_ITEM, unit[features.ITEM_ID])
        else:
            yield examples.join_item(unit, item)


class _SplitByTime(beam.DoFn):
    def process(self, example, cutoff):
        yield beam.pvalue.TaggedOutput(
            examples.split_of(example[features.TIMESTAMP], cutoff), example)


def _serialize(example) -> bytes:
    return examples.to_tf_example(example).SerializeToString()


def _label_counts(example):
    return (1,) + tuple(int(example[key]) for key in _RATE_LABELS)


class _SumColumns(beam.CombineFn):
    """Column sums of equal-length int tuples."""

    def __init__(self, width: int):
        self._width = width

    def create_accumulator(self):
        return (0,) * self._width

    def add_input(self, sums, row):
        return tuple(a + b for a, b in zip(sums, row))

    def merge_accumulators(self, accumulators):
        return tuple(map(sum, zip(*accumulators)))

    def extract_output(self, sums):
        return sums


def _summary(_, cutoff, split_counts, catalog_count, unknown_count, unknown_sample,
             dropped_events, read_events):
    splits = {}
    for split in (features.TRAIN_SPLIT, features.EVAL_SPLIT):
        counts = dict(split_counts).get(split) or (0,) * (1 + len(_RATE_LABELS))
        n = counts[0]
        splits[split] = {"examples": n}
        splits[split].update({f"{key}_rate": (counts[i + 1] / n if n else 0.0)
                              for i, key in enumerate(_RATE_LABELS)})
    splits[features.CATALOG_SPLIT] = {"examples": catalog_count}
    return json.dumps({
        "events_read": read_events,
        "events_without_user": dropped_events,
        "units_dropped_unknown_item": unknown_count,
        "unknown_item_ids_sample": sorted(unknown_sample),
        "cutoff_timestamp": cutoff,
        "splits": splits,
    }, sort_keys=True)


def build_pipeline(pipeline: beam.Pipeline, events_path: str, items_path: str,
                   examples_uri: str, summary_path: str, eval_fraction: float,
                   session_gap_minutes: int) -> None:
    """Add the example-generation steps to `pipeline` (run it afterwards)."""
    examples.check_eval_fraction(eval_fraction)
    if isinstance(session_gap_minutes, bool) or not isinstance(session_gap_minutes, int) \
            or session_gap_minutes < 1:
        raise ValueError(f"session_gap_minutes must be an int >= 1, got {session_gap_minutes!r}")
    gap_seconds = 60 * session_gap_minutes
    as_single = beam.pvalue.AsSingleton

    events = pipeline | "ReadEvents" >> beam.io.ReadFromParquet(events_path)
    items = (pipeline
             | "ReadItems" >> beam.io.ReadFromParquet(items_path)
             | "ItemFeatures" >> beam.Map(examples.item_features))
    with_user = events | "HasUser" >> beam.Filter(lambda e: bool(e["user_id"]))
    units = (with_user
             | "KeyByUser" >> beam.Map(lambda e: (e["user_id"], e))
             | "GroupByUser" >> beam.GroupByKey()
             | "BuildUnits" >> beam.FlatMapTuple(
                 lambda user, evs: examples.build_units(user, evs, gap_seconds)))
    joined = units | "JoinItems" >> beam.ParDo(
        _JoinItem(), beam.pvalue.AsDict(
            items | "KeyItems" >> beam.Map(lambda i: (i[features.ITEM_ID], i)))
    ).with_outputs(_UNKNOWN_ITEM, main="examples")
    labelled = joined.examples
    cutoff = (labelled
              | "Timestamps" >> beam.Map(lambda e: e[features.TIMESTAMP])
              | "Cutoff" >> beam.CombineGlobally(_CutoffFn(eval_fraction)))
    by_split = labelled | "SplitByTime" >> beam.ParDo(
        _SplitByTime(), as_single(cutoff)).with_outputs(
            features.TRAIN_SPLIT, features.EVAL_SPLIT)
    outputs = {features.TRAIN_SPLIT: by_split[features.TRAIN_SPLIT],
               features.EVAL_SPLIT: by_split[features.EVAL_SPLIT],
               features.CATALOG_SPLIT: items | "Catalog" >> beam.Map(examples.catalog_example)}
    for split, collection in outputs.items():
        _ = (collection
             | f"Serialize[{split}]" >> beam.Map(_serialize)
             | f"Write[{split}]" >> beam.io.WriteToTFRecord(
                 os.path.join(split_uri(examples_uri, split), FILE_PREFIX),
                 file_name_suffix=".gz"))

    split_counts = [
        outputs[split]
        | f"Labels[{split}]" >> beam.Map(lambda e, s=split: (s, _label_counts(e)))
        for split in (features.TRAIN_SPLIT, features.EVAL_SPLIT)]
    count = beam.combiners.Count.Globally
    _ = (pipeline
         | "SummarySeed" >> beam.Create([None])
         | "Summary" >> beam.Map(
             _summary,
             cutoff=as_single(cutoff),
             split_counts=as_single(
                 split_counts | "AllLabels" >> beam.Flatten()
                 | "SumLabels" >> beam.CombinePerKey(_SumColumns(1 + len(_RATE_LABELS)))
                 | "LabelList" >> beam.combiners.ToList()),
             catalog_count=as_single(outputs[features.CATALOG_SPLIT] | "CountCatalog" >> count()),
             unknown_count=as_single(joined[_UNKNOWN_ITEM] | "CountUnknown" >> count()),
             unknown_sample=as_single(
                 joined[_UNKNOWN_ITEM] | "DistinctUnknown" >> beam.Distinct()
                 | "SampleUnknown" >> beam.combiners.Sample.FixedSizeGlobally(20)),
             dropped_events=as_single(
                 events | "NoUser" >> beam.Filter(lambda e: not e["user_id"])
                 | "CountNoUser" >> count()),
             read_events=as_single(events | "CountEvents" >> count()))
         | "WriteSummary" >> beam.io.WriteToText(
             summary_path, num_shards=1, shard_name_template=""))


def read_summary(summary_path: str) -> dict:
    """The counts the pipeline wrote (see _summary)."""
    with FileSystems.open(summary_path) as f:
        return json.loads(f.read().decode("utf-8"))
