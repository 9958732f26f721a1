"""Multi-worker training (trainer/distribute.py, issue #23 part 3): the strategy comes from
TF_CONFIG; two worker processes on 127.0.0.1 train the retrieval and ranking models together
under MultiWorkerMirroredStrategy on the synthetic shop, and only the chief exports."""
import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import portpicker
import pytest
import tensorflow as tf

from trainer import distribute
from trainer import features as F

RETRIEVAL = {"embedding_dim": 16, "hidden_units": [32], "batch_size": 32, "epochs": 1,
             "learning_rate": 0.01, "top_k": 20, "eval_ks": [10, 20], "seed": 3,
             "text_mode": "none",
             # id dropout draws its mask per replica over the replica's rows, so a worker's
             # draws differ from one process's over the whole batch: off, to compare runs.
             "id_dropout": 0.0}
RANKING = {"embedding_dim": 16, "hidden_units": [32], "batch_size": 32, "epochs": 1,
           "learning_rate": 0.01, "seed": 3}
STEPS = 8


def _tf_config(cluster, task_type, index):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_without_a_cluster_the_default_strategy_is_used():
    assert distribute.strategy_from_env({}) is tf.distribute.get_strategy()
    one = {"TF_CONFIG": _tf_config({"worker": ["127.0.0.1:1"]}, "worker", 0)}
    assert distribute.worker_count(one) == 1
    assert distribute.strategy_from_env(one) is tf.distribute.get_strategy()


def test_chief_and_workers_are_counted_and_bad_config_is_named():
    env = {"TF_CONFIG": _tf_config({"chief": ["a:1"], "worker": ["b:1", "c:1"],
                                    "evaluator": ["d:1"]}, "worker", 1)}
    assert distribute.worker_count(env) == 3, "an evaluator does not train"
    with pytest.raises(ValueError, match="TF_CONFIG is not JSON"):
        distribute.worker_count({"TF_CONFIG": "{cluster"})
    with pytest.raises(ValueError, match="JSON object"):
        distribute.worker_count({"TF_CONFIG": "[1]"})


def test_tpu_addresses_come_from_the_argument_then_the_environment():
    assert distribute.tpu_address("auto", {}) == "local", "a TPU VM (Colab's TPU runtime)"
    assert distribute.tpu_address(None, {}) == "local"
    assert distribute.tpu_address("auto", {"TPU_NAME": "my-tpu"}) == "my-tpu"
    assert distribute.tpu_address("AUTO", {"COLAB_TPU_ADDR": "10.0.0.2:8470"}) \
        == "grpc://10.0.0.2:8470", "Colab's TPU node runtime"
    assert distribute.tpu_address("auto", {"COLAB_TPU_ADDR": "grpc://h:1"}) == "grpc://h:1"
    for off in ("", "none", "Off", " no ", "false", "0"):
        assert distribute.tpu_address(off, {"TPU_NAME": "my-tpu"}) is None, off
    assert distribute.tpu_address(" grpc://10.1.2.3:8470 ", {}) == "grpc://10.1.2.3:8470"


