"""Structured outputs on the real smollm2: 20 JSON schemas, greedy (streamed) and at 0.8 with
a seed (not streamed), through the ollama client and the openai SDK — every output parses and
validates. The requests run concurrently (the masks apply in the batched decode), on the
server's default fast path."""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import ollama
import openai

from tests.e2e.test_concurrency import inprocess
from tests.engine.test_grammar import SCHEMAS

# (temperature, seed, stream): greedy and streamed, sampled with a seed and not streamed
RUNS = [(0.0, 0, True), (0.8, 1, False)]


def prompt_for(name: str, schema: dict) -> str:
    return f"Produce an example {name.replace('_', ' ')} record as JSON: {json.dumps(schema)}"


async def one(client: ollama.AsyncClient, name: str, schema: dict, temperature: float,
              seed: int, stream: bool) -> tuple[str, str, str]:
    kw = {"model": "smollm2:135m", "format": schema,
          "messages": [{"role": "user", "content": prompt_for(name, schema)}],
          "options": {"temperature": temperature, "seed": seed, "num_predict": 512}}
    if stream:
        chunks = [c async for c in await client.chat(**kw, stream=True)]
        return "".join(c.message.content for c in chunks), chunks[-1].done_reason, name
    r = await client.chat(**kw)
    return r.message.content, r.done_reason, name


def test_twenty_schemas_always_validate(server) -> None:
    assert len(SCHEMAS) >= 20
    # the product's default path (quantized weights, the compiled batched step) with four
    # slots, as test_fast_server.py's: the steps it compiled are read from the cache
    with inprocess(server.models, OLLAMAPY_FAST="1", OLLAMAPY_COMPILE="1",
                   OLLAMA_NUM_PARALLEL="4") as (url, _):
        async def everything():
            async with ollama.AsyncClient(host=url) as client:
                return await asyncio.gather(*(one(client, name, schema, *run)
                                              for name, schema in SCHEMAS.items()
                                              for run in RUNS))

        results = asyncio.run(everything())
    failures = []
    for text, reason, name in results:
        try:
            jsonschema.validate(json.loads(text), SCHEMAS[name])
            assert reason == "stop"
        except (ValueError, jsonschema.ValidationError, AssertionError) as e:
            failures.append((name, reason, text[:200], str(e)[:200]))
    assert not failures, failures


def test_json_mode_and_openai_response_format(server) -> None:
    with ollama.Client(host=server.url) as client:
        r = client.generate(model="smollm2:135m", prompt="Describe a cat as JSON.",
                            format="json", options={"temperature": 0.8, "seed": 5,
                                                    "num_predict": 300})
        assert isinstance(json.loads(r.response), dict) and r.done_reason == "stop"
    schema = SCHEMAS["enum"]
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x") as oai:
        c = oai.chat.completions.create(
            model="smollm2:135m", messages=[{"role": "user", "content": "A task as JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "t",
                                                                     "schema": schema}})
        jsonschema.validate(json.loads(c.choices[0].message.content), schema)
        o = oai.chat.completions.create(
            model="smollm2:135m", messages=[{"role": "user", "content": "A dog as JSON."}],
            response_format={"type": "json_object"}, max_tokens=300, seed=3)
        assert isinstance(json.loads(o.choices[0].message.content), dict)


MOVIE = {"type": "object", "required": ["title", "year", "genres"], "properties": {
    "title": {"type": "string"}, "year": {"type": "integer"},
    "genres": {"type": "array", "items": {"type": "string"}}}}


def test_a_budget_that_runs_out_still_ends_on_a_valid_document(server) -> None:
    """Beyond Ollama: num_predict cuts no document off. At 0.8 with seed 1 smollm2 writes an
    ever-longer genre (at num_predict 200, 200 tokens of unclosed JSON before, as Ollama);
    here the last tokens of the budget finish it, done_reason "length" saying the budget
    ended it; streamed or not, through the native API and /v1."""
    with ollama.Client(host=server.url) as client:
        for num_predict in (120, 25):
            kw = {"model": "smollm2:135m", "prompt": "A movie as JSON.", "format": MOVIE,
                  "options": {"temperature": 0.8, "seed": 1, "num_predict": num_predict}}
            r = client.generate(**kw)
            jsonschema.validate(json.loads(r.response), MOVIE)
            assert r.done_reason == "length" and r.eval_count <= num_predict
        chunks = list(client.generate(**kw, stream=True))
        assert "".join(c.response for c in chunks) == r.response
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x") as oai:
        c = oai.chat.completions.create(
            model="smollm2:135m", messages=[{"role": "user", "content": "A movie as JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "movie",
                                                                     "schema": MOVIE}},
            max_tokens=40, temperature=0.8, seed=1)
        jsonschema.validate(json.loads(c.choices[0].message.content), MOVIE)
        assert c.choices[0].finish_reason == "length" and c.usage.completion_tokens <= 40


def test_invalid_formats_are_400(server) -> None:
    url = f"{server.url}/api/generate"
    r = httpx.post(url, json={"model": "smollm2:135m", "prompt": "x", "format": "xml"},
                   timeout=60)
    assert r.status_code == 400
    assert r.json()["error"] == ('invalid format: "\\"xml\\""; expected "json" or a valid '
                                 'JSON Schema object')
    r = httpx.post(url, json={"model": "smollm2:135m", "prompt": "x",
                              "format": {"type": "nonsense"}}, timeout=60)
    assert r.status_code == 400 and r.json()["error"].startswith("invalid JSON schema")
    r = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
        "model": "smollm2:135m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "yaml"}})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
