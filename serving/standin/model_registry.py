"""Model versions on disk -> loaded servables, the way TF Serving manages them.

Each model's ``base_path`` holds numbered version directories. ``poll()`` applies the
version policy: new aspired versions are loaded first (state LOADING), then the request
path switches to them (AVAILABLE), and only then are versions that are no longer aspired
taken out of service (UNLOADING) and dropped once their in-flight requests finish (END).
A version that fails to load is reported as END with its error and never replaces a
serving version; it is retried when its directory changes (e.g. a completed copy).
This mirrors TF Serving's availability-preserving policy.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Callable

from serving.client.errors import InvalidArgument, NotFound
from serving.standin.model_config import ModelConfig
from serving.standin.saved_model_servable import ModelLoadError, SavedModelServable

log = logging.getLogger(__name__)

LOADING, AVAILABLE, UNLOADING, END = "LOADING", "AVAILABLE", "UNLOADING", "END"
_UNLOAD_WAIT_S = 60.0  # longest wait for in-flight requests before dropping a version


@dataclass
class VersionState:
    """A version's lifecycle state and load status, as GetModelStatus reports it."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""
    servable: object | None = None
    in_flight: int = 0
    fingerprint: tuple = ()


def _fingerprint(path: str) -> tuple:
    """Names, sizes and mtimes of the files in a version dir (two levels deep)."""
    entries = []
    for root, dirs, files in os.walk(path):
        if root.count(os.sep) - path.count(os.sep) >= 2:
            dirs[:] = []
        for name in files:
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(root, name))
                entries.append((os.path.relpath(os.path.join(root, name), path),
                                st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))


def versions_on_disk(base_path: str) -> dict[int, str]:
    """Numbered version directories under ``base_path`` (others are ignored)."""
    try:
        names = os.listdir(base_path)
    except OSError:
        return {}
    found = {}
    for name in names:
        path = os.path.join(base_path, name)
        if name.isdigit() and os.path.isdir(path):
            found[int(name)] = path
    return found


