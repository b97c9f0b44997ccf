"""Thinking tags found in templates, and reasoning split out of an answer as it streams."""

from __future__ import annotations

import pytest

from ollamapy.text.thinking import ThinkingParser, jinja_thinks, strip_thinking, thinking_tags
from tests.conftest import require
from tests.llama_cpp import LLAMA_CPP

# the shape of Qwen3's TEMPLATE in Ollama's library: .Thinking in a condition first (the
# assistant turn's list, which ends in an if), then between the tags
QWEN3_GO = """\
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if and $last .Thinking }}
<think>{{ .Thinking }}</think>
{{ end }}
{{ if .Content }}{{ .Content }}{{ end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""


def test_tags_come_from_where_a_message_s_thinking_is_written() -> None:
    assert thinking_tags(QWEN3_GO) == ("<think>", "</think>")
    around = "{{ range .Messages }}{{ if .Thinking }}  [plan]  {{ .Thinking }} [/plan]\n" \
             "{{ end }}{{ .Content }}{{ end }}"
    assert thinking_tags(around) == ("[plan]", "[/plan]")


@pytest.mark.parametrize("template", [
    "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Prompt }}",  # no message loop
    # the nearest loop is not over .Messages
    "{{ range .Messages }}{{ range .Other }}<think>{{ .Thinking }}</think>{{ end }}{{ end }}",
    "{{ range .Messages }}{{ .Role }}: {{ .Content }}{{ end }}",  # no .Thinking at all
])
def test_templates_without_tags(template: str) -> None:
    assert thinking_tags(template) == ("", "")


def test_real_jinja_templates_that_think() -> None:
    folder = LLAMA_CPP / "models" / "templates"
    thinks = {name: jinja_thinks(require(folder / name).read_text()) for name in (
        "Qwen-Qwen3-0.6B.jinja", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        "Qwen-QwQ-32B.jinja", "meta-llama-Llama-3.1-8B-Instruct.jinja",
        "Qwen-Qwen2.5-7B-Instruct.jinja", "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja")}
    assert thinks == {"Qwen-Qwen3-0.6B.jinja": True,
                      "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": True,
                      "Qwen-QwQ-32B.jinja": True, "meta-llama-Llama-3.1-8B-Instruct.jinja": False,
                      "Qwen-Qwen2.5-7B-Instruct.jinja": False,
                      "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": False}


def split(pieces: list[str], *, opened: bool = False) -> list[tuple[str, str]]:
    parser = ThinkingParser("<think>", "</think>", opened=opened)
    return [parser.feed(p) for p in pieces] + [parser.finish()]


def joined(parts: list[tuple[str, str]]) -> tuple[str, str]:
    return "".join(t for t, _ in parts), "".join(c for _, c in parts)


def test_reasoning_and_answer_split_with_tags_cut_anywhere() -> None:
    text = "\n<think>\nThe user greets me.\nI greet back.</think>\n\nHello there!"
    for cut in range(len(text) + 1):
        assert joined(split([text[:cut], text[cut:]])) == (
            "The user greets me.\nI greet back.", "Hello there!")
    every_char = split(list(text))
    assert joined(every_char) == ("The user greets me.\nI greet back.", "Hello there!")
    # reasoning streams before the closing tag is seen, a tag's beginning is held
    first = ThinkingParser("<think>", "</think>")
    assert first.feed("<think>Step one") == ("Step one", "")
    assert first.feed(" and </th") == (" and ", "")
    assert first.feed("ink>Done") == ("", "Done")


def test_a_prompt_that_opened_the_tag_starts_inside() -> None:
    assert joined(split(["Plan it.", "</think>", "Answer"], opened=True)) == ("Plan it.",
                                                                              "Answer")


def test_an_answer_without_tags_is_all_content() -> None:
    assert joined(split(["  Hello", " <think> is a tag"])) == ("", "  Hello <think> is a tag")
    # a beginning that turned out not to be the tag is content, nothing lost
    assert joined(split(["<thi"])) == ("", "<thi")
    # reasoning cut off by the budget is still reasoning
    assert joined(split(["<think>Long thought </thi"])) == ("Long thought </thi", "")


def test_earlier_answers_lose_their_traces() -> None:
    assert strip_thinking("<think>\nhmm\n</think>\n\nParis.") == "Paris."
    assert strip_thinking("Paris.") == "Paris."
