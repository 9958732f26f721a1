"""Beam off the DirectRunner: the portable runner with an external worker pool (issue #23,
part 2; docs/DESIGN.md, "Distributed Beam runner").

`beam_mode="external_pool"` (pipeline/configs.py) gives every Beam-based component

    --runner=PortableRunner --job_endpoint=embed
    --environment_type=EXTERNAL --environment_config=<beam_worker_pool>

The job service (Beam's Python portable job service, in the component's process) plans the
stages, runs the shuffles and hands bundles over gRPC to SDK harnesses; the worker pool
(`python -m apache_beam.runners.worker.worker_pool_main`, its own process, possibly on
another host) starts one harness *process* per job and environment, which runs our DoFns
and tf.Transform's analysers. It is the deployment shape of Flink/Spark/Dataflow's
"EXTERNAL" environments, with Beam's own job service instead of a Flink cluster.

`worker_pool()` starts a local pool (tfx_pipeline.py does so when `beam_worker_pool` is
empty); `data_pipeline()` is the pipeline's data half (ExampleGen → Transform), which the
benchmark (benchmarks/beam_runners.py) and tests/pipeline/test_beam_runners.py run on it.

Beam's Dask runner was tried first and does not run TFX/tf.Transform pipelines (the
benchmark records why: unread sources, dropped branches, mixed tagged outputs).
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Iterator, List, Optional

# The components of create_pipeline up to and including Transform (by node id).
DATA_COMPONENTS = ("ShopExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
                   "AnomaliesGate", "Transform")


def portable_args(pool_address: str) -> List[str]:
    """Beam args that run a pipeline on Beam's Python job service (in the submitting
    process) with its SDK harnesses started by the worker pool at `pool_address`."""
    return ["--runner=PortableRunner", "--job_endpoint=embed",
            "--environment_type=EXTERNAL", f"--environment_config={pool_address}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the Beam worker pool exited with {process.returncode} "
                                   "before it listened")
            if time.time() > deadline:
                raise TimeoutError(f"the Beam worker pool did not listen on {port} within "
                                   f"{timeout:.0f} s")
            time.sleep(0.5)


@contextlib.contextmanager
def worker_pool(log_path: Optional[str] = None, python: str = sys.executable,
                timeout: float = 180.0) -> Iterator[str]:
    """Starts Beam's worker pool on a free local port; yields its "localhost:PORT"; stops
    it (and the harnesses it started) on exit. The pool starts each harness as `python -c
    ...` found on PATH, so `python`'s folder goes first on the pool's PATH (else a system
    python without apache_beam answers: "No module named 'apache_beam'"). The harnesses
    inherit the environment, PYTHONPATH included, and import our modules from it."""
    port = _free_port()
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(python) + os.pathsep + env.get("PATH", "")
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # pylint: disable=consider-using-with
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        [python, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(port, process, timeout)
        yield f"localhost:{port}"
    finally:
        # The pool's own process group holds the harnesses it spawned: end them together.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait()
        if log is not subprocess.DEVNULL:
            log.close()


def data_pipeline(cfg, metadata_connection_config=None, local_run: bool = False):
    """The pipeline of `cfg` cut after Transform (DATA_COMPONENTS): examples, statistics,
    schema, validation and tf.Transform, no training (`local_run`: as create_pipeline's)."""
    from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel
    from pipeline.pipeline import create_pipeline  # pylint: disable=import-outside-toplevel
    full = create_pipeline(cfg, metadata_connection_config, local_run)
    components = [c for c in full.components if c.id in DATA_COMPONENTS]
    for component in components:        # TFX refuses edges to nodes left out
        for node in list(component.downstream_nodes):
            if node.id not in DATA_COMPONENTS:
                component.remove_downstream_node(node)
    # The components already carry cfg.beam_pipeline_args() (added by create_pipeline).
    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name, pipeline_root=cfg.pipeline_root,
        components=components, enable_cache=cfg.enable_cache,
        metadata_connection_config=metadata_connection_config)


def run_data_pipeline(cfg) -> float:
    """Runs data_pipeline(cfg) with LocalDagRunner; returns its wall time in seconds. With
    beam_mode "external_pool" and no beam_worker_pool, a local pool is started for the run."""
    import dataclasses  # pylint: disable=import-outside-toplevel
    from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel
    with contextlib.ExitStack() as stack:
        if cfg.beam_mode == "external_pool" and not cfg.beam_worker_pool:
            cfg = dataclasses.replace(cfg, beam_worker_pool=stack.enter_context(worker_pool()))
        os.makedirs(os.path.dirname(os.path.abspath(cfg.metadata_path)), exist_ok=True)
        metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
            cfg.metadata_path)
        started = time.time()
        tfx.orchestration.LocalDagRunner().run(data_pipeline(cfg, metadata, local_run=True))
        return time.time() - started
