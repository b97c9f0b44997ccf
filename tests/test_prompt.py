"""Prompt assembly: which messages, which template, and history cut to fit num_ctx."""

from __future__ import annotations

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
