"""Prompt assembly: which messages, which template, and history cut to fit num_ctx."""

from __future__ import annotations

import time

import pytest

from ollamapy import prompt as prompt_module
from ollamapy.prompt import ModelPrompt, chat_messages, fit_messages, generate_messages, render

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GO = ("{{ if .System }}S:{{ .System }}\n{{ end }}{{ range .Messages }}{{ .Role }}: "
      "{{ .Content }}\n{{ end }}assistant: ")


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def test_model_system_goes_first_unless_the_request_brings_one() -> None:
    model = ModelPrompt(system="Be brief.", messages=({"role": "user", "content": "m"},))
    assert chat_messages(model, [user("hi")])[:2] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "m"}]
    own = [{"role": "system", "content": "Mine."}, user("hi")]
    assert chat_messages(model, own)[0]["content"] == "m"  # history first, no model system
    assert chat_messages(model, own)[1:] == own


def test_generate_messages() -> None:
    model = ModelPrompt(system="Model system.", messages=(user("old"),))
    assert generate_messages(model, "p", None) == [
        {"role": "system", "content": "Model system."}, user("old"), user("p")]
    assert generate_messages(model, "p", "Mine", with_history=False) == [
        {"role": "system", "content": "Mine"}, user("p")]


def test_template_choice() -> None:
    msgs = [{"role": "system", "content": "sys"}, user("hi")]
    assert render(ModelPrompt(jinja_template=CHATML), msgs) == (
        "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n")
    go = ModelPrompt(go_template=GO, jinja_template=CHATML)  # the TEMPLATE layer wins
    assert render(go, msgs) == "S:sys\nsystem: sys\nuser: hi\nassistant: "
    assert render(ModelPrompt(), [user("just this")]) == "just this"
    assert render(ModelPrompt(jinja_template=CHATML), msgs,
                  go_template="{{ .Prompt }}!") == "hi!"


def test_oldest_messages_are_dropped_to_fit_keeping_system_and_last() -> None:
    model = ModelPrompt(jinja_template=CHATML)
    msgs = [{"role": "system", "content": "S"}] + [user(f"turn {i} " + "x " * 20)
                                                  for i in range(6)]
    count = len  # one "token" a character keeps the arithmetic visible
    full = render(model, msgs)
    prompt, dropped = fit_messages(model, msgs, len(full), count)
    assert (prompt, dropped) == (full, 0)
    prompt, dropped = fit_messages(model, msgs, len(full) - 1, count)
    assert dropped == 1 and "turn 0" not in prompt and "turn 1" in prompt
    assert prompt.startswith("<|im_start|>system\nS")
    prompt, dropped = fit_messages(model, msgs, 10, count)  # nothing fits: the last stays
    assert dropped == 5 and "turn 5" in prompt and "system\nS" in prompt


SPIN_JINJA = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
SPIN_GO = "{{ range $i := 99999 }}{{ range $j := 99999 }}{{ end }}{{ end }}"


@pytest.mark.parametrize(("model", "which"), [
    (ModelPrompt(jinja_template=SPIN_JINJA), "chat template"),
    (ModelPrompt(go_template=SPIN_GO), "template")])
def test_a_spinning_template_is_stopped_and_named(model: ModelPrompt, which: str,
                                                   monkeypatch) -> None:
    monkeypatch.setattr(prompt_module, "RENDER_SECONDS", 0.3)
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match=f"^{which} did not finish rendering the prompt "
                                         "within 0.3 s$"):
        render(model, msgs, seconds=0.3)
    with pytest.raises(ValueError, match=f"^{which} did not finish"):
        fit_messages(model, msgs * 3, 4096, len)


def test_fitting_spends_the_budget_on_rendering_not_on_counting(monkeypatch) -> None:
    """Counting tokens (the tokenizer's work, bounded by the body size) does not use up the
    template's time: ten slow counts beside fast renders still fit."""
    monkeypatch.setattr(prompt_module, "RENDER_SECONDS", 0.2)

    def slow_count(text: str) -> int:
        time.sleep(0.05)
        return len(text)

    msgs = [{"role": "user", "content": f"message {i}"} for i in range(10)]
    prompt, dropped = fit_messages(ModelPrompt(), msgs, 10_000, slow_count)
    assert dropped == 0 and prompt.startswith("message 0")
