"""Shared fixtures: the real models from ../shared/MODELS.md, fetched by `make setup`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

# The suite checks the float reference path unless a test asks for the fast one (quantized
# kernels, compiled decode: tests/engine/test_fast.py, tests/e2e/test_fast_server.py);
# compiling costs ~30 s a graph on 2 cores, so it is off unless a test turns it on.
os.environ.setdefault("OLLAMAPY_FAST", "0")
os.environ.setdefault("OLLAMAPY_COMPILE", "0")

# No test depends on wall-clock speed: speed is measured in benchmarks/, never here. A property
# test is bounded by its number of examples, not by time: no per-example deadline, and no
# "too slow" health check (both fail on a slower or busier machine, not on a bug).
settings.register_profile("ollamapy", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ollamapy")

# Every timeout left in the suite is a hang guard: it only stops a test that would otherwise
# wait forever, and is sized for a machine several times slower than a 2-core one with both
# cores busy. A test that fails on one says so.
HANG_GUARD_NOTE = ("hang guard: this timeout only stops a test that would otherwise wait "
                   "forever; it is sized for a machine several times slower than a busy 2-core "
                   "one, so the step hung rather than ran slowly")
# (TimeoutError is also socket.timeout and concurrent.futures' TimeoutError)
TIMEOUTS = (TimeoutError, subprocess.TimeoutExpired, httpx.TimeoutException)


def _note_hang_guard(error: BaseException | None) -> None:
    if isinstance(error, TIMEOUTS) and HANG_GUARD_NOTE not in getattr(error, "__notes__", ()):
        error.add_note(HANG_GUARD_NOTE)


def _note_hang_guards(item: pytest.Item):
    try:
        return (yield)
    except BaseException as e:
        _note_hang_guard(e)
        raise


# the same wrapper around a test's set-up (fixtures: servers starting) and its call
pytest_runtest_setup = pytest_runtest_call = pytest.hookimpl(wrapper=True)(_note_hang_guards)


CACHE = Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy"))
MODELS = CACHE / "models"
DATA = Path(__file__).parent / "data"


def require(path: Path) -> Path:
    """A file `make setup` fetches (scripts/fetch_models.py, scripts/fetch_llama_cpp.py)."""
    if not path.exists():
        pytest.skip(f"{path} is missing: run `make setup` first")
    return path


def model_path(name: str) -> Path:
    return require(MODELS / name)


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
