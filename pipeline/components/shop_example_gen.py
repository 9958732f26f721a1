"""ShopExampleGen: a TFX component turning a shop folder into train / eval / catalog examples.

The executor reads and validates the export with Beam I/O (pipeline/contract/beam_read.py:
the data contract per chunk of rows, policy `on_bad_rows`, local or gs:// / s3:// folders,
sharded `events-*.csv` tables; a contract failure stops the run with the DataContractError
message), which writes the canonical events and items as Parquet to the executor's
temporary dir, then runs the Beam pipeline of pipeline/components/example_beam.py on them;
both on the pipeline's own `beam_pipeline_args` (in_memory, multi_processing, Flink,
Dataflow ...). Example rules: pipeline/examples.py.

Outputs
    examples: standard Examples, splits "train", ["rank",] "eval", "catalog" as
        ``Split-<name>/data_tfrecord-*.gz`` (gzipped TFRecords of tf.train.Example), with
        split_names, payload_format FORMAT_TF_EXAMPLE and file_format tfrecords_gzip set, so
        StatisticsGen, Transform and Evaluator read it like ExampleGen output.
    report: ShopDataReport holding summary.json (rows read/kept/quarantined per table, units
        per split and label rates, cutoff timestamp) and, under policy "quarantine",
        quarantine.jsonl and quarantine_summary.json.

This component has no inputs, so with pipeline caching on it is reused even when the files
in data_dir change; run with enable_cache=False (the project default) when data changes.
"""
import datetime as dt
import json
import os
import time
from typing import Any, Dict, List

from absl import logging
from apache_beam.io.filesystems import FileSystems
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from pipeline import examples
from pipeline.components import example_beam
from pipeline.contract import beam_read
from trainer import features

POLICIES = ("fail", "quarantine")
SUMMARY_FILE = "summary.json"
DATA_DIR, ON_BAD_ROWS = "data_dir", "on_bad_rows"
PSEUDONYM_KEY_FILE, ERASURES_FROM = "pseudonym_key_file", "erasures_from"
ERASURE_KEY_FILE = "erasure_key_file"
EVAL_FRACTION, SESSION_GAP_MINUTES = "eval_fraction", "session_gap_minutes"
RANK_FRACTION = "rank_fraction"
EVAL_FROM, RANK_FROM = "eval_from", "rank_from"
HISTORY_LENGTH = "history_length"
EXAMPLES, REPORT = "examples", "report"


class ShopDataReport(types.Artifact):
    """Data contract and example-generation report of one run (summary.json, quarantine)."""

    # "<namespace>.<Name>": the form KFP v2 requires of custom artifact type names.
    TYPE_NAME = "shoprec.ShopDataReport"


def check_parameters(data_dir: Any, on_bad_rows: Any, eval_fraction: Any,
                     session_gap_minutes: Any, rank_fraction: Any = 0.0,
                     eval_from: Any = "", rank_from: Any = "",
                     history_length: Any = features.HISTORY_LENGTH) -> None:
    """Raise ValueError naming the parameter when one is unusable."""
    features.check_history_length(history_length, HISTORY_LENGTH)
    if not isinstance(data_dir, str) or not data_dir:
        raise ValueError(f"{DATA_DIR} must be a non-empty path, got {data_dir!r}")
    if on_bad_rows not in POLICIES:
        raise ValueError(f"{ON_BAD_ROWS} must be one of {', '.join(POLICIES)}, "
                         f"got {on_bad_rows!r}")
    examples.check_eval_fraction(eval_fraction)
    examples.check_rank_fraction(rank_fraction, eval_fraction)
    examples.check_split_times(eval_from, rank_from)
    if isinstance(session_gap_minutes, bool) or not isinstance(session_gap_minutes, int) \
            or session_gap_minutes < 1:
        raise ValueError(f"{SESSION_GAP_MINUTES} must be an int >= 1, "
                         f"got {session_gap_minutes!r}")


