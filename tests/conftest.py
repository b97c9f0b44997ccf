"""Shared fixtures: the real models from ../shared/MODELS.md, fetched by `make setup`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
