"""The API described as an OpenAPI 3.1 document, served at `GET /openapi.json`.

The native request bodies are built from the tables `schemas.py` checks requests against
(field → Go type), and the `options` object from `schemas.OPTION_RANGES`, so the description
and the parser cannot drift apart; the /v1 bodies, the responses and the examples are written
out here. The document is also kept in the repository, as `openapi.json` beside this file,
for tools that read it from disk (and for review: a change to the API shows in its diff);
`tests/e2e/test_openapi.py` checks that the served and the kept documents are equal and that
every route of the app is described. After changing the API, rewrite the kept copy with

    python -m ollamapy.server.openapi
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path
from typing import Any

from ollamapy import __version__
from ollamapy.engine.options import DEPRECATED_OPTIONS, Options
from ollamapy.server import schemas
from ollamapy.server.thinking import EFFORTS

KEPT = Path(__file__).with_name("openapi.json")
EXAMPLE_MODEL = "smollm2:135m"
EXAMPLE_EMBED_MODEL = "all-minilm"
DIGEST_PATTERN = "^sha256[:-][0-9a-fA-F]{64}$"

JSON = dict[str, Any]


def ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: JSON) -> JSON:
    return {"type": "array", "items": items}


STRING, INTEGER, NUMBER, BOOLEAN = ({"type": t} for t in ("string", "integer", "number",
                                                          "boolean"))
ANY: JSON = {}

# how each Go type of schemas.py's tables is written in JSON Schema
GO_TYPES: dict[str, JSON] = {
    "string": STRING, "bool": BOOLEAN, "int": INTEGER, "float64": NUMBER,
    "[]int": array(INTEGER), "[]string": array(STRING),
    "[]api.ImageData": array({"type": "string", "contentEncoding": "base64"}),
    "map[string]interface {}": {"type": "object"},
    "map[string]string": {"type": "object", "additionalProperties": STRING},
    "[]api.Message": array(ref("Message")), "api.Tools": array(ref("Tool")),
    "json.RawMessage": ANY, "*api.Duration": ref("KeepAlive"), "*api.ThinkValue": ref("Think"),
    "interface {}": ANY,
}
# fields whose description is more precise than their Go type
FIELDS: dict[str, JSON] = {
    "model": ref("ModelName"), "name": ref("ModelName"), "options": ref("Options"),
    "format": ref("Format"), "keep_alive": ref("KeepAlive"),
    "stream": {"type": "boolean", "default": True,
               "description": "NDJSON stream of chunks (default), or one JSON object"},
}


def _native_body(table: schemas.Schema, *, required: tuple[str, ...] = (),
                 fields: dict[str, JSON] | None = None) -> JSON:
    overrides = {**FIELDS, **(fields or {})}
    body: JSON = {"type": "object", "properties": {
        name: overrides.get(name, GO_TYPES[go_type]) for name, go_type in table.items()}}
    if required:
        body["required"] = list(required)
    return body


def _options_schema() -> JSON:
    kinds = {"int": INTEGER, "float": NUMBER, "bool | None": BOOLEAN, "bool": BOOLEAN,
             "tuple[str, ...]": array(STRING)}
    properties: JSON = {}
    for f in dataclasses.fields(Options):
        prop = dict(kinds[str(f.type)])
        low, high = schemas.OPTION_RANGES.get(f.name, (None, None))
        if low is not None:
            prop["minimum"] = low
        if high is not None:
            prop["maximum"] = high
        properties[f.name] = prop
    for name in sorted(DEPRECATED_OPTIONS):
        properties[name] = {"deprecated": True, "description": "accepted and ignored"}
    return {"type": "object", "properties": properties,
            "description": "Ollama's runtime options; unknown keys are ignored. Integers "
                           "accept any JSON number (truncated)."}


def _components() -> JSON:
    error = {"type": "object", "required": ["error"], "properties": {"error": STRING}}
    metrics = {k: INTEGER for k in ("total_duration", "load_duration", "prompt_eval_count",
                                    "prompt_eval_duration", "eval_count", "eval_duration")}
    timing = {"model": STRING, "created_at": {"type": "string", "format": "date-time"},
              "done": BOOLEAN, "done_reason": STRING, **metrics}
    logprob = {"type": "object", "properties": {
        "token": STRING, "logprob": NUMBER, "bytes": array(INTEGER),
        "top_logprobs": array({"type": "object"})}}
    details = {"type": "object", "properties": {
        k: STRING for k in ("parent_model", "format", "family", "parameter_size",
                            "quantization_level")} | {"families": array(STRING)}}
    openai_message = {"type": "object", "required": ["role"], "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant",
                                            "tool"]},
        "content": {"anyOf": [STRING, {"type": "null"}, array(ref("OpenAIContentPart"))]},
        "name": STRING, "tool_call_id": STRING, "tool_calls": array({"type": "object"})}}
    return {
        "ModelName": {"type": "string", "examples": [EXAMPLE_MODEL, "library/smollm2:135m"],
                      "description": "[host/][namespace/]model[:tag]; matched "
                                     "case-insensitively"},
        "KeepAlive": {"description": "How long the model stays loaded after the request: "
                                     "seconds, or a Go duration (\"5m\", \"1h30m\"); "
                                     "negative: forever; 0: unload now",
                      "anyOf": [NUMBER, STRING], "examples": ["5m", 0, -1]},
        "Think": {"anyOf": [BOOLEAN, {"type": "string",
                                      "enum": ["low", "medium", "high", "max"]}]},
        "Format": {"description": "\"json\", or a JSON Schema the output must validate "
                                  "against (grammar-constrained decoding)",
                   "anyOf": [{"type": "string", "enum": ["", "json"]}, {"type": "object"}]},
        "Options": _options_schema(),
        "Message": {"type": "object", "properties": {
            "role": {"type": "string", "examples": ["system", "user", "assistant", "tool"]},
            "content": STRING, "thinking": STRING, "images": GO_TYPES["[]api.ImageData"],
            "tool_calls": array({"type": "object"}), "tool_name": STRING,
            "tool_call_id": STRING}},
        "Tool": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["function"]},
            "function": {"type": "object", "properties": {
                "name": STRING, "description": STRING, "parameters": {"type": "object"}}}}},
        "Error": error,
        "GenerateResponse": {"type": "object", "properties": {
            **timing, "response": STRING, "context": array(INTEGER),
            "logprobs": array(logprob)}},
        "ChatResponse": {"type": "object", "properties": {
            **timing, "message": ref("Message"), "logprobs": array(logprob)}},
        "EmbedResponse": {"type": "object", "required": ["embeddings"], "properties": {
            "model": STRING, "embeddings": array(array(NUMBER)), **metrics}},
        "EmbeddingsResponse": {"type": "object", "required": ["embedding"],
                               "properties": {"embedding": array(NUMBER)}},
        "TokenizeResponse": {"type": "object", "properties": {"model": STRING,
                                                              "tokens": array(INTEGER)}},
        "DetokenizeResponse": {"type": "object", "properties": {"model": STRING,
                                                                "content": STRING}},
        "ProgressResponse": {"type": "object", "properties": {
            "status": STRING, "digest": STRING, "total": INTEGER, "completed": INTEGER}},
        "ListResponse": {"type": "object", "required": ["models"], "properties": {
            "models": array({"type": "object", "properties": {
                "name": STRING, "model": STRING, "size": INTEGER, "digest": STRING,
                "modified_at": {"type": "string", "format": "date-time"},
                "details": details, "capabilities": array(STRING)}})}},
        "ProcessResponse": {"type": "object", "required": ["models"], "properties": {
            "models": array({"type": "object", "properties": {
                "name": STRING, "model": STRING, "size": INTEGER, "size_vram": INTEGER,
                "digest": STRING, "details": details, "context_length": INTEGER,
                "expires_at": {"type": "string", "format": "date-time"}}})}},
        "ShowResponse": {"type": "object", "properties": {
            "modelfile": STRING, "parameters": STRING, "template": STRING, "system": STRING,
            "license": STRING, "details": details, "model_info": {"type": "object"},
            "capabilities": array(STRING), "messages": array(ref("Message")),
            "tensors": array({"type": "object"}),
            "modified_at": {"type": "string", "format": "date-time"}}},
        "OpenAIError": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "object", "required": ["message", "type"], "properties": {
                "message": STRING, "type": STRING, "param": ANY, "code": ANY}}}},
        "OpenAIContentPart": {"type": "object", "required": ["type"], "properties": {
            "type": {"type": "string", "enum": ["text", "image_url", "input_audio"]},
            "text": STRING}},
        "OpenAIMessage": openai_message,
        "OpenAISampling": {"type": "object", "properties": {
            "model": ref("ModelName"), "stream": {"type": "boolean", "default": False},
            "stream_options": {"type": "object", "properties": {"include_usage": BOOLEAN}},
            "temperature": NUMBER, "top_p": NUMBER, "max_tokens": INTEGER, "seed": INTEGER,
            "frequency_penalty": NUMBER, "presence_penalty": NUMBER,
            "stop": {"anyOf": [STRING, array(STRING)]},
            "options": ref("Options"), "keep_alive": ref("KeepAlive"),
            "num_ctx": INTEGER, "top_k": INTEGER, "min_p": NUMBER, "repeat_penalty": NUMBER},
            "description": "OpenAI's sampling fields; Ollama's options are accepted as extra "
                           "top-level fields (the SDKs' extra_body) or in `options`"},
        "OpenAIModel": {"type": "object", "required": ["id", "object"], "properties": {
            "id": STRING, "object": {"const": "model"}, "created": INTEGER,
            "owned_by": STRING}},
    }


def _json(schema: JSON, example: Any = None) -> JSON:
    media: JSON = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _errors(*statuses: int, openai: bool = False) -> JSON:
    texts = {400: "Bad request: malformed JSON, a wrong field type or value",
             401: "Missing or wrong API key (only when OLLAMAPY_API_KEY is set)",
             403: "Host or Origin not allowed", 404: "Model or blob not found",
             408: "The request body did not arrive in time",
             413: "Request body over OLLAMAPY_MAX_BODY_BYTES",
             503: "Queue full or shutting down (with Retry-After)",
             507: "Disk full: nothing was left half-written, retry once there is room"}
    error = ref("OpenAIError") if openai else ref("Error")
    return {str(s): {"description": texts[s], "content": _json(error)}
            for s in sorted({401, 403, 408, 413, *statuses})}


def _operation(summary: str, *, body: JSON | None = None, example: Any = None,
               ok: JSON | None = None, ok_status: str = "200", stream: bool = False,
               errors: tuple[int, ...] = (400,), openai: bool = False,
               tag: str = "native") -> JSON:
    op: JSON = {"summary": summary, "tags": [tag]}
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body, example)}
    content: JSON = {}
    if ok is not None:
        content = _json(ok)
        if stream:
            content["application/x-ndjson"] = {"schema": ok}
    op["responses"] = {ok_status: {"description": "Success", **({"content": content}
                                                                 if content else {})},
                       **_errors(*errors, openai=openai)}
    return op


def _native_paths() -> JSON:
    generate = _native_body(schemas.GENERATE, required=("model",), fields={
        "think": ref("Think")})
    chat = _native_body(schemas.CHAT, required=("model",), fields={"think": ref("Think")})
    embed = _native_body(schemas.EMBED, required=("model",), fields={
        "input": {"anyOf": [STRING, array(STRING)]}})
    create = _native_body(schemas.CREATE, fields={
        "license": {"anyOf": [STRING, array(STRING)]},
        "files": {"type": "object", "additionalProperties": {"type": "string",
                                                             "pattern": DIGEST_PATTERN}}})
    greedy = {"temperature": 0, "num_predict": 4}
    digest = {"name": "digest", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": DIGEST_PATTERN}}
    head = {"summary": "Same as GET, without a body", "tags": ["native"],
            "responses": {"200": {"description": "Success"}}}
    return {
        "/": {"get": {"summary": "Health check: 'Ollama is running' (never needs the API key)",
                      "tags": ["native"], "security": [], "responses": {"200": {
                          "description": "Running", "content": {"text/plain": {
                              "schema": {"const": "Ollama is running"}}}}}},
              "head": {**head, "security": []}},
        "/api/version": {"get": _operation(
            "The Ollama version whose API this server implements, and ollamapy's own", ok={
                "type": "object", "required": ["version", "ollamapy"],
                "properties": {"version": STRING, "ollamapy": STRING}}, errors=()),
            "head": head},
        "/api/status": {"get": _operation("Feature flags: cloud models (always off here)", ok={
            "type": "object", "required": ["cloud"], "properties": {"cloud": {
                "type": "object", "required": ["disabled", "source"], "properties": {
                    "disabled": BOOLEAN,
                    "source": {"enum": ["none", "env", "config", "both"]}}}}}, errors=()),
            "head": head},
        "/api/generate": {"post": _operation(
            "Complete a prompt", body=generate, ok=ref("GenerateResponse"), stream=True,
            errors=(400, 404, 503), example={"model": EXAMPLE_MODEL, "prompt": "Why is the "
                                             "sky blue?", "stream": False, "options": greedy})},
        "/api/chat": {"post": _operation(
            "Answer a conversation", body=chat, ok=ref("ChatResponse"), stream=True,
            errors=(400, 404, 503), example={"model": EXAMPLE_MODEL, "stream": False,
                                             "messages": [{"role": "user", "content": "Hi"}],
                                             "options": greedy})},
        "/api/embed": {"post": _operation(
            "Embed one or more inputs (L2-normalised)", body=embed, ok=ref("EmbedResponse"),
            errors=(400, 404, 503), example={"model": EXAMPLE_EMBED_MODEL,
                                             "input": ["Hello", "world"]})},
        "/api/embeddings": {"post": _operation(
            "Embed one prompt (legacy, not normalised)",
            body=_native_body(schemas.EMBEDDINGS, required=("model",)),
            ok=ref("EmbeddingsResponse"), errors=(400, 404, 503),
            example={"model": EXAMPLE_EMBED_MODEL, "prompt": "Hello"})},
        "/api/tokenize": {"post": _operation(
            "Text → token ids (beyond Ollama)", ok=ref("TokenizeResponse"),
            body=_native_body(schemas.TOKENIZE, required=("model",)),
            errors=(400, 404, 503), example={"model": EXAMPLE_MODEL, "content": "Hello"})},
        "/api/detokenize": {"post": _operation(
            "Token ids → text (beyond Ollama)", ok=ref("DetokenizeResponse"),
            body=_native_body(schemas.DETOKENIZE, required=("model",)),
            errors=(400, 404, 503), example={"model": EXAMPLE_MODEL, "tokens": [19556]})},
        "/api/tags": {"get": _operation("List local models", ok=ref("ListResponse"),
                                        errors=()), "head": head},
        "/api/show": {"post": _operation(
            "Describe a model", body=_native_body(schemas.SHOW), ok=ref("ShowResponse"),
            errors=(400, 404), example={"model": EXAMPLE_MODEL})},
        "/api/create": {"post": _operation(
            "Create a model from another one or from uploaded blobs", body=create,
            ok=ref("ProgressResponse"), stream=True, errors=(400, 404, 507),
            example={"model": "smollm2-pirate", "from": EXAMPLE_MODEL,
                     "system": "Talk like a pirate.", "stream": False})},
        "/api/blobs/{digest}": {
            "parameters": [digest],
            "head": {"summary": "Whether a blob exists", "tags": ["native"], "responses": {
                "200": {"description": "Present"}, "400": {"description": "Invalid digest"},
                "404": {"description": "Absent"}}},
            "post": {"summary": "Upload a blob; its sha256 must be the digest (streamed to "
                                "disk; not subject to OLLAMAPY_MAX_BODY_BYTES)",
                     "tags": ["native"], "requestBody": {"required": True, "content": {
                         "application/octet-stream": {"schema": {
                             "type": "string", "format": "binary"}}}},
                     "responses": {"201": {"description": "Created"},
                                   "200": {"description": "Already present"},
                                   **_errors(400, 507)}}},
        "/api/copy": {"post": _operation(
            "Copy a model under another name", body=_native_body(
                schemas.COPY, required=("source", "destination"),
                fields={"source": ref("ModelName"), "destination": ref("ModelName")}),
            errors=(400, 404, 507), example={"source": EXAMPLE_MODEL,
                                        "destination": "smollm2-copy"})},
        "/api/delete": {"delete": _operation(
            "Delete a model", body=_native_body(schemas.DELETE), errors=(400, 404),
            example={"model": "no-such-model"})},
        "/api/pull": {"post": _operation(
            "Download a model from a registry", body=_native_body(schemas.PULL),
            ok=ref("ProgressResponse"), stream=True, errors=(400, 404, 507),
            example={"model": EXAMPLE_MODEL, "stream": False})},
        "/api/push": {"post": _operation(
            "Upload a model to a registry", body=_native_body(schemas.PUSH),
            ok=ref("ProgressResponse"), stream=True, errors=(400, 404),
            example={"model": "example.com/me/smollm2:135m", "stream": False})},
        "/api/ps": {"get": _operation("List loaded models", ok=ref("ProcessResponse"),
                                      errors=()), "head": head},
    }


def _anthropic_messages() -> JSON:
    """POST /v1/messages: its errors are Anthropic's shape but for the guards' (401, 403)."""
    block = {"type": "object", "required": ["type"], "properties": {"type": STRING}}
    body = {"type": "object", "required": ["model", "max_tokens", "messages"], "properties": {
        "model": ref("ModelName"), "max_tokens": {"type": "integer", "minimum": 1},
        "messages": array({"type": "object", "required": ["role", "content"], "properties": {
            "role": {"type": "string", "enum": ["user", "assistant"]},
            "content": {"anyOf": [STRING, array(block)]}}}),
        "system": {"anyOf": [STRING, array(block)]},
        "stream": {"type": "boolean", "default": False},
        "temperature": NUMBER, "top_p": NUMBER, "top_k": INTEGER,
        "stop_sequences": array(STRING),
        "tools": array({"type": "object", "required": ["name"], "properties": {
            "name": STRING, "description": STRING, "input_schema": {"type": "object"}}}),
        "tool_choice": {"type": "object"}, "metadata": {"type": "object"},
        "thinking": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["enabled", "disabled", "adaptive"]},
            "budget_tokens": INTEGER}},
        "output_config": {"type": "object", "properties": {"effort": STRING}},
        "options": ref("Options"), "keep_alive": ref("KeepAlive")}}
    error = {"type": "object", "required": ["type", "error"], "properties": {
        "type": {"const": "error"}, "request_id": STRING,
        "error": {"type": "object", "required": ["type", "message"], "properties": {
            "type": STRING, "message": STRING}}}}
    operation = _operation(
        "Anthropic Messages API (a message, or server-sent events ending with message_stop)",
        body=body, errors=(400, 404, 503), openai=True, tag="anthropic",
        ok={"type": "object", "required": ["id", "type", "role", "content"]},
        example={"model": EXAMPLE_MODEL, "max_tokens": 4,
                 "messages": [{"role": "user", "content": "Hi"}]})
    operation["responses"]["200"]["content"]["text/event-stream"] = {"schema": STRING}
    for status in ("400", "404", "408", "413", "503"):
        operation["responses"][status]["content"] = _json(error)
    return {"post": operation}


def _openai_responses() -> JSON:
    """POST /v1/responses: OpenAI's Responses API, stateless (responses.py)."""
    text_format = {"type": "object", "required": ["type"], "properties": {
        "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
        "name": STRING, "schema": {"type": "object"}, "strict": BOOLEAN}}
    tool = {"type": "object", "required": ["type"], "properties": {
        "type": {"type": "string", "enum": ["function", "namespace"]}, "name": STRING,
        "description": {"type": ["string", "null"]},
        "parameters": {"type": ["object", "null"]}, "strict": {"type": ["boolean", "null"]},
        "tools": array({"type": "object"})}}
    body = {"type": "object", "required": ["model"], "properties": {
        "model": ref("ModelName"),
        "input": {"anyOf": [STRING, array({"type": "object", "properties": {
            "type": {"type": "string", "enum": ["message", "function_call",
                                                "function_call_output", "reasoning"]},
            "role": STRING}})]},
        "instructions": STRING, "stream": {"type": "boolean", "default": False},
        "temperature": NUMBER, "top_p": NUMBER, "max_output_tokens": INTEGER,
        "tools": array(tool), "text": {"type": "object", "properties": {"format": text_format}},
        "reasoning": {"type": "object", "properties": {
            "effort": {"type": "string", "enum": list(EFFORTS)}, "summary": STRING}},
        "truncation": STRING, "metadata": {"type": "object"},
        "options": ref("Options"), "keep_alive": ref("KeepAlive")},
        "description": "previous_response_id and conversation are refused (400): nothing is "
                       "stored"}
    operation = _operation(
        "OpenAI Responses API (a response object, or server-sent events ending with "
        "response.completed)", body=body, errors=(400, 404, 503), openai=True, tag="openai",
        ok={"type": "object", "required": ["id", "object", "status", "output"]},
        example={"model": EXAMPLE_MODEL, "input": "Hi", "max_output_tokens": 4,
                 "temperature": 0})
    operation["responses"]["200"]["content"]["text/event-stream"] = {"schema": STRING}
    return {"post": operation}