def _write_json(uri: str, payload: dict) -> None:
    with FileSystems.create(uri) as out:
        out.write((json.dumps(payload, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _write_quarantine(report, report_uri: str) -> None:
    """quarantine.jsonl and quarantine_summary.json into report_uri (local or remote)."""
    with FileSystems.create(os.path.join(report_uri, "quarantine.jsonl")) as out:
        for row in report.quarantined:
            out.write((row.to_json() + "\n").encode("utf-8"))
    _write_json(os.path.join(report_uri, "quarantine_summary.json"), report.summary())


def generate_shop_examples(make_pipeline, data_dir: str, on_bad_rows: str,
                           eval_fraction: float, session_gap_minutes: int, examples_uri: str,
                           report_uri: str, work_dir: str, pseudonym_key_file: str = "",
                           erasures_from: str = "", erasure_key_file: str = "",
                           rank_fraction: float = 0.0, eval_from: str = "",
                           rank_from: str = "",
                           history_length: int = features.HISTORY_LENGTH,
                           chunk_rows: int = beam_read.CHUNK_ROWS) -> dict:
    """Validate the shop, run the Beam example pipeline, write and return the summary.

    Two Beam pipelines from ``make_pipeline()`` (a fresh beam.Pipeline each call, e.g. the
    executor's ``_make_beam_pipeline``): the data contract applied while reading the export
    (pipeline/contract/beam_read.py: any Beam filesystem, sharded tables, ``chunk_rows``
    records validated together), then example generation on the canonical rows it kept.
    A contract failure raises DataContractError before examples are built.

    ``pseudonym_key_file``: user ids become keyed pseudonyms before anything is written
    ("" = raw ids; docs/privacy.md). ``erasures_from``: an event store URL whose erasure list
    (users erased through the API) removes those users' events up to their erasure; the
    store's user ids must be in the same form (the API pseudonymises with the same key);
    ``erasure_key_file``: the erasure key the API was configured with ("" = the store's).
    ``eval_from`` / ``rank_from``: fixed split times (ISO-8601) instead of the fractions
    (pipeline/examples.py, "Time split"). ``history_length``: entries of every example's
    ``history_item_ids`` (pipeline/examples.py, "History")."""
    check_parameters(data_dir, on_bad_rows, eval_fraction, session_gap_minutes,
                     rank_fraction, eval_from, rank_from, history_length)
    began = time.perf_counter()
    privacy = {"user_ids": "raw (no pseudonym_key_file)", "erased_events_removed": 0}
    if pseudonym_key_file:     # read here first: a bad key file fails before any work
        from pipeline.contract.pseudonym import Pseudonyms
        privacy["user_ids"] = (f"pseudonymised (key id "
                               f"{Pseudonyms.from_file(pseudonym_key_file).key_id})")
    if erasures_from:
        from serving.events.erasure import read_erasures, read_key_file
        read_erasures(erasures_from, read_key_file(erasure_key_file))   # key checked here
    files = beam_read.find_shop_files(data_dir)
    canonical_dir = os.path.join(work_dir, "canonical")
    with make_pipeline() as p:
        beam_read.add_validation(p, files, on_bad_rows, canonical_dir, pseudonym_key_file,
                                 erasures_from, erasure_key_file, chunk_rows)
    report, extra = beam_read.read_report(files, on_bad_rows, canonical_dir, data_dir)
    if on_bad_rows == "quarantine":          # written even if nothing usable is left
        _write_quarantine(report, report_uri)
    privacy["erased_events_removed"] = extra["erased_events"]
    if extra["erased_events"]:
        logging.info("ShopExampleGen: %d events of erased users removed",
                     extra["erased_events"])
    table_report, catalog_size = report.summary(), extra["items_kept"]
    events_path, items_path = beam_read.canonical_patterns(canonical_dir)
    counts_path = os.path.join(work_dir, "example_counts.json")
    loaded = time.perf_counter()
    with make_pipeline() as p:
        example_beam.build_pipeline(p, events_path, items_path, examples_uri, counts_path,
                                    eval_fraction, session_gap_minutes, rank_fraction,
                                    eval_from, rank_from, history_length)
    logging.info("ShopExampleGen: read + validate (Beam) %.1f s, examples (Beam) %.1f s",
                 loaded - began, time.perf_counter() - loaded)
    summary = {DATA_DIR: data_dir, EVAL_FRACTION: eval_fraction, RANK_FRACTION: rank_fraction,
               EVAL_FROM: eval_from or None, RANK_FROM: rank_from or None,
               SESSION_GAP_MINUTES: session_gap_minutes, HISTORY_LENGTH: history_length,
               "privacy": privacy, **table_report,
               **example_beam.read_summary(counts_path, extra["events_written"])}
    summary["splits"][features.CATALOG_SPLIT] = {"examples": catalog_size}
    for key in ("cutoff", "rank_cutoff"):
        cutoff = summary[f"{key}_timestamp"]
        summary[f"{key}_utc"] = None if cutoff is None else dt.datetime.fromtimestamp(
            cutoff, dt.timezone.utc).isoformat()
    _write_json(os.path.join(report_uri, SUMMARY_FILE), summary)
    splits = summary["splits"]
    if not splits[features.TRAIN_SPLIT]["examples"]:
        units = sum(s["examples"] for name, s in splits.items()
                    if name != features.CATALOG_SPLIT)
        first = summary["rank_cutoff_utc"] or summary["cutoff_utc"]
        raise ValueError(
            f"the train split is empty: all {units} impression units are at or after "
            f"{first} (eval_fraction={eval_fraction}, rank_fraction={rank_fraction}, "
            f"eval_from={eval_from!r}, rank_from={rank_from!r}); the "
            f"shop needs "
            f"view/click/cart/purchase/rating events at more distinct times "
            f"(report: {os.path.join(report_uri, SUMMARY_FILE)})")
    return summary


class Executor(base_beam_executor.BaseBeamExecutor):
    """Runs generate_shop_examples on the pipeline's Beam settings; sets artifact properties."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        examples_artifact = artifact_utils.get_single_instance(output_dict[EXAMPLES])
        report = artifact_utils.get_single_instance(output_dict[REPORT])
        work_dir = os.path.join(self._get_tmp_dir(), "shop")
        rank_fraction = float(exec_properties.get(RANK_FRACTION) or 0.0)
        eval_from = exec_properties.get(EVAL_FROM) or ""
        rank_from = exec_properties.get(RANK_FROM) or ""
        with_rank = examples.has_rank_split(rank_fraction, eval_from, rank_from)
        summary = generate_shop_examples(
            self._make_beam_pipeline, exec_properties[DATA_DIR],
            exec_properties[ON_BAD_ROWS], float(exec_properties[EVAL_FRACTION]),
            int(exec_properties[SESSION_GAP_MINUTES]), examples_artifact.uri, report.uri,
            work_dir, exec_properties.get(PSEUDONYM_KEY_FILE) or "",
            exec_properties.get(ERASURES_FROM) or "",
            exec_properties.get(ERASURE_KEY_FILE) or "", rank_fraction, eval_from, rank_from,
            int(exec_properties.get(HISTORY_LENGTH) or features.HISTORY_LENGTH))
        examples_artifact.split_names = artifact_utils.encode_split_names(
            list(example_beam.splits(with_rank)))
        examples_utils.set_payload_format(examples_artifact,
                                          example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples_artifact, "tfrecords_gzip")
        for split in example_beam.splits(with_rank):
            report.set_int_custom_property(f"{split}_examples",
                                           summary["splits"][split]["examples"])
        report.set_int_custom_property("cutoff_timestamp", summary["cutoff_timestamp"])
        if summary["rank_cutoff_timestamp"] is not None:
            report.set_int_custom_property("rank_cutoff_timestamp",
                                           summary["rank_cutoff_timestamp"])
        report.set_int_custom_property("rows_quarantined", sum(
            t["rows_quarantined"] for t in summary["tables"].values()))


class ShopExampleGenSpec(types.ComponentSpec):
    """Parameters and outputs of ShopExampleGen."""

    PARAMETERS = {
        DATA_DIR: ExecutionParameter(type=str),
        ON_BAD_ROWS: ExecutionParameter(type=str),
        EVAL_FRACTION: ExecutionParameter(type=float),
        SESSION_GAP_MINUTES: ExecutionParameter(type=int),
        RANK_FRACTION: ExecutionParameter(type=float, optional=True),
        EVAL_FROM: ExecutionParameter(type=str, optional=True),
        RANK_FROM: ExecutionParameter(type=str, optional=True),
        # A path, never the key itself (exec properties are recorded in ML Metadata).
        PSEUDONYM_KEY_FILE: ExecutionParameter(type=str, optional=True),
        ERASURES_FROM: ExecutionParameter(type=str, optional=True),
        ERASURE_KEY_FILE: ExecutionParameter(type=str, optional=True),
        HISTORY_LENGTH: ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {}
    OUTPUTS = {
        EXAMPLES: ChannelParameter(type=standard_artifacts.Examples),
        REPORT: ChannelParameter(type=ShopDataReport),
    }


class ShopExampleGen(base_beam_component.BaseBeamComponent):
    """Shop folder (data contract) -> Examples (train / eval / catalog) + ShopDataReport."""

    SPEC_CLASS = ShopExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, data_dir: str, on_bad_rows: str = "fail", eval_fraction: float = 0.1,
                 session_gap_minutes: int = 30, pseudonym_key_file: str = "",
                 erasures_from: str = "", erasure_key_file: str = "",
                 rank_fraction: float = 0.0, eval_from: str = "", rank_from: str = "",
                 history_length: int = features.HISTORY_LENGTH):
        """data_dir: shop folder (items, events, optional users; see docs/data.md);
        pseudonym_key_file, erasures_from, erasure_key_file, rank_fraction, eval_from,
        rank_from, history_length: see generate_shop_examples."""
        check_parameters(data_dir, on_bad_rows, eval_fraction, session_gap_minutes,
                         rank_fraction, eval_from, rank_from, history_length)
        super().__init__(spec=ShopExampleGenSpec(
            data_dir=data_dir, on_bad_rows=on_bad_rows, eval_fraction=float(eval_fraction),
            session_gap_minutes=session_gap_minutes, rank_fraction=float(rank_fraction),
            eval_from=eval_from or None, rank_from=rank_from or None,
            pseudonym_key_file=pseudonym_key_file or None, erasures_from=erasures_from or None,
            erasure_key_file=erasure_key_file or None, history_length=history_length,
            examples=types.Channel(type=standard_artifacts.Examples),
            report=types.Channel(type=ShopDataReport)))
