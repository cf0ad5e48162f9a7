# The README's two commands: `make up` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: bench-tools dashboard-screenshot up test install install-test install-bench lint typecheck unit integration system bench clean

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
	$(BIN)/ruff check fissile tests benchmarks examples
	$(BIN)/ruff format --check fissile tests benchmarks examples

typecheck: install-test
	$(BIN)/mypy fissile

# Test files run on TEST_WORKERS processes (pytest-xdist), a file's tests on one of them (its
# module fixtures and platforms are shared). Three on two cores: most system tests wait on
# heartbeats, timers and subprocesses rather than compute (one process: 27-45 min on the 2-core
# machine kind, on two days; three: 20 min). TEST_WORKERS=0 runs them in-process.
TEST_WORKERS ?= 3
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The examples' own tests (examples/*/tests) run too: pyproject's testpaths name both.
test: lint typecheck
	$(PYTEST) tests examples

unit integration system: install-test
	$(PYTEST) tests/$@

# docs/img/dashboard.png, taken by the dashboard's browser test (needs Debian's chromium).
dashboard-screenshot: install-test
	FISSILE_DOCS_SCREENSHOT=1 $(BIN)/python -m pytest -q tests/system/test_dashboard.py

install-bench: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'

# wrk (Debian's package) makes warm.py's and async.py's figures real; installed here when
# missing and apt-get may run. Without it warm.py falls back to a Python load generator and says
# so in its results.
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && { apt-get install -y -qq wrk || { apt-get update -qq && apt-get install -y -qq wrk; }; } \
	  >/dev/null 2>&1; } \
	  || echo "wrk is not installed (apt-get install wrk): warm.py will use its Python load generator"

bench: install-bench bench-tools
	$(BIN)/python benchmarks/coldstart.py
	$(BIN)/python benchmarks/coldstart_languages.py
	$(BIN)/python benchmarks/imports.py
	$(BIN)/python benchmarks/warm.py
	$(BIN)/python benchmarks/burst.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/sandbox.py
	$(BIN)/python benchmarks/async.py
	$(BIN)/python benchmarks/cluster.py
	$(BIN)/python benchmarks/plot.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
