"""Tool calls in a model's output, found in the format the model's own template writes them.

A tools-aware template shows how an assistant turn with a tool call looks: Qwen wraps a JSON
object in `<tool_call>…</tool_call>`, Mistral starts with `[TOOL_CALLS]`, Llama 3.2 writes
the bare JSON. `ToolCallFormat.probe` renders the template twice, once with an assistant
turn of plain text and once with a probe call, and takes the text between where the turn's
text starts and where the call's JSON starts as the call's prefix (empty for bare JSON), as
Ollama infers its tool-call tag from the template.

`ToolCallParser` then reads the generated text as it streams: text that cannot be the start
of a tool call goes out at once; from a possible start on, it is held until the end, where
the calls are parsed (`{"name", "arguments" | "parameters"}` objects, or lists of them) and
whatever is left is content.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Message = Mapping[str, Any]
_PROBE_NAME = "probe_function_name"
_PROBE_CONTENT = "probe assistant text"
_PROBE_ARGS = {"probe_argument": "probe_value"}


@dataclass(frozen=True, slots=True)
class ToolCallFormat:
    prefix: str  # "" when calls are bare JSON

    @classmethod
    def probe(cls, render: Callable[[Sequence[Message]], str]) -> ToolCallFormat | None:
        """render(messages) → the template's text; None when it does not show tool calls."""
        user = {"role": "user", "content": "probe"}
        plain = render([user, {"role": "assistant", "content": _PROBE_CONTENT}])
        called = render([user, {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": _PROBE_NAME, "arguments": _PROBE_ARGS}}]}])
        at = called.find(_PROBE_NAME)
        begins = plain.find(_PROBE_CONTENT)  # where an assistant turn's own text starts
        if at < 0 or begins < 0:
            return None
        start = _json_start(called, at)
        if start < 0:
            return None
        return cls(called[begins:start].strip() if begins < start else "")


def _json_start(text: str, inside: int) -> int:
    """Where the outermost JSON object or list around position `inside` begins (-1: none)."""
    depth, start = 0, -1
    for i in range(inside, -1, -1):
        char = text[i]
        if char in "}]":
            depth += 1
        elif char in "{[":
            if depth == 0:
                start = i
            else:
                depth -= 1
    return start


def _calls_in(value: Any) -> list[dict[str, Any]] | None:
    """Ollama's tool calls from a parsed JSON value, or None if it is not one."""
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        args = item.get("arguments", item.get("parameters", {}))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return None
        if not isinstance(args, dict):
            return None
        calls.append({"function": {"index": len(calls), "name": item["name"],
                                   "arguments": args}})
    return calls or None


class ToolCallParser:
    def __init__(self, fmt: ToolCallFormat) -> None:
        self.fmt = fmt
        self._held = ""  # text that may be (the start of) a tool call
        self._holding = False

    def _may_start_call(self, text: str) -> bool:
        s = text.lstrip()
        if not s:
            return True
        if self.fmt.prefix:
            return self.fmt.prefix.startswith(s) or s.startswith(self.fmt.prefix)
        return s[0] in "{["

    def feed(self, text: str) -> str:
        """The part of text that is content for sure (the rest is held)."""
        if self._holding:
            self._held += text
            return ""
        candidate = self._held + text
        if self._may_start_call(candidate):
            self._held = candidate
            # once the prefix is complete (or JSON began) everything is held to the end
            stripped = candidate.lstrip()
            self._holding = bool(stripped) and (
                stripped.startswith(self.fmt.prefix) if self.fmt.prefix else True)
            return ""
        self._held = ""
        return candidate

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """(content not yet given out, tool calls) at the end of generation."""
        text, self._held = self._held, ""
        body = text.lstrip()
        if self.fmt.prefix:
            if not body.startswith(self.fmt.prefix):
                return text, []
            calls: list[dict[str, Any]] = []
            for part in body.split(self.fmt.prefix)[1:]:
                found = _decode_calls(part)
                if found is None:
                    return text, []
                calls.extend(found)
            for i, call in enumerate(calls):
                call["function"]["index"] = i
            return "", calls
        found = _decode_calls(body)
        return ("", found) if found else (text, [])


def _decode_calls(text: str) -> list[dict[str, Any]] | None:
    """Every JSON value at the start of text (an end tag or whitespace may follow each)."""
    decoder = json.JSONDecoder()
    calls: list[dict[str, Any]] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        while pos < len(text) and text[pos] not in "{[":
            if not calls:
                return None  # anything before the first call: not a call
            pos += 1
        if pos >= len(text):
            break
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return calls or None
        found = _calls_in(value)
        if found is None:
            return None
        calls.extend(found)
    return calls or None
