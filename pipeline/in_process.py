"""A shop folder -> the pipeline's raw examples and their tf.Transform output, without TFX.

Units follow the pipeline's rules through the same functions ShopExampleGen's Beam pipeline
applies (pipeline/examples.py); Transform runs trainer.preprocessing with tf.Transform on
Beam (in memory). The layout matches the TFX components' outputs, so trainer run_fns read it:

    <out>/raw/Split-{train,eval,catalog}/*.gz          (ShopExampleGen)
    <out>/transform_graph/                             (Transform: transform_graph)
    <out>/transformed/Split-{train,eval,catalog}/*.gz  (Transform: transformed_examples)
"""
import collections
import functools
import json
import os
import tempfile
import types
from typing import Dict, Iterable, Mapping, Sequence

from pipeline import examples
from trainer import features as F
from trainer.features import raw_feature_spec

SPLITS = (F.TRAIN_SPLIT, F.EVAL_SPLIT, F.CATALOG_SPLIT)


def write_examples(shop_dir: str, raw_dir: str, extra_items: Iterable[Mapping] = (),
                   eval_fraction: float = 0.1, session_gap_minutes: int = 30,
                   history_length: int = F.HISTORY_LENGTH) -> Dict:
    """Validates the shop, builds its units and writes the three raw splits under `raw_dir`.
    `extra_items` (rows of the items table) join the catalog without events: cold items.
    `history_length`: PipelineConfig.history_length. Returns {split: [example dicts]} and
    "items": {item_id: item features}."""
    from pipeline.contract.load import load_shop  # pylint: disable=import-outside-toplevel
    shop = load_shop(shop_dir)
    items = {row["item_id"]: examples.item_features(row)
             for row in shop.items.to_dict("records") + list(extra_items)}
    by_user = collections.defaultdict(list)
    for seq, event in enumerate(shop.events.reset_index(drop=True).to_dict("records")):
        event["seq"] = seq
        by_user[event["user_id"]].append(event)
    rows = [examples.join_item(unit, items[unit[F.ITEM_ID]])
            for user_id, user_events in sorted(by_user.items())
            for unit in examples.build_units(user_id, user_events, 60 * session_gap_minutes,
                                             history_length)]
    cutoff = examples.eval_cutoff([row[F.TIMESTAMP] for row in rows], eval_fraction)
    splits = {F.TRAIN_SPLIT: [], F.EVAL_SPLIT: []}
    for row in rows:
        splits[examples.split_of(row[F.TIMESTAMP], cutoff)].append(row)
    splits[F.CATALOG_SPLIT] = [examples.catalog_example(item, history_length)
                               for item in items.values()]
    write_splits(raw_dir, splits, history_length)
    splits["items"] = items
    return splits


