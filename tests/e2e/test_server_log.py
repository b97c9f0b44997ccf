"""The server's log on stderr: Ollama's INFO by default, DEBUG under OLLAMA_DEBUG."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.e2e.conftest import start_server, stop_server


@pytest.mark.parametrize("debug", ["1", ""])
def test_ollama_debug_sets_the_log_level(server, debug: str) -> None:
    srv = start_server(server.models, OLLAMA_DEBUG=debug)
    try:
        r = httpx.post(f"{srv.url}/api/generate", timeout=300, json={
            "model": "smollm2:135m", "prompt": "Hi", "stream": False,
            "options": {"num_predict": 1}})
        assert r.status_code == 200
        srv.process.send_signal(signal.SIGTERM)
        srv.process.wait(timeout=60)  # a hang guard: a stop takes about a second
        assert srv.process.stderr is not None
        log = srv.process.stderr.read()
    finally:
        stop_server(srv)
    assert "INFO ollamapy.scheduler: loaded smollm2:135m in " in log
    loading = "DEBUG ollamapy.scheduler: loading smollm2:135m (num_ctx 4096)"
    assert (loading in log) == bool(debug), log[-2000:]
