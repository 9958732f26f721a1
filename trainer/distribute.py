"""Which tf.distribute strategy a Trainer runs under, read from its environment, and where
each worker of a multi-worker run writes (docs/deploy.md, "Training on several machines").

A TFX Trainer calls ``run_fn`` in every worker process of a training job. Kubeflow's TFJob,
Vertex AI custom jobs (worker pools) and TFX's ``ai_platform_trainer`` extension describe
the cluster to each process in ``TF_CONFIG`` (JSON: ``cluster`` = task type -> addresses,
``task`` = this process's type and index), so:

* ``TF_CONFIG`` naming more than one worker (``chief`` + ``worker`` tasks) ->
  ``tf.distribute.MultiWorkerMirroredStrategy``: synchronous data parallelism, every worker
  holds all the variables and gradients are all-reduced each step (collective ops over gRPC;
  on CPU the RING implementation);
* a TPU named in the environment (``TPU_NAME``, as Vertex AI and GKE set it) ->
  ``tf.distribute.TPUStrategy`` over ``TPUClusterResolver``;
* otherwise the default strategy (one device), exactly as before.

Interactive runs (the Colab notebook, notebooks/colab_tpu.ipynb) ask ``tpu_or_default``
instead: it looks for a TPU where Colab and TPU VMs put one and falls back to the default
strategy, with a log line saying why, when there is none. A TPU runs numbers only: the
trainers then turn their string features into ids in the input pipeline on the host
(trainer/numeric_inputs.py).

Only the chief's outputs count: every worker must run the same code up to and including the
export (saving may run collective ops that every worker joins), so the other workers write
their reports and SavedModels to temporary folders that are deleted afterwards
(``chief_outputs``), TensorFlow's documented pattern for multi-worker saving.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
from typing import Iterator, Mapping, Optional

from absl import logging
import tensorflow as tf

TPU_ENV = ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS")
# Colab's older "TPU node" runtime names its TPU's gRPC address here (host:port, no scheme);
# its current TPU VM runtime has the chips on the VM itself: TPUClusterResolver(tpu="local").
COLAB_TPU_ENV = "COLAB_TPU_ADDR"
TPU_AUTO, TPU_LOCAL = "auto", "local"
TPU_OFF = ("", "none", "off", "no", "false", "0")


def cluster_of(environ: Optional[Mapping[str, str]] = None) -> dict:
    """``TF_CONFIG`` parsed ({} when unset or empty)."""
    environ = os.environ if environ is None else environ
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    return config


def worker_count(environ: Optional[Mapping[str, str]] = None) -> int:
    """How many processes train together (``chief`` and ``worker`` tasks; parameter servers
    and evaluators do not count)."""
    cluster = cluster_of(environ).get("cluster", {})
    return sum(len(cluster.get(kind, ())) for kind in ("chief", "worker"))


def strategy_from_env(environ: Optional[Mapping[str, str]] = None) -> tf.distribute.Strategy:
    """The strategy this process should train under (see the module's docstring). Call it
    before any other TensorFlow work of the process: a multi-worker strategy configures the
    collective ops of the runtime, which must happen at program start."""
    environ = os.environ if environ is None else environ
    workers = worker_count(environ)
    if workers > 1:
        task = cluster_of(environ).get("task", {})
        logging.info("distribute: MultiWorkerMirroredStrategy, %d workers, this is %s %s",
                     workers, task.get("type"), task.get("index"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    tpu = next((environ[name] for name in TPU_ENV if environ.get(name)), None)
    if tpu is not None:
        return connect_tpu(environ.get("TPU_NAME") or None, label=tpu)
    return tf.distribute.get_strategy()


def connect_tpu(tpu: Optional[str], label: Optional[str] = None) -> tf.distribute.TPUStrategy:
    """``TPUStrategy`` over ``TPUClusterResolver(tpu)`` (a TPU name, a gRPC address, "local"
    for chips on this VM, None to let the resolver read the environment), after connecting
    to it and initialising the TPU system (once per process). Raises what TensorFlow raises
    when there is no such TPU (2.16, measured here: ValueError "Please provide a TPU Name to
    connect to." for None off Cloud TPU; NotFoundError "TPUs not found in the cluster" from
    the initialisation for "local" without chips)."""
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    strategy = tf.distribute.TPUStrategy(resolver)
    logging.info("distribute: TPUStrategy on %s, %d replicas", label or tpu,
                 strategy.num_replicas_in_sync)
    return strategy


def tpu_address(tpu: Optional[str] = TPU_AUTO,
                environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Where ``tpu_or_default`` looks for a TPU: None for "no TPU" (``tpu`` "", "none",
    "off", ...); for "auto" (or None) the environment's TPU (``TPU_NAME``), else Colab's TPU
    node (``COLAB_TPU_ADDR`` as grpc://host:port), else "local" (a TPU VM, Colab's current
    TPU runtime); anything else is a TPU name or gRPC address, returned as given. "auto" never
    passes None to the resolver, which would ask the GCE metadata server on a cloud VM."""
    environ = os.environ if environ is None else environ
    choice = TPU_AUTO if tpu is None else str(tpu).strip()
    if choice.lower() in TPU_OFF:
        return None
    if choice.lower() != TPU_AUTO:
        return choice
    if environ.get("TPU_NAME"):
        return environ["TPU_NAME"]
    colab = environ.get(COLAB_TPU_ENV, "").strip()
    if colab:
        return colab if "://" in colab else "grpc://" + colab
    return TPU_LOCAL


def tpu_or_default(tpu: Optional[str] = TPU_AUTO,
                   environ: Optional[Mapping[str, str]] = None) -> tf.distribute.Strategy:
    """``TPUStrategy`` when a TPU answers at ``tpu_address(tpu)``, else the default strategy
    with a warning saying why (no TPU asked for, or the resolver's error). A TPU named
    explicitly (not "auto") that does not answer raises instead: the caller asked for it."""
    address = tpu_address(tpu, environ)
    if address is None:
        logging.warning("distribute: no TPU asked for (tpu=%r): default strategy (%s)", tpu,
                        _default_devices())
        return tf.distribute.get_strategy()
    try:
        return connect_tpu(address)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        if str(tpu or TPU_AUTO).strip().lower() != TPU_AUTO:
            raise
        logging.warning("distribute: no TPU found at %r (%s: %s): default strategy (%s)",
                        address, type(e).__name__, str(e).splitlines()[0][:200],
                        _default_devices())
        return tf.distribute.get_strategy()


def _default_devices() -> str:
    gpus = tf.config.list_logical_devices("GPU")
    return f"{len(gpus)} GPU(s)" if gpus else "CPU"


def is_tpu(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` replicates steps on TPU cores (its steps must be numeric)."""
    return isinstance(strategy, (tf.distribute.TPUStrategy,
                                 tf.distribute.experimental.TPUStrategy))


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The strategy's public name (MultiWorkerMirroredStrategy's class is
    CollectiveAllReduceStrategy; the default strategy's is _DefaultDistributionStrategy)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    if is_tpu(strategy):
        return "TPUStrategy"
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return "default"
    return type(strategy).__name__


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs: the ``chief`` task, else worker 0 of a
    cluster without one, and any process that is not part of a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


@contextlib.contextmanager
def chief_outputs(fn_args, strategy: tf.distribute.Strategy) -> Iterator[object]:
    """``fn_args`` for the chief; for the other workers a copy whose ``serving_model_dir``
    and ``model_run_dir`` are in a temporary folder, deleted when the block ends."""
    if is_chief(strategy):
        yield fn_args
        return
    resolver = strategy.cluster_resolver
    scratch = tempfile.mkdtemp(prefix=f"shoprec-{resolver.task_type}{resolver.task_id}-")
    worker_args = copy.copy(fn_args)
    worker_args.serving_model_dir = os.path.join(scratch, "serving_model_dir")
    worker_args.model_run_dir = os.path.join(scratch, "model_run")
    try:
        yield worker_args
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(train_fn, fn_args, strategy: Optional[tf.distribute.Strategy] = None) -> None:
    """``train_fn(fn_args, strategy)`` under ``strategy``, else the environment's
    (``strategy_from_env``), with the outputs of ``chief_outputs``: a Trainer's run_fn."""
    strategy = strategy or strategy_from_env()
    with chief_outputs(fn_args, strategy) as args:
        train_fn(args, strategy)


def sharded_by_data(dataset: tf.data.Dataset,
                    strategy: tf.distribute.Strategy) -> tf.data.Dataset:
    """``dataset`` for ``model.fit`` under ``strategy``: in a multi-worker run each worker
    keeps every N-th batch (``AutoShardPolicy.DATA``) instead of tf.data's default of one
    N-th of the files, which fails when a split has fewer files than there are workers (a
    Transform output is often one file: "Could not apply FILE based sharding: the dataset
    only has 1 file(s), which is not enough for the required 2 shards/workers"). Every
    worker then reads the whole split; for large data write at least as many files as
    workers and shard by file. Other strategies: ``dataset`` unchanged."""
    if not strategy.extended._in_multi_worker_mode():  # pylint: disable=protected-access
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def main(argv=None) -> int:
    """``python -m trainer.distribute``: one worker of a multi-worker training job outside a
    TFX Trainer (a Kubeflow TFJob's pods, tests/trainer/test_distribute.py): runs each
    model's run_fn over transformed examples, as the Trainer would, under the strategy of
    this process's TF_CONFIG."""
    import argparse
    from importlib import import_module

    p = argparse.ArgumentParser(prog="python -m trainer.distribute", description=main.__doc__)
    p.add_argument("--models", default="retrieval,ranking",
                   help="comma-separated: retrieval, ranking (default both, in that order)")
    p.add_argument("--examples", required=True,
                   help="the Transform component's transformed examples (Split-* folders)")
    p.add_argument("--transform-graph", required=True, help="the Transform graph folder")
    p.add_argument("--out", required=True, help="outputs go to OUT/<model>/serving_model_dir "
                   "and OUT/<model>/model_run (the chief's; workers write to temp folders)")
    p.add_argument("--custom-config", default="{}",
                   help="JSON: model -> the Trainer's custom_config")
    p.add_argument("--train-steps", type=int, default=None, help="TrainArgs.num_steps")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - {"retrieval", "ranking"}
    if unknown:
        p.error(f"unknown model(s) {sorted(unknown)}: expected retrieval, ranking")
    configs = json.loads(args.custom_config)
    strategy = strategy_from_env()        # first: collective ops are set up at startup
    from pipeline.in_process import trainer_fn_args   # pylint: disable=import-outside-toplevel

    for model in models:
        fn_args = trainer_fn_args(args.examples, args.transform_graph,
                                  os.path.join(args.out, model), configs.get(model, {}),
                                  args.train_steps)
        import_module(f"trainer.{model}").run_fn(fn_args, strategy)
        kind = strategy_name(strategy)
        print(f"{model}: trained with {kind}, "
              f"{strategy.num_replicas_in_sync} replicas in sync, "
              f"{'chief: exported to ' + fn_args.serving_model_dir if is_chief(strategy) else 'worker: outputs discarded'}",
              flush=True)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
