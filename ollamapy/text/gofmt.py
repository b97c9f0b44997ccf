"""Go's `fmt` for template values: how `{{ x }}` prints, and `print`, `println`, `printf`.

`%v` is Go's default format: strings as is, floats in shortest `%g` form (`1e+06`, `0.5`), nil as
`<nil>`, slices `[a b]`, maps `map[k:v]` in key order, structs `{a b}` (`%+v`: `{Name:a}`), and a
value with a String method (Ollama's tools, tool-call arguments) as that string. `printf` knows
the flags `-+# 0`, width and precision (`*` too) and the verbs `v s q d t f F e E g G x X c o O
b U`; a wrong verb or argument reads as Go's (`%!d(string=hi)`, `%!s(MISSING)`,
`%!(EXTRA int=1)`). Not reproduced: pointer addresses (a struct prints as `{…}` at any depth),
explicit argument indexes `%[1]d`, and `%x` of floats.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ollamapy.text.gojson import UnsupportedValue, format_float, marshal
from ollamapy.text.gotemplate_lex import go_quote
from ollamapy.text.govalues import GoMap, GoStruct, go_type_name, sorted_items, struct_fields


def stringer(value: Any) -> str | None:
    """What the value's String method returns, if it has one."""
    if hasattr(value, "go_string"):
        return value.go_string()
    if getattr(value, "json_stringer", False):
        if isinstance(value, GoMap) and value.nil:
            return "{}"
        try:
            return marshal(value)
        except UnsupportedValue:
            return ""
    return None


