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
    p.add_argument("--from-nodes", dest="from_nodes", default="",
                   help="local: a partial run (TFX RunOptions) from these component ids "
                        "(comma-separated, e.g. ranking_trainer) and what depends on them; "
                        "the other components' outputs are the previous run's in the same "
                        "ML Metadata, e.g. to retrain the ranker without retraining retrieval")
    p.add_argument("--to-nodes", dest="to_nodes", default="",
                   help="local: a partial run up to these component ids (comma-separated)")
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


def partial_nodes(components, from_nodes=(), to_nodes=()) -> list:
    """The component ids a partial run from ``from_nodes`` to ``to_nodes`` runs (TFX's rule:
    what is downstream of a from-node and upstream of a to-node; an empty side = every
    node), in pipeline order; ValueError naming unknown ids."""
    by_id = {c.id: c for c in components}
    unknown = sorted(set(from_nodes) - set(by_id)) + sorted(set(to_nodes) - set(by_id))
    if unknown:
        raise ValueError(f"--from-nodes / --to-nodes: unknown component id(s) {unknown}; the "
                         f"pipeline's components are {list(by_id)}")

    def closure(start, step):
        seen, todo = set(), list(start)
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo += [n.id for n in step(by_id[node])]
        return seen
    down = closure(from_nodes, lambda c: c.downstream_nodes) if from_nodes else set(by_id)
    up = closure(to_nodes, lambda c: c.upstream_nodes) if to_nodes else set(by_id)
    return [c.id for c in components if c.id in down & up]


def run_local(cfg: configs.PipelineConfig, report_path=None,
              quiet: "progress.QuietRun | None" = None, from_nodes=(), to_nodes=()) -> dict:
    """Runs the pipeline with LocalDagRunner; returns per-component wall times (seconds) and
    per model the overall eval metrics, blessing and push. `quiet`: a QuietRun whose
    terminal gets one line per component and the results (the wall-time table goes to the
    log); None = print everything to stdout. `from_nodes` / `to_nodes` (component ids): a
    TFX partial run of the components between them, the others' outputs taken from the
    previous run in the same ML Metadata (the report's models: those that ran)."""
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
    ids = [component.id for component in pipeline.components]
    run_options = None
    if from_nodes or to_nodes:
        ids = partial_nodes(pipeline.components, from_nodes, to_nodes)
        if not ids:
            raise ValueError(f"--from-nodes {list(from_nodes)} --to-nodes {list(to_nodes)}: "
                             f"no component lies between them")
        if not os.path.exists(cfg.metadata_path):
            raise ValueError(f"a partial run reuses a previous run's outputs, but "
                             f"{cfg.metadata_path} holds no run")
        from tfx.orchestration.pipeline import RunOptions
        run_options = RunOptions(from_nodes=list(from_nodes) or None,
                                 to_nodes=list(to_nodes) or None)
        print(f"partial run of {', '.join(ids)}; the other components' outputs come from "
              f"the previous run in {cfg.metadata_path}", file=out)
    if quiet:
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
        tfx.orchestration.LocalDagRunner().run(pipeline, run_options=run_options)
    total = time.time() - started
    times = component_wall_times(cfg.metadata_path, cfg.pipeline_name, since=started)
    cached = cached_components(cfg.metadata_path, cfg.pipeline_name, since=started)
    models_run = ("retrieval", "ranking")
    if run_options is not None:
        # TFX records each skipped component as a reused (CACHED) execution: not this run's
        times = {k: v for k, v in times.items() if k in ids}
        cached = [k for k in cached if k in ids]
        models_run = tuple(m for m in models_run if f"{m}_evaluator" in ids)
    print_wall_times(times, total)      # in quiet mode: to the log (stdout is the log)
    if cached:
        print(f"reused from the cache (same inputs and settings as an earlier run): "
              f"{', '.join(cached)}", file=out)
    try:
        models = model_results(cfg.metadata_path, cfg.pipeline_name, models=models_run,
                               since=started, top_k=cfg.retrieval_top_k)
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
    if run_options is not None:
        report["partial_run"] = ids
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
        run_local(cfg, args.report, quiet, from_nodes=_ids(args.from_nodes),
                  to_nodes=_ids(args.to_nodes))
        if args.report:
            print(f"report: {args.report}", file=quiet.out if quiet else sys.stdout)
    else:
        path = compile_kubeflow_v2(cfg, args.output, args.image)
        print("wrote", path, file=quiet.out if quiet else sys.stdout)
    return 0


def _ids(text: str) -> list:
    return [part.strip() for part in text.split(",") if part.strip()]


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
    if args.runner != "local" and (args.from_nodes or args.to_nodes):
        print("error: --from-nodes / --to-nodes are for the local runner (a partial run); "
              "a compiled pipeline always holds every component", file=sys.stderr)
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
