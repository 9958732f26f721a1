"""Each model version loaded and served by a child process of its own (the stand-in's default).

Loading a SavedModel is mostly Python work under the GIL (graph restoration, function
tracing, warm-up): done inside the serving process it stalls the gRPC and REST handler
threads, so requests for the version already served miss their deadlines while a new one
loads. Real TF Serving loads in C++ threads and keeps serving. Here a version is loaded,
warmed up and served by a child process started with multiprocessing's *spawn* context (not
fork: TF and threads), so the serving process only waits on a pipe while it loads.

Protocol: two one-way pipes carry pickled tuples.

* parent -> child: ``("load", path, warmup, hold_gil_s)`` once, then
  ``("predict", request_id, signature_name, inputs, output_filter)``; closing this pipe
  tells the child to finish its running requests and exit (it also exits when the server
  process dies: end of file, or its parent pid changes).
* child -> parent: ``("log", LogRecord)`` at any time (handled by the parent's loggers), then
  ``("loaded", signature_names, WarmupResult | None)`` or ``("load_failed", message, code)``
  (the child then exits), then per request ``("ok", request_id, outputs)`` or
  ``("error", request_id, error_class, message, code, http_status)``.

In the parent one reader thread per version resolves the futures of the requests in flight,
so any number of handler threads can call ``predict`` at once; the child answers on a thread
pool. A ServingError raised in the child is raised again in the parent with the same class,
code and message. A child that dies fails its pending and later requests with INTERNAL.
"""
from __future__ import annotations

import itertools
import logging
import logging.handlers
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
from concurrent import futures
from typing import Callable

from serving.client.errors import ServingError
from serving.standin.saved_model_servable import (ModelLoadError, SavedModelServable,
                                                  find_signature, read_signature_defs)

log = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")
CHILD_THREADS = 32  # concurrent Predict calls a version's process runs
STOP_WAIT_S = 10.0  # how long a stopping child may finish its running requests


class _Sender:
    """Sends pickled messages on a Connection from any thread (pickling outside the lock)."""

    def __init__(self, connection):
        self.connection = connection
        self.lock = threading.Lock()

    def send(self, message) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self.lock:
            self.connection.send_bytes(data)


