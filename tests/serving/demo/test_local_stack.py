"""The local stack's process handling (serving/demo/local_stack.py) with stand-in services: a
tiny HTTP server in the API's place that reports the settings it started with, and a
sleeping process in the model server's."""
import os
import stat
import sys

import httpx
import pytest

from serving.demo.local_stack import LocalStack, StackError

FAKE_SERVICES = '''
import http.server, json, os, sys, time
if "serving.api" not in sys.argv:          # the model server: just keeps running
    while True:
        time.sleep(1)
settings = {k: v for k, v in os.environ.items() if k.startswith("SHOPREC_")}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"pid": os.getpid(), "settings": settings}).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
port = int(sys.argv[sys.argv.index("--port") + 1])
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


@pytest.fixture
def fake_python(tmp_path):
    """An executable standing in for the stack's Python: runs FAKE_SERVICES."""
    script = tmp_path / "services.py"
    script.write_text(FAKE_SERVICES)
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper)


def _ready(stack):
    return httpx.get(f"{stack.api_url}/readyz", timeout=5).json()


def test_restart_api_keeps_the_model_server_and_applies_new_settings(tmp_path, fake_python):
    keys = tmp_path / "keys"
    keys.write_text("")
    stack = LocalStack(str(tmp_path), str(tmp_path), python=fake_python,
                       log_dir=str(tmp_path / "logs"), api_keys_file=str(keys),
                       api_settings={"lexical_candidates": "50"}, startup_timeout_s=30)
    with pytest.raises(StackError, match="not running"):
        stack.restart_api({"lexical_candidates": "100"})
    with stack:
        first = _ready(stack)
        model_server = stack.processes["model_server"].pid
        assert first["settings"]["SHOPREC_LEXICAL_CANDIDATES"] == "50"
        stack.restart_api({"lexical_candidates": 100, "search_fusion": "union"})
        second = _ready(stack)
        assert second["pid"] != first["pid"], "a new API process"
        assert stack.processes["model_server"].pid == model_server, "the same model server"
        assert second["settings"]["SHOPREC_LEXICAL_CANDIDATES"] == "100"
        assert second["settings"]["SHOPREC_SEARCH_FUSION"] == "union"
        assert stack.api_settings["lexical_candidates"] == "100"
        assert os.path.exists(tmp_path / "logs" / "api.log")
    assert stack.processes == {}, "leaving the block stopped both services"


def test_stop_reports_clean_exits(tmp_path, fake_python):
    keys = tmp_path / "keys"
    keys.write_text("")
    stack = LocalStack(str(tmp_path), str(tmp_path), python=fake_python,
                       log_dir=str(tmp_path / "logs"), api_keys_file=str(keys),
                       startup_timeout_s=30).start()
    # the pushed segments folder is a default setting of the stack's API
    assert _ready(stack)["settings"]["SHOPREC_SEGMENTS_DIR"].endswith("segments")
    assert stack.stop() == {"api": 0, "model_server": 0}
