# Each target makes (or reuses) its own virtual environment in .venv, so a fresh machine with
# only Python 3.10+ and pip can run them.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: install test test-all lint quickstart clean

$(BASE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e .
	touch $(BASE)

$(DEV): $(BASE)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(DEV)

install: $(BASE)

quickstart: $(BASE)
	$(BIN)/geovlm quickstart

test: $(DEV)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(DEV)
	$(BIN)/python -m pytest -q

lint: $(DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
