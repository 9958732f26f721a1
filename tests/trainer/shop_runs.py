"""Helpers of the trainer end-to-end tests: TFX FnArgs for our run_fns, raw examples."""
import json
import os
import types

from trainer import features as F


def fn_args(shop, out_dir, custom_config, train_steps=None):
    """A TFX FnArgs as the Trainer component builds it for our run_fns."""
    # pylint: disable-next=import-outside-toplevel
    from tfx.components.trainer.fn_args_utils import FnArgs
    split = lambda name: [os.path.join(shop.examples, f"Split-{name}", "*")]
    return FnArgs(
        working_dir=out_dir, train_files=split(F.TRAIN_SPLIT), eval_files=split(F.EVAL_SPLIT),
        train_steps=train_steps, eval_steps=None, transform_graph_path=shop.transform_graph,
        transform_output=shop.transform_graph,
        serving_model_dir=os.path.join(out_dir, "serving_model_dir"),
        model_run_dir=os.path.join(out_dir, "model_run"), custom_config=custom_config)


def run(run_fn, args):
    """Calls `run_fn(args)`; returns args, the written metrics.json and the export dir."""
    run_fn(args)
    with open(os.path.join(args.model_run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    return types.SimpleNamespace(args=args, metrics=metrics, export=args.serving_model_dir)


def raw_examples(shop, split):
    """Serialized raw tf.Examples of a split, as the Evaluator would feed them."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    pattern = os.path.join(shop.raw, f"Split-{split}", "*")
    return [r.numpy() for r in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern), "GZIP")]