def format_value(value: Any, plus: bool = False) -> str:
    """fmt's %v (and %+v, which names struct fields)."""
    text = stringer(value)
    if text is not None:
        return text
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value, "g")
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return "[" + " ".join(map(str, value)) + "]"
    if isinstance(value, GoStruct):
        return "{" + " ".join((f"{name}:" if plus else "") + format_value(item, plus)
                              for name, item in struct_fields(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + " ".join(format_value(item, plus) for item in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{format_value(key, plus)}:{format_value(item, plus)}"
                                 for key, item in sorted_items(value)) + "]"
    return str(value)


def sprint(args: Sequence[Any]) -> str:
    # Go's Sprint puts a space between operands when neither side is a string
    out: list[str] = []
    previous_string = False
    for i, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if i and not is_string and not previous_string:
            out.append(" ")
        out.append(format_value(arg))
        previous_string = is_string
    return "".join(out)


def sprintln(args: Sequence[Any]) -> str:
    return " ".join(format_value(arg) for arg in args) + "\n"


@dataclass(frozen=True, slots=True)
class _Spec:
    minus: bool = False
    plus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    width: int | None = None
    precision: int | None = None


_DIRECTIVE = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(\*|\d*))?(.)?", re.DOTALL)


_MAX_SIZE = 1_000_000  # fmt's tooLarge: no width or precision beyond it


def _overflows(digits: str | None) -> bool:
    """Go's parsenum stops once the number read so far passes _MAX_SIZE and a digit follows."""
    if not digits or digits == "*":
        return False
    num = 0
    for d in digits:
        if num > _MAX_SIZE:
            return True
        num = num * 10 + int(d)
    return False


def sprintf(fmt: str, args: Sequence[Any]) -> str:
    out: list[str] = []
    next_arg = 0
    i = 0
    while i < len(fmt):
        start = fmt.find("%", i)
        if start < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:start])
        match = _DIRECTIVE.match(fmt, start)
        assert match is not None  # every part of the pattern is optional
        flags, width, precision, verb = match.groups()
        i = match.end()
        if verb is None or any(_overflows(size) for size in (width, precision)):
            out.append("%!(NOVERB)")  # Go's parsenum gives up on a huge size: the rest is lost
            break
        if verb == "%":
            out.append("%")
            continue
        sizes: list[int | None] = []
        for size in (width, precision):
            if size == "*":
                star = args[next_arg] if next_arg < len(args) else None
                next_arg += 1
                if not isinstance(star, int) or isinstance(star, bool) or abs(star) > _MAX_SIZE:
                    out.append("%!(BADWIDTH)" if size is width else "%!(BADPREC)")
                    star = None
                sizes.append(star)
            else:
                sizes.append(int(size) if size else (0 if size == "" else None))
        spec = _Spec("-" in flags, "+" in flags, "#" in flags, " " in flags,
                     "0" in flags and "-" not in flags, sizes[0], sizes[1])
        if next_arg >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(format_verb(args[next_arg], verb, spec))
        next_arg += 1
    if next_arg < len(args):
        extra = ", ".join("<nil>" if arg is None else f"{go_type_name(arg)}={format_value(arg)}"
                          for arg in args[next_arg:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def format_verb(value: Any, verb: str, spec: _Spec | None = None, names: bool = False) -> str:
    spec = spec or _Spec()
    if verb == "v" and spec.plus:
        # %+v names struct fields (at any depth); it adds no signs to numbers
        spec, names = dataclasses.replace(spec, plus=False), True
    if verb in "vsqxX":
        text = stringer(value)
        if text is not None:
            value = text
    if value is None:
        return _pad("<nil>", spec) if verb == "v" else f"%!{verb}(<nil>)"
    if isinstance(value, bool):
        if verb in "vt":
            return _pad("true" if value else "false", spec)
    elif isinstance(value, int):
        if verb in "vdboOxXcqU":
            return _format_int(value, verb, spec)
    elif isinstance(value, float):
        if verb in "veEfFgG":
            return _format_float(value, verb, spec)
    elif isinstance(value, str | bytes):
        if verb in "vsqxX" or (isinstance(value, bytes) and verb == "d"):
            return _format_text(value, verb, spec)
    elif isinstance(value, GoStruct):
        return "{" + " ".join((f"{name}:" if names else "") + format_verb(item, verb, spec, names)
                              for name, item in struct_fields(value)) + "}"
    elif isinstance(value, list | tuple):
        return "[" + " ".join(format_verb(item, verb, spec, names) for item in value) + "]"
    elif isinstance(value, dict):
        return "map[" + " ".join(f"{format_verb(key, verb, spec, names)}:"
                                 f"{format_verb(item, verb, spec, names)}"
                                 for key, item in sorted_items(value)) + "]"
    elif verb == "v":
        return _pad(format_value(value), spec)
    return f"%!{verb}({go_type_name(value)}={format_value(value)})"


def _pad(text: str, spec: _Spec, signed: bool = False) -> str:
    if spec.width is None or len(text) >= spec.width:
        return text
    fill = spec.width - len(text)
    if spec.minus:
        return text + " " * fill
    if spec.zero:
        # zeros go after a sign: -0042
        if signed and text[:1] in ("+", "-", " "):
            return text[0] + "0" * fill + text[1:]
        return "0" * fill + text
    return " " * fill + text


def _sign(negative: bool, spec: _Spec) -> str:
    return "-" if negative else "+" if spec.plus else " " if spec.space else ""


def _format_int(value: int, verb: str, spec: _Spec) -> str:
    if verb == "c":
        return _pad(chr(value), spec)
    if verb == "q":
        return _pad("'" + go_quote(chr(value))[1:-1].replace("'", "\\'").replace('\\"', '"')
                    + "'", spec)
    if verb == "U":
        text = f"U+{value:04X}"
        return _pad(text + (f" '{chr(value)}'" if spec.sharp else ""), spec)
    base = {"v": "d", "d": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}[verb]
    digits = format(abs(value), base)
    if spec.precision is not None:
        digits = "" if spec.precision == 0 and value == 0 else digits.zfill(spec.precision)
    prefix = "0o" if verb == "O" else ""
    if spec.sharp:
        prefix = {"b": "0b", "o": "0", "x": "0x", "X": "0X"}.get(verb, prefix)
    sign = _sign(value < 0, spec)
    if spec.zero and spec.precision is None and spec.width and not spec.minus:
        digits = digits.zfill(spec.width - len(sign) - len(prefix))
    return _pad(sign + prefix + digits, spec)


def _format_float(value: float, verb: str, spec: _Spec) -> str:
    if not math.isfinite(value):
        text = "NaN" if math.isnan(value) else ("-Inf" if value < 0 else "+Inf")
        if text == "+Inf" and not spec.plus:
            text = " Inf" if spec.space else "+Inf"
        return _pad(text, _Spec(spec.minus, width=spec.width))  # never zero-padded
    kind = verb.lower() if verb not in "vF" else ("g" if verb == "v" else "f")
    precision = spec.precision
    if precision is None and kind in "ef":
        precision = 6
    if precision is None:
        text = format_float(abs(value), kind)
    else:
        text = format(abs(value), f".{precision}{kind}")
    if verb in "EG":
        text = text.upper()
    return _pad(_sign(math.copysign(1.0, value) < 0, spec) + text, spec, signed=True)


def _format_text(value: str | bytes, verb: str, spec: _Spec) -> str:
    if isinstance(value, bytes) and verb in "vd":
        return "[" + " ".join(_format_int(byte, "d", spec) for byte in value) + "]"
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if verb in "xX":
        raw = value if isinstance(value, bytes) else value.encode()
        if spec.precision is not None:
            raw = raw[:spec.precision]
        hexed = [f"{byte:02x}" for byte in raw]
        prefix = "0x" if spec.sharp else ""
        out = (" ".join(prefix + h for h in hexed) if spec.space
               else prefix + "".join(hexed) if hexed else "")
        return _pad(out.upper() if verb == "X" else out, spec)
    if spec.precision is not None:
        text = text[:spec.precision]
    if verb == "q":
        if spec.sharp and "`" not in text and all(ch.isprintable() or ch == "\t" for ch in text):
            return _pad(f"`{text}`", spec)
        return _pad(go_quote(text), spec)
    return _pad(text, spec)
