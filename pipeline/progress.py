"""Quiet pipeline runs: every log goes to a file, the terminal gets one line per component.

TFX, Beam, TensorFlow (C++ included) and the child processes they start (Beam workers, the
Keras-3 text-encoder export) write thousands of log lines. `QuietRun` points the process's
OS-level stdout and stderr (fds 1 and 2, inherited by children) at a log file and keeps a
copy of the original terminal for what the user should see:

    with QuietRun("runs/pipeline.log") as quiet:      # before TF/TFX are imported
        progress = quiet.watch_components(total=14)    # "[ 3/14] StatisticsGen   7.7 s"
        try:
            LocalDagRunner().run(...)
        except Exception:
            quiet.report_failure()                     # traceback + log tail + log path
        print("results ...", file=quiet.out)

`ComponentProgress` turns the records LocalDagRunner logs through absl ("Component X is
running." / "Component X is finished.") into those progress lines. Nothing here imports
TensorFlow, so it is cheap to import first.
"""
from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time
import traceback
from typing import Callable, Optional, TextIO

# Messages of tfx/orchestration/local/local_dag_runner.py and portable/launcher.py (TFX 1.16).
_RUNNING = re.compile(r"^Component (\S+) is running\.$")
_FINISHED = re.compile(r"^Component (\S+) is finished\.$")
_SKIPPED = re.compile(r"^Skipping component (\S+)\.$")
_CACHED = re.compile(r"^A cached execution \d+ is used\.$")

TAIL_LINES = 40


