"""The Anthropic-compatible layer: POST /v1/messages, the Messages API, so the `anthropic` SDKs
and tools built on them (Claude Code) work against this server unchanged.

Source of truth: Ollama's anthropic/anthropic.go (the translation both ways) and
middleware/anthropic.go (the route: checks, error shapes, streaming headers). A request is
turned into a native chat: `system` (a string, or text blocks joined) becomes a system message;
each message's text blocks are joined into one message, `tool_use` blocks become its tool calls,
a `thinking` block its `thinking`, and each `tool_result` a `tool` message (before the user's
own text); `max_tokens` is `num_predict`, `stop_sequences` is `stop`; `thinking: {type:
enabled}` asks the model to think (`budget_tokens` is accepted and not enforced, as Ollama
does), `output_config.effort` names a level, and a model that cannot think is asked nothing
rather than refused. The answer comes back as a `message` whose content is a thinking block,
a text block and tool_use blocks (ids `call_…`, as Ollama gives them), with `stop_reason`
end_turn, max_tokens or tool_use; or, streaming, as server-sent events: message_start, a ping,
content_block_start / content_block_delta (text_delta, thinking_delta, input_json_delta) /
content_block_stop for each block in turn, message_delta (stop_reason, usage), message_stop.

Errors are Anthropic's `{"type": "error", "error": {"type", "message"}, "request_id"}` with
the native status (400 invalid_request_error, 404 not_found_error, 503 overloaded_error …);
one in the middle of a stream is sent as an `error` event before the stream closes.

Not here: Anthropic's built-in web_search tool, which Ollama runs through ollama.com (it is
left out of the tools the model sees), and /v1/messages/count_tokens, which Ollama does not
serve either. Beyond Ollama, as under /v1 (openai.py): Ollama's options in an `options` object
or as top-level fields, and `keep_alive`; a tool result carries the name of the tool it
answers; `stop_sequence` is always present (null) and a thinking block has an empty
`signature`, as the SDK's types expect.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ollamapy.contract import Finished, ModelSpec, Text
from ollamapy.server.errors import APIError, bad_request, error_headers, model_not_found
from ollamapy.server.openai import EXTRA_OPTIONS, error_payload, errors_as, first_event
from ollamapy.server.running import (
    check_options,
    keep_alive_of,
    run_model,
    whole_answer,
    with_call_ids,
)
from ollamapy.server.schemas import GO_TYPES, json_kind, parse_json_body
from ollamapy.server.state import State
from ollamapy.server.streaming import dumps
from ollamapy.server.thinking import LEVELS, Think, resolve_think

if TYPE_CHECKING:
    from ollamapy.scheduler import AnyRunner

# Ollama's NewError, with Anthropic's own type for 413
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}
# MessagesRequest's fields: name → (the check in schemas.GO_TYPES, the Go type errors name)
FIELDS: dict[str, tuple[str, str]] = {
    "model": ("string", "string"), "max_tokens": ("int", "int"),
    "messages": ("[]api.Message", "[]anthropic.MessageParam"),
    "system": ("interface {}", "interface {}"), "stream": ("bool", "bool"),
    "temperature": ("float64", "float64"), "top_p": ("float64", "float64"),
    "top_k": ("int", "int"), "stop_sequences": ("[]string", "[]string"),
    "tools": ("api.Tools", "[]anthropic.Tool"),
    "tool_choice": ("map[string]interface {}", "anthropic.ToolChoice"),
    "thinking": ("map[string]interface {}", "anthropic.ThinkingConfig"),
    "metadata": ("map[string]interface {}", "anthropic.Metadata"),
    "output_config": ("map[string]interface {}", "anthropic.OutputConfig"),
    "options": ("map[string]interface {}", "map[string]interface {}"),
    "keep_alive": ("*api.Duration", "api.Duration"),
}
Event = tuple[str, dict[str, Any]]  # (SSE event name, its data)


def new_id(prefix: str) -> str:
    """Ollama's ids: the prefix, "_" and 24 hex digits (msg_…, req_…)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"),
                                       "message": message}, "request_id": new_id("req")}


