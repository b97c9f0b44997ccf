"""/v1/messages without a model: the translation of Anthropic's request into a native chat and
of the runner's events back into a message or its event stream (ollamapy/server/anthropic.py,
after Ollama's anthropic/anthropic.go), then the route itself driven by the official
`anthropic` SDK against a fake runner that streams a scripted answer (thinking, text, tool
calls) and records what it was asked. tests/e2e/test_anthropic.py does the same on real
models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import pytest
from starlette.testclient import TestClient

from ollamapy.contract import Finished, RequestError, ServerBusy, Text
from ollamapy.server.anthropic import (
    StreamConverter,
    estimate_input_tokens,
    from_messages_request,
    stop_reason,
    to_message,
)
from ollamapy.server.errors import APIError
from tests.server.scripted import ScriptedRunner, scripted_app

HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "required": ["city"],
                            "properties": {"city": {"type": "string"}}}}
PNG = "iVBORw0KGgo="  # base64 of the PNG signature: valid base64, the bytes are never decoded


def request(**fields: Any):
    return from_messages_request({"model": "m", "max_tokens": 16, "messages": HELLO} | fields)


def refused(body: Any) -> str:
    with pytest.raises(APIError) as e:
        from_messages_request(body)
    assert e.value.status == 400
    return e.value.message


def call(name: str, index: int = 0, **arguments: Any) -> dict[str, Any]:
    return {"function": {"index": index, "name": name, "arguments": arguments}}


def done(reason: str = "stop", calls: tuple = (), prompt: int = 7, output: int = 3) -> Finished:
    return Finished(reason, prompt, 1000, output, 2000, [], tool_calls=calls)


# -- the request ----------------------------------------------------------------------------


def test_a_plain_request_is_a_chat_with_num_predict() -> None:
    r = request()
    assert r.model == "m" and r.messages == HELLO
    assert r.options == {"num_predict": 16}  # no temperature: the model's own, as Ollama
    assert r.tools == [] and r.think is None and r.stream is False and r.keep_alive is None


def test_sampling_fields_and_stop_sequences_become_options() -> None:
    r = request(temperature=0.5, top_p=0.9, top_k=40, stop_sequences=["\n", "END"],
                stream=True)
    assert r.options == {"num_predict": 16, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
                         "stop": ["\n", "END"]}
    assert r.stream is True
    assert "stop" not in request(stop_sequences=[]).options


def test_ollama_options_and_keep_alive_are_accepted_as_extras() -> None:
    r = request(options={"num_ctx": 4096, "seed": 1}, seed=2, keep_alive="1m")
    assert r.options == {"num_ctx": 4096, "seed": 2, "num_predict": 16}
    assert r.keep_alive == 60
    for options in ({"num_ctx": "big"}, {"top_k": -1}):  # checked as /api's are
        assert refused({"model": "m", "max_tokens": 1, "messages": HELLO, "options": options})


def test_system_as_a_string_or_as_text_blocks() -> None:
    assert request(system="Be brief.").messages[0] == {"role": "system",
                                                       "content": "Be brief."}
    blocks = [{"type": "text", "text": "Be "}, {"type": "image"}, {"type": "text",
                                                                    "text": "brief."}]
    assert request(system=blocks).messages == [{"role": "system", "content": "Be brief."},
                                               *HELLO]
    assert request(system="").messages == HELLO


def test_text_blocks_are_joined_into_one_message() -> None:
    r = request(messages=[{"role": "User", "content": [
        {"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"},
        {"type": "redacted_thinking", "data": "x"}]}])
    assert r.messages == [{"role": "user", "content": "Hello, world"}]


def test_an_empty_message_is_dropped() -> None:
    r = request(messages=[*HELLO, {"role": "assistant", "content": ""}])
    assert r.messages == HELLO


def test_tool_use_and_tool_result_round_trip() -> None:
    r = request(messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should ask the tool.", "signature": "s"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
            {"type": "text", "text": "And tomorrow?"}]}])
    assert r.messages == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "thinking": "I should ask the tool.",
         "tool_calls": [{"id": "toolu_1", "function": {"name": "get_weather",
                                                       "arguments": {"city": "Paris"}}}]},
        # the result first, then the user's text (Ollama's order); it names its tool
        {"role": "tool", "content": "Sunny", "tool_call_id": "toolu_1",
         "tool_name": "get_weather"},
        {"role": "user", "content": "And tomorrow?"}]


def test_a_tool_result_of_blocks_joins_its_text_and_keeps_its_images() -> None:
    r = request(messages=[{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "is_error": True, "content": [
            {"type": "text", "text": "a"}, {"type": "text", "text": "b"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}}]}]}])
    assert r.messages == [{"role": "tool", "content": "ab", "images": [PNG],
                           "tool_call_id": "t"}]


def test_images_must_be_base64() -> None:
    r = request(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": PNG}}]}])
    assert r.messages == [{"role": "user", "content": "What is this?", "images": [PNG]}]
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    assert refused({"model": "m", "max_tokens": 1, "messages": [
        {"role": "user", "content": [url]}]}) == (
        "invalid image source type: url. Only base64 images are supported.")
    bad = {"type": "image", "source": {"type": "base64", "data": "not base64!"}}
    assert refused({"model": "m", "max_tokens": 1, "messages": [
        {"role": "user", "content": [bad]}]}).startswith("invalid base64 image data")


def test_tools_become_functions_and_web_search_is_left_out() -> None:
    r = request(tools=[WEATHER, {"type": "web_search_20250305", "name": "web_search"},
                       {"name": "noop"}], tool_choice={"type": "auto"})
    assert r.tools == [
        {"type": "function", "function": {"name": "get_weather",
                                          "description": "The weather in a city",
                                          "parameters": WEATHER["input_schema"]}},
        {"type": "function", "function": {"name": "noop", "description": "",
                                          "parameters": {"type": "object",
                                                         "properties": {}}}}]
    assert refused({"model": "m", "max_tokens": 1, "messages": HELLO, "tools": [
        {"name": "t", "input_schema": "x"}]}).startswith('invalid input_schema for tool "t"')


@pytest.mark.parametrize(("fields", "think"), [
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, True),
    ({"thinking": {"type": "disabled"}}, False),
    ({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}}, False),
    ({"thinking": {"type": "adaptive"}, "output_config": {"effort": " Medium "}}, "medium"),
    ({"output_config": {"effort": "xhigh"}}, "high"),
    ({"output_config": {"effort": "max"}}, "max"),
    ({"output_config": {"effort": "extreme"}}, None),
    ({}, None),
])
def test_thinking_and_effort_become_think(fields: dict[str, Any], think: Any) -> None:
    assert request(**fields).think == think


@pytest.mark.parametrize(("body", "message"), [
    ({"max_tokens": 1, "messages": HELLO}, "model is required"),
    ({"model": "m", "messages": HELLO}, "max_tokens is required and must be positive"),
    ({"model": "m", "max_tokens": 0, "messages": HELLO},
     "max_tokens is required and must be positive"),
    ({"model": "m", "max_tokens": 1}, "messages is required"),
    ({"model": "m", "max_tokens": 1, "messages": []}, "messages is required"),
    ({"model": "m", "max_tokens": "1", "messages": HELLO},
     "json: cannot unmarshal string into Go struct field MessagesRequest.max_tokens of type "
     "int"),
    ({"model": "m", "max_tokens": 1, "messages": "hi"},
     "json: cannot unmarshal string into Go struct field MessagesRequest.messages of type "
     "[]anthropic.MessageParam"),
    ({"model": "m", "max_tokens": 1, "messages": HELLO, "thinking": {"type": 1}},
     "json: cannot unmarshal number into Go struct field MessagesRequest.thinking.type of "
     "type string"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "name": "t"}]}]}, "tool_use block missing required 'id' field"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "x"}]}]}, "tool_use block missing required 'name' field"),
    ({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": 3}]},
     "json: cannot unmarshal number into Go struct field MessagesRequest.messages.content of "
     "type []anthropic.ContentBlock"),
    (["not", "an", "object"], "json: cannot unmarshal array into Go value of type "
                              "anthropic.MessagesRequest"),
])
def test_what_is_refused_and_how(body: Any, message: str) -> None:
    assert refused(body) == message


def test_the_input_estimate_counts_text_not_images() -> None:
    body = {"system": "x" * 40, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "y" * 40},
        {"type": "image", "source": {"type": "base64", "data": "z" * 4000}}]}]}
    assert 20 <= estimate_input_tokens(body) < 30
    assert estimate_input_tokens({"messages": []}) == 1


# -- the answer -----------------------------------------------------------------------------


def test_stop_reasons() -> None:
    assert stop_reason("stop", False) == "end_turn"
    assert stop_reason("length", False) == "max_tokens"
    assert stop_reason("length", True) == "tool_use"
    assert stop_reason("unload", False) == "stop_sequence"
    assert stop_reason("", False) is None


def test_a_whole_answer_is_thinking_then_text_then_tool_uses() -> None:
    m = to_message("msg_1", "m", "hmm", "Hi", [call("get_weather", city="Paris")],
                   done(calls=(call("get_weather", city="Paris"),)))
    assert [b["type"] for b in m["content"]] == ["thinking", "text", "tool_use"]
    assert m["content"][0]["thinking"] == "hmm" and m["content"][1]["text"] == "Hi"
    use = m["content"][2]
    assert use["name"] == "get_weather" and use["input"] == {"city": "Paris"}
    assert use["id"].startswith("call_") and len(use["id"]) == 13
    assert m["stop_reason"] == "tool_use" and m["usage"] == {"input_tokens": 7,
                                                             "output_tokens": 3}
    assert m["id"] == "msg_1" and m["type"] == "message" and m["role"] == "assistant"
    plain = to_message("msg_2", "m", "", "", [], done("length"))
    assert plain["content"] == [] and plain["stop_reason"] == "max_tokens"


def shape(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Ollama's test notation: name:block-or-delta type:index."""
    out = []
    for name, data in events:
        if name == "content_block_start":
            out.append(f"{name}:{data['content_block']['type']}:{data['index']}")
        elif name == "content_block_delta":
            out.append(f"{name}:{data['delta']['type']}:{data['index']}")
        elif name == "content_block_stop":
            out.append(f"{name}:{data['index']}")
        else:
            out.append(name)
    return out


