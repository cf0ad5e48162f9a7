# The README's two commands: `make up` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up test install install-test lint typecheck unit integration system bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

up: install
	$(BIN)/fissile up $(ARGS)

lint: install-test
	$(BIN)/ruff check fissile tests benchmarks
	$(BIN)/ruff format --check fissile tests benchmarks

typecheck: install-test
	$(BIN)/mypy fissile

test: lint typecheck
	$(BIN)/python -m pytest -q tests

unit integration system: install-test
	$(BIN)/python -m pytest -q tests/$@

bench: install
	$(BIN)/python benchmarks/coldstart.py
	$(BIN)/python benchmarks/warm.py
	$(BIN)/python benchmarks/sandbox.py
	$(BIN)/python benchmarks/async.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