def anthropic_error(status: int, message: str,
                    headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(error_body(status, message), status_code=status,
                        headers=error_headers(status, headers))


def _type_error(value: Any, field: str, go_type: str) -> APIError:
    return bad_request(f"json: cannot unmarshal {json_kind(value)} into Go struct field "
                       f"MessagesRequest.{field} of type {go_type}")


# -- the request ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A Messages request as the native chat it becomes."""

    model: str
    messages: list[dict[str, Any]]
    options: dict[str, Any]
    tools: list[dict[str, Any]]
    think: Think
    stream: bool
    keep_alive: float | None


def from_messages_request(body: Any) -> ChatRequest:
    """Check a parsed body (Ollama's texts for what it refuses) and translate it."""
    if not isinstance(body, dict):
        raise bad_request(f"json: cannot unmarshal {json_kind(body)} into Go value of type "
                          "anthropic.MessagesRequest")
    fields = _checked(body)
    if not fields.get("model"):
        raise bad_request("model is required")
    if fields.get("max_tokens", 0) <= 0:
        raise bad_request("max_tokens is required and must be positive")
    if not fields.get("messages"):
        raise bad_request("messages is required")
    messages = _system(fields.get("system")) + convert_messages(fields["messages"])
    return ChatRequest(model=fields["model"], messages=messages, options=_options(fields),
                       tools=convert_tools(fields.get("tools") or []), think=_think(fields),
                       stream=fields.get("stream", False), keep_alive=keep_alive_of(fields))


def _checked(body: Mapping[str, Any]) -> dict[str, Any]:
    """The known fields present and non-null, type-checked; top-level Ollama options kept."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if value is None:
            continue
        if key not in FIELDS:
            if key in EXTRA_OPTIONS:
                out[key] = value
            continue
        check, go_type = FIELDS[key]
        if not GO_TYPES[check](value):
            raise _type_error(value, key, go_type)
        out[key] = int(value) if check == "int" else value
    return out


def _options(fields: Mapping[str, Any]) -> dict[str, Any]:
    """max_tokens → num_predict, the sampling fields under their Ollama names; Ollama's own
    options (the `options` object, then top-level names) under them."""
    options: dict[str, Any] = dict(fields.get("options") or {})
    options |= {k: v for k, v in fields.items() if k in EXTRA_OPTIONS}
    options["num_predict"] = fields["max_tokens"]
    if fields.get("stop_sequences"):
        options["stop"] = fields["stop_sequences"]
    return check_options(options)


def _think(fields: Mapping[str, Any]) -> Think:
    """thinking.type enabled → on, disabled → off; otherwise output_config.effort's level
    (xhigh is high), else unset."""
    kind = _string_in(fields.get("thinking"), "type", "thinking.type")
    if kind == "enabled":
        return True
    if kind == "disabled":
        return False
    effort = _string_in(fields.get("output_config"), "effort", "output_config.effort")
    effort = effort.strip().lower()
    effort = "high" if effort == "xhigh" else effort
    return effort if effort in LEVELS else None


def _string_in(obj: Mapping[str, Any] | None, key: str, field: str) -> str:
    """obj[key], a string ("" when missing or null); field names it in the error."""
    value = (obj or {}).get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _type_error(value, field, "string")
    return value


def _system(system: Any) -> list[dict[str, Any]]:
    """A string, or blocks whose text blocks are joined; nothing when empty."""
    if isinstance(system, list):
        system = "".join(b["text"] for b in system if isinstance(b, dict)
                         and b.get("type") == "text" and isinstance(b.get("text"), str))
    if isinstance(system, str) and system:
        return [{"role": "system", "content": system}]
    return []


# -- messages -------------------------------------------------------------------------------


def convert_messages(raw: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names_by_id: dict[str, str] = {}  # tool_use id → tool name, for the results that follow
    for message in raw:
        out += convert_message(message, names_by_id)
    return out


def convert_message(message: Mapping[str, Any], names_by_id: dict[str, str]
                    ) -> list[dict[str, Any]]:
    """One Anthropic message → native messages: the message itself (when it holds anything)
    and a `tool` message per tool result, those first in a user's turn."""
    role = message.get("role")
    if role is None:
        raise bad_request("message role is required")
    if not isinstance(role, str):
        raise _type_error(role, "messages.role", "string")
    role = role.lower()
    text: list[str] = []
    images: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    thinking = ""
    for block in _blocks(message.get("content")):
        kind = block.get("type")
        if kind == "text":
            text.append(_text(block))
        elif kind == "image":
            images.append(_image(block.get("source")))
        elif kind in ("tool_use", "server_tool_use"):
            calls.append(_tool_use(block, names_by_id, required=kind == "tool_use"))
        elif kind == "tool_result":
            results.append(_tool_result(block, names_by_id))
        elif kind == "web_search_tool_result":
            results.append(_tool_message(_web_search_text(block.get("content")), [], block,
                                         names_by_id))
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking = block["thinking"]
        # other blocks (redacted_thinking, document …) are ignored, as Ollama does
    msg: dict[str, Any] = {"role": role, "content": "".join(text)}
    if images:
        msg["images"] = images
    if calls:
        msg["tool_calls"] = calls
    if thinking:
        msg["thinking"] = thinking
    own = [msg] if msg["content"] or images or calls or thinking else []
    return results + own if role == "user" else own + results


def _blocks(content: Any) -> list[Mapping[str, Any]]:
    """A message's content: a string is one text block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if content is None:
        return []
    if not isinstance(content, list):
        raise _type_error(content, "messages.content", "[]anthropic.ContentBlock")
    for block in content:
        if not isinstance(block, dict):
            raise _type_error(block, "messages.content", "anthropic.ContentBlock")
    return content


def _text(block: Mapping[str, Any]) -> str:
    return _string_in(block, "text", "messages.content.text")


def _image(source: Any) -> str:
    """A base64 image's data (checked); URL images are refused, as Ollama does."""
    if not isinstance(source, dict):
        raise bad_request("invalid image source")
    if source.get("type") != "base64":
        raise bad_request(f"invalid image source type: {source.get('type') or ''}. Only "
                          "base64 images are supported.")
    data = _string_in(source, "data", "messages.content.source.data")
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad_request(f"invalid base64 image data: {e}") from None
    return data


def _tool_use(block: Mapping[str, Any], names_by_id: dict[str, str], *, required: bool
              ) -> dict[str, Any]:
    ident = _string_in(block, "id", "messages.content.id")
    name = _string_in(block, "name", "messages.content.name")
    if required and not ident:
        raise bad_request("tool_use block missing required 'id' field")
    if required and not name:
        raise bad_request("tool_use block missing required 'name' field")
    arguments = block.get("input")
    if arguments is not None and not isinstance(arguments, dict):
        raise _type_error(arguments, "messages.content.input", "api.ToolCallFunctionArguments")
    if ident and name:
        names_by_id[ident] = name
    call: dict[str, Any] = {"function": {"name": name, "arguments": arguments or {}}}
    return {"id": ident, **call} if ident else call


def _tool_result(block: Mapping[str, Any], names_by_id: Mapping[str, str]) -> dict[str, Any]:
    """content: a string, or blocks whose text is joined and whose images are kept."""
    content = block.get("content")
    if isinstance(content, list):
        parts = [b for b in content if isinstance(b, dict)]
        text = "".join(b["text"] for b in parts if b.get("type") == "text"
                       and isinstance(b.get("text"), str))
        images = [_image(b.get("source")) for b in parts if b.get("type") == "image"]
        return _tool_message(text, images, block, names_by_id)
    return _tool_message(content if isinstance(content, str) else "", [], block, names_by_id)


def _tool_message(content: str, images: list[str], block: Mapping[str, Any],
                  names_by_id: Mapping[str, str]) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "tool", "content": content}
    if images:
        msg["images"] = images
    call_id = block.get("tool_use_id")
    if isinstance(call_id, str) and call_id:
        msg["tool_call_id"] = call_id
        if call_id in names_by_id:
            msg["tool_name"] = names_by_id[call_id]
    return msg


