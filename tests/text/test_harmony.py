"""gpt-oss's harmony answers split into reasoning, content and tool calls as they stream."""

from __future__ import annotations

from ollamapy.text.harmony import HarmonyParser, harmony_template
from tests.conftest import require
from tests.llama_cpp import LLAMA_CPP

ANSWER = ("<|channel|>analysis<|message|>User greets. Reply politely.<|end|>"
          "<|start|>assistant<|channel|>final<|message|>Hello! How can I help?")
CALL = ("<|channel|>analysis<|message|>Need weather.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
        '<|message|>{"city": "Paris"}')


def parse(pieces: list[str]) -> tuple[str, str, list]:
    parser = HarmonyParser()
    parts = [parser.feed(p) for p in pieces] + [parser.finish()]
    return ("".join(t for t, _, _ in parts), "".join(c for _, c, _ in parts),
            [call for _, _, calls in parts for call in calls])


def test_reasoning_and_answer_with_the_text_cut_anywhere() -> None:
    for cut in range(len(ANSWER) + 1):
        assert parse([ANSWER[:cut], ANSWER[cut:]]) == (
            "User greets. Reply politely.", "Hello! How can I help?", [])
    assert parse(list(ANSWER))[:2] == ("User greets. Reply politely.", "Hello! How can I help?")


def test_reasoning_streams_before_its_end() -> None:
    parser = HarmonyParser()
    assert parser.feed("<|channel|>analysis<|message|>Step one") == ("Step one", "", [])
    assert parser.feed(" and two<|e") == (" and two", "", [])
    assert parser.feed("nd|>") == ("", "", [])


def test_a_message_to_a_function_is_a_call() -> None:
    for recipient_first in (False, True):
        text = CALL if not recipient_first else CALL.replace(
            "<|channel|>commentary to=functions.get_weather ",
            " to=functions.get_weather<|channel|>commentary ")
        thinking, content, calls = parse([text[:40], text[40:]])
        assert (thinking, content) == ("Need weather.", "")
        assert calls == [{"function": {"index": 0, "name": "get_weather",
                                       "arguments": {"city": "Paris"}}}]


def test_the_real_template_is_recognised() -> None:
    path = require(LLAMA_CPP / "models" / "templates" / "openai-gpt-oss-120b.jinja")
    assert harmony_template(path.read_text())
    qwen = require(LLAMA_CPP / "models" / "templates" / "Qwen-Qwen3-0.6B.jinja")
    assert not harmony_template(qwen.read_text())
