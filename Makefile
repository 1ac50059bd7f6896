# Every target creates .venv and installs what it needs on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench services clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/twofa demo

services:
	@scripts/services.sh

# Two pytest-xdist workers (the test host has two cores; more only wait on each other): each has its own
# PostgreSQL database, Redis servers and ports; the browser tests share one worker and one site (loadgroup).
TEST_WORKERS ?= 2

test: $(STAMP) services
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup
	$(MAKE) --no-print-directory lint

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy twofa cli workers api web policies reports

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]' --config-settings editable_mode=compat
	touch $@

bench: $(VENV)/.bench-installed services
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
