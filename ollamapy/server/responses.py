"""OpenAI's Responses API at POST /v1/responses: stateless, as Ollama serves it.

Ollama's `openai/responses.go` (the request → a chat request, the response object, the stream
converter) and `middleware/openai.go` (`ResponsesMiddleware`) are the source of truth. The
request becomes a chat: `instructions` a system message, `input` (a string, or items: messages
of input_text/output_text parts, function_call, function_call_output, reasoning) the messages,
function `tools` Ollama's tools, `text.format` its `format`, `reasoning.effort` its `think`,
`temperature`, `top_p` and `max_output_tokens` its options. The answer comes back as one
response object, or as server-sent events (`event: <type>` / `data: <json>`, each with its
sequence_number): response.created, response.in_progress, then each output item in the order
the model writes it (reasoning: its summary deltas; message: its output_text deltas;
function_call: its arguments), and last response.completed.

Where this differs from Ollama, on purpose:

- an answer cut off by max_output_tokens is status "incomplete" with incomplete_details
  `{"reason": "max_output_tokens"}` and its stream ends with response.incomplete, as OpenAI's
  does (Ollama says "completed", and a client cannot tell);
- text the model writes beside a tool call stays, as its own message item (Ollama drops it),
  and every item is closed (done events) before the next opens;
- `previous_response_id` and `conversation` are 400s, as OpenAI answers an id it does not
  hold: nothing is stored here, and Ollama's silent answer without the earlier turns would
  be a wrong one;
- reasoning items also stream response.reasoning_summary_part.added/.done, as OpenAI's do;
- an error after the stream began is an `error` event, then response.failed;
- only function tools (and namespaces of them): web_search, a cloud tool in Ollama, is a 400.

Like the rest of /v1, Ollama's options and `keep_alive` are honoured as extra body fields.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ollamapy.contract import Finished, Text
from ollamapy.server.errors import bad_request
from ollamapy.server.openai import (
    error_payload,
    first_event,
    json_body,
    model_name,
    ollama_format,
    openai_route,
    openai_tool_calls,
    resolve_model,
    sampling_options,
    state_of,
)
from ollamapy.server.running import keep_alive_of, run_model
from ollamapy.server.streaming import dumps
from ollamapy.server.thinking import resolve_think, think_of_effort

if TYPE_CHECKING:
    from ollamapy.scheduler import AnyRunner

Event = tuple[str, dict[str, Any]]  # (its type, its data)
JSONObject = dict[str, Any]


class InvalidItem(ValueError):
    """An input item that cannot be read; the handler names its place (`input[3]: ...`)."""


# -- the request ------------------------------------------------------------------------------


def refuse_state(body: Mapping[str, Any]) -> None:
    """Nothing is stored, so no earlier response or conversation can be found (OpenAI's
    answer to an id it does not hold)."""
    previous = body.get("previous_response_id")
    if previous is not None:
        raise bad_request(f"Previous response with id '{previous}' not found. ollamapy's "
                          "/v1/responses is stateless: send the whole conversation as input")
    if body.get("conversation") is not None:
        raise bad_request("conversation is not supported: ollamapy's /v1/responses is "
                          "stateless; send the whole conversation as input")


def input_messages(body: Mapping[str, Any]) -> list[JSONObject]:
    """`instructions` and `input` → Ollama's chat messages."""
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise bad_request("instructions must be a string")
    messages = [{"role": "system", "content": instructions}] if instructions else []
    raw = body.get("input")
    if isinstance(raw, str):
        if raw:
            messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        messages += _item_messages(raw)
    elif raw is not None:
        raise bad_request("input must be a string or array")
    if not messages:
        raise bad_request("input is required")
    return messages


