"""`OLLAMAPY_TENSOR_PARALLEL=2 make serve`: each model split over two processes (rank 0 the
engine process, one follower), through the official client, against the default server.

The same greedy text as the default server for the default decoders, and all-minilm's
embeddings to float rounding (its encoder split the same way); seeded sampling reproducible;
concurrent requests, prefix reuse and slot compaction mirrored on the follower (each answer
equals its solo run); and a follower killed under the server ends the next request with a
clear error, unloads the model, and the request after loads it afresh.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import ollama
import pytest

from tests.e2e.conftest import Server, process_tree, start_server, stop_server

PROMPTS = {"smollm2:135m": "Why is the sky blue?", "gemma3:270m": "Name three rivers."}
GREEDY = {"temperature": 0, "num_predict": 24}


@pytest.fixture(scope="module")
def tp_server(server: Server) -> Iterator[Server]:
    srv = start_server(server.models, OLLAMAPY_FAST="1", OLLAMAPY_COMPILE="1",
                       OLLAMA_NUM_PARALLEL="4", OLLAMAPY_TENSOR_PARALLEL="2")
    try:
        yield srv
    finally:
        stop_server(srv)


def followers(srv: Server, model: str) -> list[int]:
    """The server's rank-1 processes for model (`ps` shows "tp<rank> <model>", 15 bytes)."""
    return [pid for pid, name in process_tree(srv.process.pid).items()
            if name == f"tp1 {model}"[:15]]


@pytest.fixture(scope="module")
def one_slot_server(server: Server) -> Iterator[Server]:
    """The default path with one slot: a row's bits are the same in every batch bucket
    (batch invariance), so this answers as `make serve` does, and its compiled gemma3 step
    is the one test_fast_server.py saved (four slots would compile three more)."""
    srv = start_server(server.models, OLLAMAPY_FAST="1", OLLAMAPY_COMPILE="1",
                       OLLAMA_NUM_PARALLEL="1")
    try:
        yield srv
    finally:
        stop_server(srv)


def test_greedy_text_is_the_default_servers(tp_server: Server, fast_server: Server,
                                            one_slot_server: Server) -> None:
    defaults = {"smollm2:135m": fast_server, "gemma3:270m": one_slot_server}
    with ollama.Client(host=tp_server.url, timeout=600) as tp:
        for model, prompt in PROMPTS.items():
            got = tp.generate(model=model, prompt=prompt, options=GREEDY)
            assert len(followers(tp_server, model)) == 1  # split, over two processes
            with ollama.Client(host=defaults[model].url, timeout=600) as one:
                want = one.generate(model=model, prompt=prompt, options=GREEDY)
            assert got.response == want.response and got.eval_count == want.eval_count, model
        with ollama.Client(host=fast_server.url, timeout=600) as one:
            chat = [{"role": "user", "content": "Say hello in French."}]
            assert tp.chat(model="smollm2:135m", messages=chat, options=GREEDY).message \
                .content == one.chat(model="smollm2:135m", messages=chat,
                                     options=GREEDY).message.content
            texts = ["a sentence", "and a longer one, about the sea and its tides"]
            got = tp.embed(model="all-minilm", input=texts).embeddings
            assert len(followers(tp_server, "all-minilm:latest")) == 1
            want = one.embed(model="all-minilm", input=texts).embeddings
            # the same sums, split in two and added: float32 rounding apart
            assert max(abs(g - w) for gs, ws in zip(got, want, strict=True)
                       for g, w in zip(gs, ws, strict=True)) < 1e-5


def test_seeded_sampling_is_reproducible_and_requests_mirror_in_a_batch(
        tp_server: Server) -> None:
    """Three requests alone, then together (two share a long system prompt: prefix reuse
    copies slots; the short one leaves first: compaction swaps them): each the same text."""
    system = "You are a patient teacher who explains things simply. " * 6
    requests = [
        {"prompt": "Why is the sky blue?", "system": system,
         "options": {"temperature": 0.8, "seed": 7, "num_predict": 24}},
        {"prompt": "Why is grass green?", "system": system, "options": GREEDY},
        {"prompt": "Count to five.", "options": {"temperature": 0, "num_predict": 6}},
    ]
    with ollama.Client(host=tp_server.url, timeout=600) as client:
        def ask(request: dict) -> str:
            return client.generate(model="smollm2:135m", **request).response

        alone = [ask(r) for r in requests]
        assert ask(requests[0]) == alone[0]  # the same seed, the same text
        with ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(ask, requests))
    assert together == alone


def test_a_follower_that_dies_unloads_the_model_with_a_clear_error(tp_server: Server) -> None:
    model, prompt = "smollm2:135m", PROMPTS["smollm2:135m"]
    with ollama.Client(host=tp_server.url, timeout=600) as client:
        before = client.generate(model=model, prompt=prompt, options=GREEDY).response
        (pid,) = followers(tp_server, model)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ollama.ResponseError) as failed:
            client.generate(model=model, prompt=prompt, options=GREEDY)
        assert failed.value.status_code == 500
        assert "tensor parallel rank 1 of 2 stopped" in failed.value.error
        deadline = time.monotonic() + 60
        while model in [m.model for m in client.ps().models] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert model not in [m.model for m in client.ps().models]
        # the next request loads it afresh, with a new follower
        assert client.generate(model=model, prompt=prompt, options=GREEDY).response == before
        assert pid not in followers(tp_server, model) and len(followers(tp_server, model)) == 1


def test_a_model_that_cannot_split_so_is_refused_clearly(server: Server) -> None:
    """smollm2's 9 heads over 3 kv heads do not split 4 ways: the load fails on every rank,
    the request says why, and the server goes on serving."""
    srv = start_server(server.models, OLLAMAPY_TENSOR_PARALLEL="4")
    try:
        with ollama.Client(host=srv.url, timeout=600) as client:
            with pytest.raises(ollama.ResponseError) as refused:
                client.generate(model="smollm2:135m", prompt="Hi", options=GREEDY)
            assert refused.value.status_code == 500
            assert "9 attention heads over 3 kv heads do not split 4 ways" in refused.value.error
            assert followers(srv, "smollm2:135m") == []  # none left behind
            assert client.list().models  # still serving
    finally:
        stop_server(srv)
