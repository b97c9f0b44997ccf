"""A tool-calling round trip (call → tool result → final answer) through the `ollama` client
and the `openai` SDK.

No model here ships a tools-aware template, so the test writes one: a tiny bigram GGUF
(tests/bigram.py: greedy decoding follows a fixed chain from the prompt's last token) and a
Go TEMPLATE that uses .Tools and ends the prompt with <|assistant|> (the
chain writes a tool call) or, after a tool result, with <|answer|> (the chain answers)."""

from __future__ import annotations

import json

import openai
import pytest

from tests.bigram import (
    ANSWER,
    CALL,
    TOOLS_CHAIN,
    TOOLS_SPECIAL,
    TOOLS_TEMPLATE,
    create_bigram_model,
    write_bigram_gguf,
)

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "description": "The city"}}}}}]
QUESTION = {"role": "user", "content": "What is the weather in Paris?"}


@pytest.fixture(scope="module")
def tool_model(server, tmp_path_factory) -> str:
    import ollama

    path = tmp_path_factory.mktemp("bigram") / "bigram.gguf"
    write_bigram_gguf(path, TOOLS_SPECIAL, TOOLS_CHAIN)
    with ollama.Client(host=server.url) as client:
        return create_bigram_model(client, "weather-bot", path, template=TOOLS_TEMPLATE)


def test_the_template_makes_it_tools_capable(client, tool_model) -> None:
    assert "tools" in client.show(tool_model).capabilities


def test_round_trip_with_the_ollama_client(client, tool_model) -> None:
    first = client.chat(model=tool_model, messages=[QUESTION], tools=TOOLS)
    assert first.message.content == ""
    (call,) = first.message.tool_calls
    assert call.function.name == "get_weather"
    assert dict(call.function.arguments) == {"city": "Paris"}
    assert first.done_reason == "stop"
    history = [QUESTION, first.message,
               {"role": "tool", "content": "Sunny, 25 C", "tool_name": "get_weather"}]
    final = client.chat(model=tool_model, messages=history, tools=TOOLS)
    assert final.message.content == ANSWER and not final.message.tool_calls
    streamed = list(client.chat(model=tool_model, messages=[QUESTION], tools=TOOLS,
                                stream=True))
    calls = [c for chunk in streamed for c in (chunk.message.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert "".join(chunk.message.content for chunk in streamed) == ""


def test_without_tools_the_same_model_just_talks(client, tool_model) -> None:
    r = client.chat(model=tool_model, messages=[QUESTION])
    assert r.message.content == "<tool_call>" + CALL + "</tool_call>"
    assert not r.message.tool_calls


def test_round_trip_with_the_openai_sdk(server, tool_model) -> None:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x") as oai:
        first = oai.chat.completions.create(model=tool_model, messages=[QUESTION], tools=TOOLS)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_") and len(call.id) == 13
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        history = [QUESTION, choice.message.model_dump(exclude_none=True),
                   {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 25 C"}]
        final = oai.chat.completions.create(model=tool_model, messages=history, tools=TOOLS)
        assert final.choices[0].message.content == ANSWER
        assert final.choices[0].finish_reason == "stop"
        chunks = list(oai.chat.completions.create(model=tool_model, messages=[QUESTION],
                                                  tools=TOOLS, stream=True))
        deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert [d.function.name for d in deltas] == ["get_weather"]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
