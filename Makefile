# Two commands work on a fresh machine (each installs what it needs into .venv):
#   make demo   a real managed-mode run against the reference server, embedded SQLite
#   make test   ruff + the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

PACKAGES := -e . \
	-e plugins/dotflow-server-default \
	-e plugins/dotflow-server-api \
	-e server

.PHONY: all demo test lint bench clean

all: test

$(STAMP): pyproject.toml plugins/*/pyproject.toml server/pyproject.toml requirements/test.txt tests/fixtures/dotflow-server-fake/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10) and "dotflow-core needs Python >= 3.10; set PYTHON=python3.10 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PACKAGES) -e tests/fixtures/dotflow-server-fake -r requirements/test.txt
	@touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --config-file plugins/dotflow-server-api/pyproject.toml plugins/dotflow-server-api/src

test: lint
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_cli.py
	$(BIN)/python bench/bench_managed.py
	$(BIN)/python bench/bench_executors.py
	$(BIN)/python bench/bench_data.py
	$(BIN)/python bench/bench_fleet.py
	$(BIN)/python bench/bench_batch_writes.py

clean:
	rm -rf $(VENV) bench/.venv-dotflow bench/.venv-ours .pytest_cache .ruff_cache
