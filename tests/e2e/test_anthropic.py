"""The Anthropic-compatible /v1/messages driven by the official `anthropic` SDK (sync and async,
streaming and not) against the live server: smollm2 for plain answers, and two tiny bigram
models (tests/bigram.py) made to call a tool and to think, with Go TEMPLATEs that use .Tools
and put <think> tags around .Thinking. The SDK has no sampling arguments, so greedy decoding
is asked for as an extra body field, as a user of it would."""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx
import pytest

from tests.bigram import ANSWER, GREETING, THOUGHT, create_tools_and_thinker

MODEL = "smollm2:135m"
GREEDY = {"extra_body": {"temperature": 0}}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "required": ["city"],
                            "properties": {"city": {"type": "string"}}}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
HI = [{"role": "user", "content": "Hi there"}]


@pytest.fixture(scope="module")
def bigrams(server, tmp_path_factory) -> dict[str, str]:
    """"tools" → a model that calls get_weather, then answers; "thinker" → one that thinks."""
    import ollama

    with ollama.Client(host=server.url) as client:
        return create_tools_and_thinker(client, tmp_path_factory.mktemp("anthropic-bigrams"),
                                        "anthropic")


@pytest.fixture()
def sdk(server):
    client = anthropic.Anthropic(base_url=server.url, api_key="ollamapy", max_retries=0)
    yield client
    client.close()


