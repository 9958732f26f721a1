# shoprec — one-command environment, demo and tests. Every target installs what it needs.
SHELL := /bin/bash
PYTHON_BOOT ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
ENV_STAMP := $(VENV)/.env-stamp
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0
# Some machines set PYTHONDONTWRITEBYTECODE; without .pyc caching every TF/TFX process spends
# ~40 s recompiling the stack. Cache bytecode (in .venv and __pycache__, both git-ignored).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: env test-deps demo test test-fast lock clean serve serve-demo bench-serving

env: $(ENV_STAMP)

# Idempotent: rebuilt only when the pins change. uv resolves nothing here: it installs the lock.
$(ENV_STAMP): requirements/lock.txt requirements/nodeps.txt setup.py
	@command -v $(PYTHON_BOOT) >/dev/null || { echo "error: $(PYTHON_BOOT) not found (shoprec needs CPython 3.11)"; exit 1; }
	@# A .venv without a working pip (an interrupted make env) is made again, not reused.
	@$(PY) -m pip --version >/dev/null 2>&1 || { test ! -e $(VENV) || \
	  echo "$(VENV) is incomplete (an interrupted make env?): creating it again"; \
	  $(PYTHON_BOOT) -m venv --clear $(VENV); }
	$(PY) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(PY) -m uv pip install -q -p $(PY) -r requirements/lock.txt
	$(PY) -m uv pip install -q -p $(PY) --no-deps -r requirements/nodeps.txt
	$(PY) -m uv pip install -q -p $(PY) --no-deps -e .
	@touch $(ENV_STAMP)
	@echo "environment ready: $(VENV)"

# Debian packages the tests need so that they run instead of skipping: redis-server for the
# Redis event store and the API replica tests (each test starts its own server on a free
# loopback port). Installed when missing (apt-get as root, else sudo), as .ci/run does.
test-deps:
	@command -v redis-server >/dev/null || { echo "installing redis-server (Debian) for the Redis tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null \
	  || { echo "error: could not install redis-server with apt-get (the Redis tests need it)" >&2; exit 1; }; }

# Two pytest-xdist workers (the suite leaves a core idle for long stretches alone); tests
# sharing a costly session fixture stay in one worker (tests/conftest.py, COSTLY_FIXTURES).
TEST_WORKERS ?= 2
test: env test-deps
	$(PY) -m pytest -ra --durations=30 -n $(TEST_WORKERS) --dist loadgroup

test-fast: env test-deps
	$(PY) -m pytest -ra -m "not slow"

lock:
	$(PY) -m uv pip compile requirements/requirements.in -c requirements/constraints.txt \
	  --python $(PY) -o requirements/lock.txt

clean:
	rm -rf runs serving_models sample_shop

SAMPLE_SHOP ?= sample_shop
SAMPLE_SEED ?= 7
# Everything the demo's steps log (TFX, Beam, TensorFlow, child processes) goes here; the
# terminal shows progress and results. `make demo DEMO_VERBOSE=1` shows the pipeline's logs.
DEMO_LOG ?= runs/demo.log
# The demo's key for pseudonymising user ids (docs/privacy.md); made once, kept with the runs.
PSEUDONYM_KEY ?= runs/pseudonym.key
DEMO_VERBOSE ?=
PIPELINE_LOG_ARGS = $(if $(DEMO_VERBOSE),--verbose,--log-file $(DEMO_LOG))

# Runs a demo step: its output on the terminal, its stderr (warnings, logs) appended to
# $(DEMO_LOG); when it fails: the end of the log, the log's path, and make stops.
demo_step = $(1) 2>>$(DEMO_LOG) || { status=$$?; echo "----- last 40 lines of $(DEMO_LOG) -----"; \
	tail -n 40 $(DEMO_LOG); echo "error: the step above failed (exit $$status); full log: $(DEMO_LOG)"; \
	exit $$status; } >&2

# The main job on the bundled (generated) sample shop: data -> TFX pipeline -> recommendations.
demo: env
	@mkdir -p runs $(dir $(DEMO_LOG)) && : > $(DEMO_LOG)
	@echo "shoprec demo: sample shop -> TFX pipeline -> serving -> recommendations (full log: $(DEMO_LOG))"
	@echo "== 1/3 sample shop: $(SAMPLE_SHOP)/ (seed $(SAMPLE_SEED))"
	@$(call demo_step,$(PY) -m pipeline.sample_shop --out $(SAMPLE_SHOP) --seed $(SAMPLE_SEED)) \
	  && { grep -a '^wrote ' $(DEMO_LOG) | tail -n 1; }
	@echo "== 2/3 TFX pipeline (user ids pseudonymised with $(PSEUDONYM_KEY))"
	@test -f $(PSEUDONYM_KEY) || $(PY) -m pipeline.contract.pseudonym new-key $(PSEUDONYM_KEY)
	@$(PY) tfx_pipeline.py --runner local --data $(SAMPLE_SHOP) --pseudonym-key-file $(PSEUDONYM_KEY) --report runs/demo_report.json $(PIPELINE_LOG_ARGS)
	@echo "== 3/3 TF Serving stand-in + recommendation API on the pushed models: example requests, then recommendations"
	@$(call demo_step,$(PY) -m serving.demo.demo_requests --serving-dir serving_models --shop $(SAMPLE_SHOP) -k 3 --users 3 --log-dir runs/demo_stack --pseudonym-key-file $(PSEUDONYM_KEY))

# TF-Serving stand-in (gRPC 8500, REST 8501) + recommendation API (8000) over the pushed models;
# it makes API keys for the run and prints them (docs/security.md). The API also serves the
# shop front and the operator console (docs/web.md), the console reading the demo's ML Metadata.
serve: env
	@echo "web pages (once the stack below is ready; paste its keys into a page's \"API keys\" form):"
	@echo "  shop front        http://127.0.0.1:8000/shop       keys shopfront (public) + ingest (events)"
	@echo "  operator console  http://127.0.0.1:8000/console    key operator"
	SHOPREC_METADATA_PATH=$(CURDIR)/runs/metadata.db $(PY) -m serving.demo.local_stack --serving-dir serving_models --shop $(SAMPLE_SHOP) --grpc-port 8500 --rest-port 8501 --api-port 8000 --pseudonym-key-file $(PSEUDONYM_KEY)

serve-demo: env
	$(PY) -m serving.demo.demo_requests --serving-dir serving_models --shop $(SAMPLE_SHOP) --pseudonym-key-file $(PSEUDONYM_KEY)

bench-serving: env
	$(PY) -m benchmarks.serving
