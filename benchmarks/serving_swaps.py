"""Model version swaps under load: the Pusher pushes N new versions while C clients ask
/v1/recommend; every answer is checked (issue #19).

    python -m benchmarks.serving_swaps [--serving-dir serving_models] [--shop sample_shop]
        [--swaps 10] [--clients 8] [--settle-s 3] [--swap-timeout-s 300]
        [--pseudonym-key-file runs/pseudonym.key] [--out benchmarks/results] [--seed 0]
    python -m benchmarks.serving_swaps --models synthetic ...   (synthetic models: a smoke run)

The latest pushed version of each model (what ``make demo`` leaves in ``serving_models/``)
is laid out in a work folder as the Pusher does, and the local stack (stand-in model server
polling that folder + API, ``serving/demo/local_stack.py``) serves it. ``--clients``
threads then ask ``GET /v1/recommend?user_id=<a shop user with engagements>&k=10`` in a
closed loop, while the benchmark pushes ``--swaps`` times: a new version folder of both
models appears (hard links of the latest one, renamed into place in one step, as a push
lands), the model server loads and warms it and unloads the old one, and the API's watcher
recomputes the catalog embeddings and item-to-item tables. A swap counts as done when an
answer reports the new versions; the next push follows ``--settle-s`` later.

Reported: answers, failed answers (transport errors and statuses other than 200), degraded
answers (a model stage answered without, ``degraded`` not empty) overall and after the
first answer of each new version, p50/p99 latency, and per swap the seconds from the push
to the first answer on the new versions. ``serving_swaps.{md,json,png}`` in ``--out``
(the plot: latency over time with the pushes marked).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.outputs import write_outputs  # noqa: E402
from benchmarks.serving import MODELS, REPO, InputError, build, pushed_setup  # noqa: E402

STEM = "serving_swaps"


def push_copy(serving_dir: Path, version: int) -> int:
    """A new version ``version`` of each model: hard links of its latest version, renamed
    into place at once (a model server never sees half a version). Returns ``version``."""
    for model in MODELS:
        base = serving_dir / model
        latest = max(int(d.name) for d in base.iterdir() if d.name.isdigit())
        staging = base / f".push-{version}"
        shutil.copytree(base / str(latest), staging, copy_function=os.link)
        os.rename(staging, base / str(version))
    return version


def lay_out(source: Path, target: Path) -> dict[str, int]:
    """The latest version of each model of ``source`` in ``target`` (hard links)."""
    versions = {}
    for model in MODELS:
        latest = max(int(d.name) for d in (source / model).iterdir() if d.name.isdigit())
        (target / model).mkdir(parents=True, exist_ok=True)
        shutil.copytree(source / model / str(latest), target / model / str(latest),
                        copy_function=os.link)
        versions[model] = latest
    return versions


class Clients:
    """``n`` threads asking /v1/recommend in a closed loop; every answer is recorded as
    (start time, seconds, status, degraded stages, model versions)."""

    def __init__(self, url: str, headers: dict, users: list[str], n: int, seed: int):
        self.url, self.headers, self.users = url, headers, users
        self.records: list[tuple] = []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(random.Random(seed + i),),
                                          daemon=True) for i in range(n)]

    def _run(self, rng: random.Random) -> None:
        with httpx.Client(timeout=30, headers=self.headers) as client:
            while not self._stop.is_set():
                began = time.time()
                try:
                    response = client.get(f"{self.url}/v1/recommend",
                                          params={"user_id": rng.choice(self.users), "k": 10})
                    body = response.json() if response.status_code == 200 else {}
                    record = (began, time.time() - began, response.status_code,
                              tuple(body.get("degraded", ())),
                              tuple(sorted(body.get("model_versions", {}).items())))
                except (httpx.HTTPError, ValueError) as e:
                    record = (began, time.time() - began, type(e).__name__, (), ())
                with self._lock:
                    self.records.append(record)

    def start(self) -> "Clients":
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def first_answer_on(self, versions: dict, since: float) -> float | None:
        """Start time of the first answer after ``since`` that reports ``versions``."""
        wanted = tuple(sorted(versions.items()))
        with self._lock:
            found = [r[0] for r in self.records if r[0] >= since and r[4] == wanted]
        return min(found) if found else None


def summarise(records: list[tuple], pushes: list[dict]) -> dict:
    """The report's numbers (module docstring)."""
    latencies = np.array([r[1] for r in records if r[2] == 200]) * 1000.0
    failed = [r for r in records if r[2] != 200]
    degraded = [r for r in records if r[2] == 200 and r[3]]
    stages: dict[str, int] = {}
    for r in degraded:
        for stage in r[3]:
            stages[stage] = stages.get(stage, 0) + 1
    p50, p99 = np.percentile(latencies, [50, 99]) if len(latencies) else (np.nan, np.nan)
    done = [p for p in pushes if p["served_after_s"] is not None]
    return {"answers": len(records), "failed": len(failed),
            "failed_kinds": sorted({str(r[2]) for r in failed}),
            "degraded": len(degraded), "degraded_stages": stages,
            "p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1),
            "swaps": len(pushes), "swaps_served": len(done),
            "max_swap_s": max((p["served_after_s"] for p in done), default=None),
            "mean_swap_s": round(float(np.mean([p["served_after_s"] for p in done])), 1)
            if done else None}