def text_of(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


# -- plain answers --------------------------------------------------------------------------


def test_a_message_and_its_usage_match_the_native_chat(sdk, client) -> None:
    m = sdk.messages.create(model=MODEL, max_tokens=12, messages=QUESTION, **GREEDY)
    assert m.type == "message" and m.role == "assistant" and m.model == MODEL
    assert m.id.startswith("msg_") and len(m.id) == len("msg_") + 24
    assert [b.type for b in m.content] == ["text"] and "Paris" in m.content[0].text
    native = client.chat(model=MODEL, messages=QUESTION,
                         options={"temperature": 0, "num_predict": 12})
    assert m.content[0].text == native.message.content
    assert m.stop_reason == {"stop": "end_turn", "length": "max_tokens"}[native.done_reason]
    assert m.usage.input_tokens == native.prompt_eval_count
    assert m.usage.output_tokens == native.eval_count


def test_a_small_max_tokens_stops_for_max_tokens(sdk) -> None:
    m = sdk.messages.create(model=MODEL, max_tokens=2, messages=QUESTION, **GREEDY)
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 2
    assert m.content[0].text


def test_a_stream_says_what_the_whole_message_says(sdk) -> None:
    whole = sdk.messages.create(model=MODEL, max_tokens=8, messages=QUESTION, **GREEDY)
    with sdk.messages.stream(model=MODEL, max_tokens=8, messages=QUESTION, **GREEDY) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == text_of(whole)
    assert final.id.startswith("msg_") and final.id != whole.id
    assert text_of(final) == text_of(whole) and final.stop_reason == whole.stop_reason
    assert (final.usage.input_tokens, final.usage.output_tokens) == \
        (whole.usage.input_tokens, whole.usage.output_tokens)


def test_the_raw_event_sequence(server) -> None:
    with httpx.stream("POST", f"{server.url}/v1/messages", timeout=60, json={
            "model": MODEL, "max_tokens": 4, "messages": QUESTION, "stream": True,
            "temperature": 0}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read().decode()
    frames = [f.split("\n") for f in body.split("\n\n") if f]
    names = [lines[0].removeprefix("event: ") for lines in frames]
    data = [json.loads(lines[1].removeprefix("data: ")) for lines in frames]
    assert [d["type"] for d in data] == names
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert data[0]["message"]["usage"]["input_tokens"] > 0  # an estimate, before the count
    assert data[-2]["delta"]["stop_reason"] == "max_tokens"
    assert data[-2]["usage"]["output_tokens"] == 4


def test_system_as_a_string_or_as_blocks(sdk, client) -> None:
    system = "You are a pirate. Answer like one."
    as_text = sdk.messages.create(model=MODEL, max_tokens=4, messages=QUESTION, system=system,
                                  **GREEDY)
    as_blocks = sdk.messages.create(
        model=MODEL, max_tokens=4, messages=QUESTION, **GREEDY,
        system=[{"type": "text", "text": "You are a pirate. "},
                {"type": "text", "text": "Answer like one."}])
    native = client.chat(model=MODEL, messages=[{"role": "system", "content": system},
                                                *QUESTION],
                         options={"temperature": 0, "num_predict": 4})
    assert text_of(as_text) == text_of(as_blocks) == native.message.content
    assert as_text.usage.input_tokens == as_blocks.usage.input_tokens == \
        native.prompt_eval_count


def test_stop_sequences_cut_the_answer(sdk) -> None:
    full = text_of(sdk.messages.create(model=MODEL, max_tokens=12, messages=QUESTION,
                                       **GREEDY))
    word = full.split()[2]  # a word in the middle of the answer
    cut = sdk.messages.create(model=MODEL, max_tokens=12, messages=QUESTION, **GREEDY,
                              stop_sequences=[word])
    assert text_of(cut) == full[:full.index(word)]  # cut at its first occurrence
    assert cut.stop_reason == "end_turn"  # as Ollama says: a stop is a stop


def test_a_multi_turn_conversation(sdk) -> None:
    first = sdk.messages.create(model=MODEL, max_tokens=4, messages=QUESTION, **GREEDY)
    history = [*QUESTION, {"role": "assistant", "content": first.content},
               {"role": "user", "content": "And of Germany?"}]
    second = sdk.messages.create(model=MODEL, max_tokens=4, messages=history, **GREEDY)
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert text_of(second)


def test_the_async_client_streams_too(server) -> None:
    async def run() -> tuple[str, str]:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="x",
                                            max_retries=0) as sdk:
            whole = await sdk.messages.create(model=MODEL, max_tokens=5, messages=QUESTION,
                                              **GREEDY)
            async with sdk.messages.stream(model=MODEL, max_tokens=5, messages=QUESTION,
                                           **GREEDY) as stream:
                streamed = "".join([t async for t in stream.text_stream])
            return text_of(whole), streamed

    whole, streamed = asyncio.run(run())
    assert whole and streamed == whole


# -- errors ---------------------------------------------------------------------------------


def test_an_unknown_model_is_a_not_found_error(sdk) -> None:
    with pytest.raises(anthropic.NotFoundError) as e:
        sdk.messages.create(model="no-such-model", max_tokens=4, messages=QUESTION)
    assert e.value.status_code == 404
    assert e.value.body["type"] == "error"
    assert e.value.body["error"] == {"type": "not_found_error",
                                     "message": "model 'no-such-model' not found"}


@pytest.mark.parametrize(("body", "message"), [
    ({"model": MODEL, "messages": QUESTION}, "max_tokens is required and must be positive"),
    ({"max_tokens": 4, "messages": QUESTION}, "model is required"),
    ({"model": MODEL, "max_tokens": 4, "messages": []}, "messages is required"),
    ({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]},
     "invalid image source type: url. Only base64 images are supported."),
])
def test_bad_requests_are_invalid_request_errors(server, body, message) -> None:
    r = httpx.post(f"{server.url}/v1/messages", json=body, timeout=60)
    assert r.status_code == 400
    assert r.json()["type"] == "error" and r.json()["request_id"].startswith("req_")
    assert r.json()["error"] == {"type": "invalid_request_error", "message": message}


def test_a_body_that_is_not_json_is_an_invalid_request_error(server, sdk) -> None:
    r = httpx.post(f"{server.url}/v1/messages", content=b'{"model": ', timeout=60,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError) as e:  # and through the SDK
        sdk.messages.create(model=MODEL, max_tokens=0, messages=QUESTION)
    assert e.value.body["error"]["type"] == "invalid_request_error"


