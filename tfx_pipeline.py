"""Runs or compiles the shoprec TFX pipeline.

  python tfx_pipeline.py --runner local --data sample_shop
  python tfx_pipeline.py --runner kubeflow_v2 --output shoprec_kfp.json \
      --pipeline-root gs://bucket/root --serving-dir gs://bucket/serving_models

All settings live in pipeline/configs.py; flags and `--config FILE.json` override them.

The terminal shows one line per component and the results; the full TFX/Beam/TensorFlow
logs (child processes included) are appended to --log-file (default: pipeline.log next to
the metadata DB, e.g. runs/pipeline.log). On an error the traceback, the end of the log and
its path are shown. --verbose prints every log line on the terminal instead.
"""
import os

# TFRS needs Keras 2 (tf-keras); this must happen before TensorFlow is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from pipeline import configs  # noqa: E402
from pipeline import progress  # noqa: E402  (imports no TensorFlow)


def _parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runner", choices=configs.RUNNERS, default="local")
    p.add_argument("--config", help="JSON file with PipelineConfig keys (see pipeline/configs.py)")
    p.add_argument("--data", dest="data_dir", help="shop folder (items/events/users files)")
    p.add_argument("--pipeline-root", dest="pipeline_root")
    p.add_argument("--metadata-path", dest="metadata_path", help="MLMD sqlite file (local runner)")
    p.add_argument("--serving-dir", dest="serving_dir", help="Pusher destination base folder")
    p.add_argument("--beam-mode", dest="beam_mode", choices=configs.BEAM_MODES)
    p.add_argument("--on-bad-rows", dest="on_bad_rows", choices=("fail", "quarantine"))
    p.add_argument("--seed", type=int)
    p.add_argument("--pseudonym-key-file", dest="pseudonym_key_file",
                   help="user ids become keyed pseudonyms in every artifact (docs/privacy.md)")
    p.add_argument("--erasures-from", dest="erasures_from",
                   help="event store URL whose erased users are left out of training")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help="override any config key, e.g. --set retrieval_train_steps=200 "
                        "--set 'retrieval_config={\"learning_rate\": 0.05}'")
    p.add_argument("--output", help="kubeflow_v2: where to write the pipeline spec JSON")
    p.add_argument("--image", default=configs.TFX_IMAGE,
                   help="kubeflow_v2: container image holding shoprec (see Dockerfile)")
    p.add_argument("--report", help="local: write per-component wall times and model "
                                    "results as JSON here")
    p.add_argument("--log-file", dest="log_file",
                   help="append the full logs here (default: pipeline.log next to the "
                        "metadata DB, e.g. runs/pipeline.log)")
    p.add_argument("--verbose", action="store_true",
                   help="print every TFX/Beam/TensorFlow log line on the terminal (no log file)")
    return p.parse_args(argv)


def _overrides(args) -> dict:
    values = {k: getattr(args, k) for k in ("data_dir", "pipeline_root", "metadata_path",
                                            "serving_dir", "beam_mode", "on_bad_rows", "seed")}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw  # plain strings need no quotes
    return values


def default_log_file(cfg: configs.PipelineConfig) -> str:
    """pipeline.log next to the (local) metadata DB; runs/pipeline.log otherwise."""
    folder = os.path.dirname(cfg.metadata_path) if "://" not in cfg.metadata_path else "runs"
    return os.path.join(folder or ".", "pipeline.log")


