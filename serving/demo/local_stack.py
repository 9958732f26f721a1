"""The serving stack on one machine: model server (the TF Serving stand-in) + API.

Both run as subprocesses on 127.0.0.1, the model server with the production
``models.config`` (``/models`` mapped to the serving dir), the API pointed at its gRPC port
and requiring API keys: unless given a keys file, the stack makes three keys for this run
(``shopfront``: public, ``ingest``: events, ``operator``: every role), writes their hashes
to ``<log dir>/api_keys`` and keeps the secrets in ``keys`` (``headers(name)``). ``start()``
waits (bounded) until the API is ready (``/readyz`` 200: models answering, catalog
embeddings loaded, event store writable); ``stop()`` sends SIGTERM (API first), waits,
and kills only what did not exit. In the foreground (what ``make serve`` runs; it prints
the keys):

    python -m serving.demo.local_stack --serving-dir serving_models --shop sample_shop \\
        --grpc-port 8500 --rest-port 8501 --api-port 8000
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import portpicker

MODELS_CONFIG = Path(__file__).parent.parent / "tfserving" / "models.config"
STACK_KEYS = {"shopfront": "public", "ingest": "events", "operator": "public,events,operator"}


class StackError(RuntimeError):
    """A service did not start; the message holds the end of its log."""


class LocalStack:
    """Model server + API subprocesses on 127.0.0.1 (ports 0 = pick free ones)."""

    def __init__(self, serving_dir: str, shop: str, grpc_port: int = 0, rest_port: int = 0,
                 api_port: int = 0, event_store: str | None = None, host: str = "127.0.0.1",
                 log_dir: str | None = None, startup_timeout_s: float = 300.0,
                 python: str = sys.executable, api_keys_file: str | None = None,
                 api_settings: dict[str, str] | None = None,
                 pseudonym_key_file: str | None = None):
        """``api_keys_file``: use these keys (``keys`` stays empty) instead of making new
        ones; ``api_settings``: more API settings by name (``SHOPREC_<NAME>``), e.g.
        ``{"rate_limits": "off"}``."""
        self.serving_dir, self.shop = os.path.abspath(serving_dir), os.path.abspath(shop)
        self.host, self.python = host, python
        self.grpc_port = grpc_port or portpicker.pick_unused_port()
        self.rest_port = rest_port or portpicker.pick_unused_port()
        self.api_port = api_port or portpicker.pick_unused_port()
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="shoprec-stack-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.event_store = event_store or f"sqlite:///{self.log_dir / 'events.sqlite3'}"
        self.startup_timeout_s = startup_timeout_s
        self.processes: dict[str, subprocess.Popen] = {}
        self.api_settings = dict(api_settings or {})
        # the user segments the pipeline pushes next to the models (docs/api.md)
        self.api_settings.setdefault("segments_dir", os.path.join(self.serving_dir, "segments"))
        self.api_settings.setdefault("search_terms_dir",
                                     os.path.join(self.serving_dir, "search_terms"))
        if pseudonym_key_file:          # the pipeline's key (docs/privacy.md)
            self.api_settings["pseudonym_key_file"] = os.path.abspath(pseudonym_key_file)
        self.keys: dict[str, str] = {}          # key name -> secret (made for this stack)
        self.api_keys_file = api_keys_file or str(self.log_dir / "api_keys")
        if api_keys_file is None:
            self._make_keys()

    def _make_keys(self) -> None:
        from serving.api.keys import append_key, create_key

        if os.path.exists(self.api_keys_file):
            os.unlink(self.api_keys_file)     # a log dir reused from an earlier run
        for name, roles in STACK_KEYS.items():
            self.keys[name], key = create_key(name, roles)
            append_key(self.api_keys_file, key)

    def headers(self, name: str = "operator") -> dict[str, str]:
        """The Authorization header of one of the stack's keys (``STACK_KEYS``)."""
        return {"Authorization": f"Bearer {self.keys[name]}"} if name in self.keys else {}

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def urls(self) -> dict[str, str]:
        return {"api": self.api_url, "api docs": f"{self.api_url}/docs",
                "metrics": f"{self.api_url}/metrics",
                "tfserving grpc": f"{self.host}:{self.grpc_port}",
                "tfserving rest": f"http://{self.host}:{self.rest_port}/v1/models/retrieval"}

    def commands(self) -> dict[str, list[str]]:
        return {
            "model_server": [
                self.python, "-m", "serving.standin.model_server",
                "--model_config_file", str(MODELS_CONFIG),
                "--base_path_mapping", f"/models={self.serving_dir}",
                "--host", self.host, "--port", str(self.grpc_port),
                "--rest_api_port", str(self.rest_port),
                "--file_system_poll_wait_seconds", "5"],
            "api": [
                self.python, "-m", "serving.api", "--shop", self.shop,
                "--tfserving-grpc", f"{self.host}:{self.grpc_port}",
                "--host", self.host, "--port", str(self.api_port),
                "--event-store", self.event_store, "--api-keys-file", self.api_keys_file],
        }

    def start(self, foreground_logs: bool = False) -> "LocalStack":
        """Start both services and wait until the API is ready (or raise StackError)."""
        for name in self.commands():
            self._spawn(name, foreground_logs)
        return self._ready_or_stopped()

    def restart_api(self, api_settings: dict[str, str]) -> "LocalStack":
        """Restart the API alone with ``api_settings`` merged into its settings (it reads them
        when it starts), the model server going on serving what it loaded; waits until the
        new API is ready (or raises StackError, with the stack stopped)."""
        if "model_server" not in self.processes:
            raise StackError("restart_api: the stack is not running (call start first)")
        self._stop_process("api", 20.0)
        self.api_settings.update({name: str(value) for name, value in api_settings.items()})
        self._spawn("api", False, append_log=True)
        return self._ready_or_stopped()

    def _ready_or_stopped(self) -> "LocalStack":
        """Waits until the API is ready; on any failure stops the stack before raising."""
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, foreground_logs: bool, append_log: bool = False) -> None:
        settings = {f"SHOPREC_{key.upper()}": str(value)
                    for key, value in self.api_settings.items()}
        log = None if foreground_logs else open(self.log_dir / f"{name}.log",
                                                "ab" if append_log else "wb")
        self.processes[name] = subprocess.Popen(
            self.commands()[name], stdout=log,
            stderr=subprocess.STDOUT if log else None,
            env={**os.environ, "PYTHONUNBUFFERED": "1",
                 **(settings if name == "api" else {})})
        if log:
            log.close()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise StackError(f"{name} exited with status {proc.returncode}"
                                     f"{self._log_tail(name)}")
            try:
                response = httpx.get(f"{self.api_url}/readyz", timeout=2.0,
                                     headers=self.headers("operator"))
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as e:
                last = str(e)
            time.sleep(0.5)
        raise StackError(f"API not ready after {self.startup_timeout_s:.0f} s ({last})"
                         f"{self._log_tail('api')}")

    def _log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        return f"; end of {path}:\n" + "\n".join(tail)

    def stop(self, timeout_s: float = 20.0) -> dict[str, int]:
        """SIGTERM the API, then the model server; SIGKILL what is left after timeout_s."""
        codes = {name: self._stop_process(name, timeout_s) for name in ("api", "model_server")
                 if name in self.processes}
        self.processes.clear()
        return codes

    def _stop_process(self, name: str, timeout_s: float) -> int:
        """SIGTERM one service, SIGKILL after ``timeout_s``; its exit code (0 = clean)."""
        proc = self.processes.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout_s)
            # uvicorn re-raises SIGTERM after its graceful shutdown: that is a clean exit
            return 0 if code == -signal.SIGTERM else code
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.demo.local_stack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serving-dir", default="serving_models")
    p.add_argument("--shop", default="sample_shop")
    p.add_argument("--grpc-port", type=int, default=8500)
    p.add_argument("--rest-port", type=int, default=8501)
    p.add_argument("--api-port", type=int, default=8000)
    p.add_argument("--event-store", help="default: sqlite:///var/shoprec/events.sqlite3")
    p.add_argument("--api-keys-file", help="the API's keys file (default: make three keys for "
                                           "this run and print them)")
    p.add_argument("--pseudonym-key-file", help="the key the pipeline pseudonymised user ids "
                                                "with (docs/privacy.md)")
    p.add_argument("--log-dir", help="write the services' logs (TensorFlow, access logs) to "
                                     "DIR/model_server.log and DIR/api.log instead of the "
                                     "terminal")
    args = p.parse_args(argv)
    for folder in (args.serving_dir, args.shop):
        if not os.path.isdir(folder):
            p.error(f"{folder!r} is not a folder (run `make demo` first)")
    stack = LocalStack(args.serving_dir, args.shop, args.grpc_port, args.rest_port,
                       args.api_port, args.event_store or "sqlite:///var/shoprec/events.sqlite3",
                       log_dir=args.log_dir, api_keys_file=args.api_keys_file,
                       pseudonym_key_file=args.pseudonym_key_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stack.start(foreground_logs=not args.log_dir)
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("serving (Ctrl-C stops both):", *(f"  {k:15} {v}" for k, v in stack.urls.items()),
          *([f"  {'logs':15} {stack.log_dir}/"] if args.log_dir else []), sep="\n")
    if stack.keys:
        print(f"API keys for this run (hashes in {stack.api_keys_file}; send "
              "Authorization: Bearer <key>):",
              *(f"  {name:10} {STACK_KEYS[name]:24} {secret}"
                for name, secret in stack.keys.items()), sep="\n")
    else:
        print(f"API keys: {stack.api_keys_file}")
    sys.stdout.flush()
    while not stop.wait(1.0):
        if any(proc.poll() is not None for proc in stack.processes.values()):
            print("error: a service exited; stopping", file=sys.stderr)
            break
    codes = stack.stop()
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
