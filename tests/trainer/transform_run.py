"""Runs trainer.preprocessing.preprocessing_fn with tf.Transform on Beam, laid out like the
TFX Transform component's outputs (transform graph dir + Split-*/ transformed examples)."""
import os
import tempfile
from typing import Dict, Sequence

import apache_beam as beam
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
from tfx_bsl.public import tfxio

from trainer import features as F
from trainer.preprocessing import preprocessing_fn


def run_transform(raw_root: str, out_root: str, raw_spec: Dict,
                  splits: Sequence[str] = (F.TRAIN_SPLIT, F.EVAL_SPLIT, F.CATALOG_SPLIT)):
    """Analyzes `raw_root/Split-train`, transforms every split into
    `out_root/transformed/Split-<split>/`; the graph goes to `out_root/transform_graph`.
    Returns (transform_graph_dir, transformed_examples_dir)."""
    graph_dir = os.path.join(out_root, "transform_graph")
    examples_dir = os.path.join(out_root, "transformed")
    schema = schema_utils.schema_from_feature_spec(raw_spec)
    sources = {split: tfxio.TFExampleRecord(
        file_pattern=os.path.join(raw_root, f"Split-{split}", "*"), schema=schema)
        for split in splits}
    options = beam.options.pipeline_options.PipelineOptions(
        ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    with beam.Pipeline(options=options) as pipeline, tft_beam.Context(
            temp_dir=tempfile.mkdtemp(dir=out_root), force_tf_compat_v1=False):
        train = sources[F.TRAIN_SPLIT]
        transform_fn = ((pipeline | "ReadAnalyze" >> train.BeamSource(),
                         train.TensorAdapterConfig())
                        | tft_beam.AnalyzeDataset(preprocessing_fn))
        _ = transform_fn | tft_beam.WriteTransformFn(graph_dir)
        for split, source in sources.items():
            data = pipeline | f"Read{split}" >> source.BeamSource()
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
