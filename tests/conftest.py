"""Shared fixtures: the real models from ../shared/MODELS.md, fetched by `make setup`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The suite checks the float reference path unless a test asks for the fast one (quantized
# kernels, compiled decode: tests/engine/test_fast.py, tests/e2e/test_fast_server.py);
# compiling costs ~30 s a graph on 2 cores, so it is off unless a test turns it on.
os.environ.setdefault("OLLAMAPY_FAST", "0")
os.environ.setdefault("OLLAMAPY_COMPILE", "0")

CACHE = Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy"))
MODELS = CACHE / "models"
DATA = Path(__file__).parent / "data"


def model_path(name: str) -> Path:
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{path} is missing: run `make setup` (scripts/fetch_models.py) first")
    return path


@pytest.fixture(scope="session")
def smollm2():
    import ollamapy

    return ollamapy.load(model_path("smollm2-135m.gguf"), device="cpu")


@pytest.fixture(scope="session")
def gemma3():
    import ollamapy

    return ollamapy.load(model_path("gemma3-270m.gguf"), device="cpu")


@pytest.fixture(scope="session")
def minilm():
    import ollamapy

    return ollamapy.load(model_path("all-minilm"), device="cpu")
