"""The OpenAI-compatible layer: /v1/chat/completions, /v1/completions, /v1/embeddings,
/v1/models and /v1/models/{model}.

Each handler translates the OpenAI request into the native one (../shared/reference/
ollama-api.md §10), runs it through the same runner path as /api (`running.run_model`), and
translates the events back: one JSON object, or server-sent events ending with
`data: [DONE]`. Errors use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
with the native status; an error in the middle of a stream is sent as an error event before
the stream closes, never a silent truncation.

Beyond Ollama (its users ask for it, §12 item 3): `num_ctx`, `top_k`, `min_p`,
`repeat_penalty`, the other Ollama options, an `options` object and `keep_alive` are accepted
as extra body fields (the SDK's `extra_body`) and honoured.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ollamapy.contract import Embeddings, Finished, ModelSpec
from ollamapy.engine.options import Options
from ollamapy.server.errors import APIError, bad_request, error_headers
from ollamapy.server.running import (
    check_options,
    keep_alive_of,
    logprob_entries,
    run_model,
    whole_answer,
    with_call_ids,
)
from ollamapy.server.schemas import parse_json_body
from ollamapy.server.state import State
from ollamapy.server.streaming import dumps
from ollamapy.server.thinking import resolve_think, think_of_effort
from ollamapy.store import StoreError

if TYPE_CHECKING:
    from ollamapy.scheduler import AnyRunner

log = logging.getLogger(__name__)

# OpenAI's own: a missing or wrong key is an invalid request (code "invalid_api_key")
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
               403: "invalid_request_error", 404: "not_found_error",
               408: "invalid_request_error", 413: "invalid_request_error"}
FINGERPRINT = "fp_ollama"
# Ollama's option names, accepted as extra top-level body fields
EXTRA_OPTIONS = frozenset(Options.__dataclass_fields__) - {"stop"}


def openai_error(status: int, message: str, headers: Mapping[str, str] | None = None, *,
                 code: str | None = None) -> Response:
    return JSONResponse({"error": {"message": message,
                                   "type": ERROR_TYPES.get(status, "api_error"),
                                   "param": None, "code": code}}, status_code=status,
                        headers=error_headers(status, headers))


def error_payload(e: BaseException) -> tuple[int, str]:
    if isinstance(e, APIError):
        return e.status, e.message
    if isinstance(e, StoreError):
        return e.status, str(e)
    log.exception("error in a /v1 request", exc_info=e)
    return 500, str(e) or type(e).__name__


def state_of(request: Request) -> State:
    return request.app.state.ollamapy


async def json_body(request: Request) -> dict[str, Any]:
    body = parse_json_body(await request.body())
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    return body


def model_name(body: Mapping[str, Any]) -> str:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise bad_request("model is required")
    return name


def sampling_options(body: Mapping[str, Any], *, completion: bool = False) -> dict[str, Any]:
    """OpenAI's sampling fields → Ollama's options (OpenAI's defaults: temperature and top_p
    1.0), then the Ollama extras (`options` object first, named fields over it)."""
    extra = body.get("options")
    if extra is not None and not isinstance(extra, dict):
        raise bad_request("options must be an object")
    options: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0, **(extra or {})}
    top_p = body.get("top_p")
    if top_p is not None and not (completion and top_p == 0):  # /v1/completions: 0 is unset
        options["top_p"] = top_p
    for ours, theirs in (("temperature", "temperature"),
                         ("num_predict", "max_completion_tokens"), ("num_predict", "max_tokens"),
                         ("seed", "seed"), ("frequency_penalty", "frequency_penalty"),
                         ("presence_penalty", "presence_penalty")):
        if body.get(theirs) is not None:
            options[ours] = body[theirs]
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        bad = next((s for s in stop if not isinstance(s, str)), None)
        if bad is not None:
            raise bad_request(f"invalid type for 'stop' field: {type(bad).__name__}")
        options["stop"] = stop
    elif stop is not None:
        raise bad_request(f"invalid type for 'stop' field: {type(stop).__name__}")
    options |= {k: v for k, v in body.items() if k in EXTRA_OPTIONS and v is not None}
    return check_options(options)


def _format(body: Mapping[str, Any]) -> Any:
    """response_format → Ollama's format (`ollama_format`)."""
    fmt = body.get("response_format")
    schema = (fmt.get("json_schema") or {}).get("schema") if isinstance(fmt, dict) else None
    return ollama_format(fmt, schema, "response_format")


