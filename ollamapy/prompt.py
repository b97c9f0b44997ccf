"""Prompt assembly: which messages a request means, rendered by which template, cut to fit.

Ollama's rules (../shared/reference/ollama-api.md §3.1, §3.2, §5.2):
- chat: the model's MESSAGE history, then the request's messages; the model's SYSTEM is put
  first unless the request starts with a system message of its own;
- generate: [system (the request's, else the model's)] + MESSAGE history (unless `context`
  is given) + the user's prompt;
- the template is the model's Go TEMPLATE layer when it has one, else the checkpoint's own
  Jinja chat template, else the prompt alone (Ollama's `{{ .Prompt }}`);
- when the rendered prompt is longer than num_ctx, the oldest messages are dropped, keeping
  every system message before the kept window and always the last message.

A template is the model publisher's code: the renders one prompt takes run within
RENDER_SECONDS together (`ollamapy.text.bounded`), then fail with a ValueError naming it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ollamapy.text.bounded import TooSlow, within
from ollamapy.text.gotemplate import render_go_template
from ollamapy.text.template import DEFAULT_TEMPLATE, render_chat_template

Message = Mapping[str, Any]
Think = bool | str | None  # the request's think: off, on, a level, or unset
RENDER_SECONDS = 5.0  # for all the renders of one request's prompt


@dataclass(frozen=True, slots=True)
class ModelPrompt:
    """The model's side of every prompt: from its store layers and its checkpoint."""

    go_template: str | None = None  # TEMPLATE layer (Go text/template)
    jinja_template: str | None = None  # the checkpoint's chat template
    system: str | None = None  # SYSTEM layer
    messages: tuple[Message, ...] = ()  # MESSAGE layers
    bos_token: str = ""
    eos_token: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def template(self) -> str:
        """What /api/show reports as the template."""
        return self.go_template or self.jinja_template or "{{ .Prompt }}"


def chat_messages(model: ModelPrompt, request: Sequence[Message]) -> list[Message]:
    msgs = [*model.messages, *request]
    if model.system and (not request or request[0].get("role") != "system"):
        msgs.insert(0, {"role": "system", "content": model.system})
    return msgs


def generate_messages(model: ModelPrompt, prompt: str, system: str | None,
                      with_history: bool = True) -> list[Message]:
    msgs: list[Message] = []
    if system or model.system:
        msgs.append({"role": "system", "content": system or model.system})
    if with_history:
        msgs.extend(model.messages)
    msgs.append({"role": "user", "content": prompt})
    return msgs


def _jinja_thinking(messages: Sequence[Message], think: Think) -> tuple[list[Message],
                                                                          dict[str, Any]]:
    """A Jinja template's view of thinking, as llama.cpp's server gives it: an earlier
    answer's reasoning as `reasoning_content`; `enable_thinking` when the request set think,
    `reasoning_effort` when it named a level (gpt-oss's template knows low, medium, high)."""
    msgs = [{**m, "reasoning_content": m["thinking"]} if m.get("thinking") else m
            for m in messages]
    kwargs: dict[str, Any] = {}
    if think is not None:
        kwargs["enable_thinking"] = think is not False
    if isinstance(think, str):
        kwargs["reasoning_effort"] = "high" if think == "max" else think
    return msgs, kwargs


def render(model: ModelPrompt, messages: Sequence[Message], *,
           tools: Sequence[Mapping[str, Any]] | None = None, go_template: str | None = None,
           suffix: str | None = None, think: Think = None,
           seconds: float = RENDER_SECONDS) -> str:
    """Render messages with the request's Go template override, else the model's Go TEMPLATE,
    else its Jinja chat template, else the contents alone, within `seconds`. think: the
    request's (None: unset)."""
    template = go_template or model.go_template

    def run() -> str:
        if template is not None:
            return render_go_template(template, messages, tools=tools, suffix=suffix,
                                      think=think)
        msgs, kwargs = _jinja_thinking(messages, think)
        return render_chat_template(model.jinja_template or DEFAULT_TEMPLATE, msgs,
                                    add_generation_prompt=True, bos_token=model.bos_token,
                                    eos_token=model.eos_token, tools=tools or None, **kwargs)

    try:
        return within(seconds, run)
    except TooSlow:
        which = "template" if template is not None else "chat template"
        raise ValueError(f"{which} did not finish rendering the prompt within "
                         f"{RENDER_SECONDS:g} s") from None


def fit_messages(model: ModelPrompt, messages: Sequence[Message], num_ctx: int,
                 count_tokens: Callable[[str], int], *,
                 tools: Sequence[Mapping[str, Any]] | None = None,
                 think: Think = None) -> tuple[str, int]:
    """Render the longest tail of messages that fits num_ctx tokens (system messages before
    the tail are always kept, the last message always). → (prompt, messages dropped)."""
    spent = 0.0  # seconds spent rendering, not counting tokens

    def render_within_budget(msgs: Sequence[Message]) -> str:
        nonlocal spent
        begin = time.monotonic()
        try:
            return render(model, msgs, tools=tools, think=think,
                          seconds=RENDER_SECONDS - spent)
        finally:
            spent += time.monotonic() - begin

    last = len(messages) - 1
    start = last
    for i in range(last - 1, -1, -1):
        system = [m for m in messages[:i] if m.get("role") == "system"]
        prompt = render_within_budget([*system, *messages[i:]])
        if count_tokens(prompt) > num_ctx:
            break
        start = i
    kept = [*[m for m in messages[:start] if m.get("role") == "system"], *messages[start:]]
    dropped = len(messages) - len(kept)
    return render_within_budget(kept), dropped