class VersionProcess:
    """The parent's handle on one child process: started at once (it imports TensorFlow, a
    few seconds), then told which version to load."""

    def __init__(self):
        requests_in, requests_out = _SPAWN.Pipe(duplex=False)
        replies_in, replies_out = _SPAWN.Pipe(duplex=False)
        self.process = _SPAWN.Process(
            target=_child_main, name="standin-version",
            args=(requests_in, replies_out, logging.getLogger().getEffectiveLevel()),
            daemon=True)  # multiprocessing ends daemonic children when the server exits
        self.process.start()
        requests_in.close()  # the parent keeps only its own ends: the child's death is EOF
        replies_out.close()
        self._requests = _Sender(requests_out)
        self._replies = replies_in
        self._reap_lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message) -> None:
        self._requests.send(message)

    def recv(self):
        return self._replies.recv()

    def close_replies(self) -> None:
        self._replies.close()

    def exited(self, wait_s: float = 0.0) -> bool:
        """Whether the child has exited (waits up to ``wait_s``); safe from any thread: it
        watches the process sentinel instead of reaping the child."""
        return bool(multiprocessing.connection.wait([self.process.sentinel], wait_s))

    def exitcode(self, wait_s: float) -> int | None:
        """The exit code once the child has exited (reaped by one thread at a time)."""
        if not self.exited(wait_s):
            return None
        with self._reap_lock:
            self.process.join()
            return self.process.exitcode

    def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Close the request pipe (the child finishes running requests and exits); after
        ``wait_s`` terminate it, then kill it."""
        if self._requests.lock.acquire(timeout=wait_s):
            try:
                self._requests.connection.close()
            finally:
                self._requests.lock.release()
        if not self.exited(wait_s):
            if wait_s > 0:
                log.warning("Terminating model version process %d", self.pid)
            self.process.terminate()
            if not self.exited(min(2.0, max(wait_s, 0.5))):
                self.process.kill()
        self.exitcode(wait_s=30.0)


class ProcessServable:
    """A version loaded and served by its own child process; the interface of
    SavedModelServable (``path``, ``signature_defs``, ``signature``, ``predict``,
    ``warmup``) plus ``close()``.

    The constructor returns when the child has loaded the version and replayed its warm-up
    requests, or raises the ModelLoadError the in-process load would raise (same code and
    message). ``hold_gil_s`` is a test hook: the child keeps its GIL busy that long before
    loading (see ``hold_gil``). ``start`` starts the child process; it is called only once
    ``saved_model.pb`` has been read.
    """

    def __init__(self, path: str, warmup: bool = True, *, hold_gil_s: float = 0.0,
                 start: Callable[[], VersionProcess] = VersionProcess):
        self.path = path
        self.signature_defs = read_signature_defs(path)  # NOT_FOUND / DATA_LOSS: no child
        self.warmup = None
        self._signature_names: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._pending: dict[int, futures.Future] = {}
        self._ids = itertools.count(1)
        self._gone: str | None = None  # why the child no longer answers
        self._closing = False
        self._loaded: futures.Future = futures.Future()
        self._child = start()
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"version-process-{self._child.pid}")
        self._reader.start()
        try:
            self._child.send(("load", path, warmup, hold_gil_s))
        except OSError:
            pass  # the child is gone: the reader fails the load
        try:
            names, self.warmup = self._loaded.result()
        except BaseException:
            self.close()
            raise
        self._signature_names = frozenset(names)

    @property
    def pid(self) -> int:
        return self._child.pid

    def signature(self, name: str):
        """The SignatureDef, or FAILED_PRECONDITION as TF Serving's Predict reports it."""
        return find_signature(self.signature_defs, self._signature_names, name)

    def predict(self, signature_name: str, inputs: dict, output_filter=()) -> dict:
        """Run a signature in the child; its ServingErrors are raised here unchanged."""
        future: futures.Future = futures.Future()
        with self._lock:
            if self._gone is not None:
                raise ServingError(self._gone, code="INTERNAL")
            request_id = next(self._ids)
            self._pending[request_id] = future
        try:
            self._child.send(("predict", request_id, signature_name, inputs,
                              list(output_filter)))
        except OSError:
            pass  # the child is gone: the reader fails every pending request
        except BaseException:  # e.g. inputs that cannot be pickled
            with self._lock:
                self._pending.pop(request_id, None)
            raise
        return future.result()

    def close(self) -> None:
        """Stop the child (its running requests finish first) and the reader thread."""
        with self._lock:
            self._closing = True
        self._child.stop()
        self._reader.join(STOP_WAIT_S)

    # ------------------------------------------------------------------ reader
    def _read(self) -> None:
        try:
            while True:
                try:
                    message = self._child.recv()
                except (EOFError, OSError):
                    break
                self._handle(message)
        except Exception:  # a reply that cannot be read: stop serving this version
            log.exception("Unreadable reply from the process of %s", self.path)
            self._child.process.kill()
        finally:
            self._child_gone()

    def _handle(self, message) -> None:
        kind = message[0]
        if kind == "log":
            _emit(message[1])
        elif kind == "loaded":
            self._loaded.set_result(message[1:])
        elif kind == "load_failed":
            self._loaded.set_exception(ModelLoadError(message[1], code=message[2]))
        else:
            with self._lock:
                future = self._pending.pop(message[1], None)
            if future is None:
                return
            if kind == "ok":
                future.set_result(message[2])
            else:
                future.set_exception(_rebuilt_error(*message[2:]))

    def _child_gone(self) -> None:
        code = self._child.exitcode(wait_s=1.0)
        served = self._loaded.done() and self._loaded.exception() is None
        with self._lock:
            expected = self._closing or not served
            if expected:
                self._gone = f"Model version {self.path} is not loaded"
            else:
                self._gone = (f"The process serving model version {self.path} (pid "
                              f"{self._child.pid}) exited unexpectedly (exit code {code})")
            pending, self._pending = list(self._pending.values()), {}
        if not self._loaded.done():
            self._loaded.set_exception(ModelLoadError(
                f"The process loading {self.path} (pid {self._child.pid}) exited before "
                f"the version loaded (exit code {code})", code="INTERNAL"))
        elif not expected:
            log.error("%s: requests for it fail with INTERNAL", self._gone)
        for future in pending:
            future.set_exception(ServingError(self._gone, code="INTERNAL"))
        self._child.close_replies()


def _rebuilt_error(cls, message: str, code: str, http_status: int | None) -> ServingError:
    try:
        return cls(message, code=code, http_status=http_status)
    except TypeError:  # a subclass with another constructor: keep code and message
        return ServingError(message, code=code, http_status=http_status)


def _emit(record: logging.LogRecord) -> None:
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


