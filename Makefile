# crm-spark: the two commands are `make run` and `make test`; both set everything up.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_CUSTOMERS ?= 2000
DEMO_SEED ?= 7
PYTEST_ARGS ?=

.PHONY: install java run test test-fast bench clean clean-data

install: java $(STAMP)

# Java 17+ is what Spark 4 needs; install the headless JRE only when java is missing.
java:
	if ! command -v java >/dev/null 2>&1; then
		echo "java not found: installing openjdk-17-jre-headless with apt-get"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless
	fi
	major=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
	if [ -z "$$major" ] || [ "$$major" -lt 17 ]; then
		echo "error: Java $${major:-unknown} found, Spark 4 needs Java 17 or newer (set JAVA_HOME or install openjdk-17-jre-headless)" >&2
		exit 1
	fi

$(STAMP): pyproject.toml
	if ! command -v $(PYTHON) >/dev/null 2>&1; then
		echo "error: $(PYTHON) not found; crm-spark needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
		exit 1
	fi
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Generate the demo dataset (once) and run every built stage on the embedded default.
run: install
	if [ ! -d data/raw/customers ]; then
		$(BIN)/crm-spark generate --customers $(DEMO_CUSTOMERS) --seed $(DEMO_SEED) --out data/raw
	fi
	$(BIN)/crm-spark run

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: unit tests only (no end-to-end run, no generated dataset); 3.5 min here, goal 90 s.
test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_etl.py --quick

clean-data:
	rm -rf data lake

clean: clean-data
	rm -rf $(VENV) .pytest_cache
