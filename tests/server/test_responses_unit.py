"""/v1/responses without a model: the request's translation into a chat (Ollama's
openai/responses.go rules), the runner's events into the stream's events and the response
object (checked against the `openai` SDK's own types and stream accumulator), and the route
against a scripted fake runner. tests/e2e/test_responses.py drives it with real models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from starlette.testclient import TestClient

from ollamapy.contract import Finished, Text
from ollamapy.server.errors import APIError
from ollamapy.server.responses import (
    Conversion,
    function_tools,
    input_messages,
    refuse_state,
    request_options,
    text_format,
)
from tests.server.scripted import ScriptedRunner, scripted_app

STREAM_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
CALL = {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}


def status_and_message(e: pytest.ExceptionInfo[APIError]) -> tuple[int, str]:
    return e.value.status, e.value.message


# -- the request -----------------------------------------------------------------------------


def test_a_string_input_is_a_user_turn_after_the_instructions() -> None:
    assert input_messages({"input": "Hi", "instructions": "Be brief."}) == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert input_messages({"input": "Hi"}) == [{"role": "user", "content": "Hi"}]


def test_message_items_shorthand_typed_and_parts() -> None:
    items = [{"role": "developer", "content": "Rules."},
             {"type": "message", "role": "user",
              "content": [{"type": "input_text", "text": "One "},
                          {"type": "input_text", "text": "two"}]},
             {"type": "message", "role": "assistant",
              "content": [{"type": "output_text", "text": "Three", "annotations": []}]}]
    assert input_messages({"input": items}) == [
        {"role": "system", "content": "Rules."}, {"role": "user", "content": "One two"},
        {"role": "assistant", "content": "Three"}]


def test_a_tool_round_trip_becomes_ollamas_turns() -> None:
    items = [{"role": "user", "content": "Weather?"},
             {"type": "reasoning", "id": "rs_1", "summary": [],
              "encrypted_content": "I should call the tool."},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather",
              "arguments": '{"city": "Paris"}'},
             {"type": "function_call", "call_id": "call_2", "name": "get_time",
              "arguments": ""},
             {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
             {"type": "function_call_output", "call_id": "call_2",
              "output": [{"type": "input_text", "text": "Noon"}]}]
    assert input_messages({"input": items}) == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "thinking": "I should call the tool.",
         "tool_calls": [
             {"id": "call_1", "function": {"name": "get_weather",
                                           "arguments": {"city": "Paris"}}},
             {"id": "call_2", "function": {"name": "get_time", "arguments": {}}}]},
        {"role": "tool", "content": "Sunny", "tool_call_id": "call_1",
         "tool_name": "get_weather"},
        {"role": "tool", "content": "Noon", "tool_call_id": "call_2", "tool_name": "get_time"}]


def test_a_call_joins_the_assistant_text_before_it() -> None:
    items = [{"role": "assistant", "content": "Let me look."},
             {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]
    (turn,) = input_messages({"input": items})
    assert turn["content"] == "Let me look." and turn["tool_calls"][0]["id"] == "c"


def test_an_assistant_message_replayed_between_a_call_and_its_output_joins_the_call() -> None:
    items = [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
             {"role": "assistant", "content": "Calling f."},
             {"type": "function_call_output", "call_id": "c", "output": "done"}]
    turns = input_messages({"input": items})
    assert [t["role"] for t in turns] == ["assistant", "tool"]
    assert turns[0]["content"] == "Calling f."
    unrelated = [*items[:2], {"type": "function_call_output", "call_id": "other",
                              "output": "x"}]
    assert [t["role"] for t in input_messages({"input": unrelated})] == [
        "assistant", "assistant", "tool"]


def test_reasoning_falls_back_to_its_summary_and_a_trailing_one_is_kept() -> None:
    items = [{"role": "user", "content": "Q"},
             {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Hmm."}]}]
    assert input_messages({"input": items})[-1] == {"role": "assistant", "content": "",
                                                    "thinking": "Hmm."}
    odd = [{"role": "user", "content": "Q"}, {"type": "reasoning", "summary": 5},
           {"role": "assistant", "content": "A"}]
    assert input_messages({"input": odd})[-1] == {"role": "assistant", "content": "A"}


@pytest.mark.parametrize(("body", "message"), [
    ({"input": 3}, "input must be a string or array"),
    ({"input": ""}, "input is required"),
    ({}, "input is required"),
    ({"input": "x", "instructions": ["no"]}, "instructions must be a string"),
    ({"input": [{"content": "no role"}]}, "input[0]: input item missing required 'type' field"),
    ({"input": ["text"]}, "input[0]: an input item must be an object"),
    ({"input": [{"role": "user", "content": "a"}, {"type": "item_reference", "id": "x"}]},
     'input[1]: unknown input item type: "item_reference"'),
    ({"input": [{"role": "user", "content": [{"type": "audio"}]}]},
     "input[0]: content[0]: unknown content type: audio"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0]: file inputs are not currently supported"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0]: input_image content is not supported by ollamapy's models"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f",
                 "arguments": "{oops"}]},
     "input[0]: failed to parse function call arguments: Expecting property name enclosed "
     "in double quotes: line 1 column 2 (char 1)"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]},
     "input[0]: function call arguments must be a JSON object"),
    ({"input": [{"type": "function_call_output", "output": "x"}]},
     "input[0]: a function_call_output needs a call_id"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]},
     "input[0]: output must be a string or array"),
    ({"input": [{"type": "message", "role": "user", "content": 5}]},
     "input[0]: content must be a string or array"),
])
def test_bad_input_is_a_400_naming_the_item(body: dict[str, Any], message: str) -> None:
    with pytest.raises(APIError) as e:
        input_messages(body)
    assert status_and_message(e) == (400, message)


def test_function_tools_flat_to_nested_and_namespaces_prefixed() -> None:
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [{"type": "function", "name": "get_weather", "description": "Weather",
              "parameters": params, "strict": True},
             {"type": "namespace", "name": "clock", "tools": [
                 {"type": "function", "name": "now", "description": None,
                  "parameters": None}]},
             {"type": "namespace", "tools": [{"type": "function", "name": "bare"}]}]
    assert function_tools(tools) == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                          "parameters": params}},
        {"type": "function", "function": {"name": "clock.now", "description": "",
                                          "parameters": {"type": "object",
                                                         "properties": {}}}},
        {"type": "function", "function": {"name": "bare", "description": "",
                                          "parameters": {"type": "object",
                                                         "properties": {}}}}]
    assert function_tools(None) == []


@pytest.mark.parametrize(("tools", "message"), [
    ([{"type": "web_search"}],
     'tool type "web_search" is not supported: ollamapy runs function tools only'),
    ([{"type": "function"}], "a function tool needs a name"),
    ([{"type": "function", "name": "f", "parameters": "x"}],
     'the parameters of tool "f" must be an object'),
    ({"type": "function"}, "tools must be an array"),
    ([{"type": "namespace", "name": "n", "tools": 3}], "a namespace's tools must be an array"),
])
def test_bad_tools_are_400s(tools: Any, message: str) -> None:
    with pytest.raises(APIError) as e:
        function_tools(tools)
    assert status_and_message(e) == (400, message)


def test_text_format_becomes_ollamas_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert text_format({"text": {"format": {"type": "json_schema", "name": "x",
                                            "schema": schema, "strict": True}}}) == schema
    assert text_format({"text": {"format": {"type": "json_object"}}}) == "json"
    assert text_format({"text": {"format": {"type": "text"}}}) is None
    assert text_format({}) is None
    for bad in ({"type": "json_schema"}, {"type": "yaml"}):
        with pytest.raises(APIError) as e:
            text_format({"text": {"format": bad}})
        assert e.value.status == 400


def test_options_follow_ollama() -> None:
    assert request_options({"max_output_tokens": 7}) == {"temperature": 1.0, "num_predict": 7}
    assert request_options({"temperature": 0, "top_p": 0.5, "num_ctx": 512,
                            "options": {"seed": 3}}) == {
        "temperature": 0, "top_p": 0.5, "num_ctx": 512, "seed": 3}
    assert request_options({"options": {"top_p": 0.2}})["top_p"] == 0.2
    with pytest.raises(APIError):
        request_options({"max_output_tokens": "many"})


def test_stored_state_cannot_be_found() -> None:
    refuse_state({"truncation": "auto", "store": True})  # accepted: nothing to look up
    for body in ({"previous_response_id": "resp_1"}, {"conversation": "conv_1"}):
        with pytest.raises(APIError) as e:
            refuse_state(body)
        assert e.value.status == 400 and "stateless" in e.value.message


# -- the answer ------------------------------------------------------------------------------


def finished(reason: str = "stop", calls: tuple[dict[str, Any], ...] = ()) -> Finished:
    return Finished(reason, 5, 100, 3, 200, [], prompt_tokens_cached=2, tool_calls=calls)


def convert(events: list[Text | Finished], body: dict[str, Any] | None = None
            ) -> tuple[Conversion, list[tuple[str, dict[str, Any]]]]:
    conversion = Conversion(body or {}, "m")
    out = conversion.start()
    for event in events:
        out += conversion.take(event)
    return conversion, out


def sdk_final(events: list[tuple[str, dict[str, Any]]]) -> Any:
    """The events through the SDK's own types and stream accumulator (what
    `client.responses.stream` does): → its final response."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=[], text_format=openai.omit)
    for kind, data in events:
        assert data["type"] == kind
        state.handle_event(STREAM_EVENT.validate_python(data))
    return state._completed_response


