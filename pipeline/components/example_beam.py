"""The Beam pipeline that turns canonical shop tables into train / eval / catalog examples.

Reads the canonical events and items (Parquet written by `write_canonical_tables`), groups
events by user, builds impression units (rules in pipeline/examples.py), joins item features
(items as a side input), splits by the time cutoff and writes gzipped TFRecords of
tf.train.Examples laid out like TFX's ExampleGen: ``<uri>/Split-<name>/data_tfrecord-*.gz``.
The cutoff and the per-split counts for the report are written by the pipeline itself
(``summary_path``, one JSON line), so they work on every runner. Events cross the shuffle as
tuples and examples are serialized right after they are built: dicts are costly to encode.
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
OPTIONAL_ITEM_COLUMNS = {examples.CREATED_AT: 0}   # missing -> this value (0 = unknown)
FILE_PREFIX = "data_tfrecord"
def splits(rank_fraction: float = 0.0) -> tuple:
    """The splits written: the units' (train, [rank,] eval) and the catalog (rank when
    ``rank_fraction`` is truthy, e.g. ``examples.has_rank_split``)."""
    return examples.unit_splits(rank_fraction) + (features.CATALOG_SPLIT,)
_EVENT_FIELDS = ("item_id", "event_type", "value", "query", "session_id", "timestamp", "seq")
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


def check_canonical_tables(events, items) -> None:
    """Raise ValueError unless events and items have the columns and references we rely on.

    load_shop guarantees both; the checks keep the Beam pipeline free of per-row guards.
    """
    for name, frame, columns in (("events", events, EVENT_COLUMNS),
                                 ("items", items, ITEM_COLUMNS)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"canonical {name} table lacks columns {missing}; "
                             f"it has {list(frame.columns)}")
    if (events["user_id"] == "").any():
        rows = list(events.index[events["user_id"] == ""][:5])
        raise ValueError(f"canonical events have an empty user_id (rows {rows})")
    item_side = events["event_type"] != examples.SEARCH
    unknown = item_side & ~events["item_id"].isin(items["item_id"])
    if unknown.any():
        sample = sorted(set(events.loc[unknown, "item_id"]))[:5]
        raise ValueError(f"{int(unknown.sum())} canonical events refer to items missing from "
                         f"the items table, e.g. {sample}")
    if items["item_id"].duplicated().any():
        sample = sorted(set(items.loc[items["item_id"].duplicated(), "item_id"]))[:5]
        raise ValueError(f"canonical items have duplicate item_id values, e.g. {sample}")


def write_canonical_tables(events, items, work_dir: str):
    """Check, then write the canonical events (plus `seq`, their row order) and items as Parquet.

    Returns (events_path, items_path). Works for local and remote (gs://, s3://) dirs.
    """
    check_canonical_tables(events, items)
    events = events.loc[:, list(EVENT_COLUMNS)].reset_index(drop=True)
    events["seq"] = range(len(events))
    events = events.astype({"value": "float64", "timestamp": "int64", "seq": "int64"})
    for column, default in OPTIONAL_ITEM_COLUMNS.items():
        if column not in items.columns:
            items = items.assign(**{column: default})
    items = items.loc[:, list(ITEM_COLUMNS) + list(OPTIONAL_ITEM_COLUMNS)].reset_index(drop=True)
    items[examples.CREATED_AT] = items[examples.CREATED_AT].fillna(0)
    items = items.astype({"price": "float64", "in_stock": "bool",
                          examples.CREATED_AT: "int64"})
    if not FileSystems.exists(work_dir):
        FileSystems.mkdirs(work_dir)
    events_path = os.path.join(work_dir, "events.parquet")
    items_path = os.path.join(work_dir, "items.parquet")
    _write_parquet(events, events_path)
    _write_parquet(items, items_path)
    return events_path, items_path


class _CutoffFn(beam.CombineFn):
    """(eval cutoff, rank cutoff): exact quantiles of unit timestamps via a timestamp
    histogram (examples.cutoffs_from_counts)."""

    def __init__(self, eval_fraction: float, rank_fraction: float = 0.0):
        self._rank_fraction = examples.check_rank_fraction(rank_fraction, eval_fraction)
        self._eval_fraction = eval_fraction

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
        return examples.cutoffs_from_counts(counts, self._eval_fraction, self._rank_fraction)


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


def _event_tuple(event):
    """(user_id, compact event): tuples cross the shuffle much cheaper than dicts."""
    return event["user_id"], tuple(event[c] for c in _EVENT_FIELDS)


def _user_examples(user_id, event_tuples, items=None, gap_seconds=None,
                   history_length=features.HISTORY_LENGTH):
    """Serialized examples of one user as (timestamp, label counts, bytes)."""
    events = [dict(zip(_EVENT_FIELDS, values)) for values in event_tuples]
    for unit in examples.build_units(user_id, events, gap_seconds, history_length):
        example = examples.join_item(unit, items[unit[features.ITEM_ID]])
        labels = (1,) + tuple(int(example[key]) for key in _RATE_LABELS)
        yield (example[features.TIMESTAMP], labels,
               examples.to_tf_example(example, history_length).SerializeToString())


class _SplitByTime(beam.DoFn):
    def process(self, row, cutoffs):
        yield beam.pvalue.TaggedOutput(examples.split_of(row[0], *cutoffs), row)


def _summary(_, cutoffs, split_counts, unit_splits, tallies=()):
    splits = {}
    for split in unit_splits:
        counts = dict(split_counts).get(split) or (0,) * (1 + len(_RATE_LABELS))
        n = counts[0]
        splits[split] = {"examples": n}
        splits[split].update({f"{key}_rate": (counts[i + 1] / n if n else 0.0)
                              for i, key in enumerate(_RATE_LABELS)})
    return json.dumps({"cutoff_timestamp": cutoffs[0], "rank_cutoff_timestamp": cutoffs[1],
                       "splits": splits, "tallies": dict(tallies)}, sort_keys=True)


def _direct_multi_processing(pipeline: beam.Pipeline) -> bool:
    from apache_beam.options.pipeline_options import DirectOptions

    options = pipeline.options.view_as(DirectOptions)
    return options.direct_running_mode == "multi_processing"


def build_pipeline(pipeline: beam.Pipeline, events_path: str, items_path: str,
                   examples_uri: str, summary_path: str, eval_fraction: float,
                   session_gap_minutes: int, rank_fraction: float = 0.0,
                   eval_from: str = "", rank_from: str = "",
                   history_length: int = features.HISTORY_LENGTH) -> None:
    """Add the example-generation steps to `pipeline` (run it afterwards).

    Inputs are the Parquet files of write_canonical_tables. The summary (cutoffs, examples
    and label rates of train, [rank,] and eval) is written to summary_path as one JSON line.
    ``eval_from`` / ``rank_from``: fixed split times instead of the fractions' quantiles
    (examples.check_split_times). ``history_length``: entries of every example's history
    (PipelineConfig.history_length).
    """
    examples.check_rank_fraction(rank_fraction, eval_fraction)
    features.check_history_length(history_length)
    fixed = examples.check_split_times(eval_from, rank_from)
    unit_splits = examples.unit_splits(
        examples.has_rank_split(rank_fraction, eval_from, rank_from))
    if isinstance(session_gap_minutes, bool) or not isinstance(session_gap_minutes, int) \
            or session_gap_minutes < 1:
        raise ValueError(f"session_gap_minutes must be an int >= 1, got {session_gap_minutes!r}")
    gap_seconds = 60 * session_gap_minutes
    as_single = beam.pvalue.AsSingleton

    items = (pipeline
             | "ReadItems" >> beam.io.ReadFromParquet(items_path)
             | "ItemFeatures" >> beam.Map(examples.item_features))
    events = pipeline | "ReadEvents" >> beam.io.ReadFromParquet(events_path)
    by_user = events | "KeyByUser" >> beam.Map(_event_tuple) | "GroupByUser" >> beam.GroupByKey()
    rows = (by_user
            | "UserExamples" >> beam.FlatMapTuple(
                _user_examples,
                items=beam.pvalue.AsDict(
                    items | "KeyItems" >> beam.Map(lambda i: (i[features.ITEM_ID], i))),
                gap_seconds=gap_seconds, history_length=history_length))
    if _direct_multi_processing(pipeline):
        # Materialise the units before the split: without this break, Beam 2.72's
        # DirectRunner in multi_processing mode lost up to 3 % of the split's outputs at
        # random (1.1M events; docs/DESIGN.md "Pipeline data at scale"). Costs a shuffle
        # of every example, so only there; the tallies below catch a loss on any runner.
        rows = rows | "MaterialiseUnits" >> beam.Reshuffle()
    tallies = [
        events | "CountEvents" >> beam.combiners.Count.Globally()
        | "TallyEvents" >> beam.Map(lambda n: ("events_read", n)),
        by_user | "GroupSizes" >> beam.MapTuple(lambda _, group: sum(1 for _ in group))
        | "SumGrouped" >> beam.CombineGlobally(sum)
        | "TallyGrouped" >> beam.Map(lambda n: ("events_grouped", n)),
        rows | "CountUnits" >> beam.combiners.Count.Globally()
        | "TallyUnits" >> beam.Map(lambda n: ("units", n))]
    if fixed[0] is not None:
        cutoffs = pipeline | "FixedCutoffs" >> beam.Create([fixed])
    else:
        cutoffs = (rows
                   | "Timestamps" >> beam.Map(lambda row: row[0])
                   | "Cutoff" >> beam.CombineGlobally(_CutoffFn(eval_fraction, rank_fraction)))
    by_split = rows | "SplitByTime" >> beam.ParDo(
        _SplitByTime(), as_single(cutoffs)).with_outputs(*unit_splits)
    serialized = {
        features.CATALOG_SPLIT: items | "Catalog" >> beam.Map(
            lambda i: examples.to_tf_example(examples.catalog_example(i, history_length),
                                             history_length).SerializeToString())}
    label_counts = []
    for split in unit_splits:
        serialized[split] = by_split[split] | f"Bytes[{split}]" >> beam.Map(lambda r: r[2])
        label_counts.append(by_split[split] | f"Labels[{split}]" >> beam.Map(
            lambda r, s=split: (s, r[1])))
    for split, records in serialized.items():
        _ = records | f"Write[{split}]" >> beam.io.WriteToTFRecord(
            os.path.join(split_uri(examples_uri, split), FILE_PREFIX), file_name_suffix=".gz")

    _ = (pipeline
         | "SummarySeed" >> beam.Create([None])
         | "Summary" >> beam.Map(
             _summary,
             cutoffs=as_single(cutoffs), unit_splits=unit_splits,
             tallies=beam.pvalue.AsList(tallies | "AllTallies" >> beam.Flatten()),
             split_counts=as_single(
                 label_counts | "AllLabels" >> beam.Flatten()
                 | "SumLabels" >> beam.CombinePerKey(_SumColumns(1 + len(_RATE_LABELS)))
                 | "LabelList" >> beam.combiners.ToList()))
         | "WriteSummary" >> beam.io.WriteToText(
             summary_path, num_shards=1, shard_name_template=""))


def read_summary(summary_path: str, events_expected: int | None = None) -> dict:
    """The counts the pipeline wrote (see _summary), checked: every event read is grouped,
    every unit built lands in a split (and, with ``events_expected``, that many events were
    read). Raises RuntimeError naming the step when a runner lost data."""
    with FileSystems.open(summary_path) as f:
        summary = json.loads(f.read().decode("utf-8"))
    tallies = summary.get("tallies", {})
    written = sum(s["examples"] for s in summary["splits"].values())
    checks = [("events read", events_expected, tallies.get("events_read")),
              ("events grouped by user", tallies.get("events_read"),
               tallies.get("events_grouped")),
              ("units written to the splits", tallies.get("units"), written)]
    for what, expected, got in checks:
        if expected is not None and got != expected:
            raise RuntimeError(
                f"the Beam runner lost data: {what}: {got} of {expected}; the examples are "
                f"incomplete (known with the DirectRunner's multi_processing mode, "
                f"docs/DESIGN.md \"Pipeline data at scale\"; run with beam_mode in_memory)")
    return summary
