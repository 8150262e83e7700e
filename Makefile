# One entry point for CI and people: `make test` builds the venv, installs the project with its test
# extras, lints and runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint monitor bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

monitor: $(STAMP)
	$(BIN)/joulebench monitor

bench: $(STAMP)
	$(BIN)/python benchmarks/monitor_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
