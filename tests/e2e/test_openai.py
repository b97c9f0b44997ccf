"""The OpenAI-compatible /v1 layer driven by the official `openai` SDK (sync and async,
streaming and not) and LangChain's ChatOpenAI, against the live server on the real models."""

from __future__ import annotations

import asyncio
import base64
import math
import struct

import httpx
import openai
import pytest

GREEDY = {"temperature": 0, "max_tokens": 12}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture()
def oai(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="ollamapy")
    yield client
    client.close()


def test_chat_completion_and_usage_equal_native_counts(oai, client) -> None:
    r = oai.chat.completions.create(model="smollm2:135m", messages=QUESTION, **GREEDY)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.system_fingerprint == "fp_ollama" and r.model == "smollm2:135m"
    choice = r.choices[0]
    assert choice.message.role == "assistant" and "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    native = client.chat(model="smollm2:135m", messages=QUESTION,
                         options={"temperature": 0, "num_predict": 12})
    assert choice.message.content == native.message.content
    assert r.usage.prompt_tokens == native.prompt_eval_count
    assert r.usage.completion_tokens == native.eval_count
    assert r.usage.total_tokens == native.prompt_eval_count + native.eval_count


def test_chat_streaming_with_usage(oai) -> None:
    whole = oai.chat.completions.create(model="smollm2:135m", messages=QUESTION, **GREEDY)
    stream = oai.chat.completions.create(model="smollm2:135m", messages=QUESTION, stream=True,
                                         stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == \
        whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == \
        whole.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1


def test_sse_wire_format_ends_with_done(server) -> None:
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=60, json={
            "model": "smollm2:135m", "messages": QUESTION, "stream": True, **GREEDY}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_content_parts_system_and_assistant_history(oai) -> None:
    parts = [{"role": "system", "content": "You are a helpful assistant."},
             {"role": "user", "content": [{"type": "text", "text": "The secret word is"
                                                                  " pineapple."}]},
             {"role": "assistant", "content": "Okay, the secret word is pineapple."},
             {"role": "user", "content": "What is the secret word?"}]
    r = oai.chat.completions.create(model="smollm2:135m", messages=parts, temperature=0,
                                    max_completion_tokens=20)
    assert "pineapple" in r.choices[0].message.content.lower()
    assert r.usage.completion_tokens <= 20


def test_sampling_fields_take_effect(oai) -> None:
    kw = {"model": "smollm2:135m", "messages": QUESTION, "max_tokens": 16}
    a = oai.chat.completions.create(seed=7, temperature=1.3, **kw).choices[0].message.content
    b = oai.chat.completions.create(seed=7, temperature=1.3, **kw).choices[0].message.content
    assert a == b
    full = oai.chat.completions.create(temperature=0, **kw).choices[0].message.content
    word = full.split()[2]
    cut = oai.chat.completions.create(temperature=0, stop=word, **kw)
    assert cut.choices[0].finish_reason == "stop" and word not in cut.choices[0].message.content
    listed = oai.chat.completions.create(temperature=0, stop=[word, "zzz"], **kw)
    assert listed.choices[0].message.content == cut.choices[0].message.content
    penalised = oai.chat.completions.create(temperature=0, frequency_penalty=2.0,
                                            presence_penalty=2.0, **kw)
    assert penalised.choices[0].message.content != full


def test_extra_body_options_are_honoured(oai) -> None:
    long_question = [{"role": "user", "content": " ".join(["word"] * 300) + " Summarise."}]
    wide = oai.chat.completions.create(model="smollm2:135m", messages=long_question,
                                       max_tokens=2, temperature=0)
    narrow = oai.chat.completions.create(model="smollm2:135m", messages=long_question,
                                         max_tokens=2, temperature=0,
                                         extra_body={"num_ctx": 128, "keep_alive": "1m"})
    assert wide.usage.prompt_tokens > 300
    assert narrow.usage.prompt_tokens <= 128  # the small window visibly truncated it
    greedy_by_options = oai.chat.completions.create(
        model="smollm2:135m", messages=QUESTION, max_tokens=12,
        extra_body={"options": {"temperature": 0}, "top_k": 1, "min_p": 0.0,
                    "repeat_penalty": 1.0})
    assert greedy_by_options.choices[0].message.content == oai.chat.completions.create(
        model="smollm2:135m", messages=QUESTION, **GREEDY).choices[0].message.content


def test_async_client_streaming_and_not(server) -> None:
    async def go() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x") as aoai:
            r = await aoai.chat.completions.create(model="smollm2:135m", messages=QUESTION,
                                                   **GREEDY)
            stream = await aoai.chat.completions.create(model="smollm2:135m",
                                                        messages=QUESTION, stream=True,
                                                        **GREEDY)
            text = "".join([c.choices[0].delta.content or "" async for c in stream
                            if c.choices])
            return r.choices[0].message.content, text

    whole, streamed = asyncio.run(go())
    assert whole == streamed and "Paris" in whole


def test_completions(oai) -> None:
    r = oai.completions.create(model="smollm2:135m", prompt="What is the capital of France?",
                               max_tokens=12, temperature=0, seed=1)
    assert r.object == "text_completion" and "Paris" in r.choices[0].text
    assert r.usage.completion_tokens <= 12
    chunks = list(oai.completions.create(model="smollm2:135m",
                                         prompt="What is the capital of France?",
                                         max_tokens=12, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_embeddings_float_base64_and_dimensions(oai, client) -> None:
    r = oai.embeddings.create(model="all-minilm", input=["hello world", "goodbye"])
    assert r.object == "list" and [d.index for d in r.data] == [0, 1]
    vec = r.data[0].embedding
    assert len(vec) == 384 and math.isclose(sum(x * x for x in vec), 1.0, abs_tol=1e-4)
    native = client.embed(model="all-minilm", input="hello world").embeddings[0]
    assert vec == pytest.approx(native, abs=1e-6)
    assert r.usage.prompt_tokens == r.usage.total_tokens > 0
    short = oai.embeddings.create(model="all-minilm", input="hello world", dimensions=32)
    assert len(short.data[0].embedding) == 32
    raw = httpx.post(f"{oai.base_url}embeddings", json={
        "model": "all-minilm", "input": "hello world", "encoding_format": "base64"}).json()
    decoded = struct.unpack("<384f", base64.b64decode(raw["data"][0]["embedding"]))
    assert list(decoded) == pytest.approx(vec, abs=1e-6)


def test_models_list_and_retrieve(oai) -> None:
    ids = {m.id: m for m in oai.models.list()}
    assert {"smollm2:135m", "gemma3:270m", "all-minilm:latest"} <= set(ids)
    assert ids["smollm2:135m"].owned_by == "library" and ids["smollm2:135m"].created > 0
    assert oai.models.retrieve("smollm2:135m").id == "smollm2:135m"
    with pytest.raises(openai.NotFoundError) as e:
        oai.models.retrieve("nope")
    assert e.value.body["type"] == "not_found_error"


def test_errors_in_openai_shape(oai, server) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="nope", messages=QUESTION)
    assert e.value.status_code == 404
    assert e.value.body == {"message": "model 'nope' not found", "type": "not_found_error",
                            "param": None, "code": None}
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="smollm2:135m", messages=[])
    assert e.value.body["type"] == "invalid_request_error"
    assert e.value.body["message"] == "[] is too short - 'messages'"
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="smollm2:135m", messages=QUESTION, temperature="hot")
    with pytest.raises(openai.BadRequestError) as e:
        oai.embeddings.create(model="all-minilm", input=[])
    assert e.value.body["message"] == "invalid input"
    # a completion model embeds, as Ollama's /v1/embeddings → /api/embed (no capability check)
    assert len(oai.embeddings.create(model="smollm2:135m", input="hi").data[0].embedding) == 576
    r = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_langchain_chat_openai(server) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{server.url}/v1", api_key="ollamapy", model="smollm2:135m",
                     temperature=0, max_tokens=16)
    answer = llm.invoke("What is the capital of France?")
    assert "Paris" in answer.content
    streamed = "".join(chunk.content for chunk in llm.stream("What is the capital of France?"))
    assert streamed == answer.content
