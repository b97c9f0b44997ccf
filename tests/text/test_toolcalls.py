"""Tool calls found in model output in the format each template writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollamapy.text.gotemplate import render_go_template
from ollamapy.text.template import render_chat_template
from ollamapy.text.toolcalls import ToolCallFormat, ToolCallParser

TEMPLATES = Path(__file__).parent / "data" / "gotemplates"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}}}}}]


def go_format(name: str) -> ToolCallFormat | None:
    template = (TEMPLATES / name).read_text()
    return ToolCallFormat.probe(lambda msgs: render_go_template(template, msgs, tools=TOOLS))


def parse(fmt: ToolCallFormat, pieces: list[str]) -> tuple[str, str, list]:
    """→ (content streamed, content at the end, every call)."""
    parser = ToolCallParser(fmt)
    streamed, calls = [], []
    for piece in pieces:
        content, found = parser.feed(piece)
        streamed.append(content)
        calls.extend(found)
    rest, found = parser.finish()
    return "".join(streamed), rest, calls + found


def test_each_call_goes_out_as_soon_as_its_json_is_complete() -> None:
    parser = ToolCallParser(ToolCallFormat("<tool_call>"))
    assert parser.feed("Let me look.\n<tool") == ("Let me look.\n", [])
    assert parser.feed('_call>\n{"name": "a", "arguments": {"x": ') == ("", [])
    content, calls = parser.feed('1}}\n</tool_call>\n<tool_call>{"name": "b", ')
    assert content == "" and calls == [{"function": {"index": 0, "name": "a",
                                                     "arguments": {"x": 1}}}]
    content, calls = parser.feed('"arguments": {}}</tool_call>')
    assert [c["function"]["index"] for c in calls] == [1]
    assert parser.finish() == ("", [])


def test_qwen_uses_the_tool_call_tag() -> None:
    fmt = go_format("library-qwen2.5.gotmpl")
    assert fmt == ToolCallFormat("<tool_call>")
    out = ['<tool', '_call>\n{"name": "get_weather", ', '"arguments": {"city": "Paris"}}',
           '\n</tool_call>']
    streamed, rest, calls = parse(fmt, out)
    assert streamed == "" and rest == ""
    assert calls == [{"function": {"index": 0, "name": "get_weather",
                                   "arguments": {"city": "Paris"}}}]


def test_llama32_writes_bare_json_with_parameters() -> None:
    fmt = go_format("library-llama3.2.gotmpl")
    assert fmt == ToolCallFormat("")
    _, _, calls = parse(fmt, ['{"name": "get_weather", "parameters": {"city": "Oslo"}}'])
    assert calls[0]["function"]["arguments"] == {"city": "Oslo"}


def test_plain_text_streams_at_once_and_is_not_a_call() -> None:
    fmt = ToolCallFormat("<tool_call>")
    streamed, rest, calls = parse(fmt, ["The weather", " is fine."])
    assert streamed == "The weather is fine." and rest == "" and calls == []
    # text that looked like the start of a tag but was not: given back in full
    streamed, rest, calls = parse(fmt, ["<to", "day> is here"])
    assert streamed + rest == "<today> is here" and calls == []
    # bare JSON is a call only at the start of the answer
    streamed, rest, calls = parse(ToolCallFormat(""), ["I would say ", '{"name": "a"}'])
    assert streamed + rest == 'I would say {"name": "a"}' and calls == []


def test_several_calls_and_broken_json() -> None:
    fmt = ToolCallFormat("<tool_call>")
    text = ('<tool_call>{"name": "a", "arguments": {}}</tool_call>\n'
            '<tool_call>{"name": "b", "arguments": "{\\"x\\": 1}"}</tool_call>')
    _, _, calls = parse(fmt, [text])
    assert [(c["function"]["index"], c["function"]["name"], c["function"]["arguments"])
            for c in calls] == [(0, "a", {}), (1, "b", {"x": 1})]
    _, rest, calls = parse(fmt, ['<tool_call>{"name": "a", "argu'])
    assert calls == [] and rest == '<tool_call>{"name": "a", "argu'
    bare = ToolCallFormat("")
    _, rest, calls = parse(bare, ['{"not": "a call"}'])
    assert calls == [] and rest == '{"not": "a call"}'


def test_a_template_without_tool_calls_has_no_format() -> None:
    chatml = (TEMPLATES / "chatml.gotmpl").read_text()
    assert ToolCallFormat.probe(lambda m: render_go_template(chatml, m)) is None


@pytest.mark.parametrize("arguments_as_json", [False, True])
def test_jinja_templates_are_probed_too(arguments_as_json: bool) -> None:
    call = "{{ tc.function.arguments | tojson }}" if arguments_as_json else \
        "{{ tc.function.arguments }}"
    template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
                "{% for tc in m.tool_calls or [] %}[CALL]{\"name\": \"{{ tc.function.name }}\", "
                "\"arguments\": " + call + "}{% endfor %}{% endfor %}")
    fmt = ToolCallFormat.probe(lambda m: render_chat_template(template, m,
                                                              add_generation_prompt=False))
    assert fmt == ToolCallFormat("[CALL]")
