"""Development stand-in for ``tensorflow_model_server`` (TF Serving).

The real model server binary is not installable here (no Docker engine, not on PyPI or
Debian), so this module serves the pushed SavedModels with exactly TF Serving's APIs:
gRPC ``PredictionService.Predict`` / ``GetModelMetadata`` and ``ModelService.GetModelStatus``
/ ``HandleReloadConfigRequest``, and the REST API (``/v1/models/...`` status, metadata and
``:predict``). It reads the same ``--model_config_file`` (or ``--model_name`` /
``--model_base_path``), applies the version policy, polls the base paths for new versions
and swaps them in without failing in-flight requests; a version's warm-up requests
(``assets.extra/tf_serving_warmup_requests``) run before it serves. Like TF Serving, which
loads in C++ threads, it keeps answering while a version loads: each version is loaded and
served by a child process of its own (``--load_in_process`` to load inside the server
process instead). Production uses the stock
``tensorflow/serving`` image (see docs/serving.md); clients cannot tell the difference.

Not provided: batching, Prometheus monitoring, Classify/Regress/MultiInference.

    python -m serving.standin.model_server --model_config_file serving/tfserving/models.config \\
        --base_path_mapping /models=serving_models --port 8500 --rest_api_port 8501
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading

from serving.client.errors import InvalidArgument
from serving.standin.grpc_service import create_grpc_server
from serving.standin.model_config import (ConfigError, ModelConfig, configs_from_proto,
                                  load_model_config, single_model_config)
from serving.standin.model_registry import ModelRegistry, Poller
from serving.standin.rest_api import RestServer
from serving.standin.saved_model_servable import SavedModelServable
from serving.standin.version_process import ProcessLoader

log = logging.getLogger("serving.standin.model_server")
LOAD_PROCESSES = max(2, os.cpu_count() or 1)  # versions loading at once, each in a process


class ModelServer:
    """Registry + version polling + gRPC and REST endpoints, started and stopped together.

    Port 0 picks a free port; the bound ports are ``grpc_port`` and ``rest_port``. Each
    version is loaded and served by a child process of its own (version_process.py), so
    loading never stalls requests; ``load_in_process`` loads and serves in this process.
    """

    def __init__(self, configs: list[ModelConfig], port: int = 8500, rest_api_port: int = 0,
                 host: str = "127.0.0.1", file_system_poll_wait_seconds: float = 1.0,
                 model_config_file: str | None = None,
                 model_config_file_poll_wait_seconds: float = 0.0,
                 base_path_mapping: dict[str, str] | None = None,
                 rest_api_num_threads: int = 16, enable_model_warmup: bool = True,
                 load_in_process: bool = False):
        if load_in_process:
            self._loader = functools.partial(SavedModelServable, warmup=enable_model_warmup)
        else:
            self._loader = ProcessLoader(warmup=enable_model_warmup)
        self.registry = ModelRegistry(configs, loader=self._loader)
        self._applied_configs = list(configs)
        self._host, self._port, self._rest_port = host, port, rest_api_port
        self._poll_s = file_system_poll_wait_seconds
        self._config_file = model_config_file
        self._config_poll_s = model_config_file_poll_wait_seconds
        self._mapping = base_path_mapping or {}
        self._rest_threads = rest_api_num_threads
        self._grpc = self._rest = None
        self._pollers: list[Poller] = []
        self.grpc_port = self.rest_port = None

    def start(self) -> "ModelServer":
        """Load the models, open the ports, start polling; on failure undo and raise."""
        self._poll()  # initial load, before any port is open
        try:
            self._grpc, self.grpc_port = create_grpc_server(
                self.registry, self._port, self._host, reload_config=self.reload_config)
            log.info("Running gRPC ModelServer at %s:%d ...", self._host, self.grpc_port)
            if self._rest_port:  # 0 disables the REST API, as in TF Serving
                self._rest = RestServer(self.registry, self._rest_port, self._host,
                                        self._rest_threads).start()
                self.rest_port = self._rest.port
                log.info("Exporting HTTP/REST API at:%s:%d ...", self._host, self.rest_port)
        except Exception:
            self.stop(grace_s=0)
            raise
        if self._poll_s > 0:
            self._pollers.append(
                Poller(self._poll, self._poll_s, "version-poller").start())
        if self._config_file and self._config_poll_s > 0:
            self._pollers.append(Poller(self._reload_config_file, self._config_poll_s,
                                        "config-poller").start())
        return self

    def stop(self, grace_s: float = 10.0) -> None:
        """Refuse new calls, let running ones finish, then unload every model."""
        grpc_stopped = self._grpc.stop(grace_s) if self._grpc else None
        if self._rest:
            self._rest.stop()
        if grpc_stopped:
            grpc_stopped.wait(grace_s + 1)
        for poller in self._pollers:
            poller.stop()
        self.registry.unload_all()
        if isinstance(self._loader, ProcessLoader):
            self._loader.close()  # any version process left (e.g. a load cut short)

    def reload_config(self, proto) -> None:
        """Serve the models of a ModelServerConfig proto (HandleReloadConfigRequest)."""
        try:
            configs = configs_from_proto(proto, "ReloadConfigRequest", self._mapping)
        except ConfigError as e:
            raise InvalidArgument(str(e)) from None
        self._applied_configs = configs
        self.registry.update_config(configs)
        self._poll()

    def _poll(self) -> None:
        """Load new versions (side by side when each loads in a process of its own), then
        unload the versions no longer served."""
        self.registry.poll(parallel_loads=LOAD_PROCESSES
                           if isinstance(self._loader, ProcessLoader) else 1)

    def _reload_config_file(self) -> None:
        try:
            configs = load_model_config(self._config_file, self._mapping)
        except ConfigError as e:
            log.error("Keeping the current models; the model config is invalid: %s", e)
            return
        if configs == self._applied_configs:
            return
        log.info("Model config changed: now serving %s", ", ".join(c.name for c in configs))
        self._applied_configs = configs
        self.registry.update_config(configs)
        self._poll()


def _mapping(values: list[str]) -> dict[str, str]:
    mapping = {}
    for value in values:
        source, sep, target = value.partition("=")
        if not sep or not source or not target:
            raise ConfigError(f"--base_path_mapping {value!r}: expected FROM=TO, "
                              "e.g. /models=serving_models")
        mapping[source] = target
    return mapping


def _flag_bool(value: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.standin.model_server",
        description="Development stand-in for tensorflow_model_server: TF Serving's gRPC "
                    "and REST APIs over SavedModel version directories.")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    parser.add_argument("--rest_api_port", type=int, default=0,
                        help="REST port; 0 (default) disables the REST API")
    parser.add_argument("--model_config_file", default="",
                        help="ASCII ModelServerConfig; overrides --model_name/--model_base_path")
    parser.add_argument("--model_name", default="default",
                        help="model name when --model_config_file is not set")
    parser.add_argument("--model_base_path", default="",
                        help="directory of numbered versions when --model_config_file is not set")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                        help="seconds between polls for new versions; 0 loads once")
    parser.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                        help="seconds between re-reads of --model_config_file; 0 never")
    parser.add_argument("--rest_api_num_threads", type=int, default=16,
                        help="threads handling REST requests")
    parser.add_argument("--enable_model_warmup", type=_flag_bool, default=True,
                        metavar="true|false",
                        help="replay assets.extra/tf_serving_warmup_requests while a version "
                             "loads (default true)")
    parser.add_argument("--load_in_process", action="store_true",
                        help="stand-in only: load and serve every version inside this process "
                             "(default: one child process per version, so a loading version "
                             "never stalls requests for the served ones)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (stand-in only; default 127.0.0.1, loopback: "
                             "the model server has no authentication, docs/security.md; "
                             "TF Serving binds all interfaces)")
    parser.add_argument("--base_path_mapping", action="append", default=[],
                        metavar="FROM=TO",
                        help="stand-in only: rewrite base paths starting with FROM to TO, "
                             "e.g. /models=serving_models to use the container config locally")
    args = parser.parse_args(argv)
    for flag in ("port", "rest_api_port"):
        if not 0 <= getattr(args, flag) <= 65535:
            parser.error(f"--{flag} must be between 0 and 65535")
    if args.file_system_poll_wait_seconds < 0 or args.model_config_file_poll_wait_seconds < 0:
        parser.error("poll intervals must be >= 0")
    if args.rest_api_num_threads < 1:
        parser.error("--rest_api_num_threads must be >= 1")
    if args.rest_api_port and args.rest_api_port == args.port:
        parser.error("--rest_api_port must differ from --port")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        mapping = _mapping(args.base_path_mapping)
        if args.model_config_file:
            configs = load_model_config(args.model_config_file, mapping)
        else:
            configs = single_model_config(args.model_name, args.model_base_path)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = ModelServer(
            configs, port=args.port, rest_api_port=args.rest_api_port, host=args.host,
            file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
            model_config_file=args.model_config_file or None,
            model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
            base_path_mapping=mapping, rest_api_num_threads=args.rest_api_num_threads,
            enable_model_warmup=args.enable_model_warmup,
            load_in_process=args.load_in_process).start()
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    stop.wait()
    log.info("Shutting down: finishing in-flight requests")
    server.stop()
    log.info("Stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
