# The two commands that matter: `make demo` (every DAG on the local stack) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The JVM jars EMR ships (Hudi, Iceberg's Spark runtime + AWS bundle, hadoop-aws + SDK), pinned with their
# sha256 in include/spark/jars.lock.json; fetched once from Maven Central (~500 MB) into .cache/jars/,
# checked on every job. `jars` always runs: with the cache complete it only checks it (well under a second).

.PHONY: demo iam chaos chaos-ci crash up airflow test test-fast lint format bench package lock install jars check-java clean

# A fresh clone creates the venv and installs the pinned lock (no resolution), then this package
# (plugins/dataplatform, spark_jobs) editable without dependencies.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --python $(PY) -q -r requirements.txt
	$(VENV)/bin/uv pip install --python $(PY) -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

## jars: fetch and verify the pinned Spark jars into .cache/jars/ (make demo, up, test and bench do it)
jars: $(STAMP)
	@$(PY) -m dataplatform.spark_jars fetch

check-java: $(STAMP)
	@$(PY) -m dataplatform.devstack check-java

## demo: moto server + local Spark + SQLite Airflow; runs every DAG with `airflow dags test`, prints a summary
demo: $(STAMP) jars check-java
	$(PY) -m dataplatform.devstack demo

## iam: the demo with its AWS request log, then every call held to the IAM policies (include/iam/), ~15 min
IAM_REQUEST_LOG ?= .local/iam-requests.jsonl
iam: $(STAMP) jars check-java
	@mkdir -p $(dir $(IAM_REQUEST_LOG)) && rm -f $(IAM_REQUEST_LOG)
	DATAPLATFORM_REQUEST_LOG=$(IAM_REQUEST_LOG) $(PY) -m dataplatform.devstack demo
	$(PY) -m dataplatform.devstack.iam_check $(IAM_REQUEST_LOG)

## chaos: the demo with faults on RATE of the DAG runs' AWS requests, one pass per seed in SEEDS, and once
## without, all at once; compares each faulted final state with the fault-free one (must not differ).
## DAGS=a,b: only those DAGs' runs; KINDS=a,b: only those fault kinds; CHAOS_DB=postgres: as in CI.
RATE ?= 0.05
SEEDS ?= 1,2
CHAOS_DB ?= sqlite
chaos: $(STAMP) jars check-java
	$(PY) -m dataplatform.devstack chaos --rate $(RATE) --seeds $(SEEDS) --db $(CHAOS_DB) --dags "$(DAGS)" --kinds "$(KINDS)"

## chaos-ci: the short chaos pass CI runs after make test: a lower rate, one seed, Airflow on PostgreSQL,
## the Glue, reconciliation and pricing runs (Iceberg and GDPR, the longest, only in the full make chaos)
CHAOS_CI_DAGS := glue_partition_loader,recon_stateless,recon_stateful,benchmark_pricing
chaos-ci: $(STAMP) jars check-java
	$(PY) -m dataplatform.devstack chaos --rate 0.02 --seeds 1 --db postgres --dags $(CHAOS_CI_DAGS)

## up: the same local stack with `airflow standalone` (web UI and REST API); Ctrl-C stops everything.
## DB=postgres: the metadata database on a local PostgreSQL (installed with apt-get when root and missing),
## the LocalExecutor running tasks in parallel; the default is SQLite.
DB ?= sqlite
up: $(STAMP) jars check-java
	$(PY) -m dataplatform.devstack up --db $(DB)

## airflow: the airflow CLI against the running `make up` stack, e.g. make airflow ARGS="dags list"
AIRFLOW_ENV_FILE ?= .local/airflow.env
airflow: $(STAMP)
	@test -f $(AIRFLOW_ENV_FILE) || { echo "no $(AIRFLOW_ENV_FILE): start the stack with 'make up' first" >&2; exit 2; }
	@source $(AIRFLOW_ENV_FILE) && $(VENV)/bin/airflow $(ARGS)

## test: the whole suite (unit, DAG integrity, integration on moto + local Spark, e2e on a running Airflow)
test: $(STAMP) jars check-java
	$(PY) -m pytest

## crash: every pipeline's tasks killed (SIGKILL) at AWS calls spread over each task and inside the Spark
## jobs, rerun, and compared with an uninterrupted run; writes .local/chaos/crash_points.json
crash: $(STAMP) jars check-java
	$(PY) -m tests.crash $(ARGS)

## test-fast: unit and DAG-integrity tests only
test-fast: $(STAMP) jars
	$(PY) -m pytest -m unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## bench: every benchmark in benchmarks/, one JSON line each
bench: $(STAMP) jars
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(PY) $$script; done

## package: dist/spark_jobs.zip for --py-files on EMR / EMR Serverless
package: $(STAMP)
	$(PY) -m dataplatform.spark package dist/spark_jobs.zip

## lock: regenerate requirements.txt from requirements.in (needs the package index)
lock: $(STAMP)
	$(VENV)/bin/uv pip compile --python-version 3.11 requirements.in -o requirements.txt --no-header

clean:
	rm -rf .local dist build *.egg-info .pytest_cache .ruff_cache
