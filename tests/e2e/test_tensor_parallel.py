"""`OLLAMAPY_TENSOR_PARALLEL=2 make serve`: each model split over two processes (rank 0 the
engine process, one follower), through the official client, against the default server.

The same greedy text as the default server for the default decoders, and all-minilm's
embeddings to float rounding (its encoder split the same way); seeded sampling reproducible;
concurrent requests, prefix reuse and slot compaction mirrored on the follower (each answer
equals its solo run); and a follower killed under the server ends the next request with a
clear error, unloads the model, and the request after loads it afresh. The README's torchrun
job over two hosts (two torchrun agents on loopback) answers the same text.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

import ollama
import pytest

from tests.e2e.conftest import (
    Server,
    free_port,
    gone,
    process_tree,
    start_server,
    stop_server,
)

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


def followers(srv: Server | subprocess.Popen, model: str) -> list[int]:
    """A server's (or a torchrun host's) rank-1 processes for model (`ps` shows
    "tp<rank> <model>", 15 bytes)."""
    root = srv.process.pid if isinstance(srv, Server) else srv.pid
    return [pid for pid, name in process_tree(root).items() if name == f"tp1 {model}"[:15]]


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
        unloaded(client, model)
        # the next request loads it afresh, with a new follower
        assert client.generate(model=model, prompt=prompt, options=GREEDY).response == before
        assert pid not in followers(tp_server, model) and len(followers(tp_server, model)) == 1


def unloaded(client: ollama.Client, model: str) -> None:
    """Wait (a hang guard) for the server to drop model, as it does when a rank is lost."""
    deadline = time.monotonic() + 60
    while model in [m.model for m in client.ps().models] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert model not in [m.model for m in client.ps().models]


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


def torchrun(node_rank: int, master_port: int) -> list[str]:
    """The README's command for one host of a two-host job, one rank a host."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
            "--nproc-per-node", "1", "--node-rank", str(node_rank), "--master-addr",
            "127.0.0.1", "--master-port", str(master_port), "-m", "ollamapy.cli", "serve"]


def test_a_torchrun_job_over_two_hosts_serves_the_default_servers_text(
        server: Server, fast_server: Server) -> None:
    """Host 0's rank serves; host 1's stands by and starts each model's follower there (rank
    1 of the split, its group met in torchrun's store). A follower that dies on host 1 is
    reported as one on rank 0's host is; stopping host 0 stops the job."""
    master, model, prompt = free_port(), "smollm2:135m", PROMPTS["smollm2:135m"]
    # one thread a rank: both "hosts" share this machine's cores
    host1 = subprocess.Popen(torchrun(1, master), env={**server.env(), "OLLAMAPY_FAST": "1",
                                                       "OMP_NUM_THREADS": "1"},
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        host0 = start_server(server.models, command=torchrun(0, master), OLLAMAPY_FAST="1",
                             OLLAMAPY_COMPILE="1", OMP_NUM_THREADS="1")
        try:
            with ollama.Client(host=host0.url, timeout=600) as job, \
                    ollama.Client(host=fast_server.url, timeout=600) as one:
                got = job.generate(model=model, prompt=prompt, options=GREEDY)
                want = one.generate(model=model, prompt=prompt, options=GREEDY)
                assert got.response == want.response and got.eval_count == want.eval_count
                (follower,) = followers(host1, model)  # started on host 1, by its standby
                assert followers(host0, model) == []
                # host 1's follower dies: its standby says so, the request says which rank
                os.kill(follower, signal.SIGKILL)
                with pytest.raises(ollama.ResponseError) as failed:
                    job.generate(model=model, prompt=prompt, options=GREEDY)
                assert "tensor parallel rank 1 of 2 stopped" in failed.value.error
                unloaded(job, model)
                # and the model loads afresh (a new group, a new follower on host 1)
                assert job.generate(model=model, prompt=prompt,
                                    options=GREEDY).response == want.response
                (follower,) = followers(host1, model)
        finally:
            stop_server(host0)
        host1.wait(60)  # its standby saw rank 0's server stop
        assert gone(follower)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(host1.pid, signal.SIGKILL)
        host1.wait()
