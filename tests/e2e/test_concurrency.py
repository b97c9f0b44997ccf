"""Many clients at once on the real smollm2: continuous batching, cancellation, the queue
bound, eviction and graceful shutdown.

Most tests run the server in this process (uvicorn on a thread, over the store the session
server imported) so they can read the engine's counters (`stats()`, from the engine process);
the shutdown test signals a real `ollamapy serve` process."""

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
import pytest
import uvicorn

from ollamapy.server.app import create_app
from ollamapy.settings import Settings
from tests.e2e.conftest import free_port, gone, start_server, stop_server

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
    wait_for(lambda: server.started or not thread.is_alive())
    assert server.started, "the in-process server did not start"
    try:
        yield f"http://127.0.0.1:{port}", app.state.ollamapy
    finally:
        server.should_exit = True
        thread.join(timeout=60)


HANG_GUARD_S = 300.0  # what a test waits for here takes seconds at most (a model load)


def wait_for(condition: Callable[[], bool], timeout: float = HANG_GUARD_S) -> None:
    """Poll until condition() holds; the timeout is a hang guard, not a speed check."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"hang guard: still waiting after {timeout:g} s"
        time.sleep(0.01)


def greedy(prompt: str, n: int = 16) -> dict:
    return {"model": "smollm2:135m", "prompt": prompt,
            "options": {"temperature": 0, "num_predict": n}}


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

        runner = state.scheduler.loaded["smollm2:135m"].runner
        before = runner.stats()["steps"]
        together = asyncio.run(all_at_once())
        # alone, 8 requests x 15 decode steps; batched 4 at a time, about a quarter of that
        assert runner.stats()["steps"] - before <= len(PROMPTS) * 15 // 2
    assert together == [solo[p] for p in PROMPTS]


STALL_S = 300.0  # hang guard: a stream with no chunk for this long has stalled


def test_num_parallel_plus_one_concurrent_chats_do_not_cross_talk(server) -> None:
    """Same-model parallelism (hardening.md §7 item 28, Ollama's runConcurrentChat): with
    the session server's 4 slots, 5 concurrent greedy chats each get their first chunk and
    every next one (a stall, no chunk for STALL_S, fails: a hang guard), all complete, and
    each answer is exactly the one the same chat gets alone (no cross-talk between the
    requests sharing the batch)."""
    chats = [[{"role": "user", "content": p}] for p in PROMPTS[:5]]
    options = {"temperature": 0, "num_predict": 10, "seed": 7}
    with ollama.Client(host=server.url) as client:
        solo = [client.chat(model="smollm2:135m", messages=m, options=options).message.content
                for m in chats]

    async def one(client: ollama.AsyncClient, messages: list[dict]) -> tuple[str, bool]:
        parts, done = [], False
        chunks = aiter(await client.chat(model="smollm2:135m", messages=messages,
                                         options=options, stream=True))
        while True:
            try:
                chunk = await asyncio.wait_for(anext(chunks), STALL_S)
            except StopAsyncIteration:
                return "".join(parts), done
            except TimeoutError:
                pytest.fail(f"hang guard: a stream went {STALL_S:g} s without a chunk")
            parts.append(chunk.message.content)
            done = bool(chunk.done)

    async def all_at_once() -> list[tuple[str, bool]]:
        async with ollama.AsyncClient(host=server.url) as client:
            return await asyncio.gather(*(one(client, m) for m in chats))

    together = asyncio.run(all_at_once())
    assert all(done for _, done in together)
    assert [text for text, _ in together] == solo
    assert len(set(solo)) > 1  # distinct answers, so a swap would show


def test_a_disconnected_client_frees_its_slot_within_one_step(server) -> None:
    with inprocess(server.models) as (url, state), \
            httpx.Client(base_url=url, timeout=60) as http:
        with http.stream("POST", "/api/generate", json=greedy(PROMPTS[0], 500)) as r:
            first = json.loads(next(r.iter_lines()))
            assert first["done"] is False
        # the stream is closed: the client is gone
        runner = state.scheduler.loaded["smollm2:135m"].runner
        wait_for(lambda: runner.stats()["cancellations"])
        stats = runner.stats()
        (left_at, freed_at), = stats["cancellations"]
        assert freed_at - left_at <= 1
        assert stats["active"] == stats["running"] == 0
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
                 and state.scheduler.loaded["smollm2:135m"].runner.stats()["running"])
        queued = threading.Thread(target=long_request, args=("queued",))
        queued.start()
        runner = state.scheduler.loaded["smollm2:135m"].runner
        wait_for(lambda: runner.stats()["waiting"] == 1)
        r = httpx.post(f"{url}/api/generate", json=greedy(PROMPTS[1]), timeout=60)
        assert r.status_code == 503
        assert r.json() == {
            "error": "server busy, please try again.  maximum pending requests exceeded"}
        running.join()
        queued.join()
        assert results == {"running": 200, "queued": 200}


def test_n_plus_10_calls_on_two_busy_models_get_503_with_retry_after(server) -> None:
    """Checklist item 26: a queue of N per model, both models busy in every slot; N + 10
    concurrent calls to each → the N that fit are answered 200, the 10 others 503 with Ollama's
    text and a Retry-After; no connection reset, no 500, no spurious cancellation. (Four slots,
    the session server's: their compiled steps are saved, none is compiled here. The streams
    holding the slots leave once the refusals are in, so the queued calls then run.)"""
    queue, extra, slots = 2, 10, 4
    models = ("smollm2:135m", "gemma3:270m")
    with inprocess(server.models, OLLAMA_NUM_PARALLEL=str(slots),
                   OLLAMA_MAX_QUEUE=str(queue)) as (url, state):
        busy: list[tuple[str, int]] = []
        leave = threading.Event()

        def long_request(model: str) -> None:
            with httpx.Client(base_url=url, timeout=300) as http, http.stream(
                    "POST", "/api/generate", json={
                        "model": model, "prompt": PROMPTS[1],
                        "options": {"temperature": 0, "num_predict": 1000}}) as r:
                for line in r.iter_lines():
                    assert not json.loads(line)["done"], "a holder ended before the burst"
                    if leave.is_set():
                        break
                busy.append((model, r.status_code))

        holders = []
        for model in models:  # one at a time: N + 1 arriving at once would overflow the queue
            for n in range(1, slots + 1):
                holders.append(threading.Thread(target=long_request, args=(model,)))
                holders[-1].start()
                wait_for(lambda m=model, n=n: m in state.scheduler.loaded
                         and state.scheduler.loaded[m].runner.stats()["running"] == n)
        burst: list[tuple[str, int, str | None, dict]] = []
        errors: list[BaseException] = []

        def short_request(model: str) -> None:
            try:
                r = httpx.post(f"{url}/api/generate", timeout=300, json={
                    "model": model, "prompt": "Hi", "stream": False,
                    "options": {"temperature": 0, "num_predict": 2}})
                burst.append((model, r.status_code, r.headers.get("retry-after"), r.json()))
            except BaseException as e:  # a reset or a timeout: what the bound must prevent
                errors.append(e)

        callers = [threading.Thread(target=short_request, args=(m,))
                   for m in models for _ in range(queue + extra)]
        for t in callers:
            t.start()
        wait_for(lambda: len(burst) + len(errors) >= len(models) * extra)  # the refusals
        leave.set()
        for t in callers:
            t.join()
        for t in holders:
            t.join()
        assert errors == [] and sorted(busy) == sorted((m, 200) for m in models
                                                       for _ in range(slots))
        for model in models:
            answers = [(status, retry, body) for m, status, retry, body in burst if m == model]
            refused = [a for a in answers if a[0] == 503]
            assert sorted(status for status, _, _ in answers) == \
                [200] * queue + [503] * extra, answers
            assert all(retry is not None and int(retry) >= 1 for _, retry, _ in refused)
            assert {body["error"] for _, _, body in refused} == {
                "server busy, please try again.  maximum pending requests exceeded"}
            assert all(body["done_reason"] in ("stop", "length")
                       for status, _, body in answers if status == 200)


def test_one_loaded_model_at_most_evicts_the_idle_one(server) -> None:
    """…and the evicted model's engine process has exited before the next one loads (its
    memory is back first, as Ollama waits for a runner's)."""
    with inprocess(server.models, OLLAMA_MAX_LOADED_MODELS="1") as (url, state), \
            ollama.Client(host=url) as client:
        made, still_running = [], []
        real_make = state.scheduler.make_runner

        def make(spec, num_ctx):
            still_running.extend(r.pid for r in made if not gone(r.pid))
            made.append(real_make(spec, num_ctx))
            return made[-1]

        state.scheduler.make_runner = make
        client.generate(**greedy("Hi", 2))
        assert [m.model for m in client.ps().models] == ["smollm2:135m"]
        client.generate(model="gemma3:270m", prompt="Hi", options={"num_predict": 2})
        assert [m.model for m in client.ps().models] == ["gemma3:270m"]
        client.embed(model="all-minilm", input="hello")
        assert [m.model for m in client.ps().models] == ["all-minilm:latest"]
        assert len(made) == 3 and still_running == []


def test_concurrent_embeddings_share_forwards(server) -> None:
    with inprocess(server.models) as (url, state):
        texts = [f"sentence number {i}" for i in range(12)]
        with ollama.Client(host=url) as client:
            solo = [client.embed(model="all-minilm", input=t).embeddings[0] for t in texts]
        runner = state.scheduler.loaded["all-minilm:latest"].runner
        before = runner.stats()["steps"]

        async def all_at_once():
            async with ollama.AsyncClient(host=url) as client:
                return await asyncio.gather(*(client.embed(model="all-minilm", input=t)
                                              for t in texts))

        together = [r.embeddings[0] for r in asyncio.run(all_at_once())]
        for a, b in zip(together, solo, strict=True):
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-5
        assert runner.stats()["steps"] - before < len(texts)  # some requests shared a forward


def refused(url: str) -> bool:
    """A new request is turned away: connection refused, or a 503. (A request that is
    merely slow to be answered is not refused: its timeout is a hang guard.)"""
    try:
        return httpx.get(url, timeout=HANG_GUARD_S).status_code == 503
    except httpx.TimeoutException:
        raise
    except httpx.TransportError:  # refused, or closed without an answer
        return True


def test_sigterm_finishes_the_stream_in_flight_then_exits(server, tmp_path) -> None:
    """SIGTERM (hardening.md §7 item 25): new requests are refused at once while the stream
    in flight runs to its end; then the process exits 0, releasing the models, and leaves no
    temporary file in the store. The stream gets as long as a hang guard to finish
    (OLLAMAPY_SHUTDOWN_TIMEOUT), since a busy machine may take more than the default 10 s."""
    srv = start_server(server.models, OLLAMAPY_SHUTDOWN_TIMEOUT=str(HANG_GUARD_S))
    try:
        lines, refused_while_streaming = [], False
        with httpx.Client(base_url=srv.url, timeout=60) as http, \
                http.stream("POST", "/api/generate", json=greedy(PROMPTS[0], 40)) as r:
            for line in r.iter_lines():
                lines.append(json.loads(line))
                if len(lines) == 1:
                    srv.process.send_signal(signal.SIGTERM)
                elif not lines[-1]["done"] and not refused_while_streaming:
                    refused_while_streaming = refused(srv.url)
        assert refused_while_streaming, "a new request was served after SIGTERM"
        assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 40
        assert srv.process.wait(timeout=60) == 0
        assert list(server.models.rglob(".tmp-*")) == []
        with pytest.raises(httpx.TransportError):
            httpx.get(srv.url, timeout=2)
    finally:
        stop_server(srv)
