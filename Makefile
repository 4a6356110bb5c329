# Influgen video generation. `make run` and `make test` are the two commands you need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run up down status test test-unit test-integration test-e2e test-faults lint bench profile asyncapi clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## everything, in the foreground: stack, demo workspace and video; Ctrl-C stops all
run: $(STAMP)
	$(PY) -m devstack.stack run

## the same stack in the background
up: $(STAMP)
	$(PY) -m devstack.stack up

down: $(STAMP)
	$(PY) -m devstack.stack down

status: $(STAMP)
	$(PY) -m devstack.stack status

## lint, types, then the whole suite against a real Kafka and PostgreSQL it starts itself
test: lint
	$(PY) -m pytest -q tests

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

test-e2e: $(STAMP)
	$(PY) -m pytest -q tests/e2e

## fault injection: three rounds of kill -9 (each service, Kafka) and PostgreSQL restarts
## under load, then the audit; figures in bench/results/faults.json (about 2 minutes)
test-faults: $(STAMP)
	@bash deploy/kafka/fetch.sh >/dev/null
	$(PY) -m tests.fault_harness --rounds 3 --out bench/results/faults.json

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

## the AsyncAPI document of the topics, generated from the code
asyncapi: $(STAMP)
	$(PY) -m shared.asyncapi > docs/asyncapi.json

bench: $(STAMP)
	@bash deploy/kafka/fetch.sh >/dev/null
	$(PY) -m bench

## where the pipeline's work goes at 200 videos/s: CPU, statements, WAL, py-spy (about 3 minutes)
profile: $(STAMP)
	@bash deploy/kafka/fetch.sh >/dev/null
	$(PY) -m bench.profile $(ARGS)

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