def _web_search_text(content: Any) -> str:
    """A web search result from an earlier turn, as Ollama writes it for the model."""
    items = content if isinstance(content, list) else [content]
    lines = []
    for item in items:
        if isinstance(item, str):
            return item
        if not isinstance(item, dict):
            continue
        if item.get("type") == "web_search_tool_result_error":
            code = item.get("error_code") or ""
            return "web_search_tool_result_error" + (f": {code}" if code else "")
        if item.get("type") == "web_search_result":
            lines.append(f"- {item.get('title') or ''}: {item.get('url') or ''}\n")
    return "".join(lines)


def convert_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic's tools → Ollama's functions; the built-in web_search is left out."""
    out = []
    for tool in tools:
        kind = tool.get("type")
        if isinstance(kind, str) and kind.startswith("web_search"):
            continue
        name = _string_in(tool, "name", "tools.name")
        description = _string_in(tool, "description", "tools.description")
        schema = tool.get("input_schema")
        if schema is not None and not isinstance(schema, dict):
            raise bad_request(f'invalid input_schema for tool "{name}": json: cannot unmarshal '
                              f"{json_kind(schema)} into Go value of type "
                              "api.ToolFunctionParameters")
        function = {"name": name, "description": description,
                    "parameters": schema or {"type": "object", "properties": {}}}
        out.append({"type": "function", "function": function})
    return out


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """Ollama's guess for message_start, before the prompt is counted: a token per four
    characters of the system prompt, the messages and the tools (at least 1)."""
    chars = _chars(body.get("system")) + _chars(body.get("messages")) + _chars(body.get("tools"))
    return max(1, chars // 4)


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    if isinstance(value, dict):  # an image's bytes are not text
        return sum(_chars(v) for k, v in value.items() if k != "source")
    return 0


# -- the answer -----------------------------------------------------------------------------


def stop_reason(done_reason: str, tool_use: bool) -> str | None:
    if tool_use:
        return "tool_use"
    if not done_reason:
        return None
    return {"stop": "end_turn", "length": "max_tokens"}.get(done_reason, "stop_sequence")


def usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens}


def tool_use_block(call: Mapping[str, Any], arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
            "input": arguments}


def message_body(ident: str, model: str, content: list[dict[str, Any]],
                 reason: str | None, counts: dict[str, int]) -> dict[str, Any]:
    return {"id": ident, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": reason, "stop_sequence": None, "usage": counts}


def to_message(ident: str, model: str, thinking: str, text: str,
               calls: Sequence[Mapping[str, Any]], done: Finished) -> dict[str, Any]:
    """The whole answer: a thinking block, a text block, then the tool calls (each block only
    when there is something in it)."""
    content: list[dict[str, Any]] = []
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})
    if text:
        content.append({"type": "text", "text": text})
    content += [tool_use_block(c, c["function"]["arguments"]) for c in with_call_ids(calls)]
    return message_body(ident, model, content, stop_reason(done.done_reason, bool(calls)),
                        usage(done.prompt_eval_count, done.eval_count))


class StreamConverter:
    """Runner events → the Messages stream's events. Thinking and text open a block of their
    kind (closing the one open, if another); each tool call is a block of its own."""

    def __init__(self, ident: str, model: str) -> None:
        self.ident, self.model = ident, model
        self.index = 0  # the open block's, or the next one's
        self.open: str | None = None  # "thinking" or "text"
        self.calls_sent = 0

    def start(self, input_tokens: int) -> list[Event]:
        message = message_body(self.ident, self.model, [], None, usage(input_tokens, 0))
        return [("message_start", {"type": "message_start", "message": message}),
                ("ping", {"type": "ping"})]

    def text(self, event: Text) -> list[Event]:
        out = []
        if event.thinking:
            out += self._delta("thinking", {"type": "thinking_delta",
                                            "thinking": event.thinking})
        if event.text:
            out += self._delta("text", {"type": "text_delta", "text": event.text})
        return out + self._tool_uses(event.tool_calls)

    def finish(self, done: Finished) -> list[Event]:
        """Calls not streamed yet (a runner that gives them only at the end), the open block's
        end, the stop reason and the counts."""
        out = self._tool_uses(done.tool_calls[self.calls_sent:]) + self._close()
        reason = stop_reason(done.done_reason, self.calls_sent > 0)
        delta = {"type": "message_delta", "delta": {"stop_reason": reason,
                                                    "stop_sequence": None},
                 "usage": usage(done.prompt_eval_count, done.eval_count)}
        return out + [("message_delta", delta), ("message_stop", {"type": "message_stop"})]

    def _delta(self, kind: str, delta: dict[str, Any]) -> list[Event]:
        out = []
        if self.open != kind:
            out += self._close()
            block = {"type": kind, kind: ""} | ({"signature": ""} if kind == "thinking" else {})
            out.append(("content_block_start", {"type": "content_block_start",
                                                "index": self.index, "content_block": block}))
            self.open = kind
        return out + [("content_block_delta", {"type": "content_block_delta",
                                               "index": self.index, "delta": delta})]

    def _close(self) -> list[Event]:
        if self.open is None:
            return []
        self.open = None
        self.index += 1
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index - 1})]

    def _tool_uses(self, calls: Sequence[Mapping[str, Any]]) -> list[Event]:
        out = []
        for call in with_call_ids(calls):
            out += self._close()
            partial = json.dumps(call["function"]["arguments"], ensure_ascii=False)
            out += [("content_block_start", {"type": "content_block_start", "index": self.index,
                                             "content_block": tool_use_block(call, {})}),
                    ("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                             "delta": {"type": "input_json_delta",
                                                       "partial_json": partial}}),
                    ("content_block_stop", {"type": "content_block_stop", "index": self.index})]
            self.index += 1
            self.calls_sent += 1
        return out


def sse(name: str, data: Mapping[str, Any]) -> str:
    return f"event: {name}\ndata: {dumps(data)}\n\n"


# -- the route ------------------------------------------------------------------------------


anthropic_route = errors_as(anthropic_error)


@anthropic_route
async def messages(request: Request) -> Response:
    state: State = request.app.state.ollamapy
    body = parse_json_body(await request.body())
    req = from_messages_request(body)
    spec = _spec(state, req)
    think = resolve_think(spec, req.model, req.think, relax=True)

    def start(runner: AnyRunner) -> AsyncIterator[Any]:
        return runner.chat(req.messages, runner.options(req.options), tools=req.tools or None,
                           think=think)

    events = run_model(state, spec, req.options, req.keep_alive, start)
    first = await first_event(events)  # before any byte: its error keeps its status
    ident = new_id("msg")
    if not req.stream:
        return JSONResponse(await _whole(ident, req.model, first, events))
    # message_start's count is a guess unless the answer is already over
    input_tokens = first[0].prompt_eval_count if isinstance(first[0], Finished) \
        else estimate_input_tokens(body)
    return StreamingResponse(_stream(StreamConverter(ident, req.model), input_tokens, first,
                                     events),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _spec(state: State, req: ChatRequest) -> ModelSpec:
    """The model, if it can serve the request (the native chat's checks and texts)."""
    spec = state.resolve(req.model)
    if spec is None:
        raise model_not_found(req.model)
    if "completion" not in spec.capabilities:
        raise bad_request(f'"{req.model}" does not support chat')
    if req.tools and "tools" not in spec.capabilities:
        raise bad_request(f"{state.full_name(req.model)} does not support tools")
    if any(m.get("images") for m in req.messages):
        raise bad_request(f'"{req.model}" does not support images')
    return spec


async def _whole(ident: str, model: str, first: tuple[Any, int],
                 events: AsyncIterator[tuple[Any, int]]) -> dict[str, Any]:
    answer = await whole_answer(first, events)
    return to_message(ident, model, answer.thinking, answer.text, answer.final.tool_calls,
                      answer.final)


async def _stream(converter: StreamConverter, input_tokens: int, first: tuple[Any, int],
                  events: AsyncIterator[tuple[Any, int]]) -> AsyncIterator[str]:
    """The events, then message_stop; an error midway is an `error` event, and the end."""

    def of(event: Any) -> list[Event]:
        return converter.finish(event) if isinstance(event, Finished) else converter.text(event)

    try:
        for name, data in converter.start(input_tokens) + of(first[0]):
            yield sse(name, data)
        async for event, _ in events:
            for name, data in of(event):
                yield sse(name, data)
    except Exception as e:
        status, message = error_payload(e)
        body = error_body(status, message)
        yield sse("error", {"type": "error", "error": body["error"]})
    finally:
        await events.aclose()
