"""The product's default path end to end: a server with quantized weights (kernels/) and the
compiled batched decode step (OLLAMAPY_FAST=1, OLLAMAPY_COMPILE=1), on the real models."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import ollama
import pytest

from tests.e2e.conftest import start_server, stop_server
from tests.engine.test_grammar import SCHEMAS


@pytest.fixture(scope="module")
def fast(fast_server):
    with ollama.Client(host=fast_server.url, timeout=600) as client:
        yield client


def test_answers_and_is_smaller_than_the_reference(fast, client) -> None:
    r = fast.chat(model="smollm2:135m", options={"temperature": 0},
                  messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in r.message.content and r.done_reason == "stop"
    client.generate(model="smollm2:135m", prompt="")  # the reference server, loaded too
    fast_size = {m.model: m.size for m in fast.ps().models}["smollm2:135m"]
    reference_size = {m.model: m.size for m in client.ps().models}["smollm2:135m"]
    # the same KV cache on both; the weights: ~125 MB quantized against ~540 MB of float32
    assert reference_size - fast_size > 350_000_000


def test_concurrent_requests_and_structured_output(fast) -> None:
    async def go():
        async with ollama.AsyncClient(host=str(fast._client.base_url)) as client:
            return await asyncio.gather(*(client.chat(
                model="smollm2:135m", format=schema, options={"seed": i, "num_predict": 400},
                messages=[{"role": "user", "content": f"An example {name} as JSON."}])
                for i, (name, schema) in enumerate(list(SCHEMAS.items())[:6])))

    results = asyncio.run(go())
    for r, schema in zip(results, list(SCHEMAS.values())[:6], strict=True):
        jsonschema.validate(json.loads(r.message.content), schema)


def test_gemma3_on_the_fast_path(server) -> None:
    # one slot, so one batch bucket to compile (~40 s on 2 cores, where four slots' three
    # buckets took ~2 minutes): batching on the fast path is what the tests above exercise
    srv = start_server(server.models, OLLAMAPY_FAST="1", OLLAMAPY_COMPILE="1",
                       OLLAMA_NUM_PARALLEL="1")
    try:
        with ollama.Client(host=srv.url, timeout=600) as client:
            r = client.generate(model="gemma3:270m", prompt="The capital of France is",
                                raw=True, options={"temperature": 0, "num_predict": 8})
            ps = client.ps().models
    finally:
        stop_server(srv)
    assert r.eval_count == 8 and r.response.strip()
    assert [m.model for m in ps] == ["gemma3:270m"]
