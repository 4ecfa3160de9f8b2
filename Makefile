# crm-spark: the two commands are `make run` and `make test`; both set everything up.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JARS := jars/.fetched
DEMO_CUSTOMERS ?= 2000
DEMO_SEED ?= 7
PYTEST_ARGS ?=
MVN ?= mvn

.PHONY: install java run test test-fast bench dist clean clean-data

install: java $(STAMP) $(JARS)

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
	# uv resolves and downloads in parallel: 45 s here where pip took 2 min 18 s; pip only bootstraps it.
	# --compile-bytecode writes every dependency's .pyc now, once: uv does not by default, and where
	# PYTHONDONTWRITEBYTECODE is set (as on this machine) every Python process compiled the ~1,200
	# modules it imports from source again, 5 s of a stage's start (README "Performance").
	$(BIN)/python -m pip install -q --disable-pip-version-check 'uv>=0.5,<1'
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

# delta-spark (jars/delta) and, for the HDFS test, hadoop-client-minicluster (jars/test) from Maven
# Central, versions in jvm/pom.xml; Maven's own cache (~/.m2) keeps them across clones. Without
# Maven Central the install goes on and the embedded Delta engine is used.
$(JARS): jvm/pom.xml
	if ! command -v mvn >/dev/null 2>&1; then
		echo "mvn not found: installing maven with apt-get (it fetches the delta-spark jars)"
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null) \
			|| echo "warning: could not install maven; the embedded Delta engine will be used"
	fi
	rm -rf jars/delta jars/test
	for profile in delta:io.delta test:org.apache.hadoop,org.junit.jupiter,org.junit.platform,org.opentest4j,org.apiguardian,junit,org.hamcrest; do
		group=$${profile#*:}; profile=$${profile%%:*}
		if ! log=$$($(MVN) -B -q -f jvm/pom.xml -P $$profile dependency:copy-dependencies -DincludeScope=runtime \
				-DincludeGroupIds=$$group -DoutputDirectory=$(CURDIR)/jars/$$profile 2>&1); then
			echo "warning: Maven Central unreachable, jars/$$profile not fetched ($$(echo "$$log" | sed -e 's/\x1b\[[0-9;]*m//g' | grep -m1 ERROR)); the embedded Delta engine will be used"
			rm -rf jars/$$profile
			exit 0
		fi
	done
	touch $(JARS)

# Generate the demo dataset (once) and run every built stage on the embedded default, in one Spark
# application (one JVM start and JIT warm-up, not two).
run: install
	$(BIN)/crm-spark demo --customers $(DEMO_CUSTOMERS) --seed $(DEMO_SEED)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: unit tests only (no end-to-end run, no generated dataset, no delta-spark or HDFS JVM);
# 1 min 58 s on a faster machine (361 tests, 2026-12-02), 3 min 28 s on a slower one (372 tests,
# 2026-12-03); goal 90 s.
test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# For spark-submit: the wheel (pip install it on the driver, or bake it into an image) and
# dist/crm_spark.zip, the package alone for --py-files, so executors need nothing installed.
dist: install
	rm -rf dist build
	$(BIN)/python -m pip wheel -q --no-deps -w dist .
	rm -rf build
	$(BIN)/python -c "import pathlib, zipfile; z = zipfile.ZipFile('dist/crm_spark.zip', 'w', zipfile.ZIP_DEFLATED); \
		[z.write(p) for p in sorted(pathlib.Path('crm_spark').rglob('*')) if p.is_file() and '__pycache__' not in p.parts]; z.close()"
	ls -1 dist

# The small sizes: the whole demo (generate and every stage) at BENCH_SIZES customers, with the
# slope of time against size and where the time goes (bench/results/scaling.json and .png), then
# the ETL against a plain PySpark script and DuckDB on small inputs. Larger sizes by the variable,
# e.g. `make bench BENCH_SIZES=10000,100000` (bench/bench_generate.py and the other benches by hand).
BENCH_SIZES ?= 500,2000
bench: install
	$(BIN)/python bench/bench_scaling.py --sizes $(BENCH_SIZES)
	$(BIN)/python bench/bench_etl.py --quick

clean-data:
	rm -rf data lake

clean: clean-data
	rm -rf $(VENV) .pytest_cache jars dist build
