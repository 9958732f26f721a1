"""Helpers of the trainer end-to-end tests: TFX FnArgs for our run_fns, raw examples."""
import os

from pipeline.in_process import run_trainer as run
from pipeline.in_process import trainer_fn_args
from trainer import features as F

__all__ = ["fn_args", "run", "raw_examples"]


def fn_args(shop, out_dir, custom_config, train_steps=None):
    """A TFX FnArgs as the Trainer component builds it, for a shop namespace with
    `.examples` (transformed Split-* dirs) and `.transform_graph`."""
    return trainer_fn_args(shop.examples, shop.transform_graph, out_dir, custom_config,
                           train_steps)


def raw_examples(shop, split):
    """Serialized raw tf.Examples of a split, as the Evaluator would feed them."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    pattern = os.path.join(shop.raw, f"Split-{split}", "*")
    return [r.numpy() for r in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern), "GZIP")]