def tail(path: str, lines: int = TAIL_LINES) -> list[str]:
    """The last `lines` lines of a text file ([] when it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))   # enough for 40 lines, however long
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    # A tqdm-style progress bar rewrites its line with \r: keep what the line ended as.
    rows = text.split("\n")          # not splitlines(): that splits at the \r of a bar too
    if rows and rows[-1] == "":
        rows.pop()
    return [row.rstrip("\r").rsplit("\r", 1)[-1] for row in rows[-lines:]]


class ComponentProgress(logging.Handler):
    """A logging handler that prints one line per pipeline component to `out`.

    On a terminal the line of the running component shows a ticking elapsed time and is
    rewritten in place; elsewhere (a pipe, a file) the component's name is written when it
    starts and the seconds complete the line when it finishes, so each component is exactly
    one line in both cases.
    """

    def __init__(self, out: TextIO, total: Optional[int] = None, width: int = 33,
                 live: Optional[bool] = None, tick_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(level=logging.INFO)
        self.out, self.total, self.width, self.tick_s, self.clock = (
            out, total, width, tick_s, clock)
        self.live = _isatty(out) if live is None else live
        self.done: dict[str, float] = {}          # component -> seconds, in finishing order
        self.current: Optional[str] = None
        self._started = 0.0
        self._cached = False
        self._count = 0
        self._lock = threading.RLock()
        self._stop_ticker = threading.Event()

    # logging.Handler ------------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if (match := _RUNNING.match(message)):
                self.start(match.group(1))
            elif (match := _FINISHED.match(message)):
                self.finish(match.group(1))
            elif (match := _SKIPPED.match(message)):
                self.skip(match.group(1))
            elif _CACHED.match(message):
                self._cached = True
        except Exception:  # pylint: disable=broad-except  (e.g. the terminal went away:
            self.handleError(record)  # logging reports it on stderr, the run goes on)

    # progress lines -------------------------------------------------------------------
    def _prefix(self, name: str, counted: bool = True) -> str:
        number = self._count if counted else "-"
        count = f"{number:>{len(str(self.total))}}/{self.total}" if self.total else (
            f"{number:>2}")
        return f"[{count}] {name:<{self.width}}"

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def start(self, name: str) -> None:
        with self._lock:
            if self.current is not None:       # its "finished" never came: close its line
                self._end_line("?")
            self._count += 1
            self.current, self._started, self._cached = name, self.clock(), False
            if self.live:
                self._write(f"\r{self._prefix(name)}      0 s  running\x1b[K")
                self._stop_ticker = threading.Event()      # one per ticker thread
                threading.Thread(target=self._tick, args=(self._stop_ticker,),
                                 name="progress-ticker", daemon=True).start()
            else:
                self._write(self._prefix(name) + " ")

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self.tick_s):
            with self._lock:
                if stop.is_set() or self.current is None:
                    return
                seconds = self.clock() - self._started
                self._write(f"\r{self._prefix(self.current)} {seconds:6.0f} s  running\x1b[K")

    def _end_line(self, status: str) -> None:
        self._stop_ticker.set()
        seconds = self.clock() - self._started
        line = f"{seconds:6.1f} s" + (f"  {status}" if status else "")
        if self.live:
            self._write(f"\r{self._prefix(self.current)} {line}\x1b[K\n")
        else:
            self._write(line + "\n")
        self.done[self.current] = round(seconds, 1)
        self.current = None

    def finish(self, name: str) -> None:
        with self._lock:
            if self.current != name:           # no "running" seen: a line of its own
                self.start(name)
            self._end_line("(cached)" if self._cached else "")

    def skip(self, name: str) -> None:
        """A component a partial run leaves out (its outputs are an earlier run's): one
        line, not counted among the `total` that run."""
        with self._lock:
            if self.current is not None:
                self._end_line("?")
            self._write(f"{chr(13) if self.live else ''}{self._prefix(name, counted=False)}"
                        f"         skipped (an earlier run's outputs)"
                        f"{chr(27) + '[K' if self.live else ''}\n")

    def fail(self) -> Optional[str]:
        """Marks the running component (if any) FAILED; returns its name."""
        with self._lock:
            name = self.current
            if name is not None:
                self._end_line("FAILED")
            return name

    def close(self) -> None:
        self._stop_ticker.set()
        super().close()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False


class QuietRun:
    """Context manager: fds 1 and 2 -> `log_path` (appended to); `out`/`err` = the terminal.

    Enter it before TensorFlow, TFX or Beam are imported so that C++ logs and child
    processes inherit the redirection too. On exit the original fds are restored.
    """

    def __init__(self, log_path: str, title: str = "", announce: bool = True):
        self.log_path = os.path.abspath(log_path)
        under_cwd = self.log_path.startswith(os.path.join(os.getcwd(), ""))
        self.shown_path = os.path.relpath(self.log_path) if under_cwd else self.log_path
        self.title, self.announce = title, announce
        self.out: TextIO = sys.stdout
        self.err: TextIO = sys.stderr
        self.progress: Optional[ComponentProgress] = None
        self._saved: tuple[int, int] = (-1, -1)
        self._log_level = None

    def __enter__(self) -> "QuietRun":
        os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        self.out = os.fdopen(os.dup(self._saved[0]), "w", buffering=1, encoding="utf-8",
                             errors="replace")
        self.err = os.fdopen(os.dup(self._saved[1]), "w", buffering=1, encoding="utf-8",
                             errors="replace")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"\n===== {stamp} {self.title or ' '.join(sys.argv)}", flush=True)
        if self.announce:
            print(f"{self.title + ': ' if self.title else ''}full log in {self.shown_path}",
                  file=self.out)
        return self

    def watch_components(self, total: Optional[int] = None, width: int = 33,
                         live: Optional[bool] = None) -> ComponentProgress:
        """Attaches a ComponentProgress to the root logger (absl's records reach it)."""
        self.progress = ComponentProgress(self.out, total=total, width=width, live=live)
        # Records must still reach the log: without a handler of its own on the root logger
        # (TFX's imports usually add one), ours would stop Python's last-resort stderr output.
        logging.basicConfig()
        logging.getLogger().addHandler(self.progress)
        absl_logger = logging.getLogger("absl")
        if absl_logger.getEffectiveLevel() > logging.INFO:
            self._log_level = absl_logger.level
            absl_logger.setLevel(logging.INFO)
        return self.progress

    def report_failure(self, exc_info=None, lines: int = TAIL_LINES) -> None:
        """The failed component, the end of the log, the traceback and the log's path,
        on the terminal's stderr; the traceback is also appended to the log."""
        exc_type, exc, tb = exc_info or sys.exc_info()
        failed = self.progress.fail() if self.progress else None
        end_of_log = tail(self.log_path, lines)
        formatted = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(formatted)            # fd 2 is the log
        sys.stderr.flush()
        where = f" in component {failed}" if failed else ""
        rule = "-" * 30
        self.err.write(f"\n{rule} last {len(end_of_log)} lines of {self.shown_path} {rule}\n")
        self.err.write("\n".join(end_of_log) + "\n")
        self.err.write(f"{rule} traceback {rule}\n{formatted}")
        self.err.write(f"\nerror{where}: {exc_type.__name__}: {_first_line(exc)}\n"
                       f"full log: {self.shown_path}\n")
        self.err.flush()

    def __exit__(self, *exc) -> bool:
        if self.progress is not None:
            logging.getLogger().removeHandler(self.progress)
            self.progress.close()
            if self._log_level is not None:
                logging.getLogger("absl").setLevel(self._log_level)
        for stream in (sys.stdout, sys.stderr, self.out, self.err):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        self.out.close()
        self.err.close()
        self.out, self.err = sys.stdout, sys.stderr
        return False


def _first_line(exc, max_lines: int = 10) -> str:
    """The exception's message, cut to `max_lines` lines (the traceback above has it all)."""
    lines = str(exc).strip().splitlines()
    return "\n".join(line[:300] for line in lines[:max_lines]) + (
        "\n..." if len(lines) > max_lines else "")