def test_without_a_tpu_the_default_strategy_is_used_and_the_log_says_why(caplog):
    # No TPU here: TPUClusterResolver("local") resolves, the TPU system's initialisation
    # raises NotFoundError ("TPUs not found in the cluster"), measured in TF 2.16.
    with caplog.at_level("WARNING"):
        strategy = distribute.tpu_or_default("auto", {})
    assert strategy is tf.distribute.get_strategy()
    assert not distribute.is_tpu(strategy) and distribute.strategy_name(strategy) == "default"
    assert "no TPU found at 'local'" in caplog.text and "default strategy (CPU" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert distribute.tpu_or_default("none", {"TPU_NAME": "t"}) is tf.distribute.get_strategy()
    assert "no TPU asked for" in caplog.text
    # The default strategy still trains after the failed probe.
    model = tf.keras.Sequential([tf.keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(tf.ones([4, 2]), tf.ones([4, 1]), epochs=1, verbose=0)


def test_a_tpu_named_explicitly_that_does_not_answer_raises():
    with pytest.raises((ValueError, RuntimeError, tf.errors.OpError)):
        distribute.tpu_or_default("local", {})


def test_strategies_have_their_public_names():
    assert distribute.strategy_name(tf.distribute.get_strategy()) == "default"
    mirrored = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert distribute.strategy_name(mirrored) == "OneDeviceStrategy"
    assert not distribute.is_tpu(mirrored)


def _fake_strategy(cluster, task_type, task_id):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_the_chief_is_the_chief_task_else_worker_zero():
    with_chief = {"chief": ["a:1"], "worker": ["b:1"]}
    assert distribute.is_chief(_fake_strategy(with_chief, "chief", 0))
    assert not distribute.is_chief(_fake_strategy(with_chief, "worker", 0))
    workers = {"worker": ["a:1", "b:1"]}
    assert distribute.is_chief(_fake_strategy(workers, "worker", 0))
    assert not distribute.is_chief(_fake_strategy(workers, "worker", 1))
    assert distribute.is_chief(tf.distribute.get_strategy())


def test_a_workers_outputs_go_to_a_temporary_folder_that_is_deleted(tmp_path):
    fn_args = types.SimpleNamespace(serving_model_dir=str(tmp_path / "export"),
                                    model_run_dir=str(tmp_path / "run"), train_steps=3)
    chief = tf.distribute.get_strategy()
    with distribute.chief_outputs(fn_args, chief) as args:
        assert args is fn_args
    worker = _fake_strategy({"chief": ["a:1"], "worker": ["b:1"]}, "worker", 0)
    with distribute.chief_outputs(fn_args, worker) as args:
        scratch = os.path.dirname(args.serving_model_dir)
        assert not scratch.startswith(str(tmp_path)) and "worker0" in scratch
        assert args.train_steps == 3 and fn_args.serving_model_dir == str(tmp_path / "export")
        os.makedirs(args.model_run_dir)
    assert not os.path.exists(scratch)


def test_single_process_datasets_keep_their_sharding():
    dataset = tf.data.Dataset.range(4)
    assert distribute.sharded_by_data(dataset, tf.distribute.get_strategy()) is dataset


def _flatten(metrics: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1.0}} -> {"a/b": 1.0}, numbers only."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def _epoch_losses(log: str) -> list:
    """The losses of Keras's epoch lines ("8/8 - 12s - loss: 2.6737 - ..."), one per model."""
    return re.findall(rf"{STEPS}/{STEPS} - .*? - loss: ([0-9.e+-]+)", log)


def _start(task, cluster, out, transformed_shop, tmp_path):
    """`python -m trainer.distribute` as `task` of `cluster` (None: one process, no
    TF_CONFIG) -> (process, its log file, its TMPDIR)."""
    temp = tmp_path / f"tmp-{task}"
    temp.mkdir()
    log = open(tmp_path / f"{task}.log", "w+")
    env = {**os.environ, "TMPDIR": str(temp), "TF_USE_LEGACY_KERAS": "1",
           "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    if cluster is not None:
        env["TF_CONFIG"] = _tf_config(cluster, task, 0)
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer.distribute", "--models", "retrieval,ranking",
         "--examples", transformed_shop.examples,
         "--transform-graph", transformed_shop.transform_graph, "--out", str(out),
         "--custom-config", json.dumps({"retrieval": RETRIEVAL, "ranking": RANKING}),
         "--train-steps", str(STEPS)], stdout=log, stderr=subprocess.STDOUT, env=env)
    return process, log, temp


