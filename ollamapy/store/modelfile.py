"""Modelfiles: parsing one into its instructions, and writing one back for `ollama show`.

Grammar (ollama:parser/parser.go, reference §8.5): one instruction per line, the instruction
word case-insensitive, `#` starts a comment line, and a value runs to the end of its line
unless it opens with `"` or `\"\"\"`, in which case it runs on, across lines, to the first line
end at which it is closed again. PARAMETER values are typed by the option's type in
`ollamapy.engine.options.Options` (Ollama's `api.FormatParams`), and `stop` accumulates.
Writing follows Ollama's `quote`: a value is wrapped in `"…"` when it has a line break or
leading/trailing space, and in `\"\"\"…\"\"\"` when it also holds a `"`. Error texts are Ollama's;
parse errors carry its `(line N): ` prefix.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ollamapy.engine.options import DEPRECATED_OPTIONS, Options
from ollamapy.store.errors import ModelfileError
from ollamapy.store.goformat import format_go_syntax, format_value

if TYPE_CHECKING:
    from ollamapy.store.model import Model

log = logging.getLogger(__name__)

INSTRUCTIONS = ("from", "license", "template", "system", "adapter", "draft", "renderer",
                "parser", "parameter", "message", "requires")
ERR_COMMAND = ('command must be one of "from", "license", "template", "system", "adapter", '
               '"draft", "renderer", "parser", "parameter", "message", or "requires"')
ERR_ROLE = 'message role must be one of "system", "user", or "assistant"'
ERR_NO_FROM = "no FROM line"
ROLES = ("system", "user", "assistant")
# instructions Ollama knows that name things we do not have (LoRA, draft models, Go renderers)
UNSUPPORTED = ("adapter", "draft", "renderer", "parser")

_WORD = re.compile(r"[A-Za-z]+")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_]+")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SEMVER = re.compile(r"v?(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*)"
                     r"(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?)?)?")
_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_FLOAT32_MAX = 3.4028234663852886e38


def _kind(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__",
                                                                 str(annotation))
    if text.startswith("tuple"):
        return "list"
    return "bool" if "bool" in text else text


OPTION_KINDS = {f.name: _kind(f.type) for f in dataclasses.fields(Options)}


@dataclass(frozen=True, slots=True)
class Modelfile:
    from_: str
    parameters: Mapping[str, Any] = field(default_factory=dict)  # typed; `stop` is a list
    template: str | None = None
    system: str | None = None
    licenses: tuple[str, ...] = ()
    messages: tuple[Mapping[str, str], ...] = ()  # {"role": …, "content": …}
    requires: str | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)  # deprecated parameters

    def create_kwargs(self) -> dict[str, Any]:
        """The `create_model` arguments besides the name and the FROM (which the caller turns
        into `from_` or `files`)."""
        return {"template": self.template, "system": self.system,
                "parameters": dict(self.parameters) or None,
                "messages": [dict(m) for m in self.messages] or None,
                "license": list(self.licenses) or None, "requires": self.requires}

    def to_text(self) -> str:
        return "".join(line + "\n" for line in _lines(self))


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Instruction:
    line: int
    word: str  # lower case
    arg: str  # parameter name or message role; "" otherwise
    value: str


def _unquote(s: str) -> str | None:
    """The value inside its quotes, or None while a quoted value is still open."""
    if s.startswith('"""'):
        return s[3:-3] if len(s) >= 6 and s.endswith('"""') else None
    if s.startswith('"'):
        return s[1:-1] if len(s) >= 2 and s.endswith('"') else None
    return s


def _instructions(text: str) -> Iterator[_Instruction]:
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    pos, line, n = 0, 1, len(text)

    def fail(at: int, message: str) -> ModelfileError:
        return ModelfileError(f"(line {at}): {message}")

    def skip_blanks(pos: int) -> int:
        while pos < n and text[pos] in " \t":
            pos += 1
        return pos

    while True:
        while pos < n and text[pos] in " \t\n":
            line += text[pos] == "\n"
            pos += 1
        if pos >= n:
            return
        if text[pos] == "#":
            end = text.find("\n", pos)
            pos = n if end < 0 else end
            continue
        start = line
        match = _WORD.match(text, pos)
        word = match.group() if match else ""
        pos += len(word)
        if word.lower() not in INSTRUCTIONS or pos >= n or text[pos] not in " \t":
            raise fail(start, ERR_COMMAND)
        word = word.lower()
        pos = skip_blanks(pos)
        arg = ""
        if word in ("parameter", "message"):
            match = (_PARAM_NAME if word == "parameter" else _WORD).match(text, pos)
            arg = match.group() if match else ""
            pos += len(arg)
            if word == "message" and arg not in ROLES:
                raise fail(start, ERR_ROLE)
            if not arg or pos >= n or text[pos] not in " \t":
                raise fail(start, "invalid parameter name" if word == "parameter" else ERR_ROLE)
            pos = skip_blanks(pos)
        begin = pos
        while True:
            end = text.find("\n", pos)
            end = n if end < 0 else end
            value = _unquote(text[begin:end].strip())
            if value is not None:
                break
            if end >= n:
                raise fail(start, "unexpected EOF: unterminated quoted value")
            pos, line = end + 1, line + 1
        pos = end
        yield _Instruction(start, word, arg, value)


