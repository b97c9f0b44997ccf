"""Two ollamapy replicas behind Ray Serve (ollamapy/deploy/ray_serve.py), on a local Ray
instance, driven by the official `ollama` client and the OpenAI SDK through Ray's HTTP proxy:
one model store shared, each conversation on one replica turn after turn, and the answers of
one server. The replicas run the engine as the suite's session server does (the reference
path, OLLAMAPY_FAST=0), so the answers are compared bit for bit with it, and the suite does not
pay two more compiles of the fast path's steps (what the replica runs is any `ollamapy serve`;
the fast path itself is tested through a live server in test_fast_server.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import ollama
import openai
import pytest

from ollamapy.deploy.ray_serve import REPLICA_HEADER, affinity_key, replica_for
from tests.e2e.conftest import START_HANG_GUARD_S, Server, free_port

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "num_predict": 12}
# four openings; rendezvous hashing puts them on both replicas (asserted below)
TOPICS = ("the sea", "mountains", "bread", "the moon")


@pytest.fixture(scope="module")
def ray_url(server: Server) -> Iterator[str]:
    """`python -m ollamapy.deploy.ray_serve --replicas 2`, as the README runs it: a local Ray
    instance, the replicas over the session server's store, with its settings."""
    port = free_port()
    env = {**os.environ, "OLLAMA_MODELS": str(server.models), "OLLAMAPY_FAST": "0",
           "OLLAMAPY_COMPILE": "0"}
    # its own session: Ray's processes are its children, and go with it whatever happens
    process = subprocess.Popen([sys.executable, "-m", "ollamapy.deploy.ray_serve",
                                "--replicas", "2", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        # the line it prints once serve.run has returned (the proxy answers before that)
        ready = threading.Thread(target=process.stdout.readline, daemon=True)
        ready.start()
        ready.join(START_HANG_GUARD_S)
        assert process.poll() is None, f"the deployment exited ({process.returncode})"
        assert httpx.get(url, timeout=10).text == "Ollama is running"
        yield url
    finally:
        process.send_signal(signal.SIGINT)  # serve.shutdown(), ray.shutdown()
        try:
            # ~5 s alone; in the full suite it has not exited in 20 s, nor in 60 (cause not
            # found yet): then the whole session, Ray's processes with it, is killed
            process.wait(8)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()


def _conversation(client: ollama.Client, topic: str) -> list[str]:
    messages = [{"role": "user", "content": f"Tell me about {topic}."}]
    answers = []
    for follow_up in ("Say more.", None):
        reply = client.chat(model=MODEL, messages=messages, options=GREEDY).message
        answers.append(reply.content)
        messages += [{"role": "assistant", "content": reply.content},
                     {"role": "user", "content": follow_up}]
    return answers


def test_each_conversation_stays_on_one_replica_and_answers_as_one_server(
        ray_url: str, server: Server) -> None:
    served: list[str] = []

    def seen(response: httpx.Response) -> None:
        served.append(response.headers[REPLICA_HEADER])

    replicas = {}
    with ollama.Client(host=ray_url, timeout=600, event_hooks={"response": [seen]}) as proxied, \
            ollama.Client(host=server.url, timeout=600) as one:
        assert MODEL in [m.model for m in proxied.list().models]  # the shared store
        for topic in TOPICS:
            served.clear()
            assert _conversation(proxied, topic) == _conversation(one, topic), topic
            assert len(served) == 2 and served[0] == served[1], topic  # both turns, one replica
            replicas[topic] = served[0]
    assert sorted(set(replicas.values())) == ["replica-0", "replica-1"]


def test_streams_and_v1_pass_through_the_proxy(ray_url: str) -> None:
    with ollama.Client(host=ray_url, timeout=600) as client:
        chunks = list(client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi!"}],
                                  stream=True, options=GREEDY))
    assert len(chunks) > 2 and chunks[-1].done and not chunks[0].done
    assert chunks[-1].eval_count == sum(1 for c in chunks if c.message.content) or \
        chunks[-1].eval_count >= len(chunks) - 2
    with openai.OpenAI(base_url=f"{ray_url}/v1", api_key="x") as oai:
        done = oai.chat.completions.create(model=MODEL, messages=[{"role": "user",
                                                                   "content": "Hi!"}],
                                           max_tokens=8, temperature=0)
    assert done.choices[0].message.content and done.usage.completion_tokens == 8
    with ollama.Client(host=ray_url, timeout=600) as client, pytest.raises(ollama.ResponseError) \
            as missing:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "Hi!"}])
    assert missing.value.status_code == 404  # Ollama's status and text, through the proxy
    assert missing.value.error == "model 'no-such-model' not found"


def test_a_conversation_is_keyed_by_its_opening() -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    body = httpx.Request("POST", "/", json={"model": MODEL, "messages": chat}).content
    later = httpx.Request("POST", "/", json={"model": MODEL, "messages": chat + [
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "More"}],
        "options": {"temperature": 0}}).content
    key = affinity_key("/api/chat", body)
    assert key and affinity_key("/api/chat", later) == key  # the next turn: the same replica
    assert affinity_key("/v1/chat/completions", later) == key
    other = httpx.Request("POST", "/", json={"model": "gemma3:270m", "messages": chat}).content
    assert affinity_key("/api/chat", other) != key  # another model's cache
    prompt = httpx.Request("POST", "/", json={"model": MODEL, "prompt": "x" * 600}).content
    longer = httpx.Request("POST", "/", json={"model": MODEL, "prompt": "x" * 700}).content
    assert affinity_key("/api/generate", prompt) == affinity_key("/api/generate", longer)
    for path, raw in (("/api/tags", b""), ("/api/chat", b"not json"), ("/api/chat", b"[]"),
                      ("/api/pull", body)):
        assert affinity_key(path, raw) == ""  # any replica
    # rendezvous hashing: a third replica takes about a third of the conversations and moves
    # no conversation between the first two
    keys = [f"conversation {i}" for i in range(300)]
    two, three = [replica_for(k, 2) for k in keys], [replica_for(k, 3) for k in keys]
    assert all(t == 2 or t == w for w, t in zip(two, three, strict=True))
    assert 70 < three.count(2) < 130