def ollama_format(fmt: Any, schema: Any, field: str) -> Any:
    """An OpenAI format object (`field` names it in errors) → Ollama's format: none for text,
    "json" for json_object, the schema for json_schema."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        if not isinstance(schema, dict):
            raise bad_request(f"{field} json_schema needs a schema object")
        return schema
    raise bad_request(f"invalid {field} type: {json.dumps(kind)}; expected "
                      '"text", "json_object" or "json_schema"')


def _logprobs(body: Mapping[str, Any], chat: bool) -> int | None:
    """None, or how many alternatives per token: chat has logprobs (bool) + top_logprobs,
    completions an int logprobs."""
    if chat:
        if not body.get("logprobs"):
            return None
        top = body.get("top_logprobs") or 0
    else:
        top = body.get("logprobs")
        if top is None or top is False:
            return None
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
        raise bad_request("top_logprobs must be between 0 and 20")
    return top


def _chat_logprobs(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """OpenAI chat's shape of Ollama's entries (the same fields, under "content")."""
    return {"content": [{"token": e["token"], "logprob": e["logprob"], "bytes": e["bytes"],
                         "top_logprobs": [{"token": t["token"], "logprob": t["logprob"],
                                           "bytes": t["bytes"]} for t in e["top_logprobs"]]}
                        for e in entries]}


def _completion_logprobs(entries: Sequence[Mapping[str, Any]], offset: int = 0
                         ) -> dict[str, Any]:
    """The legacy completions shape: parallel lists, text offsets from `offset`."""
    offsets, at = [], offset
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {"tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]}
                             for e in entries],
            "text_offset": offsets}


def openai_tool_calls(calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": call["id"], "index": call["function"].get("index", 0), "type": "function",
             "function": {"name": call["function"]["name"],
                          "arguments": json.dumps(call["function"]["arguments"])}}
            for call in with_call_ids(calls)]


def resolve_model(state: State, name: str, capability: str | None) -> ModelSpec:
    """capability None: any model (Ollama's /v1/embeddings, like /api/embed, checks none)."""
    spec = state.resolve(name)
    if spec is None:
        raise APIError(404, f"model '{name}' not found")
    if capability is not None and capability not in spec.capabilities:
        verb = {"completion": "generate", "embedding": "embeddings"}[capability]
        raise bad_request(f'"{name}" does not support {verb}')
    return spec


def _usage(done: Finished) -> dict[str, Any]:
    """OpenAI's usage; prompt_tokens_details.cached_tokens (OpenAI's field, beyond Ollama)
    when a slot already held part of the prompt."""
    usage: dict[str, Any] = {"prompt_tokens": done.prompt_eval_count,
                             "completion_tokens": done.eval_count,
                             "total_tokens": done.prompt_eval_count + done.eval_count}
    if done.prompt_tokens_cached:
        usage["prompt_tokens_details"] = {"cached_tokens": done.prompt_tokens_cached}
    return usage


# -- messages -------------------------------------------------------------------------------


def _messages(raw: Any) -> list[dict[str, Any]]:
    """OpenAI messages → Ollama's: each content part becomes its own message (as Ollama
    does); assistant tool_calls get their arguments parsed; a tool result finds its
    tool's name from the call it answers."""
    if not isinstance(raw, list) or not raw:
        raise bad_request("[] is too short - 'messages'")
    out: list[dict[str, Any]] = []
    names_by_call: dict[str, str] = {}
    for m in raw:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad_request("invalid message format")
        role = "system" if m["role"] == "developer" else m["role"]
        msg: dict[str, Any] = {"role": role}
        if isinstance(m.get("reasoning"), str) and m["reasoning"]:
            msg["thinking"] = m["reasoning"]
        calls = m.get("tool_calls")
        if role == "assistant" and calls:
            msg["tool_calls"] = [_tool_call(c, names_by_call) for c in calls]
        if role == "tool":
            call_id = m.get("tool_call_id")
            name = m.get("name") or names_by_call.get(call_id or "", "")
            if name:
                msg["tool_name"] = name
            if call_id:
                msg["tool_call_id"] = call_id
        content = m.get("content")
        if content is None or isinstance(content, str):
            out.append(msg | {"content": content or ""})
        elif isinstance(content, list):
            for part in content:
                out.append(msg | {"content": _text_part(part)})
        else:
            raise bad_request(f"invalid message content type: {type(content).__name__}")
    return out


def _text_part(part: Any) -> str:
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"),
                                                                            str):
        return part["text"]
    if isinstance(part, dict) and part.get("type") in ("image_url", "input_audio"):
        raise bad_request(f"{part['type']} content is not supported by ollamapy's models")
    raise bad_request("invalid message format")