def _openai_paths() -> JSON:
    def sampling(**properties: JSON) -> JSON:
        return {"allOf": [ref("OpenAISampling"), {
            "type": "object", "required": ["model", *properties.pop("required_", [])],
            "properties": properties}]}

    chat = sampling(
        required_=["messages"], messages=array(ref("OpenAIMessage")),
        max_completion_tokens=INTEGER, tools=array(ref("Tool")),
        response_format={"type": "object", "properties": {
            "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
            "json_schema": {"type": "object", "properties": {"schema": {"type": "object"}}}}},
        logprobs=BOOLEAN, top_logprobs={"type": "integer", "minimum": 0, "maximum": 20})
    completion = sampling(prompt={"anyOf": [STRING, array(STRING)]}, suffix=STRING,
                          logprobs={"type": "integer", "minimum": 0, "maximum": 20})
    embeddings = {"type": "object", "required": ["model", "input"], "properties": {
        "model": ref("ModelName"), "input": {"anyOf": [STRING, array(STRING)]},
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": INTEGER, "options": ref("Options"), "keep_alive": ref("KeepAlive")}}
    listing = {"type": "object", "required": ["object", "data"], "properties": {
        "object": {"const": "list"}, "data": array(ref("OpenAIModel"))}}
    short = {"max_tokens": 4, "temperature": 0}
    model = {"name": "model", "in": "path", "required": True, "schema": ref("ModelName")}

    def op(summary: str, **kwargs: Any) -> JSON:
        return _operation(summary, openai=True, tag="openai", **kwargs)

    return {
        "/v1/chat/completions": {"post": op(
            "OpenAI chat completions (JSON, or server-sent events ending with [DONE])",
            body=chat, ok={"type": "object"}, errors=(400, 404, 503),
            example={"model": EXAMPLE_MODEL, "messages": [{"role": "user", "content": "Hi"}],
                     **short})},
        "/v1/completions": {"post": op(
            "OpenAI legacy completions", body=completion, ok={"type": "object"},
            errors=(400, 404, 503), example={"model": EXAMPLE_MODEL, "prompt": "Once",
                                             **short})},
        "/v1/responses": _openai_responses(),
        "/v1/embeddings": {"post": op(
            "OpenAI embeddings", body=embeddings, ok={"type": "object"},
            errors=(400, 404, 503), example={"model": EXAMPLE_EMBED_MODEL, "input": "Hi"})},
        "/v1/models": {"get": op("List models", ok=listing, errors=()),
                       "head": {"summary": "Same as GET, without a body", "tags": ["openai"],
                                "responses": {"200": {"description": "Success"}}}},
        "/v1/models/{model}": {
            "parameters": [model],
            "get": op("Retrieve a model", ok=ref("OpenAIModel"), errors=(404,)),
            "head": {"summary": "Same as GET, without a body", "tags": ["openai"],
                     "responses": {"200": {"description": "Success"},
                                   "404": {"description": "Not found"}}}},
        "/v1/messages": _anthropic_messages(),
    }


@functools.cache
def build() -> JSON:
    """The document (built once; treat it as read-only)."""
    paths = {**_native_paths(), **_openai_paths(), "/openapi.json": {
        "get": {"summary": "This document", "tags": ["meta"], "responses": {
            "200": {"description": "OpenAPI 3.1", "content": {"application/json": {
                "schema": {"type": "object"}}}}}},
        "head": {"summary": "Same as GET, without a body", "tags": ["meta"],
                 "responses": {"200": {"description": "Success"}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ollamapy", "version": __version__,
                 "description": "Ollama's HTTP API (native, OpenAI- and Anthropic-compatible) "
                                "as served by ollamapy. Errors are {\"error\": message} "
                                "(OpenAI's shape under /v1, Anthropic's at /v1/messages); a "
                                "streamed response that fails after it began ends with an "
                                "error line or event."},
        "servers": [{"url": "http://127.0.0.1:11434"}],
        "security": [{}, {"apiKey": []}],  # the key is only needed when the server has one
        "tags": [{"name": "native", "description": "Ollama's API"},
                 {"name": "openai", "description": "The OpenAI-compatible layer"},
                 {"name": "anthropic", "description": "The Anthropic-compatible layer"},
                 {"name": "meta"}],
        "paths": paths,
        "components": {"schemas": _components(), "securitySchemes": {"apiKey": {
            "type": "http", "scheme": "bearer",
            "description": "OLLAMAPY_API_KEY, when the server sets one"}}},
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Rewrite the kept copy (or the path given)."""
    path = Path(argv[0]) if argv else KEPT
    path.write_text(render(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
