"""Which Beam runners besides the DirectRunner run our ExampleGen + Transform here (issue #23,
part 2; docs/DESIGN.md, "Distributed Beam runner").

    python -m benchmarks.beam_runners            # all probes -> benchmarks/results/beam_runners.{md,json}
    python -m benchmarks.beam_runners --only dask_tft

Each probe runs in its own process with a time limit and records ok / wrong result / error
(the exception's last line, as raised), its seconds and which processes ran the DoFns:

- Beam's Dask runner on a `distributed.LocalCluster` (2 worker processes), smallest first:
  a GroupByKey, two branches, a file source, WriteToText, a ParDo with tagged outputs,
  tf.Transform's AnalyzeAndTransformDataset, then the project's data pipeline.
- The PortableRunner (Beam's Python job service) with SDK harnesses from an external worker
  pool (pipeline/beam_runners.py): the same probes.
- The Flink and Prism runners (their job server jar / binary are downloaded at run time).
- The project's data pipeline on the DirectRunner (in_memory), the baseline.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

RESULTS = os.path.join(os.path.dirname(__file__), "results")
DASK = "apache_beam.runners.dask.dask_runner.DaskRunner"


# ---------------------------------------------------------------------------------- probes
# A probe builds a pipeline under `args`; DoFns mark what they saw with files under `out`
# (written by the process that ran them), the parent checks them.

def _mark(out):
    import apache_beam as beam  # pylint: disable=import-outside-toplevel

    class Mark(beam.DoFn):
        def process(self, element):
            os.makedirs(out, exist_ok=True)
            name = f"{os.getpid()}-{abs(hash(repr(element)))}"
            with open(os.path.join(out, name), "w", encoding="utf-8") as f:
                f.write(json.dumps(element, default=str))
            yield element
    return Mark()


def _marks(out):
    rows, pids = [], set()
    for path in sorted(glob.glob(os.path.join(out, "*"))):
        pids.add(int(os.path.basename(path).split("-")[0]))
        with open(path, encoding="utf-8") as f:
            rows.append(json.loads(f.read()))
    return rows, sorted(pids)


def _run(args, build):
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
    with beam.Pipeline(options=PipelineOptions(args)) as p:
        build(p)


def probe_gbk(args, out):
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    _run(args, lambda p: (p | beam.Create(list(range(1000)))
                          | beam.Map(lambda x: (x % 3, x)) | beam.GroupByKey()
                          | beam.MapTuple(lambda k, v: [k, len(list(v))]) | beam.ParDo(_mark(out))))
    rows, pids = _marks(out)
    return sorted(rows) == [[0, 334], [1, 333], [2, 333]], rows, pids


def probe_branches(args, out):
    import apache_beam as beam  # pylint: disable=import-outside-toplevel

    def build(p):
        c = p | beam.Create([1, 2, 3])
        _ = c | "A" >> beam.Map(lambda x: ["a", x]) | "MarkA" >> beam.ParDo(_mark(out))
        _ = c | "B" >> beam.Map(lambda x: ["b", x]) | "MarkB" >> beam.ParDo(_mark(out))
    _run(args, build)
    rows, pids = _marks(out)
    return sorted(rows) == [[b, x] for b in "ab" for x in (1, 2, 3)], rows, pids


def probe_read_text(args, out):
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    src = os.path.join(os.path.dirname(out), "in.txt")
    with open(src, "w", encoding="utf-8") as f:
        f.write("x\ny\nz\n")
    _run(args, lambda p: p | beam.io.ReadFromText(src) | beam.ParDo(_mark(out)))
    rows, pids = _marks(out)
    return sorted(rows) == ["x", "y", "z"], rows, pids


def probe_write_text(args, out):
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    prefix = os.path.join(os.path.dirname(out), "written")
    _run(args, lambda p: p | beam.Create(["x", "y", "z"]) | beam.io.WriteToText(prefix))
    lines = sorted(line.strip() for path in glob.glob(prefix + "*") if os.path.isfile(path)
                   for line in open(path, encoding="utf-8"))
    return lines == ["x", "y", "z"], {"files": len(glob.glob(prefix + "*")), "lines": lines}, []


def probe_tagged_outputs(args, out):
    import apache_beam as beam  # pylint: disable=import-outside-toplevel

    def split(x):
        yield beam.pvalue.TaggedOutput("odd" if x % 2 else "even", x)

    def build(p):
        parts = p | beam.Create([1, 2, 3, 4]) | beam.FlatMap(split).with_outputs("odd", "even")
        _ = parts.odd | "Odd" >> beam.Map(lambda x: ["odd", x]) | "MarkOdd" >> beam.ParDo(_mark(out))
        _ = parts.even | "Even" >> beam.Map(lambda x: ["even", x]) | "MarkEven" >> beam.ParDo(_mark(out))
    _run(args, build)
    rows, pids = _marks(out)
    return sorted(rows) == [["even", 2], ["even", 4], ["odd", 1], ["odd", 3]], rows, pids


def _tft_fn(inputs):
    import tensorflow_transform as tft  # pylint: disable=import-outside-toplevel
    return {"x_z": tft.scale_to_z_score(inputs["x"]),
            "s_idx": tft.compute_and_apply_vocabulary(inputs["s"])}


def probe_tft(args, out):
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_transform.beam as tft_beam  # pylint: disable=import-outside-toplevel
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils  # pylint: disable=import-outside-toplevel
    data = [{"x": float(i), "s": "abc"[i % 3]} for i in range(30)]
    meta = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(
        {"x": tf.io.FixedLenFeature([], tf.float32), "s": tf.io.FixedLenFeature([], tf.string)}))
    temp = tempfile.mkdtemp(dir=os.path.dirname(out))
    with tft_beam.Context(temp_dir=temp, force_tf_compat_v1=False):
        _run(args, lambda p: (((p | beam.Create(data), meta)
                               | tft_beam.AnalyzeAndTransformDataset(_tft_fn))[0][0]
                              | beam.Map(lambda r: {k: float(v) for k, v in r.items()})
                              | beam.ParDo(_mark(out))))
    rows, pids = _marks(out)
    # x = 0..29: mean 14.5, population std 8.655; vocabulary by frequency (a: 10, b, c).
    ok = len(rows) == 30 and all(
        abs(r["x_z"] - (x - 14.5) / 8.6554414) < 1e-4
        for r, x in zip(sorted(rows, key=lambda r: r["x_z"]), range(30)))
    return ok, rows[:3], pids


def probe_tfx_data(args, out):
    """The project's ShopExampleGen → ... → Transform (pipeline/beam_runners.data_pipeline)
    on the tiny sample shop, its Beam args = `args` (after the config's own)."""
    from pipeline import beam_runners  # pylint: disable=import-outside-toplevel
    from pipeline.configs import load_config  # pylint: disable=import-outside-toplevel
    from pipeline.sample_shop.generate import generate_shop  # pylint: disable=import-outside-toplevel
    root = os.path.dirname(out)
    generate_shop(os.path.join(root, "shop"), seed=3, scale=0.05)
    mode = "external_pool" if "--environment_type=EXTERNAL" in args else "in_memory"
    extra = [] if mode == "external_pool" else [a for a in args if "direct_" not in a]
    pool = next((a.split("=", 1)[1] for a in args if a.startswith("--environment_config=")), "")
    cfg = load_config(data_dir=os.path.join(root, "shop"), pipeline_root=os.path.join(root, "root"),
                      metadata_path=os.path.join(root, "metadata.db"), beam_mode=mode,
                      beam_worker_pool=pool, extra_beam_args=extra)
    seconds = beam_runners.run_data_pipeline(cfg)
    counts = {}
    for split in ("train", "eval", "catalog"):
        files = glob.glob(os.path.join(root, "root", "Transform", "transformed_examples", "*",
                                       f"Split-{split}", "*"))
        counts[split] = _count_records(files)
    ok = all(counts.values())
    return ok, {"pipeline_seconds": round(seconds, 1), "transformed_examples": counts}, []


def _count_records(files):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return sum(1 for f in files for _ in tf.data.TFRecordDataset(f, compression_type="GZIP"))


PROBES = {"gbk": probe_gbk, "branches": probe_branches, "read_text": probe_read_text,
          "write_text": probe_write_text, "tagged_outputs": probe_tagged_outputs,
          "tft": probe_tft, "tfx_data": probe_tfx_data}


# --------------------------------------------------------------------------------- runners

def _with_runner(runner, body):
    """Runs body(beam args) with `runner`'s services up; returns its result."""
    if runner == "dask":
        import logging  # pylint: disable=import-outside-toplevel
        from distributed import LocalCluster  # pylint: disable=import-outside-toplevel
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None, silence_logs=logging.ERROR) as cluster:
            return body([f"--runner={DASK}", f"--dask_client_address={cluster.scheduler_address}"])
    if runner == "portable_pool":
        from pipeline.beam_runners import portable_args, worker_pool  # pylint: disable=import-outside-toplevel
        with worker_pool() as address:
            return body(portable_args(address))
    if runner == "flink":
        return body(["--runner=FlinkRunner", "--flink_master=[local]",
                     "--environment_type=LOOPBACK"])
    if runner == "prism":
        return body(["--runner=PrismRunner"])
    if runner == "direct":
        return body(["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    raise ValueError(runner)


def _one(runner, probe, work):
    """In this process: one probe on one runner; prints its JSON record."""
    out = os.path.join(work, "marks")
    started = time.time()
    record = {"runner": runner, "probe": probe}
    try:
        ok, seen, pids = _with_runner(runner, lambda args: PROBES[probe](args, out))
        record.update(outcome="ok" if ok else "wrong result", seen=seen,
                      dofn_processes=len(pids), submitting_process_ran_dofns=os.getpid() in pids)
    except Exception as e:  # pylint: disable=broad-except  (recorded as the probe's outcome)
        record.update(outcome="error", error=f"{type(e).__name__}: {e}".strip()[:2000],
                      where=_where(e))
    record["seconds"] = round(time.time() - started, 1)
    print("RECORD " + json.dumps(record, default=str), flush=True)


def _where(e):
    """The innermost frame of the traceback (file:line function)."""
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename.split('site-packages/')[-1]}:{f.lineno} {f.name}"


# Why each failure happens, read in Beam 2.72's runner code (apache_beam/runners/dask/).
CAUSES = {
    ("dask", "branches"): "DaskRunner.run_pipeline computes only the bag of the last "
        "transform visited (`list(dask_visitor.bags.values())[-1]`): every other leaf of "
        "the graph is silently not run.",
    ("dask", "read_text"): "beam.io.Read is replaced by `_Read`, which has no translation "
        "(TRANSLATIONS holds Create, ParDo, GroupByKeyOnly, Flatten only): it becomes NoOp, "
        "whose bag is None, and the next ParDo calls None.map. Every file source "
        "(ReadFromText, ReadFromTFRecord, tfxio's BeamSource) is a Read.",
    ("dask", "write_text"): "WriteToText's WriteImpl is three branches joined by side inputs "
        "(init, write bundles, finalize); only the last one's bag is computed and the side "
        "inputs are re-evaluated from their own copies of the graph.",
    ("dask", "tagged_outputs"): "apply_dofn_to_bundle returns the values of all outputs in "
        "one list and drops their tags; each consumer of a tagged output gets the bag of the "
        "whole ParDo.",
    ("dask", "tft"): "Raised on a Dask worker in apache_beam/transforms/core.py "
        "PostCombineFn.add_input, `is_accumulator, value = element`: tf.Transform's "
        "analysers combine with CombinePerKey(...).with_hot_key_fanout, a ParDo with tagged "
        "outputs (hot / cold keys) whose branches are flattened again; with the tags "
        "dropped the post-combine gets plain elements where it expects "
        "(is_accumulator, value).",
    ("dask", "tfx_data"): "ShopExampleGen (pipeline/components/example_beam.py) reads the "
        "shop with beam.io.ReadFromParquet (a Read: the error above, raised while the runner "
        "translates the graph), splits units with a tagged-output ParDo and writes each split "
        "with WriteToTFRecord: all three unsupported (above).",
    ("flink", "gbk"): "The Flink job server is a Java jar Beam downloads from Maven Central "
        "at run time; only PyPI and Debian are reachable here.",
    ("prism", "gbk"): "Prism is a Go binary Beam downloads from GitHub releases at run "
        "time; only PyPI and Debian are reachable here.",
}

PLAN = ([("dask", p) for p in ("gbk", "branches", "read_text", "write_text",
                               "tagged_outputs", "tft", "tfx_data")]
        + [("portable_pool", p) for p in ("gbk", "branches", "read_text", "write_text",
                                          "tagged_outputs", "tft", "tfx_data")]
        + [("flink", "gbk"), ("prism", "gbk"), ("direct", "tfx_data")])


def run_probe(runner, probe, timeout):
    work = tempfile.mkdtemp(prefix=f"beam_{runner}_{probe}_")
    cmd = [sys.executable, "-m", "benchmarks.beam_runners", "--one", runner, probe, work]
    log = os.path.join(work, "log.txt")
    started = time.time()
    try:
        with open(log, "w", encoding="utf-8") as f:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True,
                                  timeout=timeout, check=False, start_new_session=True)
        lines = [l for l in done.stdout.splitlines() if l.startswith("RECORD ")]
        record = json.loads(lines[-1][7:]) if lines else {
            "runner": runner, "probe": probe, "outcome": "error",
            "error": f"exit {done.returncode} without a record; see {log}"}
    except subprocess.TimeoutExpired:
        record = {"runner": runner, "probe": probe, "outcome": "error",
                  "error": f"no answer within {timeout} s"}
    record["wall_seconds"] = round(time.time() - started, 1)
    if record["outcome"] != "ok" and (runner, probe) in CAUSES:
        record["cause"] = CAUSES[(runner, probe)]
    shutil.rmtree(work, ignore_errors=True)
    return record