class ModelRegistry:
    """The served models and their versions; safe to use from many threads."""

    def __init__(self, configs: list[ModelConfig],
                 loader: Callable[[str], object] = SavedModelServable):
        self._loader = loader
        self._cond = threading.Condition()
        self._configs = {c.name: c for c in configs}
        self._versions: dict[str, dict[int, VersionState]] = {c.name: {} for c in configs}
        self._poll_lock = threading.Lock()
        self._missing_reported: set[str] = set()

    # ----------------------------------------------------------------- requests
    @contextlib.contextmanager
    def servable(self, name: str, version: int | None = None, label: str | None = None):
        """Yield ``(version, servable)``; the version is not dropped while in use."""
        with self._cond:
            entry = self._resolve(name, version, label)
            entry.in_flight += 1
        try:
            yield entry.version, entry.servable
        finally:
            with self._cond:
                entry.in_flight -= 1
                if entry.in_flight == 0:
                    self._cond.notify_all()

    def _label_version(self, name: str, label: str) -> int:
        config = self._configs.get(name)
        if config is None or label not in config.labels:
            raise InvalidArgument(f"Unrecognized servable version label: {label}")
        return config.labels[label]

    def _resolve(self, name: str, version: int | None, label: str | None) -> VersionState:
        if label is not None:
            version = self._label_version(name, label)
        versions = self._versions.get(name, {})
        if version is not None:
            entry = versions.get(version)
            if entry is None or entry.state != AVAILABLE:
                raise NotFound(f"Servable not found for request: Specific({name}, {version})")
            return entry
        available = [v for v in versions.values() if v.state == AVAILABLE]
        if not available:
            raise NotFound(f"Servable not found for request: Latest({name})")
        return max(available, key=lambda v: v.version)

    def status(self, name: str, version: int | None = None,
               label: str | None = None) -> list[VersionState]:
        """Version states, highest version first (GetModelStatus semantics)."""
        with self._cond:
            if label is not None:
                version = self._label_version(name, label)
            versions = self._versions.get(name, {})
            if version is not None:
                if version not in versions:
                    raise NotFound(f"Could not find version {version} of model {name}")
                chosen = [versions[version]]
            else:
                if not versions:
                    raise NotFound(f"Could not find any versions of model {name}")
                chosen = sorted(versions.values(), key=lambda v: -v.version)
            return [VersionState(v.version, v.state, v.error_code, v.error_message)
                    for v in chosen]

    def model_names(self) -> list[str]:
        with self._cond:
            return sorted(self._configs)

    # ------------------------------------------------------------ version sync
    def update_config(self, configs: list[ModelConfig]) -> None:
        """Serve exactly these models from now on (applied by the next ``poll``)."""
        with self._cond:
            self._configs = {c.name: c for c in configs}
            for c in configs:
                self._versions.setdefault(c.name, {})

    def poll(self, parallel_loads: int = 1) -> None:
        """Bring every model's loaded versions in line with its policy and the disk.

        With ``parallel_loads`` > 1, up to that many versions (of all models) load at once,
        all before any unload (as TF Serving's ``num_initial_load_threads`` at start-up;
        for versions that each load in a process of their own, see version_process.py)."""
        with self._poll_lock:
            with self._cond:
                names = set(self._versions)
                configs = dict(self._configs)
            plan = [(name, configs.get(name), *self._aspired(name, configs.get(name)))
                    for name in sorted(names)]
            loads = [(name, version, on_disk[version]) for name, _, aspired, on_disk in plan
                     for version in sorted(aspired, reverse=True)]
            parallel = parallel_loads > 1 and len(loads) > 1
            if parallel:
                with futures.ThreadPoolExecutor(parallel_loads, "load") as pool:
                    for done in [pool.submit(self._maybe_load, *load) for load in loads]:
                        done.result()
            for name, config, aspired, on_disk in plan:
                if not parallel:
                    for version in sorted(aspired, reverse=True):
                        self._maybe_load(name, version, on_disk[version])
                self._unload_unaspired(name, aspired)
                if config is None:
                    with self._cond:
                        if all(v.state == END for v in self._versions[name].values()):
                            del self._versions[name]

    def _aspired(self, name: str, config: ModelConfig | None) -> tuple[set[int], dict]:
        """The versions to serve and the version directories on disk."""
        on_disk = versions_on_disk(config.base_path) if config else {}
        if config and not on_disk and name not in self._missing_reported:
            log.warning("No versions of model %s found under base path %s",
                        name, config.base_path)
            self._missing_reported.add(name)
        return (config.aspired(set(on_disk)) if config else set()), on_disk

    def _maybe_load(self, name: str, version: int, path: str) -> None:
        fingerprint = _fingerprint(path)
        with self._cond:
            entry = self._versions[name].get(version)
            if entry is not None and entry.state in (LOADING, AVAILABLE):
                return
            if entry is not None and entry.error_code != "OK" and \
                    entry.fingerprint == fingerprint:
                return  # failed before and unchanged since: do not retry
            entry = VersionState(version, LOADING, fingerprint=fingerprint)
            self._versions[name][version] = entry
        log.info("Loading servable: {name: %s version: %d} from %s", name, version, path)
        try:
            servable = self._loader(path)
        except ModelLoadError as e:
            self._set_failed(entry, e.code, str(e))
        except Exception as e:  # any loader failure is reported, never fatal
            self._set_failed(entry, "UNKNOWN", f"{type(e).__name__}: {e}")
        else:
            with self._cond:
                entry.servable, entry.state = servable, AVAILABLE
            log.info("Successfully loaded servable version {name: %s version: %d}",
                     name, version)

    def _set_failed(self, entry: VersionState, code: str, message: str) -> None:
        log.error("Loading servable version %d failed: %s: %s", entry.version, code, message)
        with self._cond:
            entry.state, entry.error_code, entry.error_message = END, code, message

    def _unload_unaspired(self, name: str, aspired: set[int]) -> None:
        with self._cond:
            versions = self._versions[name]
            aspired_serving = any(versions[v].state == AVAILABLE
                                  for v in aspired if v in versions)
            if aspired and not aspired_serving:
                return  # keep the old versions serving until a new one is available
            doomed = [v for v in versions.values()
                      if v.version not in aspired and v.state == AVAILABLE]
            for entry in doomed:
                entry.state = UNLOADING  # no new requests from here on
        for entry in doomed:
            self._drain_and_drop(name, entry)

    def _drain_and_drop(self, name: str, entry: VersionState, wait_s: float = _UNLOAD_WAIT_S):
        with self._cond:
            if not self._cond.wait_for(lambda: entry.in_flight == 0, timeout=wait_s):
                log.warning("Unloading %s version %d with %d requests still running",
                            name, entry.version, entry.in_flight)
            servable, entry.servable, entry.state = entry.servable, None, END
        close = getattr(servable, "close", None)  # e.g. ProcessServable: stop its process
        if close is not None:
            try:
                close()
            except Exception:  # the version is out of service either way
                log.exception("Closing %s version %d failed", name, entry.version)
        log.info("Unloaded servable version {name: %s version: %d}", name, entry.version)

    def unload_all(self, wait_s: float = 10.0) -> None:
        """Take every version out of service, letting in-flight requests finish."""
        with self._cond:
            doomed = [(n, v) for n, vs in self._versions.items() for v in vs.values()
                      if v.state == AVAILABLE]
            for _, entry in doomed:
                entry.state = UNLOADING
        for name, entry in doomed:
            self._drain_and_drop(name, entry, wait_s)


class Poller:
    """Calls ``poll()`` every ``interval_s`` seconds on a daemon thread until stopped."""

    def __init__(self, fn: Callable[[], None], interval_s: float, name: str):
        self._fn, self._interval = fn, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "Poller":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._fn()
            except Exception:  # keep polling; the failure is logged
                log.exception("poll failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
