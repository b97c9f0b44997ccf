"""Logprobs from the sampler's own distribution, /api/tokenize and /api/detokenize, and
truncation made visible — against the live server on the real smollm2."""

from __future__ import annotations

import math

import httpx
import openai
import torch

PROMPT = "The capital of France is"


def test_logprobs_are_log_softmax_of_the_samplers_logits(client, smollm2) -> None:
    r = client.generate(model="smollm2:135m", prompt=PROMPT, logprobs=True,
                        top_logprobs=5, options={"temperature": 0, "num_predict": 8})
    entries = r.logprobs
    assert len(entries) == r.eval_count == 8
    assert "".join(e.token for e in entries) == r.response
    # context: the rendered prompt's ids, then the generated ones
    prompt_ids, generated = r.context[:r.prompt_eval_count], r.context[r.prompt_eval_count:]
    assert len(generated) == 8
    for k, entry in enumerate(entries):
        logp = torch.log_softmax(smollm2.logits(prompt_ids + generated[:k]), dim=0)
        assert math.isclose(entry.logprob, float(logp[generated[k]]), abs_tol=1e-3)
        tops = entry.top_logprobs
        assert len(tops) == 5
        assert [t.logprob for t in tops] == sorted((t.logprob for t in tops), reverse=True)
        assert tops[0].token == entry.token  # greedy: the chosen one is the most likely
        expected = torch.topk(logp, 5).values.tolist()
        assert all(math.isclose(t.logprob, e, abs_tol=1e-3)
                   for t, e in zip(tops, expected, strict=True))


def test_streamed_chat_logprobs_follow_the_text(client) -> None:
    chunks = list(client.chat(model="smollm2:135m", stream=True, logprobs=True,
                              messages=[{"role": "user", "content": "Say hello."}],
                              options={"temperature": 0, "num_predict": 10}))
    entries = [e for c in chunks for e in (c.logprobs or [])]
    text = "".join(c.message.content for c in chunks)
    assert len(entries) == chunks[-1].eval_count and "".join(e.token for e in entries) == text
    assert all(e.logprob <= 0 and not e.top_logprobs for e in entries)  # top_logprobs 0


def test_openai_logprobs(server) -> None:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x") as oai:
        r = oai.chat.completions.create(
            model="smollm2:135m", messages=[{"role": "user", "content": "Say hello."}],
            temperature=0, max_tokens=6, logprobs=True, top_logprobs=3)
        content = r.choices[0].logprobs.content
        assert "".join(t.token for t in content) == r.choices[0].message.content
        assert all(len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
                   for t in content)
        c = oai.completions.create(model="smollm2:135m", prompt="Say hello.", temperature=0,
                                   max_tokens=6, logprobs=2)
        lp = c.choices[0].logprobs
        assert "".join(lp.tokens) == c.choices[0].text and len(lp.top_logprobs[0]) == 2
        assert lp.text_offset[0] == 0


def test_tokenize_and_detokenize(server, smollm2) -> None:
    text = "<|im_start|>user\nHello, world!"
    r = httpx.post(f"{server.url}/api/tokenize", json={"model": "smollm2:135m",
                                                        "content": text}, timeout=60).json()
    assert r["tokens"] == smollm2.tokenize(text, add_special=False, parse_special=True)
    assert r["tokens"][0] == 1  # <|im_start|> parsed as the special token
    back = httpx.post(f"{server.url}/api/detokenize", json={"model": "smollm2:135m",
                                                             "tokens": r["tokens"]}).json()
    assert back["content"] == "user\nHello, world!"  # control tokens render as nothing
    bad = httpx.post(f"{server.url}/api/detokenize", json={"model": "smollm2:135m",
                                                            "tokens": [10**9]})
    assert bad.status_code == 400 and "out of range" in bad.json()["error"]
    missing = httpx.post(f"{server.url}/api/tokenize", json={"model": "nope", "content": "x"})
    assert missing.status_code == 404


def test_truncation_is_visible(server) -> None:
    prompt = " ".join(f"word{i}" for i in range(200))
    r = httpx.post(f"{server.url}/api/generate", timeout=60, json={
        "model": "smollm2:135m", "prompt": prompt, "raw": True, "stream": False,
        "options": {"num_ctx": 64, "num_predict": 2, "temperature": 0}}).json()
    assert r["truncated"] is True and r["prompt_tokens_dropped"] > 0
    assert r["prompt_eval_count"] <= 64
    short = httpx.post(f"{server.url}/api/generate", timeout=60, json={
        "model": "smollm2:135m", "prompt": "Hi", "raw": True, "stream": False,
        "options": {"num_ctx": 64, "num_predict": 2}}).json()
    assert "truncated" not in short
    history = [{"role": "user", "content": f"message {i} " + "x " * 30} for i in range(8)]
    chat = httpx.post(f"{server.url}/api/chat", timeout=60, json={
        "model": "smollm2:135m", "messages": history, "stream": False,
        "options": {"num_ctx": 128, "num_predict": 2}}).json()
    assert chat["truncated"] is True and chat["messages_dropped"] > 0
