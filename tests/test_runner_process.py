"""The engine-process layer without a model: a failed load comes back as its own error, and
errors that cannot cross the pipe still carry their message. (tests/e2e/test_engine_process.py
kills a real engine under real requests.)"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ollamapy.contract import ModelSpec, RequestError
from ollamapy.runner_process import RunnerProcess, _portable


def test_a_failed_load_raises_the_loaders_own_error() -> None:
    spec = ModelSpec(name="missing", path=Path("/nonexistent/model.gguf"))
    with pytest.raises(FileNotFoundError, match="no model file or folder at"):
        RunnerProcess(spec, 256, num_parallel=1, max_queue=1)


class Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()  # pickling a lock fails


def test_errors_cross_the_pipe_as_themselves_or_as_their_message() -> None:
    error = _portable(RequestError('"m" does not support chat'))
    assert type(error) is RequestError and str(error) == '"m" does not support chat'
    error = _portable(Unpicklable("the template broke"))
    assert type(error) is RuntimeError and str(error) == "the template broke"
    assert _portable(None) is None

