# `make run` and `make test` work on a fresh clone: each makes the virtualenv it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test chaos cluster bench bench-smoke lint clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,plot]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) run_streaming.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m benchmarks --json bench.json

bench-smoke: $(STAMP)
	$(PY) -m benchmarks --smoke --json bench-smoke.json

# A 3-host cluster in network namespaces (root): FAULTS=all, or a list such as
# FAULTS="link-cut broker-restart"; default a clean run. See stream_processor/cluster_faults.py.
FAULTS ?= clean
cluster: $(STAMP)
	$(PY) -m stream_processor.cluster_faults $(FAULTS)

chaos: $(STAMP)
	$(PY) -m pytest -m chaos tests/test_failures.py

clean:
	rm -rf $(VENV) results.json bench.json bench-smoke.json .pytest_cache .hypothesis
