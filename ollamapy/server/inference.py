"""Handlers that run a model: /api/generate, /api/chat, /api/embed, /api/embeddings.

Each handler checks the request (Ollama's field types and error texts), resolves the model,
and streams what the runner yields, shaped as Ollama's chunks. Nothing here touches torch,
tokens or templates: the runner does.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ollamapy.contract import Finished, ModelSpec, Text
from ollamapy.server import schemas
from ollamapy.server.errors import APIError, bad_request, model_not_found, model_not_found_pull
from ollamapy.server.running import (
    check_options,
    keep_alive_of,
    logprob_entries,
    metrics,
    run_model,
    with_call_ids,
)
from ollamapy.server.state import State
from ollamapy.server.streaming import Chunk, OllamaJSON, created_at, respond
from ollamapy.server.thinking import resolve_think, think_of

if TYPE_CHECKING:
    from ollamapy.scheduler import AnyRunner


def _check_common(fields: Mapping[str, Any]) -> None:
    top = fields.get("top_logprobs", 0)
    if not 0 <= top <= 20:
        raise bad_request("top_logprobs must be between 0 and 20")


def _logprobs(fields: Mapping[str, Any]) -> int | None:
    """None: no logprobs; else how many alternatives to report with each token."""
    return fields.get("top_logprobs", 0) if fields.get("logprobs") else None


def _truncation(done: Finished) -> dict[str, Any]:
    """Beyond Ollama: a prompt cut to fit num_ctx says so on the final chunk."""
    if not (done.prompt_tokens_dropped or done.messages_dropped):
        return {}
    return {"truncated": True, "prompt_tokens_dropped": done.prompt_tokens_dropped,
            "messages_dropped": done.messages_dropped}


def _with_logprobs(chunk: Chunk, event: Text) -> Chunk:
    return chunk | {"logprobs": logprob_entries(event.logprobs)} if event.logprobs else chunk


def _merge_logprobs(chunks: list[Chunk]) -> dict[str, Any]:
    entries = [e for c in chunks for e in c.get("logprobs", ())]
    return {"logprobs": entries} if entries else {}


def _joined_thinking(parts: list[Mapping[str, Any]]) -> dict[str, str]:
    thinking = "".join(p.get("thinking", "") for p in parts)
    return {"thinking": thinking} if thinking else {}


async def _load_only(state: State, spec: ModelSpec, keep_alive: float | None,
                     chunk: Chunk) -> Response:
    """An empty prompt loads the model (done_reason "load"); with keep_alive 0 it unloads
    it without loading first ("unload")."""
    if keep_alive == 0:
        state.scheduler.unload(spec.name)
        return OllamaJSON({**chunk, "created_at": created_at(), "done": True,
                           "done_reason": "unload"})
    async with state.scheduler.use(spec, None, keep_alive):
        pass
    return OllamaJSON({**chunk, "created_at": created_at(), "done": True, "done_reason": "load"})


# -- /api/generate --------------------------------------------------------------------------


async def generate(request: Request) -> Response:
    state: State = request.app.state.ollamapy
    fields = schemas.decode(await request.body(), schemas.GENERATE, "GenerateRequest")
    name = fields.get("model", "")
    if fields.get("raw") and (fields.get("template") or fields.get("system")
                              or fields.get("context")):
        raise bad_request("raw mode does not support template, system, or context")
    _check_common(fields)
    think = think_of(fields)
    keep_alive = keep_alive_of(fields)
    options = check_options(fields.get("options"))
    spec = state.resolve(name)
    if spec is None:
        raise model_not_found(name)
    if "completion" not in spec.capabilities:
        raise bad_request(f'"{name}" does not support generate')
    think = resolve_think(spec, name, think)
    if fields.get("suffix") and "insert" not in spec.capabilities:
        raise bad_request(f"{state.full_name(name)} does not support insert")
    if fields.get("images"):
        raise bad_request(f'"{name}" does not support images')
    if not fields.get("prompt") and not fields.get("suffix"):
        return await _load_only(state, spec, keep_alive, {"model": name, "response": ""})
    raw = fields.get("raw", False)

    def start(runner: AnyRunner) -> AsyncIterator[Any]:
        return runner.generate(fields.get("prompt", ""), runner.options(options),
                               system=fields.get("system"), raw=raw,
                               template=fields.get("template"), suffix=fields.get("suffix"),
                               context=fields.get("context"),
                               truncate=fields.get("truncate", True),
                               shift=fields.get("shift", True), logprobs=_logprobs(fields),
                               format=fields.get("format"), think=think)

    async def chunks() -> AsyncIterator[Chunk]:
        t_start = time.perf_counter_ns()
        async with aclosing(run_model(state, spec, options, keep_alive, start)) as events:
            async for event, load_ns in events:
                if isinstance(event, Finished):
                    final: Chunk = {"model": name, "created_at": created_at(), "response": "",
                                    "done": True, "done_reason": event.done_reason}
                    if not raw:
                        final["context"] = event.context
                    yield final | metrics(event, t_start, load_ns) | _truncation(event)
                else:
                    chunk = {"model": name, "created_at": created_at(), "response": event.text}
                    if event.thinking:
                        chunk["thinking"] = event.thinking
                    yield _with_logprobs(chunk | {"done": False}, event)

    def merge(all_chunks: list[Chunk]) -> Chunk:
        return all_chunks[-1] | {"response": "".join(c["response"] for c in all_chunks)} | \
            _joined_thinking(all_chunks) | _merge_logprobs(all_chunks)

    return await respond(chunks(), stream=fields.get("stream", True), merge=merge)


# -- /api/chat ------------------------------------------------------------------------------


def _message(event: Text) -> dict[str, Any]:
    """A streamed piece as Ollama's message: content, then thinking and tool calls (each call
    in the chunk where it was parsed) when there are any."""
    message: dict[str, Any] = {"role": "assistant", "content": event.text}
    if event.thinking:
        message["thinking"] = event.thinking
    if event.tool_calls:
        message["tool_calls"] = with_call_ids(event.tool_calls)
    return message


async def chat(request: Request) -> Response:
    state: State = request.app.state.ollamapy
    fields = schemas.decode(await request.body(), schemas.CHAT, "ChatRequest")
    name = schemas.require_model(fields)
    messages = schemas.messages(fields.get("messages", []), "ChatRequest")
    _check_common(fields)
    think = think_of(fields)
    keep_alive = keep_alive_of(fields)
    options = check_options(fields.get("options"))
    spec = state.resolve(name)
    if spec is None:
        raise model_not_found(name)
    if "completion" not in spec.capabilities:
        raise bad_request(f'"{name}" does not support chat')
    think = resolve_think(spec, name, think)
    tools = fields.get("tools") or []
    if tools and "tools" not in spec.capabilities:
        raise bad_request(f"{state.full_name(name)} does not support tools")
    if any(m.get("images") for m in messages):
        raise bad_request(f'"{name}" does not support images')
    empty = {"role": "assistant", "content": ""}
    if not messages:
        return await _load_only(state, spec, keep_alive, {"model": name, "message": empty})

    def start(runner: AnyRunner) -> AsyncIterator[Any]:
        return runner.chat(messages, runner.options(options), tools=tools or None,
                           truncate=fields.get("truncate", True),
                           shift=fields.get("shift", True), logprobs=_logprobs(fields),
                           format=fields.get("format"), think=think)

    async def chunks() -> AsyncIterator[Chunk]:
        t_start = time.perf_counter_ns()
        async with aclosing(run_model(state, spec, options, keep_alive, start)) as events:
            async for event, load_ns in events:
                if isinstance(event, Finished):
                    yield {"model": name, "created_at": created_at(), "message": empty,
                           "done": True, "done_reason": event.done_reason,
                           } | metrics(event, t_start, load_ns) | _truncation(event)
                else:
                    yield _with_logprobs({"model": name, "created_at": created_at(),
                                          "message": _message(event), "done": False}, event)

    def merge(all_chunks: list[Chunk]) -> Chunk:
        message = {"role": "assistant",
                   "content": "".join(c["message"]["content"] for c in all_chunks)}
        message |= _joined_thinking([c["message"] for c in all_chunks])
        calls = [t for c in all_chunks for t in c["message"].get("tool_calls", ())]
        if calls:
            message["tool_calls"] = calls
        return all_chunks[-1] | {"message": message} | _merge_logprobs(all_chunks)

    return await respond(chunks(), stream=fields.get("stream", True), merge=merge)


# -- /api/embed and /api/embeddings -----------------------------------------------------------


def _embed_inputs(raw: Any) -> list[str]:
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return raw
    raise bad_request("invalid input type")


async def _embed(state: State, spec: ModelSpec, inputs: list[str], options: Mapping[str, Any],
                 keep_alive: float | None, **kwargs: Any) -> tuple[Any, int]:
    events = run_model(state, spec, options, keep_alive,
                       lambda runner: runner.embed(inputs, **kwargs))
    async with aclosing(events):
        async for event, load_ns in events:
            return event, load_ns
    raise APIError(500, "no embeddings")


async def embed(request: Request) -> Response:
    state: State = request.app.state.ollamapy
    t_start = time.perf_counter_ns()
    fields = schemas.decode(await request.body(), schemas.EMBED, "EmbedRequest")
    name = schemas.require_model(fields)
    inputs = _embed_inputs(fields.get("input"))
    keep_alive = keep_alive_of(fields)
    options = check_options(fields.get("options"))
    spec = state.resolve(name)
    if spec is None:
        raise model_not_found_pull(name)
    if not inputs:
        async with state.scheduler.use(spec, options, keep_alive):
            return OllamaJSON({"model": name, "embeddings": []})
    result, load_ns = await _embed(state, spec, inputs, options, keep_alive,
                                   truncate=fields.get("truncate", True),
                                   dimensions=fields.get("dimensions"),
                                   num_ctx=options.get("num_ctx"))
    return OllamaJSON({"model": name, "embeddings": result.vectors,
                       "total_duration": time.perf_counter_ns() - t_start,
                       "load_duration": load_ns, "prompt_eval_count": result.prompt_eval_count})


async def embeddings(request: Request) -> Response:
    """The legacy endpoint: one prompt, one vector, not normalised."""
    state: State = request.app.state.ollamapy
    fields = schemas.decode(await request.body(), schemas.EMBEDDINGS, "EmbeddingRequest")
    name = schemas.require_model(fields)
    keep_alive = keep_alive_of(fields)
    options = check_options(fields.get("options"))
    spec = state.resolve(name)
    if spec is None:
        raise model_not_found_pull(name)
    if not fields.get("prompt"):
        async with state.scheduler.use(spec, options, keep_alive):
            return OllamaJSON({"embedding": []})
    result, _ = await _embed(state, spec, [fields["prompt"]], options, keep_alive,
                             normalize=False)
    return OllamaJSON({"embedding": result.vectors[0]})


# -- /api/tokenize and /api/detokenize (beyond Ollama) ---------------------------------------


async def _tokens(request: Request, schema: schemas.Schema, struct: str,
                  work: Any) -> Response:
    state: State = request.app.state.ollamapy
    fields = schemas.decode(await request.body(), schema, struct)
    name = schemas.require_model(fields)
    spec = state.resolve(name)
    if spec is None:
        raise model_not_found(name)
    events = run_model(state, spec, None, keep_alive_of(fields),
                       lambda runner: _one(work(runner, fields)))
    async with aclosing(events):
        async for result, _ in events:
            return OllamaJSON({"model": name, **result})
    raise APIError(500, "no result")


async def _one(result: Any) -> AsyncIterator[Any]:
    yield await result


async def tokenize(request: Request) -> Response:
    """{model, content[, add_special, parse_special]} → {model, tokens}."""
    async def work(runner: AnyRunner, fields: Mapping[str, Any]) -> dict[str, Any]:
        tokens = await runner.tokenize(fields.get("content", ""),
                                       add_special=fields.get("add_special", False),
                                       parse_special=fields.get("parse_special", True))
        return {"tokens": tokens}

    return await _tokens(request, schemas.TOKENIZE, "TokenizeRequest", work)


async def detokenize(request: Request) -> Response:
    """{model, tokens} → {model, content}."""
    async def work(runner: AnyRunner, fields: Mapping[str, Any]) -> dict[str, Any]:
        return {"content": await runner.detokenize(fields.get("tokens", []))}

    return await _tokens(request, schemas.DETOKENIZE, "DetokenizeRequest", work)
