"""Test-wide setup: tf-keras (Keras 2) for TFRS must be chosen before TensorFlow is imported."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402  (after the environment above)

# Module-scoped fixtures that other folders reuse, computed once per session: the browser tests
# (tests/serving/web) import tests/test_tfx_pipeline.py's `runs` (two pipeline runs, minutes)
# and must not run the pipeline a second time.
SHARED_FIXTURES = {"runs"}
_shared_results: dict = {}      # fixture function -> (value, exception info or None)


def _shared_key(fixturedef):
    return fixturedef.argname, getattr(fixturedef.func, "__func__", fixturedef.func)


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef, request):
    """A shared fixture already computed in this session: its value (or error) again."""
    if fixturedef.argname not in SHARED_FIXTURES or _shared_key(fixturedef) not in \
            _shared_results:
        return None
    value, error = _shared_results[_shared_key(fixturedef)]
    fixturedef.cached_result = (value, fixturedef.cache_key(request), error)
    if error is not None:
        raise error[0].with_traceback(error[1])
    return value


def pytest_fixture_post_finalizer(fixturedef, request):
    """Keep a shared fixture's result when its first scope ends (before it is dropped)."""
    if fixturedef.argname in SHARED_FIXTURES and fixturedef.cached_result is not None:
        value, _, error = fixturedef.cached_result
        _shared_results.setdefault(_shared_key(fixturedef), (value, error))
