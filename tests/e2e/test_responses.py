"""/v1/responses through the live server with the official `openai` SDK
(`client.responses.create`, `.stream`, `.parse`): the real models answer as /api/chat does,
streams agree with whole answers, and tiny bigram models (tests/bigram.py) make a tool call
and think on cue, so the function_call round trip and the reasoning item are checked exactly.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pydantic
import pytest

from tests.bigram import ANSWER, GREETING, THOUGHT, create_tools_and_thinker

MODEL = "smollm2:135m"
QUESTION = "What is the capital of France?"

TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "required": ["city"],
                       "properties": {"city": {"type": "string", "description": "The city"}}}}


@pytest.fixture(scope="module")
def oai(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def bigrams(server, tmp_path_factory) -> dict[str, str]:
    import ollama

    with ollama.Client(host=server.url) as client:
        return create_tools_and_thinker(client, tmp_path_factory.mktemp("responses-bigrams"),
                                        "responses")


def test_a_string_input_answers_as_api_chat(oai, client) -> None:
    r = oai.responses.create(model=MODEL, input=QUESTION, temperature=0, max_output_tokens=12)
    assert r.object == "response" and r.id.startswith("resp_") and r.model == MODEL
    native = client.chat(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                         options={"temperature": 0, "num_predict": 12})
    assert r.output_text == native.message.content and "Paris" in r.output_text
    assert r.status == ("incomplete" if native.done_reason == "length" else "completed")
    assert r.usage.input_tokens == native.prompt_eval_count
    assert r.usage.output_tokens == native.eval_count
    assert r.usage.total_tokens == native.prompt_eval_count + native.eval_count
    (message,) = r.output
    assert message.type == "message" and message.role == "assistant"


def test_instructions_and_a_message_list_are_the_chat(oai, client) -> None:
    system = "You are a pirate. Answer in one short sentence."
    items = [{"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}]
    r = oai.responses.create(model=MODEL, instructions=system, input=items, temperature=0,
                             max_output_tokens=12)
    native = client.chat(model=MODEL, options={"temperature": 0, "num_predict": 12},
                         messages=[{"role": "system", "content": system},
                                   {"role": "user", "content": QUESTION}])
    assert r.output_text == native.message.content
    assert r.instructions == system
    assert r.usage.input_tokens == native.prompt_eval_count


def test_the_stream_is_the_whole_answer_in_order(oai) -> None:
    kw = {"model": MODEL, "input": QUESTION, "temperature": 0, "max_output_tokens": 12}
    whole = oai.responses.create(**kw)
    events = list(oai.responses.create(stream=True, **kw))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", f"response.{whole.status}"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text
    final = events[-1].response
    assert final.output_text == whole.output_text and final.status == whole.status
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert {e.response.id for e in (events[0], events[-1])} == {final.id}


def test_max_output_tokens_cuts_the_answer_incomplete(oai) -> None:
    kw = {"model": MODEL, "input": "Write a long story about a dragon.", "temperature": 0,
          "max_output_tokens": 5}
    r = oai.responses.create(**kw)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 5 and r.output[0].status == "incomplete"
    assert r.max_output_tokens == 5
    events = list(oai.responses.create(stream=True, **kw))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.output_text == r.output_text


def test_text_format_json_schema_gives_valid_json(oai) -> None:
    class Place(pydantic.BaseModel):
        city: str
        country: str

    # responses.parse sends Place's schema as text.format json_schema (strict)
    r = oai.responses.parse(model=MODEL, input=QUESTION, temperature=0, max_output_tokens=30,
                            text_format=Place)
    assert r.text.format.type == "json_schema"
    jsonschema.validate(json.loads(r.output_text), Place.model_json_schema())
    assert isinstance(r.output_parsed, Place)


def test_errors_are_openais(oai, server) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        oai.responses.create(model="no-such-model", input="Hi")
    assert e.value.status_code == 404
    assert e.value.body["message"] == "model 'no-such-model' not found"
    with pytest.raises(openai.BadRequestError) as bad:
        oai.responses.create(model=MODEL, input=[{"type": "bogus"}])
    assert bad.value.body["message"] == 'input[0]: unknown input item type: "bogus"'
    with pytest.raises(openai.BadRequestError) as state:
        oai.responses.create(model=MODEL, input="Hi", previous_response_id="resp_123")
    assert "resp_123" in state.value.body["message"]
    with pytest.raises(openai.BadRequestError) as think:
        oai.responses.create(model=MODEL, input="Hi", reasoning={"effort": "high"})
    assert think.value.body["message"] == f'"{MODEL}" does not support thinking'
    r = httpx.post(f"{server.url}/v1/responses", json={"model": MODEL, "input": 7},
                   timeout=30)
    assert r.status_code == 400 and r.json() == {"error": {
        "message": "input must be a string or array", "type": "invalid_request_error",
        "param": None, "code": None}}


def test_sse_wire_format(server) -> None:
    with httpx.stream("POST", f"{server.url}/v1/responses", timeout=60, json={
            "model": MODEL, "input": "Hi", "stream": True, "max_output_tokens": 4,
            "temperature": 0}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read().decode()
    blocks = [b for b in body.split("\n\n") if b]
    for block in blocks:
        event, data = block.split("\n")
        assert event.startswith("event: ") and data.startswith("data: ")
        assert json.loads(data.removeprefix("data: "))["type"] == event.removeprefix("event: ")
    assert blocks[-1].startswith("event: response.")


def test_a_function_call_round_trip(oai, bigrams) -> None:
    model = bigrams["tools"]
    first = oai.responses.create(model=model, input="Weather in Paris?", tools=[TOOL])
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id.startswith("call_") and call.status == "completed"
    assert first.output_text == "" and first.tools[0].name == "get_weather"
    history = [{"role": "user", "content": "Weather in Paris?"},
               *(item.model_dump(exclude_none=True) for item in first.output),
               {"type": "function_call_output", "call_id": call.call_id,
                "output": "Sunny, 25 C"}]
    final = oai.responses.create(model=model, input=history, tools=[TOOL])
    assert final.output_text == ANSWER and final.status == "completed"
    assert [item.type for item in final.output] == ["message"]


def test_function_call_arguments_stream(oai, bigrams) -> None:
    events = list(oai.responses.create(model=bigrams["tools"], input="Weather in Paris?",
                                       tools=[TOOL], stream=True))
    kinds = [e.type for e in events]
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.function_call_arguments.delta",
                     "response.function_call_arguments.done", "response.output_item.done",
                     "response.completed"]
    added, delta, done, item_done = events[2:6]
    assert added.item.type == "function_call" and added.item.arguments == ""
    assert json.loads(delta.delta) == {"city": "Paris"} and done.arguments == delta.delta
    assert item_done.item.call_id == added.item.call_id == \
        events[-1].response.output[0].call_id


def test_the_stream_helper_accumulates_the_final_response(oai, bigrams) -> None:
    with oai.responses.stream(model=bigrams["tools"], tools=[TOOL], input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"}]) as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert "".join(deltas) == final.output_text == ANSWER


def test_a_thinking_model_gives_a_reasoning_item(oai, bigrams) -> None:
    model = bigrams["thinker"]
    r = oai.responses.create(model=model, input="Hi", reasoning={"effort": "high"})
    reasoning, message = r.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == THOUGHT
    assert r.output_text == GREETING and r.reasoning.effort == "high"
    events = list(oai.responses.create(model=model, input="Hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds.index("response.reasoning_summary_text.done") < \
        kinds.index("response.output_text.delta")
    thought = "".join(e.delta for e in events
                      if e.type == "response.reasoning_summary_text.delta")
    assert thought == THOUGHT
    assert events[-1].response.output[0].summary[0].text == THOUGHT
    assert events[-1].response.output_text == GREETING