def convert(*events: Text | Finished) -> list[tuple[str, dict[str, Any]]]:
    c = StreamConverter("msg_1", "m")
    out = c.start(5)
    for e in events:
        out += c.finish(e) if isinstance(e, Finished) else c.text(e)
    return out


def test_the_stream_of_a_plain_answer() -> None:
    events = convert(Text("Hel"), Text(""), Text("lo"), done())
    assert shape(events) == [
        "message_start", "ping", "content_block_start:text:0",
        "content_block_delta:text_delta:0", "content_block_delta:text_delta:0",
        "content_block_stop:0", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["usage"] == {"input_tokens": 5, "output_tokens": 0}
    assert events[2][1]["content_block"] == {"type": "text", "text": ""}
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == \
        "Hello"
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"] == {"input_tokens": 7, "output_tokens": 3}


def test_text_before_thinking_then_text_again() -> None:  # Ollama's TextBeforeThinking
    events = convert(Text("---\n"), Text("", thinking="Let me think."),
                     Text("The answer."), done())
    assert shape(events)[2:] == [
        "content_block_start:text:0", "content_block_delta:text_delta:0",
        "content_block_stop:0",
        "content_block_start:thinking:1", "content_block_delta:thinking_delta:1",
        "content_block_stop:1",
        "content_block_start:text:2", "content_block_delta:text_delta:2",
        "content_block_stop:2", "message_delta", "message_stop"]


def test_thinking_straight_into_a_tool_call() -> None:
    weather = call("get_weather", city="Paris")
    events = convert(Text("", thinking="Need "), Text("", thinking="weather."),
                     Text("", tool_calls=(weather,)), done(calls=(weather,)))
    assert shape(events)[2:] == [
        "content_block_start:thinking:0", "content_block_delta:thinking_delta:0",
        "content_block_delta:thinking_delta:0", "content_block_stop:0",
        "content_block_start:tool_use:1", "content_block_delta:input_json_delta:1",
        "content_block_stop:1", "message_delta", "message_stop"]  # the call only once
    block = events[6][1]["content_block"]
    assert block["input"] == {} and block["name"] == "get_weather"
    assert json.loads(events[7][1]["delta"]["partial_json"]) == {"city": "Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_calls_given_only_at_the_end_are_still_sent() -> None:
    calls = (call("a", x=1), call("b", 1, y=[2]))
    events = convert(Text("ok"), done(calls=calls))
    assert shape(events)[2:] == [
        "content_block_start:text:0", "content_block_delta:text_delta:0",
        "content_block_stop:0",
        "content_block_start:tool_use:1", "content_block_delta:input_json_delta:1",
        "content_block_stop:1",
        "content_block_start:tool_use:2", "content_block_delta:input_json_delta:2",
        "content_block_stop:2", "message_delta", "message_stop"]
    ids = [d["content_block"]["id"] for n, d in events if n == "content_block_start"
           and d["content_block"]["type"] == "tool_use"]
    assert len(set(ids)) == 2


# -- the route, through the SDK, on a fake runner --------------------------------------------


# a Go template that uses .Tools and has <think> tags around .Thinking: tools and thinking
THINKING_TEMPLATE = ("{{ .Tools }}{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}"
                     "</think>{{ end }}{{ .Content }}{{ end }}")


@pytest.fixture()
def http(tmp_path: Path):
    with scripted_app(tmp_path, {"plain": None, "thinker": THINKING_TEMPLATE},
                      [Text("Hel"), Text("lo"), done()]) as client:
        yield client


@pytest.fixture()
def sdk(http: TestClient) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=str(http.base_url), api_key="x", http_client=http,
                               max_retries=0)


def test_a_message_through_the_sdk(sdk) -> None:
    # the SDK has no sampling arguments any more: they go in the body as extras
    m = sdk.messages.create(model="plain", max_tokens=5, messages=HELLO, system="Be brief.",
                            stop_sequences=["."], extra_body={"temperature": 0.2})
    assert m.id.startswith("msg_") and len(m.id) == 28 and m.model == "plain"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == "Hello"
    assert m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (7, 3)
    asked = ScriptedRunner.calls[-1]
    assert asked["messages"] == [{"role": "system", "content": "Be brief."}, *HELLO]
    options = asked["options"]
    assert options.num_predict == 5 and options.temperature == 0.2 and options.stop == (".",)
    assert asked["think"] is None and asked["tools"] is None


def test_a_stream_through_the_sdk(sdk) -> None:
    weather = call("get_weather", city="Paris")
    ScriptedRunner.script = [Text("", thinking="Hm"), Text("", thinking="m."), Text("Let me see."),
                         Text("", tool_calls=(weather,)), done("stop", (weather,))]
    with sdk.messages.stream(model="thinker", max_tokens=50, messages=HELLO, tools=[WEATHER],
                             thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    thinking = "".join(e.delta.thinking for e in events if e.type == "content_block_delta"
                       and e.delta.type == "thinking_delta")
    assert thinking == "Hmm."
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].thinking == "Hmm." and final.content[1].text == "Let me see."
    assert final.content[2].name == "get_weather" and final.content[2].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 3
    assert final.usage.input_tokens == 7  # the real count from message_delta, not the guess
    asked = ScriptedRunner.calls[-1]
    assert asked["think"] is True
    assert asked["tools"][0]["function"]["name"] == "get_weather"


def test_a_thinking_model_thinks_unless_told_not_to(sdk) -> None:
    sdk.messages.create(model="thinker", max_tokens=5, messages=HELLO)
    sdk.messages.create(model="thinker", max_tokens=5, messages=HELLO,
                        thinking={"type": "disabled"})
    assert [a["think"] for a in ScriptedRunner.calls] == [True, False]


def test_a_model_that_cannot_think_is_asked_nothing_rather_than_refused(sdk) -> None:
    m = sdk.messages.create(model="plain", max_tokens=5, messages=HELLO,
                            thinking={"type": "enabled", "budget_tokens": 1024})
    assert m.content[0].text == "Hello" and ScriptedRunner.calls[-1]["think"] is None


def test_errors_are_anthropics(sdk) -> None:
    with pytest.raises(anthropic.NotFoundError) as e:
        sdk.messages.create(model="missing", max_tokens=5, messages=HELLO)
    assert e.value.status_code == 404
    assert e.value.body["type"] == "error" and e.value.body["request_id"].startswith("req_")
    assert e.value.body["error"] == {"type": "not_found_error",
                                     "message": "model 'missing' not found"}
    with pytest.raises(anthropic.BadRequestError) as e:
        sdk.messages.create(model="plain", max_tokens=0, messages=HELLO)
    assert e.value.body["error"] == {"type": "invalid_request_error", "message":
                                     "max_tokens is required and must be positive"}
    with pytest.raises(anthropic.BadRequestError) as e:  # tools on a model without them
        sdk.messages.create(model="plain", max_tokens=5, messages=HELLO, tools=[WEATHER])
    assert "does not support tools" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:
        sdk.messages.create(model="plain", max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}}]}])
    assert e.value.body["error"]["message"] == '"plain" does not support images'
    assert ScriptedRunner.calls == []  # nothing reached a runner