def markdown(report: dict) -> str:
    s, m = report["summary"], report["meta"]
    lines = [f"# Model swaps under load ({m['models']} models, {m['clients']} clients, "
             f"{m['swaps']} pushes)", "",
             f"{m['date']}, commit {m['commit']}, {m['machine']}; model server: "
             f"{m['model_server']}; catalog {m['catalog_items']} items, {m['users']} users.",
             "", "| answers | failed | degraded | p50 ms | p99 ms | swaps served | "
             "mean / max s to serve a push |", "|---|---|---|---|---|---|---|",
             f"| {s['answers']} | {s['failed']} | {s['degraded']} | {s['p50_ms']} | "
             f"{s['p99_ms']} | {s['swaps_served']}/{s['swaps']} | {s['mean_swap_s']} / "
             f"{s['max_swap_s']} |", "", "| push | versions | seconds until an answer used it |",
             "|---|---|---|"]
    lines += [f"| {i + 1} | {p['version']} | {p['served_after_s']} |"
              for i, p in enumerate(report["pushes"])]
    if s["degraded_stages"]:
        lines += ["", f"Degraded stages: {s['degraded_stages']}."]
    if s["failed_kinds"]:
        lines += ["", f"Failed answers: {', '.join(s['failed_kinds'])}."]
    return "\n".join(lines) + "\n"


def draw(report: dict, records: list[tuple], path: str) -> None:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    t0 = report["meta"]["started_at"]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ok = [r for r in records if r[2] == 200 and not r[3]]
    ax.scatter([r[0] - t0 for r in ok], [r[1] * 1000 for r in ok], s=2, label="answers")
    bad = [r for r in records if r[2] != 200 or r[3]]
    if bad:
        ax.scatter([r[0] - t0 for r in bad], [r[1] * 1000 for r in bad], s=12, color="red",
                   label="failed or degraded")
    for i, push in enumerate(report["pushes"]):
        ax.axvline(push["pushed_at"] - t0, color="grey", linestyle=":",
                   label="push" if i == 0 else None)
    ax.set_xlabel("seconds")
    ax.set_ylabel("/v1/recommend latency (ms)")
    ax.set_yscale("log")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving_swaps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", choices=("pushed", "synthetic"), default="pushed")
    p.add_argument("--serving-dir", default="serving_models")
    p.add_argument("--shop", default="sample_shop")
    p.add_argument("--swaps", type=int, default=10)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--settle-s", type=float, default=3.0,
                   help="seconds between a served push and the next one")
    p.add_argument("--swap-timeout-s", type=float, default=300.0)
    p.add_argument("--pseudonym-key-file", help="the key the models were trained with")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--workdir", help="default: a new temporary folder")
    args = p.parse_args(argv)
    if not 1 <= args.swaps <= 100 or not 1 <= args.clients <= 64:
        p.error("--swaps must be in 1..100 and --clients in 1..64")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="shoprec-swaps-"))
    try:
        if args.models == "pushed":
            setup, _ = pushed_setup(Path(args.serving_dir), Path(args.shop))
        else:
            setup = build(2000, workdir, args.seed)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from serving.demo.local_stack import LocalStack  # pylint: disable=import-outside-toplevel
    serving = workdir / "serving"
    versions = lay_out(Path(setup.serving_dir), serving)
    settings = {"rate_limits": "off", "model_poll_s": "1"}
    meta = {"models": args.models, "serving_dir": str(setup.serving_dir),
            "shop": str(setup.shop_dir), "swaps": args.swaps, "clients": args.clients,
            "settle_s": args.settle_s, "seed": args.seed, "start_versions": versions,
            "catalog_items": len(setup.items), "users": len(setup.histories),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                     capture_output=True, text=True).stdout.strip(),
            "machine": f"{os.cpu_count()} CPU cores",
            "model_server": "development stand-in (serving.standin.model_server), not TF Serving"}
    users = sorted(setup.histories)[:500]
    pushes = []
    with LocalStack(str(serving), str(setup.shop_dir), log_dir=str(workdir / "logs"),
                    startup_timeout_s=600, api_settings=settings,
                    pseudonym_key_file=args.pseudonym_key_file) as stack:
        clients = Clients(stack.api_url, stack.headers("shopfront"), users, args.clients,
                          args.seed)
        meta["started_at"] = time.time()
        clients.start()
        time.sleep(args.settle_s)
        next_version = max(versions.values()) + 1
        for i in range(args.swaps):
            pushed_at = time.time()
            version = push_copy(serving, next_version + i)
            served = None
            while time.time() - pushed_at < args.swap_timeout_s:
                served = clients.first_answer_on({m: version for m in MODELS}, pushed_at)
                if served is not None:
                    break
                time.sleep(0.5)
            pushes.append({"version": version, "pushed_at": pushed_at,
                           "served_after_s": None if served is None
                           else round(served - pushed_at, 1)})
            print(f"push {i + 1}/{args.swaps}: version {version} "
                  f"{'served after %.1f s' % (served - pushed_at) if served else 'NOT served'}",
                  flush=True)
            time.sleep(args.settle_s)
        clients.stop()
    report = {"meta": meta, "pushes": pushes, "summary": summarise(clients.records, pushes)}
    text = markdown(report)
    write_outputs(report, args.out, STEM, text,
                  lambda results, path: draw(results, clients.records, path))
    print(text)
    # Exit 1 on a failed answer or an unserved push; degraded answers are reported (on 2
    # cores the stand-in loads a version in its own Python process, which stalls answers).
    return 0 if report["summary"]["failed"] == 0 \
        and report["summary"]["swaps_served"] == args.swaps else 1


if __name__ == "__main__":
    sys.exit(main())