def _tool_call(call: Any, names_by_call: dict[str, str]) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise bad_request("invalid tool call")
    args = fn.get("arguments") or "{}"
    try:
        arguments = json.loads(args) if isinstance(args, str) else args
    except json.JSONDecodeError:
        raise bad_request("invalid tool call arguments") from None
    if call.get("id"):
        names_by_call[call["id"]] = fn["name"]
    return {"function": {"name": fn["name"], "arguments": arguments}}


# -- responses ------------------------------------------------------------------------------


async def first_event(events: AsyncIterator[Any]) -> Any:
    """The first event, before any byte is sent, so its error keeps its own status."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise APIError(500, "no response") from None


def _sse(first: Any, events: AsyncIterator[Any],
         chunks_of: Callable[[Any], list[dict[str, Any]]],
         tail: Callable[[], list[dict[str, Any]]]) -> StreamingResponse:
    """Server-sent events: each event's chunks, the tail, then [DONE]; an error mid-stream is
    an error event, and the stream closes without [DONE]."""

    async def lines() -> AsyncIterator[str]:
        try:
            for chunk in chunks_of(first):
                yield f"data: {dumps(chunk)}\n\n"
            async for event in events:
                for chunk in chunks_of(event):
                    yield f"data: {dumps(chunk)}\n\n"
            for chunk in tail():
                yield f"data: {dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        except Exception as e:
            status, message = error_payload(e)
            error = {"message": message, "type": ERROR_TYPES.get(status, "api_error"),
                     "param": None, "code": None}
            yield f"data: {dumps({'error': error})}\n\n"
        finally:
            await events.aclose()

    return StreamingResponse(lines(), media_type="text/event-stream")


Handler = Callable[[Request], Any]


def errors_as(shape: Callable[..., Response]) -> Callable[[Handler], Handler]:
    """A route decorator: errors raised before a response starts are answered by
    `shape(status, message, headers=...)` (OpenAI's here, Anthropic's in anthropic.py)."""

    def decorate(handler: Handler) -> Handler:
        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except (APIError, StoreError) as e:
                return shape(*error_payload(e),
                             headers=e.headers if isinstance(e, APIError) else None)

        route.__name__ = handler.__name__
        return route

    return decorate


openai_route = errors_as(openai_error)


# -- /v1/chat/completions and /v1/completions --------------------------------------------------


async def _text_request(request: Request, kind: str) -> Response:
    state = state_of(request)
    body = await json_body(request)
    name = model_name(body)
    chat = kind == "chat"
    messages = _messages(body.get("messages")) if chat else []
    prompt = body.get("prompt", "")
    if not chat:
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise bad_request("prompt must be a string")
    options = sampling_options(body, completion=not chat)
    keep_alive = keep_alive_of(body)
    fmt = _format(body)
    think = think_of_effort(body) if chat else None
    spec = resolve_model(state, name, "completion")
    if chat:
        think = resolve_think(spec, name, think)
    tools = body.get("tools") or []
    if tools and "tools" not in spec.capabilities:
        raise bad_request(f"{state.full_name(name)} does not support tools")
    if not chat and body.get("suffix") and "insert" not in spec.capabilities:
        raise bad_request(f"{state.full_name(name)} does not support insert")

    logprobs = _logprobs(body, chat)

    def start(runner: AnyRunner) -> AsyncIterator[Any]:
        opts = runner.options(options)
        if chat:
            return runner.chat(messages, opts, tools=tools or None, logprobs=logprobs,
                               format=fmt, think=think)
        return runner.generate(prompt, opts, suffix=body.get("suffix"), logprobs=logprobs,
                               format=fmt)

    events = run_model(state, spec, options, keep_alive, start)
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{random.randint(0, 998)}"
    created = int(time.time())
    head = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created, "model": name, "system_fingerprint": FINGERPRINT}
    first = await first_event(events)

    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        usage: dict[str, int] = {}
        sent_role = False
        text_offset = 0

        def choice(**fields: Any) -> dict[str, Any]:
            return head | {"choices": [{"index": 0, **fields}]}

        def delta(**fields: Any) -> dict[str, Any]:
            nonlocal sent_role
            first, sent_role = not sent_role, True
            return ({"role": "assistant"} if first else {}) | fields

        def chunks_of(pair: tuple[Any, int]) -> list[dict[str, Any]]:
            nonlocal text_offset
            event, _ = pair
            if isinstance(event, Finished):
                usage.update(_usage(event))
                reason = "tool_calls" if event.tool_calls else event.done_reason
                end = {"delta": {}} if chat else {"text": ""}
                return [choice(**end, finish_reason=reason)]
            extra: dict[str, Any] = {}
            if event.logprobs:
                these = logprob_entries(event.logprobs)
                extra["logprobs"] = _chat_logprobs(these) if chat else \
                    _completion_logprobs(these, text_offset)
            if not chat:
                text_offset += len(event.text)
                return [choice(text=event.text, finish_reason=None, **extra)]
            out = []  # reasoning, then content, then calls: never two in one chunk (Ollama)
            if event.thinking:
                out.append(choice(delta=delta(content="", reasoning=event.thinking),
                                  finish_reason=None))
            # content (or logprobs), or an empty content piece when the event holds nothing
            if event.text or extra or not (out or event.tool_calls):
                out.append(choice(delta=delta(content=event.text), finish_reason=None,
                                  **extra))
            if event.tool_calls:
                out.append(choice(delta=delta(tool_calls=openai_tool_calls(event.tool_calls)),
                                  finish_reason=None))
            return out

        def tail() -> list[dict[str, Any]]:
            return [head | {"choices": [], "usage": usage}] if include_usage else []

        return _sse(first, events, chunks_of, tail)

    answer = await whole_answer(first, events)
    final, entries = answer.final, logprob_entries(answer.logprobs)
    reason = "tool_calls" if final.tool_calls else final.done_reason
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.thinking:
            message["reasoning"] = answer.thinking
        if final.tool_calls:
            message["tool_calls"] = openai_tool_calls(final.tool_calls)
        choice = {"index": 0, "message": message, "finish_reason": reason}
        if logprobs is not None:
            choice["logprobs"] = _chat_logprobs(entries)
    else:
        choice = {"index": 0, "text": answer.text, "finish_reason": reason}
        if logprobs is not None:
            choice["logprobs"] = _completion_logprobs(entries)
    obj = "chat.completion" if chat else "text_completion"
    return JSONResponse(head | {"object": obj, "choices": [choice], "usage": _usage(final)})


@openai_route
async def chat_completions(request: Request) -> Response:
    return await _text_request(request, "chat")


@openai_route
async def completions(request: Request) -> Response:
    return await _text_request(request, "completion")


# -- /v1/embeddings -------------------------------------------------------------------------


@openai_route
async def embeddings(request: Request) -> Response:
    state = state_of(request)
    body = await json_body(request)
    name = model_name(body)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not inputs or not isinstance(inputs, list) or not all(isinstance(x, str)
                                                             for x in inputs):
        raise bad_request("invalid input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request(f"Invalid value for 'encoding_format' = {encoding}. Supported "
                          "values: ['float', 'base64'].")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool)
                                   or not isinstance(dimensions, int)):
        raise bad_request("dimensions must be an integer")
    options = sampling_options({k: v for k, v in body.items() if k in EXTRA_OPTIONS | {"options"}})
    spec = resolve_model(state, name, None)
    events = run_model(state, spec, options, keep_alive_of(body),
                       lambda runner: runner.embed(inputs, dimensions=dimensions,
                                                   num_ctx=options.get("num_ctx")))
    async with aclosing(events):
        result, _ = await first_event(events)
    assert isinstance(result, Embeddings)

    def encode(v: list[float]) -> list[float] | str:
        if encoding == "float":
            return v
        return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii")

    data = [{"object": "embedding", "embedding": encode(v), "index": i}
            for i, v in enumerate(result.vectors)]
    return JSONResponse({"object": "list", "data": data, "model": name,
                         "usage": {"prompt_tokens": result.prompt_eval_count,
                                   "total_tokens": result.prompt_eval_count}})


# -- /v1/models -----------------------------------------------------------------------------


def _model_card(name: str, namespace: str, modified_ns: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": modified_ns // 1_000_000_000,
            "owned_by": namespace}


@openai_route
async def list_models(request: Request) -> Response:
    entries = await run_in_threadpool(state_of(request).store.list_models)
    data = [_model_card(e.name.display_shortest(), e.name.namespace, e.modified_ns)
            for e in entries]
    return JSONResponse({"object": "list", "data": data})


@openai_route
async def retrieve_model(request: Request) -> Response:
    name = request.path_params["model"]
    model = state_of(request).find_model(name)
    if model is None:
        raise APIError(404, f"model '{name}' not found")
    return JSONResponse(_model_card(name, model.name.namespace, model.modified_ns))