def write_report(records, path_md, path_json):
    import importlib.metadata as md  # pylint: disable=import-outside-toplevel
    versions = {p: md.version(p) for p in ("apache-beam", "dask", "distributed", "tfx",
                                           "tensorflow-transform")}
    with open(path_json, "w", encoding="utf-8") as f:
        json.dump({"versions": versions, "cores": os.cpu_count(), "records": records}, f,
                  indent=2, default=str)
    lines = ["# Beam runners for ExampleGen + Transform (issue #23, part 2)", "",
             "`python -m benchmarks.beam_runners`; versions: "
             + ", ".join(f"{k} {v}" for k, v in versions.items())
             + f"; {os.cpu_count()} cores shared with other jobs. Probes are described in "
             "benchmarks/beam_runners.py; `tfx_data` = the project's ShopExampleGen → "
             "StatisticsGen → SchemaGen → ExampleValidator → AnomaliesGate → Transform on "
             "the tiny sample shop (seed 3, scale 0.05) with LocalDagRunner.", "",
             "| runner | probe | outcome | s | DoFn processes | detail |", "|---|---|---|---|---|---|"]
    for r in records:
        if r["outcome"] == "ok":
            detail = json.dumps(r.get("seen"), default=str)[:160] if r["probe"] == "tfx_data" \
                else ("DoFns ran in the submitting process" if r.get("submitting_process_ran_dofns")
                      else "DoFns ran in other processes")
        elif r["outcome"] == "wrong result":
            detail = "saw " + json.dumps(r.get("seen"), default=str)[:160]
        else:
            detail = "`" + r.get("error", "").splitlines()[0][:220].replace("|", "\\|") + "`" \
                + (f" at {r['where']}" if r.get("where") else "")
        lines.append(f"| {r['runner']} | {r['probe']} | {r['outcome']} | {r['wall_seconds']} "
                     f"| {r.get('dofn_processes', '')} | {detail} |")
    causes = [r for r in records if r.get("cause")]
    if causes:
        lines += ["", "## Why", ""]
        lines += [f"- **{r['runner']} / {r['probe']}**: {r['cause']}" for r in causes]
    with open(path_md, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _rewrite(out):
    """Rewrites the report from its JSON with the current CAUSES (no probe is rerun)."""
    with open(out + ".json", encoding="utf-8") as f:
        records = json.load(f)["records"]
    for r in records:
        r.pop("cause", None)
        if r["outcome"] != "ok" and (r["runner"], r["probe"]) in CAUSES:
            r["cause"] = CAUSES[(r["runner"], r["probe"])]
    write_report(records, out + ".md", out + ".json")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", nargs=3, metavar=("RUNNER", "PROBE", "WORK"), help=argparse.SUPPRESS)
    p.add_argument("--only", nargs="*", help="probe or runner/probe names to run")
    p.add_argument("--timeout", type=int, default=600, help="seconds per probe")
    p.add_argument("--out", default=os.path.join(RESULTS, "beam_runners"))
    p.add_argument("--rewrite", action="store_true",
                   help="rewrite the .md/.json from the .json's records (no probe is run)")
    args = p.parse_args(argv)
    if args.rewrite:
        _rewrite(args.out)
        return 0
    if args.one:
        _one(*args.one)
        return 0
    plan = [(r, pr) for r, pr in PLAN
            if not args.only or pr in args.only or f"{r}/{pr}" in args.only]
    records = []
    for runner, probe in plan:
        # Flink / Prism fail at their download; a short limit in case it hangs instead.
        record = run_probe(runner, probe, min(args.timeout, 240) if runner in ("flink", "prism")
                           else args.timeout)
        print(f"{runner:14} {probe:15} {record['outcome']:13} {record['wall_seconds']:6.1f} s "
              f"{record.get('error', '')[:120]}", flush=True)
        records.append(record)
        write_report(records, args.out + ".md", args.out + ".json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
