"""Run the recommendation API with uvicorn.

    python -m serving.api --shop sample_shop --tfserving-grpc localhost:8500 \
        --api-keys-file api_keys [--port 8000]

Every option can also come from ``SHOPREC_<SETTING>`` environment variables (e.g.
``SHOPREC_TFSERVING_GRPC=tfserving:8500``); options given here win. API keys: create one
with ``python -m serving.api.keys new --name NAME --roles public --append FILE``
(docs/security.md). uvicorn's access log is off (it prints URLs, i.e. user ids and
queries); the API logs one line per request without them (``serving.api.access``).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from serving.api.keys import keys_file_setting, read_keys_file
from serving.api.settings import Settings, SettingsError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m serving.api", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shop", help="shop folder (items, events; docs/data.md)")
    p.add_argument("--tfserving-grpc", help="TF Serving gRPC address HOST:PORT")
    p.add_argument("--event-store", help="sqlite:///PATH (default "
                   "sqlite:///var/shoprec/events.sqlite3) or redis://HOST:PORT/DB")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--max-category-share", type=float,
                   help="diversity: at most this share of k per top category (0-1]")
    p.add_argument("--startup-wait-s", type=float,
                   help="seconds to wait for the model server before serving")
    p.add_argument("--api-keys-file", help="the API keys file (NAME ROLES sha256:HEX lines; "
                   "docs/security.md); re-read when it changes")
    p.add_argument("--auth", choices=["required", "off"],
                   help="required (default): every /v1 route and /metrics need an API key; "
                        "off: no keys, every caller has every role (development only)")
    p.add_argument("--pseudonym-key-file",
                   help="user ids become the pipeline's keyed pseudonyms (docs/privacy.md)")
    p.add_argument("--experiments-file",
                   help="experiments (JSON or TOML; docs/api.md, \"Experiments\")")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    args = p.parse_args(argv)
    if not 0 < args.port <= 65535:
        p.error("--port must be between 1 and 65535")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env(
            shop_dir=args.shop, tfserving_grpc=args.tfserving_grpc,
            event_store=args.event_store, max_category_share=args.max_category_share,
            startup_wait_s=args.startup_wait_s, api_keys_file=args.api_keys_file,
            auth=args.auth, pseudonym_key_file=args.pseudonym_key_file,
            experiments_file=args.experiments_file)
        if not os.path.isdir(settings.shop_dir):
            raise SettingsError(f"shop folder {settings.shop_dir!r} does not exist")
        keys_file = keys_file_setting(settings)   # missing or malformed: before TensorFlow
        if keys_file:
            read_keys_file(keys_file)
        from serving.api.app import create_app   # imports TensorFlow protos: after the checks

        app = create_app(settings)
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=False, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
