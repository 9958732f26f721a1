"""pipeline/progress.py: one terminal line per component, everything else in the log file."""
import importlib.util
import io
import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from absl import logging as absl_logging

from pipeline import progress

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "PYTHONPATH": ROOT}


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def absl_info():
    """absl at INFO, as tfx_pipeline.run_local sets it (restored afterwards)."""
    before = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    yield
    absl_logging.set_verbosity(before)


def _watch(handler):
    import logging  # pylint: disable=import-outside-toplevel
    logging.getLogger().addHandler(handler)
    return lambda: logging.getLogger().removeHandler(handler)


def test_local_dag_runner_records_become_one_line_per_component(absl_info):
    out, clock = io.StringIO(), FakeClock()
    handler = progress.ComponentProgress(out, total=3, width=14, live=False, clock=clock)
    unwatch = _watch(handler)
    try:
        # What tfx/orchestration/local/local_dag_runner.py and portable/launcher.py log.
        absl_logging.info("Using deployment config:\n %s", "executor_specs {...}")
        absl_logging.info("Component %s is running.", "ShopExampleGen")
        clock.now += 12.34
        absl_logging.info("Going to run a new execution %d", 1)
        absl_logging.info("Component %s is finished.", "ShopExampleGen")
        absl_logging.info("Component %s is running.", "Transform")
        clock.now += 0.5
        absl_logging.info("A cached execution %d is used.", 7)
        absl_logging.info("Component %s is finished.", "Transform")
        absl_logging.info("Skipping component %s.", "ranking_pusher")
    finally:
        unwatch()
    assert out.getvalue().splitlines() == [
        "[1/3] ShopExampleGen   12.3 s",
        "[2/3] Transform         0.5 s  (cached)",
        "[-/3] ranking_pusher         skipped (an earlier run's outputs)",
    ]
    # a partial run's skipped component is not counted: it did not run
    assert handler.done == {"ShopExampleGen": 12.3, "Transform": 0.5}


def test_a_started_component_is_on_screen_before_it_finishes(absl_info):
    out, clock = io.StringIO(), FakeClock()
    handler = progress.ComponentProgress(out, total=14, width=17, live=False, clock=clock)
    unwatch = _watch(handler)
    try:
        absl_logging.info("Component %s is running.", "retrieval_trainer")
        assert out.getvalue() == "[ 1/14] retrieval_trainer "
        clock.now += 126.94
        absl_logging.info("Component %s is finished.", "retrieval_trainer")
    finally:
        unwatch()
    assert out.getvalue() == "[ 1/14] retrieval_trainer  126.9 s\n"


def test_on_a_terminal_the_running_line_ticks_and_is_replaced(absl_info):
    out, clock = io.StringIO(), FakeClock()
    handler = progress.ComponentProgress(out, total=2, width=9, live=True, tick_s=0.01,
                                         clock=clock)
    unwatch = _watch(handler)
    try:
        absl_logging.info("Component %s is running.", "Transform")
        clock.now += 42
        deadline = time.monotonic() + 10
        while "42 s  running" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        clock.now += 1.5
        absl_logging.info("Component %s is finished.", "Transform")
    finally:
        unwatch()
    text = out.getvalue()
    assert "\r[1/2] Transform     42 s  running\x1b[K" in text
    assert text.endswith("\r[1/2] Transform   43.5 s\x1b[K\n") and text.count("\n") == 1
    time.sleep(0.05)                       # the ticker stopped: nothing after the final line
    assert out.getvalue() == text
    assert not [t for t in threading.enumerate() if t.name == "progress-ticker"]


def test_fail_marks_the_running_component():
    out, clock = io.StringIO(), FakeClock()
    handler = progress.ComponentProgress(out, total=2, width=8, live=False, clock=clock)
    handler.start("Trainer")
    clock.now += 3
    assert handler.fail() == "Trainer"
    assert out.getvalue() == "[1/2] Trainer     3.0 s  FAILED\n"
    assert handler.fail() is None


def _tfx_source(*parts):
    tfx_dir = importlib.util.find_spec("tfx").submodule_search_locations[0]  # no import
    with open(os.path.join(tfx_dir, *parts), encoding="utf-8") as f:
        return f.read()


def test_the_messages_are_the_ones_the_installed_tfx_logs():
    runner = _tfx_source("orchestration", "local", "local_dag_runner.py")
    launcher = _tfx_source("orchestration", "portable", "launcher.py")
    for template, pattern in (("Component %s is running.", progress._RUNNING),
                              ("Component %s is finished.", progress._FINISHED),
                              ("Skipping component %s.", progress._SKIPPED)):
        assert f"'{template}', node_id" in runner, template
        assert pattern.match(template % "latest_blessed_ranking_resolver")
    assert "'A cached execution %d is used.'" in launcher
    assert progress._CACHED.match("A cached execution %d is used." % 12)


def test_tail_keeps_the_last_lines_and_the_final_state_of_progress_bars(tmp_path):
    path = tmp_path / "x.log"
    path.write_text("".join(f"line {i}\n" for i in range(100)) + "bar 10%\rbar 100%\n")
    assert progress.tail(str(path), 3) == ["line 98", "line 99", "bar 100%"]
    assert progress.tail(str(tmp_path / "missing.log")) == []


