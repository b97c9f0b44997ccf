"""Thinking traces: which tags a template wraps them in, and splitting them out of an answer.

A thinking model writes its reasoning first, between tags (Qwen3 and DeepSeek-R1: `<think>`
and `</think>`), then its answer. Ollama finds the tags in the model's Go TEMPLATE: where the
template writes a message's `.Thinking` inside its range over `.Messages`, the text that opens
and closes the enclosing list are the tags (`thinking_tags`, Ollama's `thinking.InferTags`).
A Jinja chat template that writes both `<think>` and `</think>`, or splits earlier answers at
`</think>`, thinks with those tags (`jinja_thinks`, Ollama's `chatTemplateHasThinkingSupport`).

`ThinkingParser` reads the answer as it streams: leading whitespace, then the opening tag (a
prompt that already ends with it starts the parser inside), the reasoning up to the closing tag,
then content. Whitespace after each tag is dropped; a tag split across pieces is held until it
is told apart from text.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum, auto
from typing import Any

from ollamapy.text.gotemplate import parse_go_template
from ollamapy.text.gotemplate_nodes import (
    ActionNode,
    CommandNode,
    FieldNode,
    IfNode,
    ListNode,
    PipeNode,
    RangeNode,
    TextNode,
    WithNode,
)

OPEN, CLOSE = "<think>", "</think>"


def _children(node: Any) -> Iterator[Any]:
    """The nodes Ollama's visitor descends into: for if/range/with, the pipeline, then the
    body, then the else body."""
    if isinstance(node, ListNode):
        yield from node.nodes
    elif isinstance(node, IfNode | RangeNode | WithNode):
        yield node.pipe
        yield node.body
        if node.else_body is not None:
            yield node.else_body
    elif isinstance(node, ActionNode):
        yield node.pipe
    elif isinstance(node, PipeNode):
        yield from node.cmds
    elif isinstance(node, CommandNode):
        yield from node.args


def _uses_field(node: Any, name: str) -> bool:
    if isinstance(node, FieldNode) and node.ident and node.ident[0] == name:
        return True
    return any(_uses_field(child, name) for child in _children(node))


def thinking_tags(template: str) -> tuple[str, str]:
    """(opening, closing) tags around `.Thinking` in a Go template's message loop; ("", "")
    when it has none. The last `.Thinking` that qualifies wins, as in Ollama's walk."""
    tags = ["", ""]

    def visit(node: Any, ancestors: list[Any]) -> None:
        if isinstance(node, FieldNode) and node.ident and node.ident[0] == "Thinking":
            loop = next((a for a in reversed(ancestors) if isinstance(a, RangeNode)), None)
            if loop is not None and _uses_field(loop.pipe, "Messages"):
                enclosing = next(a for a in reversed(ancestors) if isinstance(a, ListNode))
                first, last = enclosing.nodes[0], enclosing.nodes[-1]
                if isinstance(first, TextNode):
                    tags[0] = first.text.strip()
                if isinstance(last, TextNode):
                    tags[1] = last.text.strip()
        ancestors.append(node)
        for child in _children(node):
            visit(child, ancestors)
        ancestors.pop()

    visit(parse_go_template(template).root, [])
    return tags[0], tags[1]


def jinja_thinks(template: str) -> bool:
    if OPEN in template and CLOSE in template:
        return True
    # Qwen and DeepSeek templates that drop earlier reasoning by splitting at </think>
    splits = "content.split('</think>')" in template or 'content.split("</think>")' in template
    return splits and "reasoning_content" not in template and "<SPECIAL_12>" not in template


class _State(Enum):
    OPENING = auto()  # before the opening tag: whitespace, or part of the tag
    STARTING = auto()  # after the opening tag, dropping whitespace
    THINKING = auto()
    ENDING = auto()  # after the closing tag, dropping whitespace
    DONE = auto()


def _overlap(text: str, tag: str) -> int:
    """The longest end of text that is a beginning of tag."""
    for n in range(min(len(tag), len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkingParser:
    def __init__(self, opening: str, closing: str, *, opened: bool = False) -> None:
        """opened: the prompt ended with the opening tag (the model starts inside)."""
        self.opening, self.closing = opening, closing
        self._state = _State.STARTING if opened else _State.OPENING
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """→ (thinking, content) that can be sent now; the rest is held."""
        self._held += text
        thinking: list[str] = []
        content: list[str] = []
        while self._step(thinking, content):
            pass
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """What is still held at the end of the answer: a partial tag is text."""
        held, self._held = self._held, ""
        if self._state in (_State.STARTING, _State.THINKING):
            return held, ""
        return "", held if self._state is _State.DONE or held.strip() else ""

    def _step(self, thinking: list[str], content: list[str]) -> bool:
        """One state's worth of the held text; True when another state should look at it."""
        held = self._held
        if self._state is _State.OPENING:
            trimmed = held.lstrip()
            if trimmed.startswith(self.opening):
                self._held = trimmed[len(self.opening):]
                self._state = _State.STARTING
                return True
            if not trimmed or self.opening.startswith(trimmed):
                return False  # whitespace or part of the tag so far
            self._state, self._held = _State.DONE, ""  # no thinking: all of it is content
            content.append(held)
            return False
        if self._state is _State.STARTING:
            self._held = held.lstrip()
            if self._held:
                self._state = _State.THINKING
            return bool(self._held)
        if self._state is _State.THINKING:
            at = held.find(self.closing)
            if at >= 0:
                thinking.append(held[:at])
                self._held = held[at + len(self.closing):]
                self._state = _State.ENDING
                return True
            keep = _overlap(held, self.closing)
            thinking.append(held[:len(held) - keep])
            self._held = held[len(held) - keep:]
            return False
        if self._state is _State.ENDING:
            self._held = ""
            trimmed = held.lstrip()
            if trimmed:
                self._state = _State.DONE
                content.append(trimmed)
            return False
        self._held = ""
        content.append(held)
        return False


def strip_thinking(content: str) -> str:
    """An earlier answer without its `<think>…</think>` trace (Ollama's filterThinkTags)."""
    parser = ThinkingParser(OPEN, CLOSE)
    _, kept = parser.feed(content)
    return kept + parser.finish()[1]
