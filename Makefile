# Two commands set everything up on a machine that has only python3 (3.11):
#   make demo   install, then run the main job end to end on the embedded defaults
#   make test   install, then run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
# uv comes from PyPI into a private tool venv when it is not on PATH already.
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON ?= 3.11

.PHONY: help install demo test lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet --disable-pip-version-check uv

install: $(UV)  ## create .venv from uv.lock (exact versions)
	$(UV) sync --frozen --compile-bytecode

demo: install  ## simulate a year of customers, load the lake, print a summary
	$(UV) run --frozen nudge demo

test: install  ## lint and type-check, then run the whole test suite
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy
	$(UV) run --frozen pytest

lint: install  ## ruff check + format check + mypy
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy

format: install  ## apply ruff fixes and formatting
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

# Every benchmark, each with its baseline in the same run (about an hour on 2 cores; the
# PostgreSQL and Redis ones need those servers). Results go in BENCHMARKS.md by hand.
BENCHES := simulate.py pipeline.py materialize.py engine_throughput.py scoring.py audience.py \
	ingest_http.py delivery.py send_rates.py webhooks.py uplift.py scale_out.py

bench: install  ## run every benchmark (results go in BENCHMARKS.md by hand)
	@set -e; for b in $(BENCHES); do echo "== bench/$$b"; $(UV) run --frozen python bench/$$b; done
	@echo "== bench/engine_throughput.py --only-postgres-workers"
	$(UV) run --frozen python bench/engine_throughput.py --only-postgres-workers --pg-repeat 3

clean:  ## remove the environments and local state
	rm -rf .venv .tools .nudge .pytest_cache .ruff_cache