QUIET_SCRIPT = textwrap.dedent("""
    import logging, os, subprocess, sys, warnings
    from absl import logging as absl_logging
    from pipeline.progress import QuietRun
    log_path, fail = sys.argv[1], sys.argv[2] == "fail"
    with QuietRun(log_path, title="quiet test") as quiet:
        absl_logging.set_verbosity(absl_logging.INFO)
        quiet.watch_components(total=2, width=8)
        os.write(2, b"E1202 C++ style noise on fd 2\\n")
        print("python print noise")
        warnings.warn("a library warning")
        subprocess.run([sys.executable, "-c",
                        "import sys; print('child stdout'); "
                        "print('child stderr', file=sys.stderr)"])
        absl_logging.info("Component %s is running.", "A")
        absl_logging.info("Component %s is finished.", "A")
        absl_logging.info("Component %s is running.", "B")
        absl_logging.warning("B is about to go wrong")
        try:
            if fail:
                raise RuntimeError("boom in B")
            absl_logging.info("Component %s is finished.", "B")
            print("results for the user", file=quiet.out)
        except Exception:
            quiet.report_failure()
            sys.exit(1)
    print("after the run: back on the terminal")
""")


def _lines(text):
    """Output lines with the (real-clock) seconds and the padding before them as " <t> s"."""
    return [re.sub(r" +\d+\.\d s", " <t> s", line) for line in text.splitlines()]


def _quiet(tmp_path, mode):
    log = tmp_path / "logs" / "run.log"
    result = subprocess.run([sys.executable, "-c", QUIET_SCRIPT, str(log), mode],
                            capture_output=True, text=True, timeout=120, env=ENV, cwd=ROOT)
    return result, log.read_text()


@pytest.mark.parametrize("mode", ["ok", "fail"])
def test_quiet_run_sends_every_fd_and_child_process_to_the_log(tmp_path, mode):
    result, log = _quiet(tmp_path, mode)
    noise = ("C++ style noise", "python print noise", "a library warning", "child stdout",
             "child stderr", "Component A is running.", "B is about to go wrong")
    for text in noise:
        assert text in log, text
        assert text not in result.stdout, text
        if mode == "ok":                     # a failure shows the end of the log on stderr
            assert text not in result.stderr, text
    assert "===== " in log and "quiet test" in log
    if mode == "ok":
        assert result.returncode == 0, result.stderr
        assert _lines(result.stdout) == [f"quiet test: full log in {tmp_path}/logs/run.log",
                                         "[1/2] A <t> s", "[2/2] B <t> s",
                                         "results for the user",
                                         "after the run: back on the terminal"]
        assert result.stderr == ""


def test_a_failed_run_shows_the_component_traceback_log_tail_and_log_path(tmp_path):
    result, log = _quiet(tmp_path, "fail")
    assert result.returncode == 1
    assert _lines(result.stdout) == [f"quiet test: full log in {tmp_path}/logs/run.log",
                                     "[1/2] A <t> s", "[2/2] B <t> s  FAILED"]
    err = result.stderr
    log_path = str(tmp_path / "logs" / "run.log")
    assert "lines of " + log_path in err and "B is about to go wrong" in err   # the tail
    assert "Traceback (most recent call last):" in err and 'File "<string>", line' in err
    assert "error in component B: RuntimeError: boom in B" in err
    assert err.rstrip().endswith("full log: " + log_path)
    assert "RuntimeError: boom in B" in log                                   # logged too


MAIN_SCRIPT = textwrap.dedent("""
    import os, sys
    import tfx_pipeline
    def fake_run_local(cfg, report_path=None, quiet=None, from_nodes=(), to_nodes=()):
        os.write(2, b"TF C++ noise\\n")
        print("absl-ish noise")
        quiet.watch_components(total=1, width=5)
        import logging
        logging.getLogger("absl").info("Component %s is running.", "Gen")
        if sys.argv[1] == "fail":
            raise ValueError("the shop is broken")
        logging.getLogger("absl").info("Component %s is finished.", "Gen")
        print("models: fine", file=quiet.out)
    tfx_pipeline.run_local = fake_run_local
    sys.exit(tfx_pipeline.main(["--data", sys.argv[2], "--metadata-path", sys.argv[3]]))
""")


@pytest.mark.parametrize("mode", ["ok", "fail"])
def test_tfx_pipeline_main_is_quiet_by_default_and_fails_loudly(tmp_path, mode):
    shop = tmp_path / "shop"
    shop.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", MAIN_SCRIPT, mode, str(shop), str(tmp_path / "run" / "m.db")],
        capture_output=True, text=True, timeout=120, env=ENV, cwd=ROOT)
    log = (tmp_path / "run" / "pipeline.log").read_text()    # default: next to the metadata
    assert "TF C++ noise" in log and "absl-ish noise" in log
    assert "noise" not in result.stdout
    if mode == "ok":
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert _lines(result.stdout) == ["[1/1] Gen <t> s", "models: fine"]
    else:
        assert result.returncode == 1
        assert _lines(result.stdout) == ["[1/1] Gen <t> s  FAILED"]
        assert "Traceback" in result.stderr and "TF C++ noise" in result.stderr  # log tail
        assert "error in component Gen: ValueError: the shop is broken" in result.stderr
        assert "full log: " + str(tmp_path / "run" / "pipeline.log") in result.stderr
