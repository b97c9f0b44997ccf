"""The same request gives the same answer, token for token and logprob for logprob, whatever
else the server is doing: through a live server on its default path (quantized weights, the
compiled batched decode step, four slots, chunked prefill and prefix reuse), with the official
`ollama` and `openai` clients; and the notebook API answers as the server does."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import ollama
import openai
import pytest

import ollamapy
from tests.conftest import model_path
from tests.engine.test_batch_invariance import NEEDS_KERNEL

pytestmark = NEEDS_KERNEL

MODEL = "smollm2:135m"
SYSTEM = "You are a helpful assistant. Answer in one short paragraph, plainly."
LONG = ("Here are my notes on the solar system: the sun, the planets from Mercury to "
        "Neptune, their moons, the asteroid belt and the comets beyond. ") * 8


@pytest.fixture(scope="module")
def fast(fast_server) -> str:
    return fast_server.url


def _requests() -> list[dict[str, Any]]:
    """Different kinds, lengths and options: greedy and seeded sampling with every filter,
    penalties, a long prompt (chunked beside the decoding streams), a shared system prompt
    (taken from a slot's cache by the next requests), /api/generate, /api/chat and /v1."""
    sampled = {"temperature": 0.8, "seed": 42}
    return [
        {"api": "generate", "prompt": "Why is the sky blue?", "options": {"temperature": 0}},
        {"api": "generate", "prompt": "Tell me a story about a dragon.", "options": sampled},
        {"api": "chat", "messages": [{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": "Name three rivers."}],
         "options": {"temperature": 0, "num_predict": 20}},
        {"api": "chat", "messages": [{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": "What is a good friend?"}],
         "options": {**sampled, "seed": 7, "top_k": 20, "top_p": 0.9, "min_p": 0.05,
                     "repeat_penalty": 1.2, "presence_penalty": 0.3}},
        {"api": "generate", "prompt": LONG + "Which planet is largest?",
         "options": {"temperature": 0, "num_predict": 12}},
        {"api": "generate", "prompt": LONG + "Summarise my notes.",
         "options": {**sampled, "seed": 3, "typical_p": 0.9, "frequency_penalty": 0.2}},
        {"api": "v1", "messages": [{"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": "Describe Paris."}],
         "seed": 11, "temperature": 0.7},
    ]


async def _ask(url: str, request: dict[str, Any]) -> tuple[str, list[Any]]:
    """One request → (its text, its tokens' logprobs with their top 3)."""
    if request["api"] == "v1":
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="ollama") as client:
            r = await client.chat.completions.create(
                model=MODEL, messages=request["messages"], seed=request["seed"],
                temperature=request["temperature"], max_tokens=24, logprobs=True,
                top_logprobs=3)
        return r.choices[0].message.content, _listed(r.choices[0].logprobs.content)
    async with ollama.AsyncClient(host=url, timeout=600) as client:
        options = {"num_predict": 24, **request["options"]}
        if request["api"] == "generate":
            r = await client.generate(model=MODEL, prompt=request["prompt"], options=options,
                                      logprobs=True, top_logprobs=3)
            text = r.response
        else:
            r = await client.chat(model=MODEL, messages=request["messages"], options=options,
                                  logprobs=True, top_logprobs=3)
            text = r.message.content
    return text, _listed(r.logprobs)


def _listed(logprobs: list[Any]) -> list[Any]:
    """Either client's token logprobs → [(token, logprob, [(token, logprob) of the top])]."""
    return [(t.token, t.logprob, [(a.token, a.logprob) for a in t.top_logprobs])
            for t in logprobs]


async def _hang_up(url: str, after: int) -> None:
    """A streamed request whose client goes away after `after` chunks."""
    async with ollama.AsyncClient(host=url, timeout=600) as client:
        stream = await client.generate(model=MODEL, prompt="Count from one to fifty.",
                                       stream=True, options={"num_predict": 200})
        n = 0
        async for _ in stream:
            n += 1
            if n >= after:
                break


async def _mix(url: str, requests: list[dict[str, Any]], rng: random.Random
               ) -> list[tuple[str, list[Any]]]:
    """Every request at once, each after its own random delay, beside two clients that hang
    up partway → the answers, in the requests' order."""
    async def later(delay: float, coroutine):
        await asyncio.sleep(delay)
        return await coroutine

    hang_ups = [later(rng.uniform(0, 0.6), _hang_up(url, rng.randrange(1, 6)))
                for _ in range(2)]
    answers = [later(rng.uniform(0, 0.6), _ask(url, r)) for r in requests]
    *results, _, _ = await asyncio.gather(*answers, *hang_ups)
    return results


def test_every_answer_equals_its_solo_run_in_random_concurrent_mixes(fast) -> None:
    requests = _requests()

    async def solo():
        return [await _ask(fast, r) for r in requests]

    alone = asyncio.run(solo())
    assert all(text and len(logprobs) >= 12 for text, logprobs in alone)
    rng = random.Random(2026)
    for trial in range(2):
        order = rng.sample(range(len(requests)), len(requests))
        mixed = asyncio.run(_mix(fast, [requests[i] for i in order], rng))
        for i, answer in zip(order, mixed, strict=True):
            assert answer == alone[i], (trial, requests[i])
    with ollama.Client(host=fast) as client:  # still serving, the model still loaded
        assert client.ps().models[0].name == MODEL


def test_the_notebook_api_answers_as_the_server_does(fast) -> None:
    """`ollamapy.load(path, fast=True)`, what a notebook runs, gives the server's text for
    the same file, options and seed (its own compiled step, one slot)."""
    m = ollamapy.load(model_path("smollm2-135m.gguf"), fast=True)
    options = {"temperature": 0.8, "seed": 5, "top_k": 30, "num_predict": 24}
    prompt = "Write two lines about the sea."
    with ollama.Client(host=fast, timeout=600) as client:
        served = client.generate(model=MODEL, prompt=prompt, options=options)
    local = "".join(c["response"] for c in m.generate(prompt, **options))
    assert served.eval_count == 24 and local == served.response
