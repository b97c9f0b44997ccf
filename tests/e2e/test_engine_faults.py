"""Faults in the engine's path (hardening.md §7 items 18, 24, 27): clients that leave before
the first token, a step that throws mid-stream, and models juggled under a one-model limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import ollama

from tests.e2e.test_concurrency import HANG_GUARD_S, inprocess, wait_for

LONG = {"model": "smollm2:135m", "prompt": "Tell me a long story. " * 60,
        "options": {"temperature": 0, "num_predict": 200}}


def test_18_clients_that_leave_before_the_first_token_cost_nothing(server) -> None:
    with inprocess(server.models) as (url, state), \
            httpx.Client(base_url=url, timeout=HANG_GUARD_S) as http:
        http.post("/api/generate", json={"model": "smollm2:135m"})  # loaded
        # give up after 0.2 s (the client's choice, not a guard): mid prompt processing or
        # queued, a 200-token answer being far from done by then on any machine
        for _ in range(4):
            with contextlib.suppress(httpx.TimeoutException):
                http.post("/api/generate", json=LONG, timeout=0.2)
        runner = state.scheduler.loaded["smollm2:135m"].runner
        wait_for(lambda: runner.stats()["running"] == runner.stats()["waiting"] == 0)
        assert runner.stats()["active"] == 0
        r = http.post("/api/generate", json={
            "model": "smollm2:135m", "prompt": "Hi", "stream": False,
            "options": {"num_predict": 2}})
        assert r.status_code == 200 and r.json()["eval_count"] == 2


def test_24_a_step_that_fails_mid_stream_does_not_wedge_the_model(server) -> None:
    # the engine on a thread of this process, so that the test can break its decode step
    with inprocess(server.models, OLLAMAPY_ENGINE_PROCESS="0") as (url, state), \
            httpx.Client(base_url=url, timeout=60) as http:
        http.post("/api/generate", json={"model": "smollm2:135m"})
        batch = state.scheduler.loaded["smollm2:135m"].runner.worker.batch
        real, calls = batch.decode, 0

        def flaky(*args):
            nonlocal calls
            calls += 1
            if calls == 3:
                raise RuntimeError("injected failure in the decode step")
            return real(*args)

        batch.decode = flaky
        # greedy, so the answer is long enough to reach the third step on every run (a sampled
        # one ended after two tokens once)
        lines = [json.loads(line) for line in http.post("/api/generate", json={
            "model": "smollm2:135m", "prompt": "Count to ten.",
            "options": {"num_predict": 20, "temperature": 0}}).text.splitlines()]
        assert lines[-1] == {"error": "injected failure in the decode step"}
        assert not any(line.get("done") for line in lines)
        calls = 10  # past the failure: the next requests work on the same model
        r = http.post("/api/generate", json={"model": "smollm2:135m", "prompt": "Hi",
                                             "stream": False,
                                             "options": {"num_predict": 3, "temperature": 0}})
        assert r.status_code == 200 and r.json()["eval_count"] == 3
        calls = 2  # a failure in a non-streaming request is a 500 JSON error
        r = http.post("/api/generate", json={"model": "smollm2:135m", "prompt": "Hi",
                                             "stream": False,
                                             "options": {"num_predict": 5, "temperature": 0}})
        assert r.status_code == 500 and r.json() == {
            "error": "injected failure in the decode step"}


def test_27_model_juggling_under_a_one_model_limit(server) -> None:
    """12 concurrent requests alternating between three models with room for one: all are
    answered (no deadlock), a model is never unloaded while a request holds it, and /api/ps,
    watched throughout, never lists more than one model, with an expires_at within the
    default keep_alive from now."""
    with inprocess(server.models, OLLAMA_MAX_LOADED_MODELS="1") as (url, state):
        scheduler, busy_unloads = state.scheduler, []
        real_unload = scheduler._unload

        def unload(loaded) -> None:
            if loaded.refs:
                busy_unloads.append(loaded.spec.name)
            real_unload(loaded)

        scheduler._unload = unload
        seen: list[list] = []

        async def watch(client: ollama.AsyncClient, stop: asyncio.Event) -> None:
            while not stop.is_set():
                seen.append([(m.model, m.expires_at.timestamp() - time.time())
                             for m in (await client.ps()).models])
                await asyncio.sleep(0.2)

        async def one(client: ollama.AsyncClient, i: int) -> str:
            model = ("smollm2:135m", "gemma3:270m", "all-minilm")[i % 3]
            if model == "all-minilm":
                return str(len((await client.embed(model=model, input="x")).embeddings[0]))
            r = await client.generate(model=model, prompt="Hi", raw=True,
                                      options={"num_predict": 2})
            return r.done_reason

        async def all_clients():
            async with ollama.AsyncClient(host=url) as client:
                stop = asyncio.Event()
                watcher = asyncio.create_task(watch(client, stop))
                results = await asyncio.gather(*(one(client, i) for i in range(12)))
                stop.set()
                await watcher
                return results

        results = asyncio.run(all_clients())
        assert len(results) == 12 and "384" in results  # every request answered
        assert set(results) <= {"384", "length", "stop"}
        assert busy_unloads == []
        assert len(seen) > 3 and all(len(models) <= 1 for models in seen)
        assert all(0 < left <= 300 + 5 for models in seen for _, left in models)
        with ollama.Client(host=url) as client:
            assert len(client.ps().models) == 1  # the limit held, and ps tells the truth
        assert len(state.scheduler.loaded) == 1
