"""Ollama's template semantics, on real templates, with literal prompts.

The `OLLAMA_*` expectations are Go's own output: the golden files of Ollama's
template/testdata/<name>.gotmpl/ and the cases of template_test.go (TestExecuteWithMessages,
TestExecuteWithSuffix, TestParse, TestCollate) in github.com/ollama/ollama. The library
templates (ollama.com/library, checked against their layer digests) have expectations written
by reading the templates with Go's rules.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from pathlib import Path

import pytest

from ollamapy.text.gotemplate import (
    GoTemplateError,
    parse_go_template,
    render_go_template,
    template_vars,
)
from ollamapy.text.gotemplate_data import collate

DATA = Path(__file__).parent / "data" / "gotemplates"
SOURCE_COMMENT = re.compile(r"\{\{/\* source: (.*?) \*/\}\}")


def load(name: str) -> str:
    return (DATA / f"{name}.gotmpl").read_text()


# -- the conversations of Ollama's TestTemplate, and its golden renders ------------------------

S = "You are a helpful assistant."
U1 = "Hello, how are you?"
A1 = "I'm doing great. How can I help you today?"
U2 = "I'd like to show off how chat templating works!"
CONVERSATIONS = {
    "user": [{"role": "user", "content": U1}],
    "user-assistant-user": [{"role": "user", "content": U1}, {"role": "assistant", "content": A1},
                            {"role": "user", "content": U2}],
    "system-user-assistant-user": [
        {"role": "system", "content": S}, {"role": "user", "content": U1},
        {"role": "assistant", "content": A1}, {"role": "user", "content": U2}],
}


def _chat(turn: str, system: str | None = None, **roles: str) -> dict[str, str]:
    """Golden renders for templates that wrap every message as `turn` (role, content)."""
    head = turn.format(roles.get("system", "system"), system) if system else ""
    user, assistant = roles.get("user", "user"), roles.get("assistant", "assistant")
    return {"user": turn.format(user, U1),
            "user-assistant-user": (turn.format(user, U1) + turn.format(assistant, A1)
                                    + turn.format(user, U2)),
            "system-user-assistant-user": (head + turn.format(user, U1)
                                           + turn.format(assistant, A1) + turn.format(user, U2))}


def _with_prompt(renders: dict[str, str], prompt: str) -> dict[str, str]:
    return {case: text + prompt for case, text in renders.items()}


OLLAMA_GOLDEN = {
    "chatml": _with_prompt(_chat("<|im_start|>{}\n{}<|im_end|>\n", S), "<|im_start|>assistant\n"),
    "llama3-instruct": _with_prompt(
        _chat("<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>", S),
        "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "zephyr": _with_prompt(_chat("<|{}|>\n{}</s>\n", S), "<|assistant|>\n"),
    "phi-3": _with_prompt(_chat("<|{}|>\n{}<|end|>\n", S), "<|assistant|>\n"),
    "alpaca": {
        "user": "### Instruction:\nHello, how are you?\n\n### Response:\n",
        "user-assistant-user": (
            "### Instruction:\nHello, how are you?\n\n### Response:\nI'm doing great. How can I "
            "help you today?\n\n### Instruction:\nI'd like to show off how chat templating "
            "works!\n\n### Response:\n"),
        "system-user-assistant-user": (
            "You are a helpful assistant.\n\n### Instruction:\nHello, how are you?\n\n"
            "### Response:\nI'm doing great. How can I help you today?\n\n### Instruction:\n"
            "I'd like to show off how chat templating works!\n\n### Response:\n"),
    },
    "gemma-instruct": {
        "user": "<start_of_turn>user\nHello, how are you?<end_of_turn>\n<start_of_turn>model\n",
        "user-assistant-user": (
            "<start_of_turn>user\nHello, how are you?<end_of_turn>\n<start_of_turn>model\n"
            "I'm doing great. How can I help you today?<end_of_turn>\n<start_of_turn>user\n"
            "I'd like to show off how chat templating works!<end_of_turn>\n"
            "<start_of_turn>model\n"),
        "system-user-assistant-user": (
            "<start_of_turn>user\nYou are a helpful assistant.\nHello, how are you?<end_of_turn>"
            "\n<start_of_turn>model\nI'm doing great. How can I help you today?<end_of_turn>\n"
            "<start_of_turn>user\nI'd like to show off how chat templating works!<end_of_turn>"
            "\n<start_of_turn>model\n"),
    },
    "mistral-instruct": {
        "user": "[INST] Hello, how are you?[/INST]",
        "user-assistant-user": (
            "[INST] Hello, how are you?[/INST] I'm doing great. How can I help you today?</s>"
            "[INST] I'd like to show off how chat templating works![/INST]"),
        "system-user-assistant-user": (
            "[INST] You are a helpful assistant.\n\nHello, how are you?[/INST] I'm doing great. "
            "How can I help you today?</s>[INST] I'd like to show off how chat templating works!"
            "[/INST]"),
    },
    # legacy (.System/.Prompt/.Response): Ollama's test strips the trailing space the cut leaves
    "vicuna": {
        "user": "USER: Hello, how are you?\nASSISTANT:",
        "user-assistant-user": (
            "USER: Hello, how are you?\nASSISTANT: I'm doing great. How can I help you today?"
            "</s>\nUSER: I'd like to show off how chat templating works!\nASSISTANT:"),
        "system-user-assistant-user": (
            "You are a helpful assistant.\n\nUSER: Hello, how are you?\nASSISTANT: I'm doing "
            "great. How can I help you today?</s>\nUSER: I'd like to show off how chat "
            "templating works!\nASSISTANT:"),
    },
}


@pytest.mark.parametrize("case", CONVERSATIONS)
@pytest.mark.parametrize("name", OLLAMA_GOLDEN)
def test_ollama_templates_render_ollamas_golden_prompts(name: str, case: str) -> None:
    rendered = render_go_template(load(name), CONVERSATIONS[case])
    if name == "vicuna":
        assert rendered.endswith(" ")
        rendered = rendered[:-1]
    assert rendered == OLLAMA_GOLDEN[name][case]


def test_every_stored_template_names_its_source_and_library_digests_match() -> None:
    for path in sorted(DATA.glob("*.gotmpl")):
        text = path.read_text()
        source = SOURCE_COMMENT.match(text)
        assert source, path.name
        if path.name.startswith("library-"):
            # the layer digest is the sha256 of the template text itself
            digest = source.group(1).rsplit("sha256:", 1)[1]
            assert hashlib.sha256(text[source.end():].encode()).hexdigest() == digest
        # the comment is Go syntax that renders to nothing
        messages = CONVERSATIONS["user"]
        assert render_go_template(text, messages) == render_go_template(
            text[source.end():], messages)


# Ollama's tool goldens (template/testdata/{command-r,deepseek}.gotmpl/tools-single*): renders of
# the tool alone, a lone call, a lone result
GET_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get current weather information for a location",
    "parameters": {"type": "object", "required": ["location"], "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"],
                 "description": "The unit of temperature to use"}}}}}
SF_CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"function": {"name": "get_weather", "arguments": {"location": "San Francisco, CA"}}}]}
SF_RESULT = {"role": "tool", "content": '{"temperature": 22, "condition": "Sunny", '
                                        '"humidity": 45, "wind_speed": 10}'}
COHERE_END = "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>\n"
OLLAMA_TOOL_GOLDEN = {
    ("command-r", "tools-single"): (
        "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|># Safety Preamble\nThe instructions in this "
        "section override those in the task description and style guide sections. Don't answer "
        "questions that are harmful or immoral.\n\n# System Preamble\n## Basic Rules\nYou are a "
        "powerful conversational AI trained by Cohere to help people. You are augmented by a "
        "number of tools, and your job is to use and consume the output of these tools to best "
        "help the user. You will see a conversation history between yourself and a user, ending "
        "with an utterance from the user. You will then see a specific instruction instructing "
        "you what kind of response to generate. When you answer the user's requests, you cite "
        "your sources in your answers, according to those instructions.\n\n\n\n## Available "
        "Tools\nHere is a list of tools that you have available to you:\n\n```python\n"
        "def get_weather(location: string, unit: string, ) -> List[Dict]:\n    '''Get current "
        "weather information for a location\n\n    Args:\n        location (string): The city "
        "and state, e.g. San Francisco, CA\n        unit (string): The unit of temperature to use"
        "\n    '''\n    pass\n```<|END_OF_TURN_TOKEN|>" + COHERE_END),
    ("command-r", "tools-single-call"): (
        '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>\nAction: ```json\n[\n    {\n        '
        '"tool_name": "get_weather",\n        "parameters": {"location":"San Francisco, CA"}\n'
        "    }\n]```<|END_OF_TURN_TOKEN|>" + COHERE_END),
    ("command-r", "tools-single-result"): (
        "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|><results>\nconsole_output: " + SF_RESULT["content"]
        + "\n</results><|END_OF_TURN_TOKEN|>" + COHERE_END),
    ("deepseek", "tools-single"): (
        "\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou "
        "are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        '{"name":"get_weather","description":"Get current weather information for a location",'
        '"parameters":{"type":"object","required":["location"],"properties":{"location":{"type":'
        '"string","description":"The city and state, e.g. San Francisco, CA"},"unit":{"type":'
        '"string","description":"The unit of temperature to use","enum":["celsius","fahrenheit"]'
        "}}}}\n</tools>\n\nFor each function call, return a json object with function name and "
        "arguments within <tool_call></tool_call> XML tags."),
    ("deepseek", "tools-single-call"): (
        "<｜Assistant｜>\n<｜tool▁calls▁begin｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>"
        'get_weather\n```json\n{"location":"San Francisco, CA"}\n```<｜tool▁call▁end｜>\n'
        "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>"),
    ("deepseek", "tools-single-result"): (
        "\n<｜tool▁output▁begin｜>" + SF_RESULT["content"]
        + "<｜tool▁output▁end｜>\n<｜Assistant｜>"),
}
TOOL_CASES = {"tools-single": ([], [GET_WEATHER]), "tools-single-call": ([SF_CALL], None),
              "tools-single-result": ([SF_RESULT], None)}


@pytest.mark.parametrize(("name", "case"), OLLAMA_TOOL_GOLDEN)
def test_tool_templates_render_ollamas_golden_prompts(name: str, case: str) -> None:
    messages, tools = TOOL_CASES[case]
    assert render_go_template(load(name), messages, tools=tools) == OLLAMA_TOOL_GOLDEN[name, case]


# -- Ollama's TestExecuteWithMessages / TestExecuteWithSuffix / TestParse / TestCollate --------

MISTRAL_NO_RESPONSE = "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] "
MISTRAL_RESPONSE = MISTRAL_NO_RESPONSE + "{{ .Response }}"
MISTRAL_MESSAGES = ('[INST] {{ if .System }}{{ .System }}\n\n{{ end }}\n{{- range .Messages }}\n'
                    '{{- if eq .Role "user" }}{{ .Content }}[/INST] {{ else if eq .Role '
                    '"assistant" }}{{ .Content }}[INST] {{ end }}\n{{- end }}')
FRIENDS = [{"role": "user", "content": "Hello friend!"},
           {"role": "assistant", "content": "Hello human!"},
           {"role": "user", "content": "What is your name?"}]
CHATML_LEGACY = ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
                 "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
                 "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n")
CHATML_MESSAGES = ("\n{{- range $index, $_ := .Messages }}<|im_start|>{{ .Role }}\n"
                   "{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n")
SYSTEM = [{"role": "system", "content": "You are a helpful assistant!"}]


@pytest.mark.parametrize(("templates", "messages", "expected"), [
    ((MISTRAL_NO_RESPONSE, MISTRAL_RESPONSE, MISTRAL_MESSAGES), FRIENDS,
     "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] "),
    ((MISTRAL_NO_RESPONSE, MISTRAL_RESPONSE, MISTRAL_MESSAGES), SYSTEM + FRIENDS,
     "[INST] You are a helpful assistant!\n\nHello friend![/INST] Hello human![INST] What is "
     "your name?[/INST] "),
    (("[INST] {{ .Prompt }}[/INST] ", "[INST] {{ .Prompt }}[/INST] {{ .Response }}",
      '\n{{- range $i, $m := .Messages }}\n{{- if eq .Role "user" }}[INST] {{ .Content }}[/INST]'
      ' {{ else if eq .Role "assistant" }}{{ .Content }}{{ end }}\n{{- end }}'),
     FRIENDS + [{"role": "assistant", "content": "My name is Ollama and I"}],
     "[INST] Hello friend![/INST] Hello human![INST] What is your name?[/INST] My name is "
     "Ollama and I"),
    ((CHATML_LEGACY, CHATML_MESSAGES), SYSTEM + FRIENDS,
     "<|im_start|>system\nYou are a helpful assistant!<|im_end|>\n<|im_start|>user\nHello "
     "friend!<|im_end|>\n<|im_start|>assistant\nHello human!<|im_end|>\n<|im_start|>user\n"
     "What is your name?<|im_end|>\n<|im_start|>assistant\n"),
], ids=["mistral", "mistral-system", "mistral-assistant-continues", "chatml"])
def test_legacy_and_messages_templates_agree_as_in_ollamas_tests(templates, messages,
                                                                  expected) -> None:
    for template in templates:
        assert render_go_template(template, messages) == expected, template


CODELLAMA_FIM = ("{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>\n"
                 "{{- else }}{{ .Prompt }}\n{{- end }}")


def test_suffix_selects_fill_in_the_middle_as_in_ollamas_test() -> None:
    assert render_go_template(CODELLAMA_FIM, [{"role": "user", "content": "hello"}]) == "hello"
    assert render_go_template(CODELLAMA_FIM, [{"role": "user", "content": "def add("}],
                              suffix="return x") == "<PRE> def add( <SUF>return x <MID>"
    # Go needs both a prompt and a suffix for the FIM path
    assert render_go_template(CODELLAMA_FIM, [{"role": "user", "content": "hi"}],
                              suffix="") == "hi"


@pytest.mark.parametrize(("template", "names"), [
    ("{{ .Prompt }}", ["prompt", "response"]),
    ("{{ .System }} {{ .Prompt }}", ["prompt", "response", "system"]),
    ("{{ .System }} {{ .Prompt }} {{ .Response }}", ["prompt", "response", "system"]),
    ("{{ with .Tools }}{{ . }}{{ end }} {{ .System }} {{ .Prompt }}",
     ["prompt", "response", "system", "tools"]),
    ("{{ range .Messages }}{{ .Role }} {{ .Content }}{{ end }}", ["content", "messages", "role"]),
    ('{{ range .Messages }}{{ if eq .Role "tool" }}Tool Result: {{ .ToolName }} {{ .Content }}'
     "{{ end }}{{ end }}", ["content", "messages", "role", "toolname"]),
    ('{{- range .Messages }}\n{{- if eq .Role "system" }}SYSTEM:\n{{- else if eq .Role "user" }}'
     'USER:\n{{- else if eq .Role "assistant" }}ASSISTANT:\n{{- else if eq .Role "tool" }}TOOL: '
     "\n{{- end }} {{ .Content }}\n{{- end }}", ["content", "messages", "role"]),
    ("{{- if .Messages }}\n{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>"
     "\n{{ end }}<|im_start|>assistant\n{{ else -}}\n{{ if .System }}<|im_start|>system\n"
     "{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}"
     "<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n{{- end -}}",
     ["content", "messages", "prompt", "response", "role", "system"]),
])
def test_template_vars_as_in_ollamas_test(template: str, names: list[str]) -> None:
    assert sorted(template_vars(template)) == names


def test_template_vars_give_the_capabilities_of_library_templates() -> None:
    assert {"tools", "messages", "$", "$last"} <= template_vars(load("library-qwen2.5"))
    assert "suffix" not in template_vars(load("library-qwen2.5"))
    assert {"tools", "suffix"} <= template_vars(load("library-qwen2.5-coder"))
    assert not {"tools", "suffix"} & template_vars(load("library-gemma3"))


def test_collate_as_in_ollamas_test() -> None:
    system, merged = collate([{"role": "user", "content": "Hello"},
                              {"role": "user", "content": "How are you?"}])
    assert (system, [(m.Role, m.Content) for m in merged]) == (
        "", [("user", "Hello\n\nHow are you?")])
    tools = [{"role": "tool", "content": "sunny", "tool_name": "get_weather"},
             {"role": "tool", "content": "72F", "tool_name": "get_temperature"}]
    system, merged = collate([{"role": "system", "content": "You are helpful"},
                              {"role": "user", "content": "Hello"},
                              {"role": "assistant", "content": "Hi there!"},
                              {"role": "user", "content": "What's the weather?"},
                              *tools, {"role": "user", "content": "Thanks"}])
    assert system == "You are helpful"
    assert [(m.Role, m.Content, m.ToolName) for m in merged] == [
        ("system", "You are helpful", ""), ("user", "Hello", ""), ("assistant", "Hi there!", ""),
        ("user", "What's the weather?", ""), ("tool", "sunny", "get_weather"),
        ("tool", "72F", "get_temperature"), ("user", "Thanks", "")]
    # every system content reaches .System; roles are lower-cased as Ollama decodes them
    system, merged = collate([{"role": "SYSTEM", "content": "a"}, {"role": "user", "content": "u"},
                              {"role": "system", "content": "b"}])
    assert system == "a\n\nb" and [m.Role for m in merged] == ["system", "user", "system"]


# -- the legacy path ---------------------------------------------------------------------------

LEGACY = "{{ if .System }}[S:{{ .System }}]{{ end }}[U:{{ .Prompt }}][A:{{ .Response }}]|\n"


def test_legacy_path_renders_every_turn_and_stops_after_the_last_response() -> None:
    messages = [{"role": "system", "content": "s1"}, {"role": "user", "content": "u1"},
                {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
                {"role": "assistant", "content": "a2"}, {"role": "system", "content": "s2"},
                {"role": "user", "content": "u3"}]
    assert render_go_template(LEGACY, messages) == (
        "[S:s1][U:u1][A:a1]|\n"  # a user after a response closes a turn
        "[U:u2][A:a2]|\n"  # so does a system message after a prompt or response
        "[S:s2][U:u3][A:")  # the last turn stops right after {{ .Response }}


def test_legacy_path_cut_keeps_the_enclosing_block_and_drops_everything_after() -> None:
    template = "<{{ if .Prompt }}Q:{{ .Prompt }} R:{{ .Response }} end{{ end }} tail>"
    assert render_go_template(template, [{"role": "user", "content": "u"}]) == "<Q:u R:"
    # an ongoing assistant message is continued: it is the last turn's response
    assert render_go_template(template, [{"role": "user", "content": "u"},
                                         {"role": "assistant", "content": "Sure, "}]
                              ) == "<Q:u R:Sure, "


def test_legacy_template_without_response_gets_one_appended() -> None:
    messages = [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "u2"}]
    assert render_go_template("{{ .Prompt }}", messages) == "u1a1u2"
    assert str(parse_go_template("{{ .Prompt }}").root) == "{{.Prompt}}{{.Response}}"
    # tool results and images play no part in the legacy path
    assert render_go_template("{{ .Prompt }};", [{"role": "tool", "content": "x"},
                                                  {"role": "user", "content": "q"}]) == "q;"


def test_messages_path_sees_think_flags_and_no_prompt() -> None:
    template = "{{ .Messages }}|{{ .Think }} {{ .ThinkLevel }} {{ .IsThinkSet }}|{{ .Prompt }}"
    hi = [{"role": "user", "content": "hi"}]
    assert render_go_template(template, hi).endswith("|false  false|<no value>")
    # true is level "medium" to a template (Ollama's ThinkValue.String)
    assert render_go_template(template, hi, think=True).endswith("|true medium true|<no value>")
    assert render_go_template(template, hi, think=False).endswith("|false  true|<no value>")
    assert render_go_template(template, hi, think="high").endswith("|true high true|<no value>")


# -- messages, tools and calls as templates see them ------------------------------------------

WEATHER = {"type": "function", "function": {
    "name": "get_current_weather",
    "description": "Get the current weather for a location",
    "parameters": {"type": "object", "required": ["location", "format"], "properties": {
        "location": {"type": "string", "description": "The city, e.g. Paris"},
        "format": {"type": "string", "description": "celsius or fahrenheit",
                   "enum": ["celsius", "fahrenheit"]}},
        "additionalProperties": False}}}  # not a field of Ollama's structs: dropped
WEATHER_FUNCTION_JSON = (
    '{"name":"get_current_weather","description":"Get the current weather for a location",'
    '"parameters":{"type":"object","required":["location","format"],"properties":{"format":'
    '{"type":"string","description":"celsius or fahrenheit","enum":["celsius","fahrenheit"]},'
    '"location":{"type":"string","description":"The city, e.g. Paris"}}}}')
WEATHER_JSON = '{"type":"function","function":' + WEATHER_FUNCTION_JSON + "}"
CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"function": {"name": "get_current_weather",
                  "arguments": {"location": "Paris", "format": "celsius"}}}]}
RESULT = {"role": "tool", "content": "22 degrees", "tool_name": "get_current_weather"}


def test_qwen25_renders_tools_a_call_and_its_result() -> None:
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the weather in Paris?"}, CALL, RESULT]
    assert render_go_template(load("library-qwen2.5"), messages, tools=[WEATHER]) == (
        "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more "
        "functions to assist with the user query.\n\nYou are provided with function signatures "
        "within <tools></tools> XML tags:\n<tools>\n"
        '{"type": "function", "function": ' + WEATHER_FUNCTION_JSON + "}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_current_weather", "arguments": '
        '{"format":"celsius","location":"Paris"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n22 degrees\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n")


def test_llama32_prints_each_tool_as_json_in_the_last_user_turn() -> None:
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Weather in Paris?"}]
    assert render_go_template(load("library-llama3.2"), messages, tools=[WEATHER]) == (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n\n"
        "You are terse.When you receive a tool call response, use the output to format an answer "
        "to the orginal user question.\n\nYou are a helpful assistant with tool calling "
        "capabilities.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nGiven the following "
        "functions, please respond with a JSON for a function call with its proper arguments "
        "that best answers the given prompt.\n\nRespond in the format {\"name\": function name, "
        '"parameters": dictionary of argument name and its value}. Do not use variables.\n\n'
        + WEATHER_JSON + "\n\nWeather in Paris?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_phi4_mini_prints_the_tool_list_and_calls() -> None:
    messages = [{"role": "user", "content": "Paris?"}, CALL, RESULT]
    assert render_go_template(load("library-phi4-mini"), messages, tools=[WEATHER]) == (
        "<|system|>You are a helpful assistant with some tools.<|tool|>[" + WEATHER_JSON
        + "]<|/tool|><|end|><|user|>Paris?<|end|><|assistant|><|tool_call|>"
        '[{"name":"get_current_weather","arguments":{"format":"celsius","location":"Paris"}]'
        "<|/tool_call|><|end|><|tool|>22 degrees<|end|><|assistant|>")


def test_qwen25_coder_fill_in_the_middle() -> None:
    messages = [{"role": "user", "content": "def add(a, b):\n    "}]
    assert render_go_template(load("library-qwen2.5-coder"), messages,
                              suffix="\n\nprint(add(1, 2))\n") == (
        "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n\nprint(add(1, 2))\n<|fim_middle|>")


def test_gemma3_sends_system_as_a_user_turn() -> None:
    assert render_go_template(load("library-gemma3"), CONVERSATIONS["system-user-assistant-user"]
                              ) == (
        "<start_of_turn>user\nYou are a helpful assistant.<end_of_turn>\n"
        "<start_of_turn>user\nHello, how are you?<end_of_turn>\n"
        "<start_of_turn>model\nI'm doing great. How can I help you today?<end_of_turn>\n"
        "<start_of_turn>user\nI'd like to show off how chat templating works!<end_of_turn>\n"
        "<start_of_turn>model\n")


def test_json_of_messages_and_tools_uses_ollamas_json_tags() -> None:
    template = "{{ json .Messages }}\n{{ json .Tools }}\n{{ .Tools }}"
    messages = [{"role": "user", "content": "<b>hi</b> & bye"}, CALL,
                {**RESULT, "tool_call_id": "call_1"}, {"role": "assistant", "content": "ok",
                                                       "thinking": "hmm", "images": ["AAEC"]}]
    assert render_go_template(template, messages, tools=[WEATHER]) == (
        '[{"role":"user","content":"\\u003cb\\u003ehi\\u003c/b\\u003e \\u0026 bye"},'
        '{"role":"assistant","content":"","tool_calls":[{"function":{"index":0,'
        '"name":"get_current_weather","arguments":{"format":"celsius","location":"Paris"}}}]},'
        '{"role":"tool","content":"22 degrees","tool_name":"get_current_weather",'
        '"tool_call_id":"call_1"},'
        '{"role":"assistant","content":"ok","thinking":"hmm","images":["AAEC"]}]\n'
        "[" + WEATHER_JSON + "]\n[" + WEATHER_JSON + "]")
    # without tools, .Tools is Go's nil api.Tools: false, and JSON null; no messages: a nil slice
    assert render_go_template("{{ if .Tools }}yes{{ end }}{{ .Tools }} {{ json .Tools }} "
                              "{{ .Messages }} {{ json .Messages }}", []) == "null null [] null"


def test_struct_fields_by_go_name_and_arguments_print_as_json() -> None:
    template = ('{{ range .Messages }}{{ .Role }}:{{ range .ToolCalls }}{{ .Function.Name }}'
                '{{ .Function.Arguments }} {{ .Function.Arguments.location }} '
                '{{ index .Function.Arguments "format" }}{{ end }};{{ end }}'
                '{{ with index .Tools 0 }}{{ .Type }} {{ .Function.Parameters }}{{ end }}')
    assert render_go_template(template, [CALL], tools=[WEATHER]) == (
        'assistant:get_current_weather{"format":"celsius","location":"Paris"} Paris celsius;'
        'function {"type":"object","required":["location","format"],"properties":{"format":'
        '{"type":"string","description":"celsius or fahrenheit","enum":["celsius","fahrenheit"]'
        '},"location":{"type":"string","description":"The city, e.g. Paris"}}}')
    with pytest.raises(GoTemplateError, match="can't evaluate field role in type"):
        render_go_template("{{ range .Messages }}{{ .role }}{{ end }}", [CALL])


def test_tool_properties_range_in_key_order_with_typescript_types() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {
            "b": {"type": ["string", "null"], "description": "B"},
            "a": {"type": "integer"},
            "c": {"anyOf": [{"type": "boolean"}, {"type": "array"}]},
            "d": {}}}}}
    template = ("{{ range .Tools }}{{ range $name, $prop := .Function.Parameters.Properties }}"
                "{{ $name }}:{{ toTypeScriptType $prop }}/{{ $prop.Type }}/{{ $prop.Description }};"
                "{{ end }}{{ end }}{{ toTypeScriptType .Messages }}")
    assert render_go_template(template, [], tools=[tool]) == (
        "a:number/integer/;b:string | null/[string null]/B;c:boolean | any[]//;d:any//;any")


def test_tool_messages_stay_apart_and_calls_keep_their_fields() -> None:
    template = ('{{ range $i, $m := .Messages }}{{ $i }}={{ .Role }}/{{ .ToolName }}'
                '{{ if .ToolCalls }}/{{ len .ToolCalls }}{{ end }};{{ end }}')
    messages = [CALL, {"role": "assistant", "content": "more"}, RESULT, RESULT]
    # consecutive assistants merge (the later one's fields dropped); tool results do not
    assert render_go_template(template, messages) == (
        "0=assistant//1;1=tool/get_current_weather;2=tool/get_current_weather;")


def test_current_date_is_todays_date() -> None:
    before = datetime.date.today().isoformat()
    rendered = render_go_template('{{ currentDate }} {{ currentDate "%Y" }} {{ .Messages }}', [])
    after = datetime.date.today().isoformat()
    assert rendered in (f"{before} {before} []", f"{after} {after} []")


def test_parse_go_template_validates_and_caches() -> None:
    parsed = parse_go_template(load("library-qwen2.5"))
    assert parse_go_template(load("library-qwen2.5")) is parsed
    assert "messages" in parsed.vars
    with pytest.raises(GoTemplateError) as err:
        parse_go_template("{{ if .System }}unfinished")
    assert isinstance(err.value, ValueError)
    assert str(err.value) == "template: :1: unexpected EOF"
