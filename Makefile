# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
## test workers (pytest-xdist; tests/conftest.py groups what must share one)
PYTEST_WORKERS ?= 2

.PHONY: install demo deploy-local test test-fast lint format clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,postgres]'
	touch $@

install: $(BIN)/.installed

## demo: simulate a beamline, run the real Dagster daemon + webserver, reconstruct every scan
demo: install
	$(BIN)/cosmic-dagster demo $(DEMO_ARGS)

## deploy-local: the production shape without containers: PostgreSQL (DAGSTER_PG_*, default
## postgres@127.0.0.1:5432/cosmic_dagster), code server, daemon, webserver; Ctrl-C stops them
deploy-local: install
	$(BIN)/cosmic-dagster deploy up $(DEPLOY_ARGS)

## test: the static checks, then the whole suite (unit, contract, end-to-end through the real
## daemon, real Slurm)
test: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

## test-fast: everything not marked slow
test-fast: install
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup -m "not slow" $(PYTEST_ARGS)

## lint: ruff, the import rules (.importlinter) and the type checker
lint: install
	$(BIN)/ruff check cosmic_dagster tests benchmarks
	$(BIN)/ruff format --check cosmic_dagster tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

format: install
	$(BIN)/ruff format cosmic_dagster tests benchmarks

clean:
	rm -rf $(VENV) .demo .deploy .pytest_cache test-artifacts