def _item_messages(items: Sequence[Any]) -> list[JSONObject]:
    """Input items → messages, as Ollama joins them: a function_call joins the assistant turn
    before it; a reasoning item's text is the next assistant turn's thinking; an assistant
    message between a call and its output joins the call's turn."""
    out: list[JSONObject] = []
    thinking = ""  # a reasoning item's, waiting for its assistant turn
    names: dict[str, str] = {}  # call_id → the function's name, for the tool results
    for i, item in enumerate(items):
        try:
            kind = _item_type(item)
            if kind == "reasoning":
                thinking = _reasoning_text(item)
            elif kind == "function_call":
                turn = _add_call(out, item, names)
                if thinking:
                    turn["thinking"], thinking = thinking, ""
            elif kind == "function_call_output":
                out.append(_tool_result(item, names))
            else:
                msg = _message(item)
                if msg["role"] == "assistant" and thinking:
                    msg["thinking"], thinking = thinking, ""
                if not _joins_call_turn(out, msg, items[i + 1:i + 2]):
                    out.append(msg)
        except InvalidItem as e:
            raise bad_request(f"input[{i}]: {e}") from None
    if thinking:  # reasoning with no turn after it
        out.append({"role": "assistant", "content": "", "thinking": thinking})
    return out


def _item_type(item: Any) -> str:
    if not isinstance(item, dict):
        raise InvalidItem("an input item must be an object")
    kind = item.get("type") or ("message" if item.get("role") else "")
    if not kind:
        raise InvalidItem("input item missing required 'type' field")
    if kind not in ("message", "function_call", "function_call_output", "reasoning"):
        raise InvalidItem(f"unknown input item type: {json.dumps(kind)}")
    return kind


def _message(item: Mapping[str, Any]) -> JSONObject:
    role = item.get("role")
    if not isinstance(role, str) or not role:
        raise InvalidItem("a message needs a role")
    content = item.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list):
        text = _parts_text(content, "content")
    else:
        raise InvalidItem("content must be a string or array")
    return {"role": "system" if role == "developer" else role, "content": text}


def _parts_text(parts: Sequence[Any], field: str) -> str:
    """input_text and output_text parts, joined as Ollama joins them (nothing between)."""
    texts = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "input_file":
            raise InvalidItem("file inputs are not currently supported")
        elif kind == "input_image":
            raise InvalidItem("input_image content is not supported by ollamapy's models")
        else:
            raise InvalidItem(f"{field}[{j}]: unknown content type: {kind}")
    return "".join(texts)


def _reasoning_text(item: Mapping[str, Any]) -> str:
    """Ollama puts the thinking in encrypted_content (plain text); a client that kept only
    the summary sends that."""
    text = item.get("encrypted_content")
    if isinstance(text, str) and text:
        return text
    summary = item.get("summary")
    if not isinstance(summary, list):
        return ""
    return "".join(s["text"] for s in summary
                   if isinstance(s, dict) and isinstance(s.get("text"), str))


def _add_call(out: list[JSONObject], item: Mapping[str, Any], names: dict[str, str]
              ) -> JSONObject:
    """The call, added to the assistant turn before it (or a new one); → that turn."""
    name, call_id, args = item.get("name"), item.get("call_id"), item.get("arguments") or "{}"
    if not isinstance(name, str) or not isinstance(call_id, str) or not isinstance(args, str):
        raise InvalidItem("a function_call needs a name, a call_id and string arguments")
    try:
        arguments = json.loads(args)
    except json.JSONDecodeError as e:
        raise InvalidItem(f"failed to parse function call arguments: {e}") from None
    if not isinstance(arguments, dict):
        raise InvalidItem("function call arguments must be a JSON object")
    names[call_id] = name
    call = {"id": call_id, "function": {"name": name, "arguments": arguments}}
    if out and out[-1]["role"] == "assistant":
        out[-1].setdefault("tool_calls", []).append(call)
    else:
        out.append({"role": "assistant", "content": "", "tool_calls": [call]})
    return out[-1]


def _tool_result(item: Mapping[str, Any], names: Mapping[str, str]) -> JSONObject:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str):
        raise InvalidItem("a function_call_output needs a call_id")
    if isinstance(output, list):
        output = _parts_text(output, "output")
    elif output is not None and not isinstance(output, str):
        raise InvalidItem("output must be a string or array")
    msg = {"role": "tool", "content": output or "", "tool_call_id": call_id}
    return msg | ({"tool_name": names[call_id]} if call_id in names else {})


