"""pipeline/beam_runners.py: ExampleGen → Transform on the PortableRunner with SDK harness
processes from a Beam worker pool (docs/DESIGN.md, "Distributed Beam runner")."""
import glob
import os

import pytest

from pipeline import beam_runners
from pipeline.configs import load_config


def test_external_pool_mode_gives_portable_args_with_the_pool_address():
    cfg = load_config(beam_mode="external_pool", beam_worker_pool="pool-host:50000",
                      extra_beam_args=["--experiments=x"])
    assert cfg.beam_pipeline_args() == [
        "--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
        "--environment_config=pool-host:50000", "--experiments=x"]
    assert not any("direct_" in a for a in cfg.beam_pipeline_args())
    assert load_config().beam_pipeline_args()[0] == "--direct_running_mode=in_memory"


def test_worker_pool_listens_and_stops(tmp_path):
    import socket  # pylint: disable=import-outside-toplevel
    with beam_runners.worker_pool(log_path=str(tmp_path / "pool.log")) as address:
        host, port = address.split(":")
        socket.create_connection((host, int(port)), timeout=5).close()
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=5).close()


def _records(pattern):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return [r.numpy() for f in sorted(glob.glob(pattern))
            for r in tf.data.TFRecordDataset(f, compression_type="GZIP")]


@pytest.mark.slow
def test_example_gen_and_transform_run_on_the_worker_pool(tmp_path):
    """The data half of the pipeline with beam_mode external_pool: the harness processes
    of a pool this test starts run it; the transformed splits are those of the
    DirectRunner's tf.Transform on the same examples (pipeline.in_process.transform)."""
    from pipeline import in_process  # pylint: disable=import-outside-toplevel
    from pipeline.sample_shop.generate import generate_shop  # pylint: disable=import-outside-toplevel
    generate_shop(str(tmp_path / "shop"), seed=3, scale=0.05)
    root = tmp_path / "root"
    with beam_runners.worker_pool(log_path=str(tmp_path / "pool.log")) as address:
        cfg = load_config(data_dir=str(tmp_path / "shop"), pipeline_root=str(root),
                          metadata_path=str(tmp_path / "metadata.db"),
                          beam_mode="external_pool", beam_worker_pool=address)
        beam_runners.run_data_pipeline(cfg)
    with open(tmp_path / "pool.log", encoding="utf-8") as f:
        assert "Starting worker with command" in f.read()   # harnesses came from the pool
    raw = os.path.join(str(root), "ShopExampleGen", "examples", "*")
    transformed = os.path.join(str(root), "Transform", "transformed_examples", "*")
    counts = {split: len(_records(os.path.join(transformed, f"Split-{split}", "*")))
              for split in ("train", "eval", "catalog")}
    assert all(counts.values()), counts
    assert counts == {split: len(_records(os.path.join(raw, f"Split-{split}", "*")))
                      for split in counts}
    # Same vocabularies as tf.Transform on the DirectRunner over the same raw examples.
    direct = tmp_path / "direct"
    direct.mkdir()
    graph, _ = in_process.transform(glob.glob(raw)[0], str(direct), splits=("train",))
    pool_graph = glob.glob(os.path.join(str(root), "Transform", "transform_graph", "*"))[0]
    vocabularies = sorted(os.listdir(os.path.join(graph, "transform_fn", "assets")))
    assert vocabularies
    for name in vocabularies:
        with open(os.path.join(graph, "transform_fn", "assets", name), "rb") as a, \
                open(os.path.join(pool_graph, "transform_fn", "assets", name), "rb") as b:
            assert a.read() == b.read(), name


FLINK_ARGS = ["--runner=FlinkRunner", "--flink_master=flink-jobmanager:8081",
              "--environment_type=EXTERNAL", "--environment_config=localhost:50000"]


@pytest.mark.slow
def test_kubeflow_v2_spec_gives_every_beam_component_the_flink_args(tmp_path):
    """The cluster path (docs/DESIGN.md, "Distributed Beam runner"): Flink (or Dataflow)
    args in extra_beam_args reach the container args of ExampleGen and Transform in the
    compiled KFP v2 spec; the worker pool runs beside the Flink task managers."""
    import json  # pylint: disable=import-outside-toplevel
    import tfx_pipeline  # pylint: disable=import-outside-toplevel
    cfg = load_config(data_dir="gs://bucket/shop", pipeline_root=str(tmp_path / "kfp_root"),
                      serving_dir="gs://bucket/serving_models", extra_beam_args=FLINK_ARGS)
    path = tfx_pipeline.compile_kubeflow_v2(cfg, str(tmp_path / "spec.json"), "img:1")
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    executors = spec.get("pipelineSpec", spec)["deploymentSpec"]["executors"]
    for node in ("ShopExampleGen", "Transform", "StatisticsGen"):
        args = executors[f"{node}_executor"]["container"]["args"]
        assert args[-len(FLINK_ARGS):] == FLINK_ARGS, (node, args)