def test_text_streams_as_one_message_item() -> None:
    conversion, events = convert([Text("Hel"), Text(""), Text("lo"), finished()])
    assert [k for k, _ in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert events[0][1]["response"]["status"] == "in_progress"
    assert [d["delta"] for k, d in events if k.endswith("delta")] == ["Hel", "lo"]
    response = conversion.response
    assert response == events[-1][1]["response"]
    assert response["status"] == "completed" and response["incomplete_details"] is None
    (item,) = response["output"]
    assert item["type"] == "message" and item["status"] == "completed"
    assert item["content"][0]["text"] == "Hello"
    assert {d.get("item_id", item["id"]) for _, d in events[2:-1]} == {item["id"]}
    assert response["usage"] == {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8,
                                 "input_tokens_details": {"cached_tokens": 2,
                                                          "cache_write_tokens": 0},
                                 "output_tokens_details": {"reasoning_tokens": 0}}
    assert sdk_final(events).output_text == "Hello"
    assert Response.model_validate(response).output_text == "Hello"


def test_a_cut_answer_is_incomplete() -> None:
    conversion, events = convert([Text("Hel"), finished("length")])
    assert events[-1][0] == "response.incomplete"
    response = conversion.response
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    assert Response.model_validate(response).incomplete_details.reason == "max_output_tokens"
    for _, data in events:
        STREAM_EVENT.validate_python(data)


def test_reasoning_then_text() -> None:
    conversion, events = convert([Text("", thinking="Let me "), Text("", thinking="think."),
                                  Text("Done."), finished()])
    kinds = [k for k, _ in events]
    assert kinds[2:10] == [
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.output_item.done", "response.output_item.added"]
    reasoning, message = conversion.response["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Let me think."}]
    assert reasoning["encrypted_content"] == "Let me think."
    assert message["content"][0]["text"] == "Done."
    added = [d["output_index"] for k, d in events if k == "response.output_item.added"]
    assert added == [0, 1]
    final = sdk_final(events)
    assert final.output_text == "Done." and final.output[0].summary[0].text == "Let me think."


def test_calls_streamed_as_parsed_are_not_sent_again_at_the_end() -> None:
    conversion, events = convert([Text("", tool_calls=(CALL,)), finished(calls=(CALL,))])
    assert [k for k, _ in events][2:] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    (call,) = conversion.response["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    assert call["call_id"].startswith("call_") and len(call["call_id"]) == 13
    assert events[2][1]["item"]["arguments"] == "" and events[3][1]["delta"] == \
        call["arguments"]
    final = sdk_final(events)
    assert final.output[0].call_id == call["call_id"]


def test_calls_known_only_at_the_end_are_sent_then_after_the_text() -> None:
    conversion, events = convert([Text("Checking."), finished(calls=(CALL, CALL))])
    message, first, second = conversion.response["output"]
    assert message["content"][0]["text"] == "Checking." and message["status"] == "completed"
    assert first["type"] == second["type"] == "function_call"
    assert first["call_id"] != second["call_id"] and first["id"] != second["id"]
    assert len(sdk_final(events).output) == 3


def test_an_empty_answer_is_an_empty_message() -> None:
    conversion, events = convert([Text(""), finished()])
    (message,) = conversion.response["output"]
    assert message["type"] == "message" and message["content"][0]["text"] == ""
    assert sdk_final(events).output_text == ""


def test_an_error_mid_stream_fails_the_response() -> None:
    conversion, events = convert([Text("Hel")])
    events += conversion.fail("the model broke")
    (error_kind, error), (failed_kind, failed) = events[-2:]
    assert (error_kind, failed_kind) == ("error", "response.failed")
    assert error["message"] == "the model broke"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["message"] == "the model broke"
    for _, data in events:
        STREAM_EVENT.validate_python(data)


def test_the_response_repeats_the_request() -> None:
    body = {"instructions": "Be brief.", "temperature": 0.2, "max_output_tokens": 9,
            "reasoning": {"effort": "low"}, "truncation": "auto",
            "text": {"format": {"type": "json_object"}},
            "tools": [{"type": "function", "name": "f", "parameters": {}}]}
    conversion, _ = convert([Text("{}"), finished()], body)
    r = conversion.response
    assert r["id"].startswith("resp_") and r["object"] == "response" and r["model"] == "m"
    assert (r["instructions"], r["temperature"], r["top_p"], r["max_output_tokens"]) == (
        "Be brief.", 0.2, 1.0, 9)
    assert r["reasoning"] == {"effort": "low", "summary": None}
    assert r["truncation"] == "auto" and r["text"] == {"format": {"type": "json_object"}}
    assert r["tools"] == body["tools"] and r["store"] is False
    assert r["completed_at"] >= r["created_at"]
    Response.model_validate(r)


# -- the route, against a scripted runner ------------------------------------------------------


TOOLS_TEMPLATE = "{{ if .Tools }}{{ .Tools }}{{ end }}{{ range .Messages }}{{ .Content }}{{ end }}"
TOOL = {"type": "function", "name": "get_weather", "description": "The weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.fixture()
def app_client(tmp_path: Path):
    with scripted_app(tmp_path, {"fake": None, "fake-tools": TOOLS_TEMPLATE},
                      [Text("Hel"), Text("lo"), finished()]) as client:
        yield client


@pytest.fixture()
def sdk(app_client: TestClient):
    return openai.OpenAI(base_url="http://testserver/v1", api_key="x", http_client=app_client,
                         max_retries=0)


def frames(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.split("\n\n"):
        if block:
            event, data = block.split("\n")
            out.append((event.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_the_sdk_creates_a_response_and_the_runner_gets_the_chat(sdk) -> None:
    r = sdk.responses.create(model="fake", input="Hi", instructions="Be brief.",
                             max_output_tokens=16, temperature=0,
                             reasoning={"effort": "none"},
                             text={"format": {"type": "json_schema", "name": "x",
                                              "schema": {"type": "object"}}})
    assert r.output_text == "Hello" and r.status == "completed" and r.model == "fake"
    assert r.usage.input_tokens == 5 and r.usage.output_tokens == 3
    (call,) = ScriptedRunner.calls
    assert call["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Hi"}]
    assert call["options"].num_predict == 16 and call["options"].temperature == 0
    assert call["think"] is False and call["format"] == {"type": "object"}
    assert call["tools"] is None


def test_the_sdk_streams_and_accumulates(sdk) -> None:
    with sdk.responses.stream(model="fake", input="Hi") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == "Hello"


def test_the_wire_format_is_named_events(app_client) -> None:
    r = app_client.post("/v1/responses", json={"model": "fake", "input": "Hi",
                                               "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = frames(r.text)
    assert all(kind == data["type"] for kind, data in events)
    assert events[-1][0] == "response.completed"


def test_tools_reach_the_runner_and_calls_come_back(sdk) -> None:
    ScriptedRunner.script = [Text("", tool_calls=(CALL,)), finished(calls=(CALL,))]
    r = sdk.responses.create(model="fake-tools", input="Weather?", tools=[TOOL])
    (item,) = r.output
    assert item.type == "function_call" and item.name == "get_weather"
    assert ScriptedRunner.calls[0]["tools"] == function_tools([TOOL])


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"model": "nope", "input": "Hi"}, 404, "model 'nope' not found"),
    ({"model": "fake", "input": 3}, 400, "input must be a string or array"),
    ({"input": "Hi"}, 400, "model is required"),
    ({"model": "fake", "input": "Hi", "tools": [TOOL]}, 400, "does not support tools"),
    ({"model": "fake", "input": "Hi", "reasoning": {"effort": "high"}}, 400,
     '"fake" does not support thinking'),
    ({"model": "fake", "input": "Hi", "reasoning": {"effort": "huge"}}, 400,
     'invalid reasoning value: "huge"'),
    ({"model": "fake", "input": "Hi", "previous_response_id": "resp_1"}, 400,
     "Previous response with id 'resp_1' not found"),
])
def test_errors_in_openais_shape(app_client, body: dict[str, Any], status: int,
                                 needle: str) -> None:
    r = app_client.post("/v1/responses", json=body)
    assert r.status_code == status
    error = r.json()["error"]
    assert needle in error["message"]
    assert error["type"] == {400: "invalid_request_error", 404: "not_found_error"}[status]
    assert not ScriptedRunner.calls


def test_the_sdk_raises_openais_errors(sdk) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="nope", input="Hi")
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="fake", input=[{"type": "nonsense"}])


def test_an_error_mid_stream_ends_with_response_failed(app_client) -> None:
    ScriptedRunner.script = [Text("Hel"), RuntimeError("the engine broke")]
    r = app_client.post("/v1/responses", json={"model": "fake", "input": "Hi",
                                               "stream": True})
    events = frames(r.text)
    assert [k for k, _ in events[-2:]] == ["error", "response.failed"]
    assert events[-1][1]["response"]["error"]["message"] == "the engine broke"
    assert not any(k == "response.completed" for k, _ in events)


def test_an_error_before_the_first_event_keeps_its_status(app_client) -> None:
    ScriptedRunner.script = [ValueError("the input length exceeds the context length")]
    r = app_client.post("/v1/responses", json={"model": "fake", "input": "Hi",
                                               "stream": True})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "the input length exceeds the context length"
