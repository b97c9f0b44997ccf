"""Each loaded model's engine runs in its own process (issue 14 item 1), on the session's
real `ollamapy serve`: killing one mid-stream ends its requests with Ollama's error, the
other models keep serving, and the next request loads the killed model afresh."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import httpx
import pytest

from ollamapy.runner_process import COMM_PREFIX, STOPPED
from tests.e2e.conftest import gone, process_tree, start_server, stop_server
from tests.e2e.test_concurrency import HANG_GUARD_S, wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="finds engine processes through Linux's /proc")


def comm(model: str) -> str:
    """The process name of a model's engine: COMM_PREFIX and the model, in Linux's 15 bytes."""
    return (COMM_PREFIX + model)[:15]


def engines(server_pid: int) -> dict[str, int]:
    """The server's engine processes (its descendants named by `comm`): name → pid."""
    return {name: pid for pid, name in process_tree(server_pid).items()
            if name.startswith(COMM_PREFIX)}


def test_killing_an_engine_mid_stream_ends_its_requests_and_the_next_one_reloads(server
                                                                                ) -> None:
    long = {"model": "smollm2:135m", "prompt": "Tell me a very long story.",
            "options": {"temperature": 0, "num_predict": 2000}}
    with httpx.Client(base_url=server.url, timeout=HANG_GUARD_S) as http:
        assert http.post("/api/embed", json={"model": "all-minilm", "input": "x"}
                         ).status_code == 200
        assert http.post("/api/generate", json={"model": "smollm2:135m"}).status_code == 200
        before = engines(server.process.pid)
        # the HTTP process itself never loads torch: the engines do
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "libtorch" not in maps and "libtorch" in Path(
            f"/proc/{before[comm('smollm2:135m')]}/maps").read_text()
        victim, bystander = before[comm("smollm2:135m")], before[comm("all-minilm")]
        with http.stream("POST", "/api/generate", json=long) as a, \
                http.stream("POST", "/api/chat", json={
                    **long, "messages": [{"role": "user", "content": long["prompt"]}]}) as b:
            streams = [a.iter_lines(), b.iter_lines()]
            firsts = [json.loads(next(s)) for s in streams]  # both are generating
            assert [f["done"] for f in firsts] == [False, False]
            os.kill(victim, signal.SIGKILL)
            rests = [[json.loads(line) for line in s] for s in streams]
        for rest in rests:  # each stream ends with Ollama's error line, and nothing is done
            assert rest[-1] == {"error": STOPPED}
            assert not any(chunk.get("done") for chunk in rest)
        wait_for(lambda: gone(victim))
        # the other model's engine never noticed
        r = http.post("/api/embed", json={"model": "all-minilm", "input": "still here"})
        assert r.status_code == 200 and len(r.json()["embeddings"][0]) == 384
        assert engines(server.process.pid)[comm("all-minilm")] == bystander
        # the next request to the killed model loads it again, in a new engine process
        r = http.post("/api/generate", json={**long, "stream": False,
                                             "options": {"temperature": 0, "num_predict": 3}})
        assert r.status_code == 200 and r.json()["eval_count"] == 3
        after = engines(server.process.pid)
        assert after[comm("smollm2:135m")] != victim and victim not in after.values()
        assert "smollm2:135m" in [m["name"] for m in http.get("/api/ps").json()["models"]]


def test_a_load_that_stalls_is_given_up_at_ollama_load_timeout(server) -> None:
    """OLLAMA_LOAD_TIMEOUT counts the time a load goes without using the CPU: an engine
    stopped mid-load (SIGSTOP) is killed once it runs out, the request gets a 500 saying so,
    and the next request loads the model afresh."""
    srv = start_server(server.models, OLLAMA_LOAD_TIMEOUT="2s")
    body = {"model": "gemma3:270m", "prompt": "Hi", "raw": True, "stream": False,
            "options": {"num_predict": 1}}
    answers: list[httpx.Response] = []
    try:
        with httpx.Client(base_url=srv.url, timeout=HANG_GUARD_S) as http:
            request = threading.Thread(target=lambda: answers.append(
                http.post("/api/generate", json=body)))
            request.start()
            wait_for(lambda: comm("gemma3:270m") in engines(srv.process.pid), timeout=60)
            engine = engines(srv.process.pid)[comm("gemma3:270m")]
            os.kill(engine, signal.SIGSTOP)  # loading: reading and converting the weights
            request.join(HANG_GUARD_S)
            (r,) = answers
            assert r.status_code == 500, r.text
            assert r.json()["error"] == ("timed out waiting for llama runner to start: no "
                                         "progress loading gemma3:270m for 2 s")
            wait_for(lambda: gone(engine))
            again = http.post("/api/generate", json=body)  # a load that works: not stalled
            assert again.status_code == 200 and again.json()["eval_count"] == 1
    finally:
        stop_server(srv)
