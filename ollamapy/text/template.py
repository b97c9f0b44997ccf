"""Chat messages → one prompt string, through the model's Jinja chat template.

Templates come from the checkpoint (GGUF `tokenizer.chat_template`, or tokenizer_config.json)
and are untrusted code, so they run in Jinja's immutable sandbox with what Hugging Face's
`apply_chat_template` gives them: trim_blocks and lstrip_blocks, loop controls,
`{% generation %}` blocks, `raise_exception(msg)`, `strftime_now(fmt)` and a `tojson` filter
that keeps non-ASCII text and accepts indent. Reaching for an unsafe attribute (`__class__`,
`__globals__`, …) is an error, not a silent blank. Every template failure (syntax,
raise_exception, sandbox, a bug such as adding a number to a string) surfaces as a ValueError
carrying the message. Compiled templates are cached by their text.

What a template builds is bounded too (its running time is bounded by the caller,
`ollamapy.text.bounded`): `*`, `**`, `+`, `%` and `~` refuse results past MAX_CHARS items
before building them, a call refuses an integer argument that large (`center`, `indent`,
`truncate` widths), and the rendered text stops at MAX_CHARS.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

from jinja2 import Template, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ollamapy.text.bounded import MAX_CHARS

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


MAX_POWER_BITS = 4096  # an integer power that large is no prompt's business
_WIDE_FORMAT = re.compile(r"%[-#0 +]*(\d{8,}|\*)|%[-#0 +]*\d*\.(\d{8,}|\*)")


def _too_big(what: str) -> SecurityError:
    return SecurityError(f"{what} would be larger than {MAX_CHARS} characters")


_WIDE_FIELD = re.compile(r"\d{8,}")
_FORMATS = ("format", "format_map")


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple) else 0


def _check_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """A width or count argument (`center`, `indent`, `truncate`, str methods) that large would
    build a string that large."""
    if any(isinstance(a, int) and abs(a) > MAX_CHARS for a in (*args, *kwargs.values())):
        raise _too_big("a call's argument")


def _bounded_filter(f: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A filter whose arguments are checked first (filters are called directly, not through
    the environment's `call`); `wraps` keeps Jinja's pass_context/pass_environment marks."""
    @functools.wraps(f)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _check_arguments(args, kwargs)
        if name == "format" and args and isinstance(args[0], str) \
                and _WIDE_FORMAT.search(args[0]):
            raise _too_big("a format filter")
        return f(*args, **kwargs)
    return checked


class _BoundedConcat(CodeGenerator):
    """Compiles `a ~ b` to a join that checks the total size first (Jinja's own str_join
    cannot be intercepted otherwise)."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _ChatTemplateEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _BoundedConcat
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # the sandbox's default hands back an Undefined that prints as ""; refuse outright
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} "
                            "object is unsafe")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            count = right if isinstance(right, int) else left if isinstance(left, int) else 0
            if max(_sized(left), _sized(right)) * count > MAX_CHARS:
                raise _too_big("a repetition")
        elif operator == "+" and _sized(left) + _sized(right) > MAX_CHARS:
            raise _too_big("a concatenation")
        elif (operator == "**" and isinstance(left, int) and isinstance(right, int)
              and abs(left) > 1 and right * abs(left).bit_length() > MAX_POWER_BITS):
            raise SecurityError(f"a power of more than {MAX_POWER_BITS} bits")
        elif operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
            raise _too_big("a %-format")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_arguments(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        template = getattr(value, "__self__", None)  # "{:>99999999}".format(…)
        if (isinstance(template, str) and getattr(value, "__name__", "") in _FORMATS
                and _WIDE_FIELD.search(template)):
            raise _too_big("a str.format")
        return super().wrap_str_format(value)

    def concat(self, parts: Iterable[Any]) -> str:
        """Jinja's join of rendered parts (blocks, macros, `{% set %}…{% endset %}`) and,
        compiled so by _BoundedConcat, of `~`: the size is checked first."""
        texts = [str(p) for p in parts]
        if sum(map(len, texts)) > MAX_CHARS:
            raise _too_big("a joined text")
        return "".join(texts)


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
_ENV.filters = {name: _bounded_filter(f, name) for name, f in _ENV.filters.items()}
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
        out, size = [], 0
        for piece in compiled.generate(messages=[dict(m) for m in messages],
                                       add_generation_prompt=add_generation_prompt,
                                       bos_token=bos_token, eos_token=eos_token,
                                       tools=list(tools) if tools is not None else None,
                                       **extra):
            size += len(piece)
            if size > MAX_CHARS:
                raise _too_big("the rendered prompt")
            out.append(piece)
        return "".join(out)
    except _TemplateRaised as e:
        raise ValueError(f"chat template refused the messages: {e.message}") from e
    except TemplateError as e:
        raise ValueError(f"chat template failed: {e}") from e
    except Exception as e:  # the template is code from the checkpoint: its bugs are its own
        raise ValueError(f"chat template failed: {type(e).__name__}: {e}") from e
