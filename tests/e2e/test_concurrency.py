"""Many clients at once on the real smollm2: continuous batching, cancellation, the queue
bound, eviction and graceful shutdown.

Most tests run the server in this process (uvicorn on a thread, over the store the session
server imported) so they can read the runner's counters; the shutdown test signals a real
`ollamapy serve` process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import ollama
import uvicorn

from ollamapy.server.app import create_app
from ollamapy.settings import Settings
from tests.e2e.conftest import free_port, start_server, stop_server

PROMPTS = ["Why is the sky blue?", "Tell me a story about a dragon.",
           "What is the capital of France?", "List three fruits.", "Explain gravity simply.",
           "Write a haiku about snow.", "What is 2 + 2?", "Name a famous painter."]


@contextmanager
def inprocess(models, **env: str) -> Iterator[tuple[str, object]]:
    """A server in this process → (base url, its State)."""
    settings = Settings.from_env({**os.environ, "OLLAMA_MODELS": str(models), **env})
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app.state.ollamapy
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def greedy(prompt: str, n: int = 16) -> dict:
    return {"model": "smollm2:135m", "prompt": prompt,
            "options": {"temperature": 0, "num_predict": n, "num_ctx": 1024}}


def test_eight_concurrent_streams_finish_and_match_their_solo_answers(server) -> None:
    with inprocess(server.models, OLLAMA_NUM_PARALLEL="4") as (url, state):
        solo = {}
        with ollama.Client(host=url) as client:
            for p in PROMPTS:
                solo[p] = client.generate(**greedy(p)).response

        async def one(client: ollama.AsyncClient, p: str) -> str:
            parts = [c.response async for c in await client.generate(**greedy(p), stream=True)]
            return "".join(parts)

        async def all_at_once() -> list[str]:
            async with ollama.AsyncClient(host=url) as client:
                return await asyncio.gather(*(one(client, p) for p in PROMPTS))

        worker = state.scheduler.loaded["smollm2:135m"].runner.worker
        before = worker.steps
        together = asyncio.run(all_at_once())
        # alone, 8 requests x 15 decode steps; batched 4 at a time, about a quarter of that
        assert worker.steps - before <= len(PROMPTS) * 15 // 2
    assert together == [solo[p] for p in PROMPTS]


def test_a_disconnected_client_frees_its_slot_within_one_step(server) -> None:
    with inprocess(server.models, OLLAMA_NUM_PARALLEL="2") as (url, state), \
            httpx.Client(base_url=url, timeout=60) as http:
        with http.stream("POST", "/api/generate", json=greedy(PROMPTS[0], 500)) as r:
            first = json.loads(next(r.iter_lines()))
            assert first["done"] is False
        # the stream is closed: the client is gone
        worker = state.scheduler.loaded["smollm2:135m"].runner.worker
        wait_for(lambda: worker.cancellations)
        (left_at, freed_at), = worker.cancellations
        assert freed_at - left_at <= 1
        assert worker.batch.active == [] and worker.running == {}
        # and the freed slot serves the next request
        assert http.post("/api/generate", json={**greedy(PROMPTS[1]), "stream": False}
                         ).json()["eval_count"] == 16


def test_the_queue_bound_answers_503(server) -> None:
    with inprocess(server.models, OLLAMA_NUM_PARALLEL="1", OLLAMA_MAX_QUEUE="1") as (url, state):
        results: dict[str, int] = {}

        def long_request(key: str) -> None:
            with httpx.Client(base_url=url, timeout=120) as http:
                r = http.post("/api/generate", json={**greedy(PROMPTS[0], 40), "stream": False})
                results[key] = r.status_code

        running = threading.Thread(target=long_request, args=("running",))
        running.start()
        wait_for(lambda: "smollm2:135m" in state.scheduler.loaded
                 and state.scheduler.loaded["smollm2:135m"].runner.worker.running)
        queued = threading.Thread(target=long_request, args=("queued",))
        queued.start()
        worker = state.scheduler.loaded["smollm2:135m"].runner.worker
        wait_for(lambda: len(worker.waiting) == 1)
        r = httpx.post(f"{url}/api/generate", json=greedy(PROMPTS[1]), timeout=60)
        assert r.status_code == 503
        assert r.json() == {
            "error": "server busy, please try again.  maximum pending requests exceeded"}
        running.join()
        queued.join()
        assert results == {"running": 200, "queued": 200}


def test_one_loaded_model_at_most_evicts_the_idle_one(server) -> None:
    with inprocess(server.models, OLLAMA_MAX_LOADED_MODELS="1") as (url, state), \
            ollama.Client(host=url) as client:
        client.generate(**greedy("Hi", 2))
        assert [m.model for m in client.ps().models] == ["smollm2:135m"]
        client.generate(model="gemma3:270m", prompt="Hi", options={"num_predict": 2})
        assert [m.model for m in client.ps().models] == ["gemma3:270m"]
        client.embed(model="all-minilm", input="hello")
        assert [m.model for m in client.ps().models] == ["all-minilm:latest"]


def test_concurrent_embeddings_share_forwards(server) -> None:
    with inprocess(server.models) as (url, state):
        texts = [f"sentence number {i}" for i in range(12)]
        with ollama.Client(host=url) as client:
            solo = [client.embed(model="all-minilm", input=t).embeddings[0] for t in texts]
        worker = state.scheduler.loaded["all-minilm:latest"].runner.worker
        before = worker.steps

        async def all_at_once():
            async with ollama.AsyncClient(host=url) as client:
                return await asyncio.gather(*(client.embed(model="all-minilm", input=t)
                                              for t in texts))

        together = [r.embeddings[0] for r in asyncio.run(all_at_once())]
        for a, b in zip(together, solo, strict=True):
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-5
        assert worker.steps - before < len(texts)  # some requests shared a forward


def test_sigterm_finishes_the_stream_in_flight_then_exits(server, tmp_path) -> None:
    srv = start_server(server.models)
    try:
        lines = []
        with httpx.Client(base_url=srv.url, timeout=60) as http, \
                http.stream("POST", "/api/generate", json=greedy(PROMPTS[0], 40)) as r:
            for line in r.iter_lines():
                lines.append(json.loads(line))
                if len(lines) == 1:
                    srv.process.send_signal(signal.SIGTERM)
        assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 40
        assert srv.process.wait(timeout=60) == 0
        try:
            httpx.get(srv.url, timeout=2)
            refused = False
        except httpx.TransportError:
            refused = True
        assert refused
    finally:
        stop_server(srv)
