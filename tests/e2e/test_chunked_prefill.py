"""Chunked prefill through the live server (issue 14, item 4): a model made with
PARAMETER num_batch 32 runs a 400-token prompt 32 tokens a step while another stream on it
keeps decoding, and answers exactly what the same model answers with the prompt in one chunk
(smollm2:135m, num_batch 512), as does the stream that ran beside it."""

from __future__ import annotations

import json
import threading

import httpx

BASE, CHUNKED = "smollm2:135m", "smollm2-chunked"
LONG = "The history of the old harbour town goes back many centuries. " * 32
SHORT = "Once upon a time"


def answer(server, model: str, prompt: str, n: int) -> str:
    r = httpx.post(f"{server.url}/api/generate", timeout=300, json={
        "model": model, "prompt": prompt, "raw": True, "stream": False,
        "options": {"temperature": 0, "num_predict": n}})
    assert r.status_code == 200, r.text
    return r.json()["response"]


def test_a_long_prompt_in_chunks_beside_a_stream_answers_as_in_one(server) -> None:
    r = httpx.post(f"{server.url}/api/create", timeout=300, json={
        "model": CHUNKED, "from": BASE, "parameters": {"num_batch": 32}, "stream": False})
    assert r.status_code == 200, r.text
    try:
        tokens = httpx.post(f"{server.url}/api/tokenize", timeout=300,
                            json={"model": BASE, "content": LONG}).json()
        assert 320 < len(tokens["tokens"]) < 512  # one chunk at 512, ten or more at 32
        streamed: list[str] = []
        started = threading.Event()

        def stream() -> None:
            with httpx.stream("POST", f"{server.url}/api/generate", timeout=300, json={
                    "model": CHUNKED, "prompt": SHORT, "raw": True,
                    "options": {"temperature": 0, "num_predict": 48}}) as response:
                for line in response.iter_lines():
                    streamed.append(json.loads(line)["response"])
                    started.set()

        thread = threading.Thread(target=stream)
        thread.start()
        assert started.wait(300)
        beside = answer(server, CHUNKED, LONG, 16)
        thread.join(300)
        assert beside == answer(server, BASE, LONG, 16)
        assert "".join(streamed) == answer(server, BASE, SHORT, 48)
    finally:
        httpx.request("DELETE", f"{server.url}/api/delete", json={"model": CHUNKED})