def _joins_call_turn(out: list[JSONObject], msg: JSONObject, after: Sequence[Any]) -> bool:
    """An assistant message replayed between a function_call and its function_call_output
    joins the call's turn, so the tool result follows the call it answers."""
    following = after[0] if after and isinstance(after[0], dict) else {}
    if msg["role"] != "assistant" or following.get("type") != "function_call_output":
        return False
    last = out[-1] if out else {}
    if last.get("role") != "assistant" or \
            all(c["id"] != following.get("call_id") for c in last.get("tool_calls", ())):
        return False
    last["content"] = "\n".join(t for t in (last["content"], msg["content"]) if t)
    if msg.get("thinking"):
        last["thinking"] = msg["thinking"]
    return True


def function_tools(raw: Any) -> list[JSONObject]:
    """Responses tools (flat: name, description, parameters) → Ollama's (under "function");
    a namespace's members get its name as a prefix ("ns.fn"), as Ollama's do."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request("tools must be an array")
    return [tool for t in raw for tool in _tool(t)]


def _tool(tool: Any, namespace: str = "") -> list[JSONObject]:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind == "namespace":
        members = tool.get("tools") or []
        if not isinstance(members, list):
            raise bad_request("a namespace's tools must be an array")
        prefix = f"{namespace}{tool['name']}." if tool.get("name") else namespace
        return [t for member in members for t in _tool(member, prefix)]
    if kind != "function":
        raise bad_request(f"tool type {json.dumps(kind)} is not supported: ollamapy runs "
                          "function tools only")
    name, params = tool.get("name"), tool.get("parameters")
    if not isinstance(name, str) or not name:
        raise bad_request("a function tool needs a name")
    if params is not None and not isinstance(params, dict):
        raise bad_request(f"the parameters of tool {json.dumps(name)} must be an object")
    return [{"type": "function", "function": {
        "name": name if name.startswith(namespace) else namespace + name,
        "description": tool.get("description") or "",
        "parameters": params or {"type": "object", "properties": {}}}}]


def text_format(body: Mapping[str, Any]) -> Any:
    """text.format → Ollama's format (`openai.ollama_format`; the schema sits in the format
    object itself here)."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    return ollama_format(fmt, fmt.get("schema") if isinstance(fmt, dict) else None,
                         "text.format")


def request_options(body: Mapping[str, Any]) -> dict[str, Any]:
    """Ollama's options: temperature (1.0 unless given), top_p only when given (the model's
    own otherwise, as Ollama leaves it), max_output_tokens → num_predict, and the extras."""
    fields = {**body, "max_tokens": body.get("max_output_tokens"),
              "max_completion_tokens": None}
    options = sampling_options(fields)
    extra = body.get("options") or {}
    if body.get("top_p") is None and "top_p" not in extra:
        del options["top_p"]
    return options


# -- the answer -------------------------------------------------------------------------------


