"""The operator console's views as HTML fragments (``operator`` role, read-only): model
versions served and every evaluation with its blessing, push and sliced metrics; pipeline
runs with per-component times; the data-contract reports; live traffic; experiments."""
from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from serving.web.charts import bar_chart
from serving.web.config import WebConfig
from serving.web.evaluations import load_evaluation
from serving.web.pipeline_records import MODELS, PipelineRecords, RecordsUnavailable
from serving.web.rendering import render
from serving.api.metrics import LATENCY_BUCKETS
from serving.web.traffic import QUANTILES, milliseconds, traffic_summary

EVALUATIONS_SHOWN = 3       # per model, the newest evaluations with their sliced metrics


def _records(config: WebConfig) -> tuple[PipelineRecords | None, str]:
    try:
        return PipelineRecords(config.metadata_path), ""
    except RecordsUnavailable as e:
        return None, str(e)


def _evaluation(record, index: int) -> dict:
    """An evaluation's sliced metrics and its headline chart (or why they cannot be read)."""
    try:
        evaluation = load_evaluation(record.evaluation_uri, record.model)
    except Exception as e:  # pylint: disable=broad-except  (shown to the operator)
        return {"record": record, "error": f"{type(e).__name__}: {e}"[:500]}
    chart = None
    if evaluation.headline is not None:
        key, slices = evaluation.headline, evaluation.slices
        chart = bar_chart(
            f"{record.model}-eval-{index}",
            f"{evaluation.labels[key]} per slice, {record.model} evaluation of run {record.run}",
            [s.name for s in slices],
            {"candidate": [s.candidate.get(key) for s in slices],
             **({"baseline": [s.baseline.get(key) for s in slices]}
                if any(s.baseline for s in slices) else {})})
    return {"record": record, "evaluation": evaluation, "chart": chart}


def models_view(request: Request, config: WebConfig) -> dict:
    svc = request.app.state.services
    report = request.app.state.readiness.evaluate()
    records, unavailable = _records(config)
    models = {}
    for model in MODELS if records else ():
        history = records.model_records(model)
        shown = [r for r in history if r.evaluation_uri][:EVALUATIONS_SHOWN]
        models[model] = {"history": history,
                         "evaluations": [_evaluation(r, i) for i, r in enumerate(shown)]}
    tables = svc.catalog.item_to_item
    return {"served": dict(svc.watcher.versions), "checks": report.as_dict(),
            "ready": report.ok, "embeddings_version": svc.catalog.embeddings_version,
            "item_to_item_version": tables.version if tables else None,
            "catalog_items": len(svc.catalog), "models": models, "unavailable": unavailable}


def runs_view(config: WebConfig) -> dict:
    records, unavailable = _records(config)
    runs = records.runs() if records else []
    charts = [bar_chart(f"run-{i}", f"Seconds per component, run {run.name}",
                        [c.node for c in run.components],
                        {"seconds": [c.seconds for c in run.components]}, "{:.1f} s".format)
              for i, run in enumerate(runs)]
    return {"runs": list(zip(runs, charts)), "unavailable": unavailable}


def data_view(config: WebConfig) -> dict:
    records, unavailable = _records(config)
    reports = records.data_reports() if records else []
    chart = None
    if reports:
        tables = reports[0].summary.get("tables", {})
        names = [name for name, t in tables.items() if t.get("file")]
        chart = bar_chart("data-rows", "Rows kept and quarantined per table, newest report",
                          names, {"kept": [tables[n].get("rows_kept", 0) for n in names],
                                  "quarantined": [tables[n].get("rows_quarantined", 0)
                                                  for n in names]}, "{:,.0f}".format)
    return {"reports": reports, "chart": chart, "unavailable": unavailable}


def traffic_view(request: Request) -> dict:
    summary = traffic_summary(request.app.state.metrics)
    stages = summary["stages"]
    chart = bar_chart("stage-latency", "Latency per recommendation stage (ms)",
                      [row.name for row in stages],
                      {f"p{round(q * 100)}": [row.percentiles_ms[i] for row in stages]
                       for i, q in enumerate(QUANTILES[:2])}, "{:.1f} ms".format) \
        if stages else None
    return {**summary, "quantiles": [f"p{round(q * 100)}" for q in QUANTILES],
            "chart": chart, "ms": lambda v: milliseconds(v, LATENCY_BUCKETS[-1])}


EXPERIMENT_METRICS = (("ctr", "CTR"), ("conversion", "conversion"),
                      ("revenue_per_user", "revenue per user"))


def experiments_view(request: Request) -> dict:
    """Every configured experiment with its report (serving/events/report.py) and a chart
    of each metric per variant."""
    from serving.api.app import experiment_summary
    from serving.events.report import experiment_report

    svc = request.app.state.services
    shown = []
    for n, experiment in enumerate(svc.experiments.experiments):
        report = experiment_report(svc.store, experiment)
        variants = list(report["variants"])
        charts = [bar_chart(f"experiment-{n}-{key}", f"{label} per variant ({experiment.name})",
                            variants, {label: [report["variants"][v][key]["value"]
                                               for v in variants]},
                            "{:.2f}".format if key == "revenue_per_user" else "{:.3f}".format)
                  for key, label in EXPERIMENT_METRICS]
        shown.append({"summary": experiment_summary(experiment), "report": report,
                      "charts": charts})
    return {"experiments": shown, "metrics": EXPERIMENT_METRICS}


def add_console_routes(app: FastAPI, config: WebConfig, prefix: str) -> None:
    """The fragment of each console view under ``prefix``."""

    def page(request: Request, view: str, context: dict):
        return render(f"console/{view}.html", request, **context)

    @app.get(f"{prefix}/models", include_in_schema=False)
    async def models(request: Request):
        return page(request, "models", await run_in_threadpool(models_view, request, config))

    @app.get(f"{prefix}/runs", include_in_schema=False)
    async def runs(request: Request):
        return page(request, "runs", await run_in_threadpool(runs_view, config))

    @app.get(f"{prefix}/data", include_in_schema=False)
    async def data(request: Request):
        return page(request, "data", await run_in_threadpool(data_view, config))

    @app.get(f"{prefix}/experiments", include_in_schema=False)
    async def experiments(request: Request):
        return page(request, "experiments", await run_in_threadpool(experiments_view, request))

    @app.get(f"{prefix}/traffic", include_in_schema=False)
    def traffic(request: Request):
        return page(request, "traffic", traffic_view(request))

