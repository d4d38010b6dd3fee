# `make run` and `make test` work on a fresh clone: each makes the virtualenv it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-all unit docs chaos cluster bench bench-smoke lint clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,plot,docs]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) run_streaming.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Tests in tiers, by directory (tests/unit, integration, e2e, chaos, soak, cluster, browser, bench).
# `make test`: lint, then unit, integration and end-to-end on the embedded broker, in parallel.
# `make test-all`: every tier and RabbitMQ too; each part a tier needs must be here (else it fails).
JOBS ?= 4
PYTEST := $(PY) -m pytest -p no:cacheprovider
test: lint
	$(PYTEST) -n $(JOBS) --dist loadgroup tests/unit tests/integration tests/e2e -m "not rabbitmq and not chaos"

unit: $(STAMP)
	$(PYTEST) tests/unit

test-all: export STREAM_PROCESSOR_REQUIRE_RABBITMQ = 1
test-all: export STREAM_PROCESSOR_REQUIRE_CHROMIUM = 1
test-all: export STREAM_PROCESSOR_REQUIRE_NETNS = 1
test-all: export STREAM_PROCESSOR_REQUIRE_NODE = 1
test-all: export STREAM_PROCESSOR_REQUIRE_POSTGRES = 1
test-all: lint
	$(PYTEST) -n $(JOBS) --dist loadgroup tests

# The docs site (docs/, mkdocs.yml), built as CI builds it: any warning is an error.
docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) -m benchmarks --json bench.json

bench-smoke: $(STAMP)
	$(PY) -m benchmarks --smoke --json bench-smoke.json

# A 3-host cluster in network namespaces (root): FAULTS=all, or a list such as
# FAULTS="link-cut broker-restart"; default a clean run. See stream_processor/cluster_faults.py.
FAULTS ?= clean
cluster: $(STAMP)
	$(PY) -m harness.cluster_faults $(FAULTS)

chaos: $(STAMP)
	$(PYTEST) -n $(JOBS) tests -m chaos

clean:
	rm -rf $(VENV) site results.json bench.json bench-smoke.json .pytest_cache .hypothesis