def write_splits(raw_dir: str, splits: Mapping[str, Sequence[Mapping]],
                 history_length: int = F.HISTORY_LENGTH) -> Dict[str, int]:
    """{split: [example dicts]} -> `raw_dir/Split-<split>/data_tfrecord-00000.gz` (gzipped
    examples.to_tf_example records, ShopExampleGen's layout; histories of `history_length`
    entries); returns the example counts."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for split, rows in splits.items():
        directory = os.path.join(raw_dir, f"Split-{split}")
        os.makedirs(directory, exist_ok=True)
        with tf.io.TFRecordWriter(os.path.join(directory, "data_tfrecord-00000.gz"),
                                  options) as writer:
            for row in rows:
                writer.write(examples.to_tf_example(row, history_length).SerializeToString())
    return {split: len(rows) for split, rows in splits.items()}


BEAM_BATCH_SIZE = 1000      # records per Arrow batch in `transform` (fixed: reproducible sums)


def transform(raw_dir: str, out_dir: str, raw_spec=None, splits=SPLITS,
              history_length: int = F.HISTORY_LENGTH):
    """Runs trainer.preprocessing_fn with tf.Transform on Beam, laid out like the TFX
    Transform component's outputs: analyses `raw_dir/Split-train`, writes the graph to
    `out_dir/transform_graph` and each of `splits` to `out_dir/transformed/Split-<split>/`.
    `raw_spec`: the raw feature spec (default: the pipeline's raw examples with histories of
    `history_length`); preprocessing_fn gets the spec's history width as its custom_config,
    as the pipeline's Transform does. Returns (transform_graph_dir, transformed_examples_dir)."""
    # pylint: disable=import-outside-toplevel
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
    from tfx_bsl.public import tfxio
    from trainer.preprocessing import preprocessing_fn

    graph_dir = os.path.join(out_dir, "transform_graph")
    examples_dir = os.path.join(out_dir, "transformed")
    raw_spec = raw_spec or raw_feature_spec(history_length)
    schema = schema_utils.schema_from_feature_spec(raw_spec)
    preprocess = functools.partial(
        preprocessing_fn, custom_config={"history_length": F.history_length_of(raw_spec)})
    sources = {split: tfxio.TFExampleRecord(
        file_pattern=os.path.join(raw_dir, f"Split-{split}", "*"), schema=schema)
        for split in splits}
    options = beam.options.pipeline_options.PipelineOptions(
        ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    # Fixed batch sizes: Beam's BatchElements otherwise tunes them from timings, the
    # analysers' float sums (the price z-score's mean and variance) change with the batch
    # boundaries, and two runs differed in the last bits of some price_z values.
    with beam.Pipeline(options=options) as pipeline, tft_beam.Context(
            temp_dir=tempfile.mkdtemp(dir=out_dir), force_tf_compat_v1=False,
            desired_batch_size=BEAM_BATCH_SIZE):
        train = sources[F.TRAIN_SPLIT]
        transform_fn = ((pipeline | "ReadAnalyze" >> train.BeamSource(BEAM_BATCH_SIZE),
                         train.TensorAdapterConfig())
                        | tft_beam.AnalyzeDataset(preprocess))
        _ = transform_fn | tft_beam.WriteTransformFn(graph_dir)
        for split, source in sources.items():
            data = pipeline | f"Read{split}" >> source.BeamSource(BEAM_BATCH_SIZE)
            transformed = (((data, source.TensorAdapterConfig()), transform_fn)
                           | f"Transform{split}" >> tft_beam.TransformDataset(
                               output_record_batches=True))
            _ = (transformed
                 | f"Encode{split}" >> tft_beam.EncodeTransformedDataset()
                 | f"Write{split}" >> beam.io.WriteToTFRecord(
                     os.path.join(examples_dir, f"Split-{split}", "transformed_examples"),
                     file_name_suffix=".gz"))
    metadata_io.write_metadata(dataset_metadata.DatasetMetadata(schema),
                               os.path.join(graph_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    return graph_dir, examples_dir


def sample_shop_examples(work_dir: str, seed: int, scale: float):
    """The sample shop (``generate_shop(seed, scale)``), its raw examples and their Transform
    output under ``work_dir`` (``shop/``, ``raw/``, ``t/``), each step skipped when its
    output is there; returns (raw dir, transform out dir)."""
    # pylint: disable-next=import-outside-toplevel
    from pipeline.sample_shop.generate import generate_shop
    shop, raw, tdir = (os.path.join(work_dir, d) for d in ("shop", "raw", "t"))
    if not os.path.exists(os.path.join(shop, "manifest.json")):
        generate_shop(shop, seed=seed, scale=scale)
    if not os.path.isdir(os.path.join(raw, "Split-catalog")):
        write_examples(shop, raw)
    if not os.path.isdir(os.path.join(tdir, "transform_graph")):
        os.makedirs(tdir, exist_ok=True)
        transform(raw, tdir)
    return raw, tdir


def trainer_fn_args(examples_dir, transform_graph, out_dir, custom_config, train_steps=None):
    """The TFX FnArgs the Trainer component builds for our run_fns, over transformed
    `examples_dir/Split-*` and a Transform graph; outputs go under `out_dir`."""
    # pylint: disable-next=import-outside-toplevel
    from tfx.components.trainer.fn_args_utils import FnArgs
    split = lambda name: [os.path.join(examples_dir, f"Split-{name}", "*")]
    return FnArgs(
        working_dir=out_dir, train_files=split(F.TRAIN_SPLIT), eval_files=split(F.EVAL_SPLIT),
        train_steps=train_steps, eval_steps=None, transform_graph_path=transform_graph,
        transform_output=transform_graph,
        serving_model_dir=os.path.join(out_dir, "serving_model_dir"),
        model_run_dir=os.path.join(out_dir, "model_run"), custom_config=custom_config)


def run_trainer(run_fn, args):
    """Calls `run_fn(args)`; returns args, the written metrics.json and the export dir."""
    run_fn(args)
    with open(os.path.join(args.model_run_dir, "metrics.json"), encoding="utf-8") as f:
        metrics = json.load(f)
    return types.SimpleNamespace(args=args, metrics=metrics, export=args.serving_model_dir)
