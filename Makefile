# Each target makes (or reuses) its own virtual environment in .venv, so a fresh machine with
# only Python 3.10+ and pip can run them.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: install test test-unit test-all lint quickstart clean

$(BASE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e .
	touch $(BASE)

# lmms-eval goes in without its own requirements (they pull a CUDA torchvision and a newer torch); the
# `eval` extra lists what it imports (docs/STANDARD_BENCHMARKS.md).
LMMS_EVAL_SPEC ?= lmms-eval==0.7.3

# DS_BUILD_OPS=0: DeepSpeed (in dev) installs as pure Python and compiles its ops when first used.
$(DEV): $(BASE)
	DS_BUILD_OPS=0 $(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps "$(LMMS_EVAL_SPEC)"
	touch $(DEV)

install: $(BASE)

quickstart: $(BASE)
	$(BIN)/geovlm quickstart

# Both tiers: the unit tests and the integration tests (training runs, DDP, CLIs, the learning test).
test: $(DEV)
	$(BIN)/python -m pytest -q -m "not slow"

# The unit tier alone, for the edit-test loop (under two minutes on a 2-core CPU).
test-unit: $(DEV)
	$(BIN)/python -m pytest -q -m "not slow and not integration"

test-all: $(DEV)
	$(BIN)/python -m pytest -q

lint: $(DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