def run_local(cfg: configs.PipelineConfig, report_path=None,
              quiet: "progress.QuietRun | None" = None) -> dict:
    """Runs the pipeline with LocalDagRunner; returns per-component wall times (seconds) and
    per model the overall eval metrics, blessing and push. `quiet`: a QuietRun whose
    terminal gets one line per component and the results (the wall-time table goes to the
    log); None = print everything to stdout."""
    from absl import logging
    from tfx import v1 as tfx
    from pipeline.pipeline import create_pipeline
    from pipeline.run_report import (cached_components, component_wall_times, model_results,
                                     print_model_results, print_wall_times)

    logging.set_verbosity(logging.INFO)  # TFX/Beam progress: "Component X is running." ...

    os.makedirs(os.path.dirname(os.path.abspath(cfg.metadata_path)), exist_ok=True)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(cfg.metadata_path)
    pipeline = create_pipeline(cfg, metadata, local_run=True)
    out = quiet.out if quiet else sys.stdout
    if quiet:
        ids = [component.id for component in pipeline.components]
        print(f"running {len(ids)} components with LocalDagRunner; full log: {quiet.shown_path}",
              file=out)
        quiet.watch_components(total=len(ids), width=max(map(len, ids)))
    started = time.time()
    with contextlib.ExitStack() as stack:
        if cfg.beam_mode == "external_pool" and not cfg.beam_worker_pool:
            # A local Beam worker pool for this run (docs/DESIGN.md, "Distributed Beam runner").
            from pipeline.beam_runners import worker_pool
            cfg = dataclasses.replace(cfg, beam_worker_pool=stack.enter_context(worker_pool()))
            pipeline = create_pipeline(cfg, metadata, local_run=True)
        tfx.orchestration.LocalDagRunner().run(pipeline)
    total = time.time() - started
    times = component_wall_times(cfg.metadata_path, cfg.pipeline_name, since=started)
    print_wall_times(times, total)      # in quiet mode: to the log (stdout is the log)
    cached = cached_components(cfg.metadata_path, cfg.pipeline_name, since=started)
    if cached:
        print(f"reused from the cache (same inputs and settings as an earlier run): "
              f"{', '.join(cached)}", file=out)
    try:
        models = model_results(cfg.metadata_path, cfg.pipeline_name, since=started,
                               top_k=cfg.retrieval_top_k)
    except Exception as e:  # pylint: disable=broad-except  (the run itself succeeded)
        logging.exception("reading the evaluators' and pushers' results failed")
        print(f"warning: could not read the models' results ({e!r}); see the log", file=out)
        models = {}
    if quiet:
        slowest = ", ".join(f"{k} {v:.0f} s" for k, v in list(times.items())[:3])
        print(f"pipeline done in {total:.0f} s (slowest: {slowest})", file=out)
    print("models (eval split; blessing = TFMA thresholds, baseline = latest blessed):",
          file=out)
    print_model_results(models, file=out)
    report = {"config": json.loads(cfg.to_json()), "total_seconds": round(total, 1),
              "component_seconds": times, "cached_components": cached, "models": models}
    if report_path:
        with open(report_path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return report


def compile_kubeflow_v2(cfg: configs.PipelineConfig, output: str, image: str) -> str:
    """Writes the KFP v2 pipeline spec JSON; returns its path."""
    from tfx import v1 as tfx
    from pipeline.pipeline import create_pipeline

    cfg.pipeline_name = cfg.kubeflow_name()
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output)),
        output_filename=os.path.basename(output))
    runner.run(create_pipeline(cfg), write_out=True)
    return output


def _run(args, cfg: configs.PipelineConfig, quiet=None) -> int:
    if args.runner == "local":
        run_local(cfg, args.report, quiet)
        if args.report:
            print(f"report: {args.report}", file=quiet.out if quiet else sys.stdout)
    else:
        path = compile_kubeflow_v2(cfg, args.output, args.image)
        print("wrote", path, file=quiet.out if quiet else sys.stdout)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse_args(argv)
    try:
        cfg = configs.load_config(args.config, **_overrides(args))
    except (ValueError, TypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.runner == "local" and not os.path.isdir(cfg.data_dir):
        print(f"error: --data {cfg.data_dir!r} is not a folder; create a sample shop with "
              "`python -m pipeline.sample_shop --out sample_shop`", file=sys.stderr)
        return 2
    if args.runner != "local" and not args.output:
        print("error: --runner kubeflow_v2 needs --output FILE.json", file=sys.stderr)
        return 2
    if args.verbose:
        return _run(args, cfg)
    log_file = args.log_file or default_log_file(cfg)
    with progress.QuietRun(log_file, title=f"tfx_pipeline.py {' '.join(argv)}",
                           announce=False) as quiet:
        try:
            return _run(args, cfg, quiet)
        except KeyboardInterrupt:
            if quiet.progress:
                quiet.progress.fail()
            print(f"interrupted; full log: {quiet.shown_path}", file=quiet.err)
            return 130
        except Exception:  # pylint: disable=broad-except  (shown in full, exit status 1)
            quiet.report_failure()
            return 1


if __name__ == "__main__":
    sys.exit(main())
