"""An answer split as it streams: reasoning, content and tool calls.

The runner's events carry the model's text; a parser made for the model and the request
(`TaggedAnswer`: reasoning in tags, then tool calls in what is content; or the harmony parser
for gpt-oss) splits each piece into (thinking, content, calls), and `parsed_answer` gives them
out as `Text` events, each call as soon as it is parsed, every call again on `Finished`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import Any, Protocol

from ollamapy.contract import Finished, Text
from ollamapy.text.thinking import ThinkingParser, strip_thinking
from ollamapy.text.toolcalls import ToolCallParser


def without_earlier_thinking(messages: Sequence[Mapping[str, Any]]
                              ) -> list[Mapping[str, Any]]:
    """Answers before the last user message lose their `<think>` traces (Ollama's
    filterThinkTags, for every model that thinks in those tags)."""
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    return [{**m, "content": strip_thinking(m.get("content") or "")}
            if m.get("role") == "assistant" and i < last_user else m
            for i, m in enumerate(messages)]


class TaggedAnswer:
    """Reasoning in tags, then content that may hold tool calls: the thinking parser first,
    the tool parser on what is content. feed/finish → (thinking, content, calls)."""

    def __init__(self, reasoning: ThinkingParser | None, calls: ToolCallParser | None) -> None:
        self.reasoning, self.calls = reasoning, calls

    def feed(self, text: str) -> tuple[str, str, list[dict[str, Any]]]:
        thinking, content = self.reasoning.feed(text) if self.reasoning else ("", text)
        return thinking, *(self.calls.feed(content) if self.calls else (content, []))

    def finish(self) -> tuple[str, str, list[dict[str, Any]]]:
        thinking, content = self.reasoning.finish() if self.reasoning else ("", "")
        if self.calls is None:
            return thinking, content, []
        content, calls = self.calls.feed(content)
        rest, more = self.calls.finish()
        return thinking, content + rest, calls + more


class AnswerParser(Protocol):
    def feed(self, text: str) -> tuple[str, str, list[dict[str, Any]]]: ...
    def finish(self) -> tuple[str, str, list[dict[str, Any]]]: ...


async def parsed_answer(events: AsyncIterator[Text | Finished],
                        make_parser: Callable[[], AnswerParser]
                        ) -> AsyncIterator[Text | Finished]:
    """Text split into reasoning, content and tool calls as it streams (the parser is made at
    the first event, once the prompt is rendered). Every call goes out as soon as it is
    parsed; Finished carries them all."""
    parser: AnswerParser | None = None
    every_call: list[dict[str, Any]] = []
    async with aclosing(events):
        async for event in events:
            parser = parser or make_parser()
            if isinstance(event, Text):
                thinking, content, calls = parser.feed(event.text)
                every_call += calls
                if content or thinking or calls or event.logprobs:
                    yield Text(content, event.logprobs, thinking, tuple(calls))
            else:
                thinking, content, calls = parser.finish()
                every_call += calls
                if content or thinking or calls:
                    yield Text(content, (), thinking, tuple(calls))
                yield replace(event, tool_calls=tuple(every_call))