def _ident(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _output_text(text: str) -> JSONObject:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(ident: str, text: str, status: str) -> JSONObject:
    content = [_output_text(text)] if status != "in_progress" else []
    return {"id": ident, "type": "message", "status": status, "role": "assistant",
            "content": content}


def _reasoning_item(ident: str, text: str | None) -> JSONObject:
    if text is None:  # just opened
        return {"id": ident, "type": "reasoning", "summary": []}
    return {"id": ident, "type": "reasoning",
            "summary": [{"type": "summary_text", "text": text}], "encrypted_content": text}


def _usage(done: Finished) -> JSONObject:
    return {"input_tokens": done.prompt_eval_count, "output_tokens": done.eval_count,
            "total_tokens": done.prompt_eval_count + done.eval_count,
            "input_tokens_details": {"cached_tokens": done.prompt_tokens_cached,
                                     "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}}


def _echo(body: Mapping[str, Any]) -> JSONObject:
    """The request's fields that the response object repeats (with OpenAI's defaults)."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    metadata = body.get("metadata")
    return {
        "instructions": body.get("instructions") or None,
        "tools": body.get("tools") or [], "tool_choice": "auto",
        "truncation": body.get("truncation") or "disabled", "parallel_tool_calls": True,
        "text": {"format": fmt or {"type": "text"}},
        "top_p": 1.0 if body.get("top_p") is None else body["top_p"],
        "presence_penalty": 0, "frequency_penalty": 0, "top_logprobs": 0,
        "temperature": 1.0 if body.get("temperature") is None else body["temperature"],
        "reasoning": ({"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
                      if reasoning.get("effort") or reasoning.get("summary") else None),
        "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": None,
        "store": False, "background": bool(body.get("background")),
        "service_tier": "default", "metadata": metadata if isinstance(metadata, dict) else {},
        "safety_identifier": None, "prompt_cache_key": None}


class Conversion:
    """The runner's events → the stream's events; `response` is the object so far (the
    non-streaming answer once `Finished` has been taken)."""

    def __init__(self, body: Mapping[str, Any], model: str) -> None:
        self.id = _ident("resp")
        self.model = model
        self.created_at = int(time.time())
        self.echo = _echo(body)
        self.sequence = 0
        self.output: list[JSONObject] = []  # closed items
        self.open_kind = ""  # "reasoning" or "message": the item being streamed
        self.open_id = ""
        self.open_text = ""
        self.calls_sent = 0
        self.response = self._response("in_progress")

    def _event(self, kind: str, **data: Any) -> Event:
        event = (kind, {"type": kind, "sequence_number": self.sequence, **data})
        self.sequence += 1
        return event

    def _response(self, status: str, usage: JSONObject | None = None,
                  error: JSONObject | None = None) -> JSONObject:
        done = status not in ("in_progress", "failed")
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {"id": self.id, "object": "response", "created_at": self.created_at,
                "completed_at": int(time.time()) if done else None, "status": status,
                "incomplete_details": incomplete, "model": self.model,
                "previous_response_id": None, "output": list(self.output), "error": error,
                **self.echo, "usage": usage}

    def start(self) -> list[Event]:
        return [self._event("response.created", response=self.response),
                self._event("response.in_progress", response=self.response)]

    def take(self, event: Text | Finished) -> list[Event]:
        if isinstance(event, Finished):
            return self._finish(event)
        out = self._reasoning(event.thinking) if event.thinking else []
        if event.text:
            out += self._text(event.text)
        if event.tool_calls:
            out += self._calls(event.tool_calls)
        return out

    def fail(self, message: str) -> list[Event]:
        """An error after the stream began."""
        self.response = self._response("failed", error={"code": "server_error",
                                                        "message": message})
        return [self._event("error", code=None, message=message, param=None),
                self._event("response.failed", response=self.response)]

    # each item: opened (added), deltas, closed (done)

    def _open(self, kind: str, item: JSONObject, part_event: str, **part: Any) -> list[Event]:
        """The item's added event, then its first part's."""
        self.open_kind, self.open_id, self.open_text = kind, item["id"], ""
        index = len(self.output)
        return [self._event("response.output_item.added", output_index=index, item=item),
                self._event(part_event, item_id=item["id"], output_index=index, **part)]

    def _reasoning(self, delta: str) -> list[Event]:
        out = []
        if self.open_kind != "reasoning":
            out = self._close()
            out += self._open("reasoning", _reasoning_item(_ident("rs"), None),
                              "response.reasoning_summary_part.added", summary_index=0,
                              part={"type": "summary_text", "text": ""})
        self.open_text += delta
        return out + [self._event("response.reasoning_summary_text.delta", item_id=self.open_id,
                                  output_index=len(self.output), summary_index=0, delta=delta)]

    def _text(self, delta: str) -> list[Event]:
        out = []
        if self.open_kind != "message":
            out = self._close() + self._open_message()
        self.open_text += delta
        return out + [self._event("response.output_text.delta", item_id=self.open_id,
                                  output_index=len(self.output), content_index=0, delta=delta,
                                  logprobs=[])]

    def _open_message(self) -> list[Event]:
        return self._open("message", _message_item(_ident("msg"), "", "in_progress"),
                          "response.content_part.added", content_index=0,
                          part=_output_text(""))

    def _close(self, status: str = "completed") -> list[Event]:
        kind, ident, text, index = self.open_kind, self.open_id, self.open_text, len(self.output)
        self.open_kind = ""
        if kind == "reasoning":
            item = _reasoning_item(ident, text)
            events = [self._event("response.reasoning_summary_text.done", item_id=ident,
                                  output_index=index, summary_index=0, text=text),
                      self._event("response.reasoning_summary_part.done", item_id=ident,
                                  output_index=index, summary_index=0,
                                  part={"type": "summary_text", "text": text})]
        elif kind == "message":
            item = _message_item(ident, text, status)
            events = [self._event("response.output_text.done", item_id=ident,
                                  output_index=index, content_index=0, text=text, logprobs=[]),
                      self._event("response.content_part.done", item_id=ident,
                                  output_index=index, content_index=0,
                                  part=_output_text(text))]
        else:
            return []
        self.output.append(item)
        return events + [self._event("response.output_item.done", output_index=index,
                                     item=item)]

    def _calls(self, calls: Sequence[Mapping[str, Any]]) -> list[Event]:
        out = self._close()
        for call in openai_tool_calls(calls):
            fn, index, ident = call["function"], len(self.output), _ident("fc")
            item = {"id": ident, "type": "function_call", "status": "completed",
                    "call_id": call["id"], "name": fn["name"], "arguments": fn["arguments"]}
            out += [self._event("response.output_item.added", output_index=index,
                                item=item | {"status": "in_progress", "arguments": ""}),
                    self._event("response.function_call_arguments.delta", item_id=ident,
                                output_index=index, delta=fn["arguments"]),
                    self._event("response.function_call_arguments.done", item_id=ident,
                                output_index=index, arguments=fn["arguments"]),
                    self._event("response.output_item.done", output_index=index, item=item)]
            self.output.append(item)
        self.calls_sent += len(calls)
        return out

    def _finish(self, done: Finished) -> list[Event]:
        """Calls not streamed yet, the open item closed, an empty message when the answer
        has neither text nor calls (as Ollama's), then the terminal event."""
        status = "incomplete" if done.done_reason == "length" else "completed"
        unsent = done.tool_calls[self.calls_sent:]
        out = self._calls(unsent) if unsent else []
        answered = any(item["type"] in ("message", "function_call") for item in self.output)
        if not answered and self.open_kind != "message":
            out += self._close() + self._open_message()
        out += self._close(status)
        self.response = self._response(status, usage=_usage(done))
        return out + [self._event(f"response.{status}", response=self.response)]


# -- the route --------------------------------------------------------------------------------


def _frame(event: Event) -> str:
    kind, data = event
    return f"event: {kind}\ndata: {dumps(data)}\n\n"


async def _sse(conversion: Conversion, first: tuple[Any, int],
               events: AsyncIterator[tuple[Any, int]]) -> AsyncIterator[str]:
    try:
        for event in conversion.start() + conversion.take(first[0]):
            yield _frame(event)
        async for runner_event, _ in events:
            for event in conversion.take(runner_event):
                yield _frame(event)
    except Exception as e:
        _, message = error_payload(e)
        for event in conversion.fail(message):
            yield _frame(event)
    finally:
        await events.aclose()


@openai_route
async def responses(request: Request) -> Response:
    state = state_of(request)
    body = await json_body(request)
    name = model_name(body)
    refuse_state(body)
    messages = input_messages(body)
    tools = function_tools(body.get("tools"))
    fmt = text_format(body)
    options = request_options(body)
    keep_alive = keep_alive_of(body)
    spec = resolve_model(state, name, "completion")
    if tools and "tools" not in spec.capabilities:
        raise bad_request(f"{state.full_name(name)} does not support tools")
    think = resolve_think(spec, name, think_of_effort(body))

    def start(runner: AnyRunner) -> AsyncIterator[Any]:
        return runner.chat(messages, runner.options(options), tools=tools or None, think=think,
                           format=fmt)

    events = run_model(state, spec, options, keep_alive, start)
    first = await first_event(events)
    conversion = Conversion(body, name)
    if body.get("stream"):
        return StreamingResponse(_sse(conversion, first, events),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    async with aclosing(events):
        conversion.take(first[0])
        async for event, _ in events:
            conversion.take(event)
    return JSONResponse(conversion.response)
