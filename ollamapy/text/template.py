"""Chat messages → one prompt string, through the model's Jinja chat template.

Templates come from the checkpoint (GGUF `tokenizer.chat_template`, or tokenizer_config.json)
and are untrusted code, so they run in Jinja's immutable sandbox with what Hugging Face's
`apply_chat_template` gives them: trim_blocks and lstrip_blocks, loop controls,
`{% generation %}` blocks, `raise_exception(msg)`, `strftime_now(fmt)` and a `tojson` filter
that keeps non-ASCII text and accepts indent. Reaching for an unsafe attribute (`__class__`,
`__globals__`, …) is an error, not a silent blank. Every template failure (syntax,
raise_exception, sandbox, a bug such as adding a number to a string) surfaces as a ValueError
carrying the message. Compiled templates are cached by their text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

from jinja2 import Template, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

# For a model without a chat template (a base model such as gemma3-270m). Ollama then uses
# `{{ .Prompt }}`, the bare prompt; here: each message's content as written, system messages
# first, the rest in order, separated by a blank line. A single user message renders as its
# content exactly; add_generation_prompt adds nothing.
DEFAULT_TEMPLATE = (
    "{%- set ns = namespace(parts=[]) -%}"
    "{%- for message in messages if message['role'] == 'system' and message['content'] -%}"
    "{%- set ns.parts = ns.parts + [message['content']] -%}"
    "{%- endfor -%}"
    "{%- for message in messages if message['role'] != 'system' and message['content'] -%}"
    "{%- set ns.parts = ns.parts + [message['content']] -%}"
    "{%- endfor -%}"
    "{{- ns.parts | join('\n\n') -}}"
)


class _TemplateRaised(TemplateError):
    """What a template's own raise_exception(...) call raises."""


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaised(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; chat templates want the JSON as is
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _ChatTemplateEnvironment(ImmutableSandboxedEnvironment):
    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # the sandbox's default hands back an Undefined that prints as ""; refuse outright
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} "
                            "object is unsafe")


class _GenerationBlocks(Extension):
    """`{% generation %}…{% endgeneration %}` marks assistant text for Hugging Face's training
    masks; rendering keeps the body as it is."""

    tags = {"generation"}

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


_ENV = _ChatTemplateEnvironment(trim_blocks=True, lstrip_blocks=True,
                                extensions=[loopcontrols, _GenerationBlocks])
_ENV.filters["tojson"] = _tojson
_ENV.globals["raise_exception"] = _raise_exception
_ENV.globals["strftime_now"] = _strftime_now


@lru_cache(maxsize=64)
def _compile(template: str) -> Template:
    try:
        return _ENV.from_string(template)
    except TemplateSyntaxError as e:
        raise ValueError(f"chat template does not compile: {e.message} (line {e.lineno})") from e


def render_chat_template(template: str, messages: Sequence[Mapping[str, Any]], *,
                         add_generation_prompt: bool = True, bos_token: str = "",
                         eos_token: str = "", tools: Sequence[Mapping] | None = None,
                         **extra: Any) -> str:
    compiled = _compile(template)
    try:
        return compiled.render(messages=[dict(m) for m in messages],
                               add_generation_prompt=add_generation_prompt,
                               bos_token=bos_token, eos_token=eos_token,
                               tools=list(tools) if tools is not None else None, **extra)
    except _TemplateRaised as e:
        raise ValueError(f"chat template refused the messages: {e.message}") from e
    except TemplateError as e:
        raise ValueError(f"chat template failed: {e}") from e
    except Exception as e:  # the template is code from the checkpoint: its bugs are its own
        raise ValueError(f"chat template failed: {type(e).__name__}: {e}") from e
