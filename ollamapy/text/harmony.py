"""gpt-oss's answers: OpenAI's harmony format, split into reasoning, content and tool calls.

A harmony answer is a run of messages, each a header and a body:
`<|channel|>analysis<|message|>…reasoning…<|end|>`, then
`<|start|>assistant<|channel|>final<|message|>…answer…` (ended by `<|return|>`, which ends
generation). A tool call is a commentary message addressed to a function, its body the
arguments as JSON: `<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>
{"city": "Paris"}` (ended by `<|call|>`); the recipient may also stand before the channel.

`HarmonyParser` reads the answer as it streams (the detokenizer shows these control tokens
for a harmony model): analysis is thinking, final and a commentary without a recipient are
content, a message to `functions.NAME` is a call, given out when its body ends. Body text is
sent at once but for an end that may begin a tag.
"""

from __future__ import annotations

import json
import re
from typing import Any

MESSAGE, ENDS = "<|message|>", ("<|end|>", "<|call|>", "<|return|>", "<|start|>")
_CHANNEL = re.compile(r"<\|channel\|>\s*(\w+)")
_RECIPIENT = re.compile(r"to=([^\s<]+)")


def harmony_template(template: str | None) -> bool:
    """A chat template that writes harmony messages (gpt-oss's)."""
    return bool(template) and "<|channel|>" in template and "<|message|>" in template


class HarmonyParser:
    def __init__(self) -> None:
        self._held = ""
        self._kind: str | None = None  # in a body: "thinking", "content" or "call"
        self._kind_was = "content"  # the body that just ended
        self._function = ""
        self._calls = 0

    def feed(self, text: str) -> tuple[str, str, list[dict[str, Any]]]:
        """→ (thinking, content, calls) that can be given out now."""
        self._held += text
        out: dict[str, list[str]] = {"thinking": [], "content": []}
        calls: list[dict[str, Any]] = []
        while self._step(out, calls):
            pass
        return "".join(out["thinking"]), "".join(out["content"]), calls

    def finish(self) -> tuple[str, str, list[dict[str, Any]]]:
        """The end of the answer: a body still open ends here."""
        thinking, content, calls = self.feed("")
        if self._kind is not None:
            body, self._held = self._held, ""
            part = self._end_body(body)
            if isinstance(part, dict):
                calls.append(part)
            elif self._kind_was == "thinking":
                thinking += part
            else:
                content += part
        elif self._held.strip() and MESSAGE not in self._held:
            content += self._held  # text outside any message: nothing lost
        self._held = ""
        return thinking, content, calls

    def _step(self, out: dict[str, list[str]], calls: list[dict[str, Any]]) -> bool:
        if self._kind is None:  # reading a header
            at = self._held.find(MESSAGE)
            if at < 0:
                return False
            header, self._held = self._held[:at], self._held[at + len(MESSAGE):]
            self._begin_body(header)
            return True
        ends = [(i, tag) for tag in ENDS if (i := self._held.find(tag)) >= 0]
        if ends:
            at, tag = min(ends)
            body = self._held[:at]
            self._held = self._held[at + (0 if tag == "<|start|>" else len(tag)):]
            part = self._end_body(body)
            if isinstance(part, dict):
                calls.append(part)
            elif part:
                out[self._kind_was].append(part)
            return True
        if self._kind != "call":  # stream the body, holding a possible tag's beginning
            cut = self._held.rfind("<")
            keep = cut if cut >= 0 and any(t.startswith(self._held[cut:]) for t in ENDS) \
                else len(self._held)
            out[self._kind].append(self._held[:keep])
            self._held = self._held[keep:]
        return False

    def _begin_body(self, header: str) -> None:
        channel = _CHANNEL.search(header)
        recipient = _RECIPIENT.search(header)
        name = channel.group(1) if channel else ""
        if recipient and recipient.group(1).startswith("functions."):
            self._kind, self._function = "call", recipient.group(1)[len("functions."):]
        else:
            self._kind = "thinking" if name == "analysis" else "content"

    def _end_body(self, body: str) -> str | dict[str, Any]:
        """The body's last text, or the call it makes."""
        self._kind_was, self._kind = self._kind or "content", None
        if self._kind_was != "call":
            return body
        try:
            arguments = json.loads(body) if body.strip() else {}
        except json.JSONDecodeError:
            arguments = {"arguments": body}  # kept as written rather than lost
        if not isinstance(arguments, dict):
            arguments = {"arguments": arguments}
        call = {"function": {"index": self._calls, "name": self._function,
                             "arguments": arguments}}
        self._calls += 1
        return call