def _parameter_value(name: str, raw: str) -> Any:
    """Ollama's api.FormatParams for one value, with its error texts."""
    kind = OPTION_KINDS.get(name)
    if kind is None:
        raise ModelfileError(f"unknown parameter '{name}'")
    if kind == "int":
        if not _INT.fullmatch(raw):
            raise ModelfileError(f"invalid int value [{raw}]")
        return int(raw)
    if kind == "float":
        if not _FLOAT.fullmatch(raw) or abs(float(raw)) > _FLOAT32_MAX:
            raise ModelfileError(f"invalid float value [{raw}]")
        # Ollama parses as float32 and sends that, so 0.1234567891 is stored as 0.12345679
        return float(str(np.float32(raw)))
    if kind == "bool":
        if raw not in _TRUE + _FALSE:
            raise ModelfileError(f"invalid bool value [{raw}]")
        return raw in _TRUE
    return raw  # one item of a list option (stop)


def parse_modelfile(text: str) -> Modelfile:
    instructions = list(_instructions(text))
    if not any(i.word == "from" for i in instructions):
        raise ModelfileError(ERR_NO_FROM)
    from_: str | None = None
    template = system = requires = None
    parameters: dict[str, Any] = {}
    licenses: list[str] = []
    messages: list[dict[str, str]] = []
    warnings: list[str] = []
    for ins in instructions:
        if ins.word in UNSUPPORTED:
            raise ModelfileError(f"{ins.word.upper()} is not supported by ollamapy")
        if ins.word == "from":
            if from_ is not None:
                raise ModelfileError(f"(line {ins.line}): only one FROM line is supported "
                                     "by ollamapy")
            if not ins.value:
                raise ModelfileError(ERR_NO_FROM)
            from_ = ins.value
        elif ins.word == "parameter":
            if ins.arg in DEPRECATED_OPTIONS:
                warnings.append(f"parameter {ins.arg} is deprecated")
                log.warning("Modelfile: parameter %s is deprecated and ignored", ins.arg)
                continue
            value = _parameter_value(ins.arg, ins.value)
            if OPTION_KINDS[ins.arg] == "list":
                parameters.setdefault(ins.arg, []).append(value)
            else:
                parameters[ins.arg] = value
        elif ins.word == "template":
            template = ins.value
        elif ins.word == "system":
            system = ins.value
        elif ins.word == "license":
            licenses.append(ins.value)
        elif ins.word == "message":
            messages.append({"role": ins.arg, "content": ins.value})
        elif ins.word == "requires":
            if not _SEMVER.fullmatch(ins.value):
                raise ModelfileError("requires must be a valid semver (e.g. 0.14.0)")
            requires = ins.value.removeprefix("v")
    assert from_ is not None
    return Modelfile(from_=from_, parameters=parameters, template=template, system=system,
                     licenses=tuple(licenses), messages=tuple(messages), requires=requires,
                     warnings=tuple(warnings))


# -- writing -------------------------------------------------------------------------------


def quote(value: str) -> str:
    """Ollama's quoting, plus one case it misses: a value that itself opens with `"` would be
    read back without its quotes, so it is wrapped too."""
    if "\n" in value or value != value.strip() or value.startswith('"'):
        return f'"""{value}"""' if '"' in value else f'"{value}"'
    return value


def _parameter_lines(parameters: Mapping[str, Any]) -> Iterator[str]:
    # Go ranges over the map in random order; sorted keys make the text reproducible
    for key in sorted(parameters):
        value = parameters[key]
        for item in value if isinstance(value, list | tuple) else [value]:
            yield f"PARAMETER {key} {quote(format_value(item))}"


def _lines(mf: Modelfile) -> Iterator[str]:
    yield f"FROM {mf.from_}"
    if mf.template is not None:
        yield f"TEMPLATE {quote(mf.template)}"
    if mf.system:
        yield f"SYSTEM {quote(mf.system)}"
    yield from _parameter_lines(mf.parameters)
    for text in mf.licenses:
        yield f"LICENSE {quote(text)}"
    for message in mf.messages:
        yield f"MESSAGE {message.get('role', '')} {quote(str(message.get('content', '')))}"
    if mf.requires:
        yield f"REQUIRES {quote(mf.requires)}"


def render_modelfile(model: Model, *, system: str | None = None,
                     options: Mapping[str, Any] | None = None) -> str:
    """The `modelfile` of /api/show: `system` replaces the model's SYSTEM and `options` are
    merged over its parameters, as ShowRequest's fields do."""
    mf = Modelfile(
        from_=str(model.model_path) if model.model_path is not None else model.short_name,
        parameters={**model.params, **(options or {})}, template=model.template,
        system=system or model.system, licenses=model.licenses,
        messages=tuple(m for m in model.messages if isinstance(m.get("role"), str)),
        requires=model.config.requires or None)
    lines = list(_lines(mf))
    # projector GGUFs follow the model as further FROM lines, as in Ollama's output
    lines[1:1] = [f"FROM {path}" for path in model.projector_paths]
    body = "".join(line + "\n" for line in lines)
    header = '# Modelfile generated by "ollama show"\n'
    if model.model_path is None:
        # no blob path to rebuild from: Ollama's safetensors branch names the model itself
        return header + body
    return (header + "# To build a new Modelfile based on this, replace FROM with:\n"
            f"# FROM {model.short_name}\n\n" + body)


def format_parameters(params: Mapping[str, Any]) -> str:
    """/api/show's `parameters`: Go's `%-30s %#v` per value, one line per list item."""
    lines = []
    for key in sorted(params):
        value = params[key]
        for item in value if isinstance(value, list | tuple) else [value]:
            lines.append(f"{key:<30} {format_go_syntax(item)}")
    return "\n".join(lines)
