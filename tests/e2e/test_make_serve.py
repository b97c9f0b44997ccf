"""`make serve` on an empty store: the first `/api/tags` answer a client can get lists the three
default models (scripts/serve.py imports them before `OLLAMA_HOST` accepts connections), and
SIGTERM stops the script and its server cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import model_path
from tests.e2e.conftest import IMPORTS, free_port

REPO = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 1800  # imports ~450 MB and starts two servers: about a minute on 2 cores


def test_first_tags_answer_lists_the_default_models(tmp_path: Path) -> None:
    for file in IMPORTS.values():
        model_path(file)  # skips with a clear reason if `make setup` has not fetched them
    host = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "OLLAMA_HOST": host, "OLLAMA_MODELS": str(tmp_path / "models")}
    serve = subprocess.Popen([sys.executable, "scripts/serve.py"], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            assert serve.poll() is None, f"scripts/serve.py exited with {serve.returncode}"
            assert time.monotonic() < deadline, "hang guard: no /api/tags answer"
            try:
                reply = httpx.get(f"http://{host}/api/tags", timeout=30)
            except httpx.TransportError:
                time.sleep(0.02)  # not accepting connections yet: ask again at once
                continue
            assert reply.status_code == 200
            names = {m["name"] for m in reply.json()["models"]}
            break
        assert names == {"smollm2:135m", "gemma3:270m", "all-minilm:latest"}
        serve.send_signal(signal.SIGTERM)  # the script stops its server, as on Ctrl-C
        assert serve.wait(timeout=HANG_GUARD_S) == 0
        with pytest.raises(httpx.ConnectError):  # the server went with it
            httpx.get(f"http://{host}/", timeout=30)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
