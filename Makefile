# Two commands for a fresh machine: `make serve` and `make test`. Everything else they need
# (the .venv with exactly the packages of requirements.lock, the default models) is made by
# `make setup`, once. `make lock` refreshes the lock, deliberately.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
LOCK := requirements.lock
LOCK_VENV := build/lock-venv
OLLAMA_HOST ?= 127.0.0.1:11434
# pytest workers are not used: the suite is sized for 2 cores in one process
PYTEST_ARGS ?=

.PHONY: setup native models test serve lock bench clean

setup: $(INSTALLED) native models

# the C++ kernels (kernels/csrc), compiled once into the cache so no first load waits for them;
# without a compiler or AVX-512 VNNI it says so and the engine uses torch's kernels
native: $(INSTALLED)
	$(BIN)/python -m ollamapy_kernels.native

# Exactly the lock: every package pinned with its hashes (torch==2.13.0+cpu, the local CPU
# build, so nothing pulls a CUDA build), no dependency resolved here. The project itself goes in
# editable, built by the locked setuptools. A changed lock or pyproject makes a new venv, so
# nothing outside the lock stays behind.
$(INSTALLED): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

# sha256-checked, cached under $${OLLAMAPY_CACHE:-~/.cache/ollamapy}; a second run downloads
# nothing. llama.cpp's converter and test vocabularies are test oracles, not models.
models: $(INSTALLED)
	$(BIN)/python scripts/fetch_models.py
	$(BIN)/python scripts/fetch_llama_cpp.py

# -P: the repository root is not put on sys.path (pytest's importlib mode does not add it
# either), so the suite imports what is installed: ollamapy, ollamapy_kernels, the locked index
# packages
test: setup
	$(BIN)/ruff check ollamapy kernels tests benchmarks scripts
	$(BIN)/python -P -m pytest $(PYTEST_ARGS)

# the set-up, then the server on $OLLAMA_HOST with the default models imported into
# $OLLAMA_MODELS (through `ollamapy create`, as a user would) if they are not there yet
serve: setup
	OLLAMA_HOST=$(OLLAMA_HOST) $(BIN)/python scripts/serve.py

# Re-resolve pyproject.toml's ranges (test extras and build requirements included) against the
# package index today and rewrite requirements.lock with every version and hash; then
# `make test` installs and checks exactly that. pip-tools runs from its own venv, not .venv.
# `make lock LOCK_UPGRADE=` adds what pyproject.toml gained and keeps every other pin.
LOCK_UPGRADE ?= --upgrade
lock:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q pip-tools==7.7.0
	$(LOCK_VENV)/bin/pip-compile -q $(LOCK_UPGRADE) --extra test --all-build-deps --allow-unsafe \
		--generate-hashes --strip-extras --no-emit-find-links --no-emit-index-url \
		-c constraints.txt -o $(LOCK) pyproject.toml

bench: setup
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) build *.egg-info
