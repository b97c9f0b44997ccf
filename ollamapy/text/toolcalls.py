"""Tool calls in a model's output, found in the format the model's own template writes them.

A tools-aware template shows how an assistant turn with a tool call looks: Qwen wraps a JSON
object in `<tool_call>…</tool_call>`, Mistral starts with `[TOOL_CALLS]`, Llama 3.2 writes
the bare JSON. `ToolCallFormat.probe` renders the template twice, once with an assistant
turn of plain text and once with a probe call, and takes the text between where the two
renders part and where the call's JSON starts as the call's prefix (empty for bare JSON), as
Ollama infers its tool-call tag from the template.

`ToolCallParser` then reads the generated text as it streams and gives out each call
(`{"name", "arguments" | "parameters"}` objects, or lists of them) as soon as it is complete.
"""

from __future__ import annotations

import json
import os
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
        if _PROBE_CONTENT not in plain:
            return None
        # where the two renders part: the assistant turn's own text, or its call, begins
        # (the tools listed in a system prompt come before it and are the same in both)
        begins = len(os.path.commonprefix([plain, called]))
        at = called.find(_PROBE_NAME, begins)
        start = _json_start(called, at) if at >= 0 else -1
        if start < begins:
            return None
        return cls(called[begins:start].strip())


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
    """feed(text) → (content, calls) as the answer streams; finish() → the same at its end.

    With a prefix (`<tool_call>`), text before it is content, sent at once (but for an end
    that may be the prefix's beginning); after it each call goes out as soon as its JSON is
    complete, and what lies between calls (end tags) is dropped. Bare JSON is a call only when
    the answer starts with it; then each complete value is one (or a list of) calls. Text held
    that never became a call is content at the end: nothing the model wrote is lost.
    """

    def __init__(self, fmt: ToolCallFormat) -> None:
        self.fmt = fmt
        self._held = ""  # text that may be (part of) a tool call
        self._calling = False  # the prefix (or, bare, the first JSON value) has begun
        self._done = False  # decided: no calls, all text is content
        self._count = 0  # calls given out

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        if self._done:
            return text, []
        self._held += text
        content = "" if self._calling else self._find_start()
        calls = self._take_calls() if self._calling else []
        return content, calls

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        content, calls = self.feed("")
        held, self._held = self._held, ""
        if self._count == 0 and not calls:
            return content + held, []  # never a call: all of it is content
        return content, calls  # what follows the calls (end tags) is dropped, as Ollama does

    def _find_start(self) -> str:
        """Content before the start of a call; moves to calling once one has begun."""
        held, prefix = self._held, self.fmt.prefix
        if not prefix:  # bare JSON: only an answer that starts with it
            stripped = held.lstrip()
            if not stripped:
                return ""
            if stripped[0] in "{[":
                self._calling = True
                return ""
            self._done, self._held = True, ""
            return held
        at = held.find(prefix)
        if at >= 0:
            self._calling, self._held = True, held[at:]
            return held[:at]
        keep = next((n for n in range(min(len(prefix), len(held)), 0, -1)
                     if held.endswith(prefix[:n])), 0)
        self._held = held[len(held) - keep:]
        return held[:len(held) - keep]

    def _take_calls(self) -> list[dict[str, Any]]:
        """Every call complete in the held text, in order."""
        calls: list[dict[str, Any]] = []
        decoder = json.JSONDecoder()
        while True:
            start = self._next_value()
            if start < 0:
                return calls
            try:
                value, end = decoder.raw_decode(self._held, start)
            except json.JSONDecodeError:
                return calls  # not complete yet (or never: then content at the end)
            found = _calls_in(value)
            if found is None:
                if self._count == 0 and not calls and not self.fmt.prefix:
                    self._done = True  # bare JSON that is not a call: plain content
                return calls
            for call in found:
                call["function"]["index"] = self._count
                self._count += 1
            calls.extend(found)
            self._held = self._held[end:]

    def _next_value(self) -> int:
        """Where the next call's JSON starts in the held text (-1: not there yet)."""
        held = self._held
        if self.fmt.prefix:
            at = held.find(self.fmt.prefix)
            if at < 0:
                return -1
            after = at + len(self.fmt.prefix)
            rest = held[after:].lstrip()
            return after + (len(held) - after - len(rest)) if rest else -1
        starts = [i for i in (held.find("{"), held.find("[")) if i >= 0]
        return min(starts) if starts else -1