def test_tools_on_a_model_without_them_are_refused(sdk) -> None:
    with pytest.raises(anthropic.BadRequestError) as e:
        sdk.messages.create(model=MODEL, max_tokens=4, messages=QUESTION, tools=[WEATHER])
    assert "does not support tools" in e.value.body["error"]["message"]


# -- tools ----------------------------------------------------------------------------------


def test_a_tool_round_trip(sdk, bigrams) -> None:
    model = bigrams["tools"]
    first = sdk.messages.create(model=model, max_tokens=32, messages=ASK_WEATHER,
                                tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    (use,) = first.content
    assert use.type == "tool_use" and use.name == "get_weather"
    assert use.input == {"city": "Paris"} and use.id.startswith("call_")
    history = [*ASK_WEATHER, {"role": "assistant", "content": first.content},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                             "content": "Sunny, 25 C"}]}]
    final = sdk.messages.create(model=model, max_tokens=32, messages=history, tools=[WEATHER])
    assert text_of(final) == ANSWER and final.stop_reason == "end_turn"
    assert [b.type for b in final.content] == ["text"]


def test_a_streamed_tool_call_arrives_as_input_json(sdk, bigrams) -> None:
    with sdk.messages.stream(model=bigrams["tools"], max_tokens=32, messages=ASK_WEATHER,
                             tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_message()
    starts = [e for e in events if e.type == "content_block_start"]
    assert [s.content_block.type for s in starts] == ["tool_use"]
    deltas = [e.delta.partial_json for e in events if e.type == "content_block_delta"]
    assert deltas and all(e.delta.type == "input_json_delta" for e in events
                          if e.type == "content_block_delta")
    assert json.loads("".join(deltas)) == {"city": "Paris"}
    (use,) = final.content
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    assert use.id == starts[0].content_block.id and final.stop_reason == "tool_use"


# -- thinking -------------------------------------------------------------------------------


def test_thinking_comes_first_as_its_own_block(sdk, client, bigrams) -> None:
    model = bigrams["thinker"]
    assert "thinking" in client.show(model).capabilities
    m = sdk.messages.create(model=model, max_tokens=32, messages=HI,
                            thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b.type for b in m.content] == ["thinking", "text"]
    assert m.content[0].thinking == THOUGHT and m.content[1].text == GREETING
    assert m.stop_reason == "end_turn"
    default = sdk.messages.create(model=model, max_tokens=32, messages=HI)
    assert [b.type for b in default.content] == ["thinking", "text"]  # thinks when unset


def test_streamed_thinking_arrives_as_thinking_deltas(sdk, bigrams) -> None:
    with sdk.messages.stream(model=bigrams["thinker"], max_tokens=32, messages=HI,
                             thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    deltas = [e for e in events if e.type == "content_block_delta"]
    thinking = [e for e in deltas if e.delta.type == "thinking_delta"]
    text = [e for e in deltas if e.delta.type == "text_delta"]
    assert "".join(e.delta.thinking for e in thinking) == THOUGHT
    assert "".join(e.delta.text for e in text) == GREETING
    assert {e.index for e in thinking} == {0} and {e.index for e in text} == {1}
    assert [b.type for b in final.content] == ["thinking", "text"]
    # the answer, its thinking block included, goes back as history
    history = [*HI, {"role": "assistant", "content": final.content}, *HI]
    again = sdk.messages.create(model=bigrams["thinker"], max_tokens=32, messages=history)
    assert again.content[-1].text == GREETING
    assert again.usage.input_tokens > final.usage.input_tokens


def test_a_model_that_cannot_think_just_answers(sdk) -> None:
    m = sdk.messages.create(model=MODEL, max_tokens=4, messages=QUESTION, **GREEDY,
                            thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b.type for b in m.content] == ["text"]

