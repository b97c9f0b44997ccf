"""Chat templates: literal rendered prompts, HF's environment, and the sandbox holding."""

from __future__ import annotations

import datetime

import pytest

from ollamapy.text import template as template_module
from ollamapy.text.template import DEFAULT_TEMPLATE, MAX_CHARS, render_chat_template

CHAT = [{"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"}]


def test_smollm2_gguf_template_renders_chatml(smollm2_meta) -> None:
    template = smollm2_meta["tokenizer.chat_template"]
    assert render_chat_template(template, CHAT) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n")
    # without a system message the template writes its own; no generation prompt when not asked
    assert render_chat_template(template, CHAT[1:], add_generation_prompt=False) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n")


def test_default_template_is_the_plain_contents() -> None:
    assert render_chat_template(DEFAULT_TEMPLATE, [{"role": "user", "content": "The sky is"}]
                                ) == "The sky is"
    messages = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                {"role": "system", "content": "S"}, {"role": "assistant", "content": None},
                {"role": "user", "content": "Q2"}]
    assert render_chat_template(DEFAULT_TEMPLATE, messages) == "S\n\nQ1\n\nA1\n\nQ2"
    assert render_chat_template(DEFAULT_TEMPLATE, []) == ""


def test_bos_eos_and_extra_variables_reach_the_template() -> None:
    template = "{{ bos_token }}{{ messages[0]['content'] }}{{ eos_token }}{{ enable_thinking }}"
    out = render_chat_template(template, CHAT[1:], bos_token="<s>", eos_token="</s>",
                               enable_thinking=False)
    assert out == "<s>What is 2+2?</s>False"


def test_tools_are_passed_through_and_tojson_is_hf_style() -> None:
    tools = [{"type": "function", "function": {"name": "météo", "parameters": {"a<b": 1}}}]
    template = ("{% for tool in tools %}{{ tool['function']['name'] }};{% endfor %}"
                "{{ tools[0]['function']['parameters'] | tojson }};"
                "{{ tools[0]['function']['parameters'] | tojson(indent=2) }}")
    assert render_chat_template(template, CHAT, tools=tools) == (
        'météo;{"a<b": 1};{\n  "a<b": 1\n}')
    assert render_chat_template("{{ tools is none }}", CHAT) == "True"


def test_hf_environment_whitespace_control_and_loop_controls() -> None:
    # trim_blocks drops the newline after a tag, lstrip_blocks the indent before one
    assert render_chat_template("  {% if true %}\nX\n  {% endif %}\n", []) == "X\n"
    loop = "{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}" \
           "{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}"
    assert render_chat_template(loop, []) == "02"
    generation = "{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}" \
                 "{% endfor %}"
    assert render_chat_template(generation, CHAT) == "[You are terse.][What is 2+2?]"
    year = render_chat_template("{{ strftime_now('%Y') }}", [])
    assert year in {str(datetime.date.today().year), str(datetime.date.today().year + 1)}


def test_raise_exception_becomes_value_error_with_its_message() -> None:
    template = "{% if messages[0]['role'] != 'user' %}" \
               "{{ raise_exception('Conversation roles must start with user') }}{% endif %}ok"
    with pytest.raises(ValueError, match="Conversation roles must start with user"):
        render_chat_template(template, CHAT)
    assert render_chat_template(template, CHAT[1:]) == "ok"


def test_template_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="does not compile.*line 2"):
        render_chat_template("ok\n{% for m in messages %}", CHAT)
    with pytest.raises(ValueError, match="TypeError"):
        render_chat_template("{{ 1 + messages[0]['content'] }}", CHAT)


@pytest.mark.parametrize("escape", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ raise_exception.__globals__['json'] }}",
])
def test_sandbox_escapes_are_refused(escape: str) -> None:
    with pytest.raises(ValueError, match="unsafe"):
        render_chat_template(escape, CHAT)


def test_sandbox_never_runs_the_payload(tmp_path) -> None:
    marker = tmp_path / "pwned"
    payload = ("{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
               "{{ joiner.__init__.__globals__['os'].popen('touch " + str(marker) + "') }}")
    with pytest.raises(ValueError):
        render_chat_template(payload, CHAT)
    assert not marker.exists()
    # the immutable sandbox also refuses to modify what it is given
    with pytest.raises(ValueError, match="unsafe"):
        render_chat_template("{{ messages.append({'role': 'user'}) }}", CHAT)


def test_compiled_templates_are_cached() -> None:
    template = "{{ messages | length }} cached"
    before = template_module._compile.cache_info()
    assert render_chat_template(template, CHAT) == "2 cached"
    assert render_chat_template(template, CHAT[1:]) == "1 cached"
    after = template_module._compile.cache_info()
    assert after.misses - before.misses <= 1 and after.hits - before.hits >= 1


@pytest.mark.parametrize("template", [
    '{{ "x" * 10**9 }}',
    '{{ [0] * 10**9 }}',
    '{{ 2 ** 100000 }}',
    '{% set ns = namespace(s="xx") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}'
    '{% endfor %}',
    '{% set ns = namespace(s=["x"]) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}'
    '{% endfor %}',
    '{% set x %}{% for i in range(100) %}{{ "y" * 10**6 }}{% endfor %}{% endset %}{{ x }}',
    '{{ "%999999999d" % 1 }}',
    '{{ "%999999999d"|format(1) }}',
    '{{ "{:>999999999}".format(1) }}',
    '{{ "x"|center(10**9) }}',
    '{{ "x".ljust(10**9) }}',
    '{% for i in range(100000) %}{{ "x" * 1000 }}{% endfor %}',
])
def test_what_a_template_builds_is_bounded(template: str) -> None:
    """Each of these would build a string or list of a gigabyte or more (one C call, which
    a time limit cannot interrupt): refused before it is built."""
    with pytest.raises(ValueError, match=f"larger than {MAX_CHARS} characters|4096 bits"):
        render_chat_template(template, [{"role": "user", "content": "hi"}])


def test_the_bounded_operators_still_compute() -> None:
    out = render_chat_template(
        '{{ "ab" * 3 }} {{ 3 * "c" }} {{ 2 ** 10 }} {{ "%5d" % 3 }} {{ [1, 2] + [3] }} '
        '{{ 7 % 3 }} {{ "a" ~ 1 ~ "b" }} {{ "{}-{}".format(1, 2) }} {{ "x"|center(5) }} '
        '{{ 1 ** 5000 }}|'
        '{% set y %}[{{ messages[0].content }}]{% endset %}{{ y }}',
        [{"role": "user", "content": "hi"}])
    assert out == "ababab ccc 1024     3 [1, 2, 3] 1 a1b 1-2   x   1|[hi]"