@pytest.mark.slow
def test_two_workers_train_both_models_as_one_process_would_and_only_the_chief_exports(
        transformed_shop, tmp_path):
    """A chief and a worker on loopback ports, as Vertex AI's two worker pools or a TFJob's
    Chief and Worker replicas would be: both join MultiWorkerMirroredStrategy (2 replicas in
    sync), train the same steps with all-reduced gradients (their reported losses are
    identical), and the chief's SavedModels load and answer. Synchronous data parallelism
    splits each global batch between the workers, so the pair must train exactly as one
    process with the same batch size: the same losses step by step and the same eval
    metrics. For retrieval this holds only because each worker's in-batch softmax takes
    its negatives from the whole global batch (trainer/layers.py global_batch_candidates);
    per-worker negatives would train another model on every cluster size."""
    ports = [portpicker.pick_unused_port() for _ in range(2)]
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"]}
    out, single_out = tmp_path / "out", tmp_path / "single"
    started = [_start("chief", cluster, out, transformed_shop, tmp_path),
               _start("worker", cluster, out, transformed_shop, tmp_path),
               _start("single", None, single_out, transformed_shop, tmp_path)]
    procs = [p for p, _, _ in started]
    try:
        codes = [p.wait(timeout=1500) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = []
    for _, log, _ in started:
        log.seek(0)
        texts.append(log.read())
        log.close()
    assert codes == [0, 0, 0], "\n\n".join(t[-4000:] for t in texts)
    chief, worker, single = texts
    temps = [temp for _, _, temp in started]
    for model in ("retrieval", "ranking"):
        assert f"{model}: trained with MultiWorkerMirroredStrategy, 2 replicas in sync, " \
               f"chief: exported to {out / model / 'serving_model_dir'}" in chief
        assert f"{model}: trained with MultiWorkerMirroredStrategy, 2 replicas in sync, " \
               "worker: outputs discarded" in worker
        assert f"{model}: trained with default, 1 replicas in sync" in single
    losses = _epoch_losses(chief)
    assert len(losses) == 2 and losses == _epoch_losses(worker), \
        "synchronous training: one all-reduced loss per model on both workers"
    assert "_auc" not in chief and "rating_rmse" not in chief, \
        "no per-replica training metrics summed over replicas in the progress line"
    for model in ("retrieval", "ranking"):
        two = json.loads((out / model / "model_run" / "metrics.json").read_text())
        one = json.loads((single_out / model / "model_run" / "metrics.json").read_text())
        for key in ("loss_first", "loss_last"):
            assert two["training"][key] == pytest.approx(one["training"][key], rel=1e-4), \
                (model, key, two["training"], one["training"])
        evaluated = {"retrieval": ("recall@10", "ndcg@10"),
                     "ranking": ("click/auc", "purchase/auc")}[model]
        flat_two, flat_one = _flatten(two), _flatten(one)
        for name in evaluated:
            keys = [k for k in flat_one if k.endswith(name)]
            assert keys, (model, name, sorted(flat_one))
            for k in keys:
                assert flat_two[k] == pytest.approx(flat_one[k], abs=1e-3), (model, k)
    # (TMPDIR also receives what libraries put there, e.g. autograph's generated files)
    left = [p.name for p in temps[1].iterdir() if p.name.startswith("shoprec-")]
    assert not left, f"the worker's temporary outputs are deleted: {left}"

    for model in ("retrieval", "ranking"):
        metrics = json.loads((out / model / "model_run" / "metrics.json").read_text())
        assert metrics["training"]["steps"] == STEPS
        assert np.isfinite(metrics["training"]["loss_last"])
    assert sorted(p.name for p in out.iterdir()) == ["ranking", "retrieval"]

    import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    # (registers the tokeniser ops of the export, as TF Serving links them)
    retrieval = tf.saved_model.load(str(out / "retrieval" / "serving_model_dir"))
    known = transformed_shop.rows[F.TRAIN_SPLIT][0]
    answer = retrieval.signatures["top_k"](
        user_id=tf.constant([known[F.USER_ID], "stranger"]),
        history_item_ids=tf.constant([[known[F.ITEM_ID], ""], ["", ""]]),
        query=tf.constant(["", "serum"]))
    assert answer["item_ids"].shape == (2, RETRIEVAL["top_k"])
    catalog = {item[F.ITEM_ID] for item in transformed_shop.rows["items"]}
    assert {i.decode() for i in answer["item_ids"].numpy().ravel()} <= catalog
    assert np.all(np.diff(answer["scores"].numpy(), axis=1) <= 1e-6), "best first"
    ranking = tf.saved_model.load(str(out / "ranking" / "serving_model_dir"))
    assert "score" in ranking.signatures