class ProcessLoader:
    """The registry's loader: ``loader(path)`` is a ProcessServable in a new child process.

    Keeps track of the children it started: ``close()`` stops any still running (the
    registry closes the versions it drops; this catches a load interrupted by a stop).
    ``hold_gil_s`` is passed to the next loads (test hook, see ``hold_gil``).
    """

    def __init__(self, warmup: bool = True, hold_gil_s: float = 0.0):
        self.warmup, self.hold_gil_s = warmup, hold_gil_s
        self._lock = threading.Lock()
        self._children: list[VersionProcess] = []
        self._closed = False

    def __call__(self, path: str) -> ProcessServable:
        return ProcessServable(path, self.warmup, hold_gil_s=self.hold_gil_s,
                               start=self._start)

    def _start(self) -> VersionProcess:
        with self._lock:
            if self._closed:
                raise ModelLoadError("The model server is stopping", code="CANCELLED")
            self._children = [c for c in self._children if not c.exited()]
            child = VersionProcess()
            self._children.append(child)
            return child

    def pids(self) -> list[int]:
        """The child processes still running (versions served or loading)."""
        with self._lock:
            return [c.pid for c in self._children if not c.exited()]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            children, self._children = self._children, []
        for child in children:
            if not child.exited():
                child.stop(wait_s=2.0)


# ---------------------------------------------------------------------- the child
def hold_gil(seconds: float, stretch_s: float = 1.0) -> None:
    """Test hook: keep this process's GIL for ``seconds``, in stretches of about
    ``stretch_s`` during which no other thread of the process runs (each is one builtin
    call, ``sum`` over a range, which never lets the GIL go), as restoring a large graph
    does in a real load."""
    items = 1 << 16
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        started = time.monotonic()
        sum(range(items))
        took = max(time.monotonic() - started, 1e-6)
        items = max(1, int(items * min(left - took, stretch_s) / took))  # the next stretch


class _LogPipe:
    """The queue of a QueueHandler: log records go to the parent as ("log", record)."""

    def __init__(self, out: _Sender):
        self._out = out

    def put_nowait(self, record) -> None:
        try:
            self._out.send(("log", record))
        except OSError:
            pass  # the parent is gone


def _exit_when_orphaned(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            _exit()


def _exit(status: int = 0) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)  # no interpreter teardown: TF's can hang with threads running


def _child_main(requests, replies, log_level: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which stops us
    out = _Sender(replies)
    root = logging.getLogger()  # log only through the parent (its handlers, its format)
    root.handlers[:] = [logging.handlers.QueueHandler(_LogPipe(out))]
    root.setLevel(log_level)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True,
                     name="orphan-watch").start()
    try:
        _, path, warmup, hold_gil_s = requests.recv()
    except (EOFError, OSError):
        _exit()  # stopped before it was told what to load
    hold_gil(hold_gil_s)
    try:
        servable = SavedModelServable(path, warmup=warmup)
    except ModelLoadError as e:
        out.send(("load_failed", str(e), e.code))
        _exit()
    except Exception as e:  # reported as the registry reports an in-process loader failure
        out.send(("load_failed", f"{type(e).__name__}: {e}", "UNKNOWN"))
        _exit()
    out.send(("loaded", sorted(servable.signature_names), servable.warmup))
    pool = futures.ThreadPoolExecutor(CHILD_THREADS, thread_name_prefix="predict")
    while True:
        try:
            _, request_id, signature_name, inputs, output_filter = requests.recv()
        except (EOFError, OSError):
            break
        pool.submit(_answer, servable, out, request_id, signature_name, inputs, output_filter)
    pool.shutdown(wait=True)  # running requests still answer
    _exit()


def _answer(servable, out: _Sender, request_id, signature_name, inputs, output_filter):
    try:
        reply = ("ok", request_id, servable.predict(signature_name, inputs, output_filter))
    except ServingError as e:
        reply = ("error", request_id, type(e), e.message, e.code, e.http_status)
    except Exception as e:  # a bug, not the request: say so
        log.exception("Predict failed in the process of %s", servable.path)
        reply = ("error", request_id, ServingError, f"Internal error: {type(e).__name__}: {e}",
                 "INTERNAL", None)
    try:
        out.send(reply)
    except OSError:
        pass  # the parent is gone
    except Exception as e:  # outputs that cannot be pickled: the caller must not wait forever
        out.send(("error", request_id, ServingError,
                  f"Internal error: cannot return the outputs: {type(e).__name__}: {e}",
                  "INTERNAL", None))