def test_a_refusal_by_the_runner_keeps_its_status(sdk) -> None:
    ScriptedRunner.script = [RequestError("the input length exceeds the context length")]
    with (pytest.raises(anthropic.BadRequestError) as e,
          sdk.messages.stream(model="plain", max_tokens=5, messages=HELLO) as stream):
        list(stream)
    assert e.value.body["error"]["message"] == "the input length exceeds the context length"


def test_a_full_queue_is_overloaded_with_retry_after(http) -> None:
    ScriptedRunner.script = [ServerBusy()]
    r = http.post("/v1/messages", json={"model": "plain", "max_tokens": 5, "messages": HELLO})
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.json()["error"]["type"] == "overloaded_error"


def test_an_error_mid_stream_is_an_error_event(sdk) -> None:
    ScriptedRunner.script = [Text("Hel"), RuntimeError("the engine fell over")]
    seen = []
    with (pytest.raises(anthropic.APIStatusError) as e,
          sdk.messages.stream(model="plain", max_tokens=5, messages=HELLO) as stream):
        seen.extend(stream)
    assert [x.type for x in seen][:2] == ["message_start", "content_block_start"]
    assert e.value.body["error"] == {"type": "api_error", "message": "the engine fell over"}


def test_the_wire_format(http) -> None:
    r = http.post("/v1/messages", json={"model": "plain", "max_tokens": 5, "messages": HELLO,
                                        "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    frames = [f for f in r.text.split("\n\n") if f]
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta",
                                                                     "message_stop"]
    for frame, name in zip(frames, names, strict=True):
        data = json.loads(frame.split("\n")[1].removeprefix("data: "))
        assert data["type"] == name
    r = http.post("/v1/messages", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
