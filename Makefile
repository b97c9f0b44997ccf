# Two commands for a fresh machine: `make serve` and `make test`. Everything else they need
# (the .venv, torch 2.13.0 CPU, the project with its test extras, the default models) is made
# by `make setup`, once.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
OLLAMA_HOST ?= 127.0.0.1:11434
# pytest workers are not used: the suite is sized for 2 cores in one process
PYTEST_ARGS ?=

.PHONY: setup models test serve lint bench clean

setup: $(INSTALLED) models

# torch comes from the local CPU build (torch==2.13.0); installing it first means no other
# requirement ever pulls a multi-GB CUDA build.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# sha256-checked, cached under $${OLLAMAPY_CACHE:-~/.cache/ollamapy}; a second run downloads nothing
models: $(INSTALLED)
	$(BIN)/python scripts/fetch_models.py

test: setup
	$(BIN)/ruff check ollamapy kernels tests benchmarks scripts
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the set-up, then the server on $OLLAMA_HOST with the default models imported into
# $OLLAMA_MODELS (through `ollamapy create`, as a user would) if they are not there yet
serve: setup
	OLLAMA_HOST=$(OLLAMA_HOST) $(BIN)/python scripts/serve.py

bench: setup
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) build *.egg-info
