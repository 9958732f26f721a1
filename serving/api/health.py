"""Readiness of the API: may this replica take traffic now? (``GET /readyz``; docs/api.md,
"GET /healthz, GET /readyz"). Liveness (``GET /healthz``) checks nothing and needs no code here.

``Readiness.evaluate()`` runs five checks:

* ``model_server``: TF Serving answered ``GetModelStatus`` for both models within
  ``readiness_deadline_s`` (a client of its own, no retries, so a frozen server costs one
  budget, not the request deadline times the retries);
* ``models_available``: both models have an ``AVAILABLE`` version;
* ``embeddings``: the catalog embeddings are loaded and come from the retrieval version the
  model watcher reads (a swap is picked up by the watcher's next poll; comparing with the
  version TF Serving just loaded would make every replica unready at once on each swap);
* ``event_store``: a small bookkeeping write (``set_meta("readiness_probe", ...)``)
  succeeded within the budget; ``EventStore.ping`` alone is ``SELECT 1`` (SQLite) and
  passes on a read-only or vanished file;
* ``watcher``: the model watcher thread is alive and finished a poll within
  ``readiness_max_poll_intervals`` x ``model_poll_s``.

The model server and event store probes run in parallel worker threads and are waited for
at most ``readiness_deadline_s``, so ``/readyz`` answers within about that budget however
the dependencies misbehave; a probe still running from an earlier evaluation is not started
again (reported as failing). A report is reused for ``readiness_cache_s`` and by every
caller that was waiting while it was computed, so a burst of probes costs one round trip.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable

from serving.client.clients import GrpcPredictClient, ServingError

CHECKS = ("model_server", "models_available", "embeddings", "event_store", "watcher")
PROBE_META_KEY = "readiness_probe"


@dataclass(frozen=True)
class Check:
    ok: bool
    reason: str


@dataclass(frozen=True)
class ReadinessReport:
    checks: dict[str, Check]
    started: float                    # clock() when its probes began

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, check in self.checks.items() if not check.ok]

    def summary(self) -> str:
        """``"not ready: model_server (...); watcher (...)"`` or ``"ready"``."""
        if self.ok:
            return "ready"
        return "not ready: " + "; ".join(f"{name} ({self.checks[name].reason})"
                                         for name in self.failing)

    def as_dict(self) -> dict:
        return {name: {"ok": check.ok, "reason": check.reason}
                for name, check in self.checks.items()}

    def detail(self) -> list[dict]:
        """Every check in the ``detail`` form of the API's errors: ``loc`` names it, ``msg``
        is the reason, ``type`` is ``passed`` or ``failed`` (and ``ok`` says the same)."""
        return [{"loc": ["readiness", name], "msg": check.reason,
                 "type": "passed" if check.ok else "failed", "ok": check.ok}
                for name, check in self.checks.items()]


class _Pending:
    """A probe that gave no answer in this evaluation."""

    def __init__(self, reason: str):
        self.reason = reason


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


class Readiness:
    """The readiness checks over ``services`` (catalog, store, watcher); ``close()`` it."""

    def __init__(self, services, settings, metrics=None, client=None,
                 clock: Callable[[], float] = time.monotonic):
        self.services, self.metrics, self.clock = services, metrics, clock
        self.deadline_s, self.cache_s = settings.readiness_deadline_s, settings.readiness_cache_s
        self.max_poll_age_s = settings.readiness_max_poll_intervals * settings.model_poll_s
        self.retrieval_model = settings.retrieval_model
        self.models = (settings.retrieval_model, settings.ranking_model)
        self.client = client if client is not None else GrpcPredictClient(
            settings.tfserving_grpc, deadline_s=settings.readiness_deadline_s, retries=0)
        self._executor = ThreadPoolExecutor(max_workers=len(self.models) + 1,
                                            thread_name_prefix="readiness")
        self._inflight: dict[str, tuple[float, Future]] = {}
        self._lock = threading.Lock()
        self._report: ReadinessReport | None = None
        self._closed = False
        if metrics is not None:
            metrics.ready.set_function(lambda: float(self.evaluate().ok))

    def evaluate(self) -> ReadinessReport:
        """The current report: cached, or computed now (within about ``deadline_s``)."""
        asked = self.clock()
        with self._lock:
            report = self._report
            if report is None or (asked - report.started >= self.cache_s
                                  and report.started < asked):
                report = self._report = self._evaluate()
                if self.metrics is not None:
                    for name, check in report.checks.items():
                        self.metrics.readiness_check.labels(name).set(float(check.ok))
            return report

    def _evaluate(self) -> ReadinessReport:
        started = self.clock()
        if self._closed:
            return ReadinessReport({name: Check(False, "the API is shutting down")
                                    for name in CHECKS}, started)
        svc = self.services
        probes = {model: (lambda m=model: self.client.status(m)) for model in self.models}
        probes["event_store"] = lambda: svc.store.set_meta(PROBE_META_KEY,
                                                           str(int(time.time())))
        futures = {name: self._submit(name, probe, started) for name, probe in probes.items()}
        deadline = started + self.deadline_s
        results = {name: self._wait(future, deadline) for name, future in futures.items()}
        checks = dict(zip(("model_server", "models_available"),
                          self._model_checks({m: results[m] for m in self.models})))
        checks["embeddings"] = self._embeddings_check()
        checks["event_store"] = self._store_check(results["event_store"])
        checks["watcher"] = self._watcher_check()
        return ReadinessReport(checks, started)

    def _submit(self, name: str, probe: Callable, now: float):
        """A new probe, or a ``_Pending`` if the previous one has not returned yet."""
        running = self._inflight.get(name)
        if running is not None and not running[1].done():
            return _Pending(f"the previous probe is still unanswered after "
                            f"{now - running[0]:.1f} s")

        def timed():
            begun = time.perf_counter()
            value = probe()
            return value, time.perf_counter() - begun

        future = self._executor.submit(timed)
        self._inflight[name] = (now, future)
        return future

    def _wait(self, future, deadline: float):
        """(value, seconds), the exception raised, or a ``_Pending``."""
        if isinstance(future, _Pending):
            return future
        try:
            return future.result(timeout=max(0.0, deadline - self.clock()))
        except FutureTimeout:
            return _Pending(f"no answer within {_ms(self.deadline_s)}")
        except Exception as e:  # pylint: disable=broad-except
            return e

    def _model_checks(self, results: dict) -> tuple[Check, Check]:
        answered, unanswered, available, missing = [], [], [], []
        for model, result in results.items():
            if isinstance(result, _Pending):
                unanswered.append(f"{model}: {result.reason}")
            elif isinstance(result, ServingError) and result.code == "NOT_FOUND":
                answered.append(0.0)              # the server answered: no such model
                missing.append(f"{model}: {result}")
            elif isinstance(result, Exception):
                unanswered.append(f"{model}: {result}")
            else:
                statuses, seconds = result
                answered.append(seconds)
                versions = [s.version for s in statuses if s.state == "AVAILABLE"]
                if versions:
                    available.append(f"{model} v{max(versions)}")
                else:
                    states = ", ".join(f"v{s.version} {s.state}" for s in statuses) or "none"
                    missing.append(f"{model}: no AVAILABLE version ({states})")
        if unanswered:
            server = Check(False, "; ".join(unanswered))
            models = Check(False, "unknown: the model server did not answer"
                           + (f"; {'; '.join(missing)}" if missing else ""))
            return server, models
        server = Check(True, f"GetModelStatus answered in {_ms(max(answered))} "
                             f"(budget {_ms(self.deadline_s)})")
        if missing:
            return server, Check(False, "; ".join(missing))
        return server, Check(True, ", ".join(available) + " AVAILABLE")

    def _embeddings_check(self) -> Check:
        catalog, watcher = self.services.catalog, self.services.watcher
        served = watcher.versions.get(self.retrieval_model)
        if catalog.embeddings is None:
            return Check(False, "catalog embeddings not loaded yet"
                         + (f" ({watcher.last_error})" if watcher.last_error else ""))
        if served is None:
            return Check(False, "the model watcher has not read the served versions yet")
        if catalog.embeddings_version != served:
            return Check(False, f"catalog embeddings of {self.retrieval_model} "
                                f"v{catalog.embeddings_version}, the served version is v{served}")
        return Check(True, f"{len(catalog)} items from {self.retrieval_model} v{served}")

    def _store_check(self, result) -> Check:
        if isinstance(result, _Pending):
            return Check(False, result.reason)
        if isinstance(result, Exception):
            return Check(False, f"write failed: {result}")
        return Check(True, f"writable (answered in {_ms(result[1])})")

    def _watcher_check(self) -> Check:
        watcher = self.services.watcher
        if not watcher.alive:
            return Check(False, "the model watcher thread is not running")
        if watcher.last_poll is None:
            return Check(False, "the model watcher has not finished a poll yet")
        age = self.clock() - watcher.last_poll
        if age > self.max_poll_age_s:
            return Check(False, f"last poll finished {age:.1f} s ago "
                                f"(more than {self.max_poll_age_s:g} s)")
        last = f"; last poll failed: {watcher.last_error}" if watcher.last_error else ""
        return Check(True, f"last poll finished {age:.1f} s ago{last}")

    def close(self) -> None:
        """Stop probing (later reports fail) and release the probe client."""
        with self._lock:
            self._closed = True
        if self.metrics is not None:
            self.metrics.ready.set_function(lambda: 0.0)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.client.close()
