"""The functions a template may call: Go's builtins, and `json`, `currentDate`, `yesterdayDate`,
`toTypeScriptType` that Ollama's template package adds.

Each behaves as Go's does on the values of `govalues`: `eq` takes several arguments (true if the
first equals any other) and is false, not an error, against a missing value; `lt`/`le`/`gt`/`ge`
compare numbers or strings of one kind; `len`, `index` and `slice` count strings in bytes;
`html`/`js`/`urlquery` escape as Go's do. `and`/`or` short-circuit, so the executor runs them
itself. A function fails with `FuncError` (reported as `error calling NAME: …`) or, for an
argument of the wrong type, `ArgTypeError` (reported bare, as Go's argument checks are).
"""

from __future__ import annotations

import datetime
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ollamapy.text.gofmt import format_value, sprint, sprintf, sprintln
from ollamapy.text.gojson import UnsupportedValue, marshal
from ollamapy.text.govalues import GoList, GoStruct, go_type_name, is_true


class FuncError(Exception):
    """A function's own error; the executor prefixes `error calling NAME: `."""


class ArgTypeError(Exception):
    """An argument of a type the function cannot take."""


@dataclass(frozen=True, slots=True)
class Func:
    call: Callable[[Sequence[Any]], Any]
    min_args: int
    max_args: int | None  # None: variadic


def _kind(value: Any) -> str | None:
    # Go's basicKind: the kinds eq/lt compare directly; None for structs, slices, maps
    if value is None:
        return "invalid"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return None


def _eq(args: Sequence[Any]) -> bool:
    first, others = args[0], args[1:]
    if not others:
        raise FuncError("missing argument for comparison")
    kind = _kind(first)
    for other in others:
        if _kind(other) != kind:
            # a missing value (nil) is simply unequal to anything else
            if first is not None and other is not None:
                raise FuncError("incompatible types for comparison")
            continue
        if kind is None:
            for side in (first, other):
                if isinstance(side, list | tuple | dict | bytes):
                    raise FuncError(f"non-comparable type {format_value(side)}: "
                                    f"{go_type_name(side)}")
        if first == other:
            return True
    return False


def _lt(args: Sequence[Any]) -> bool:
    left, right = args
    kinds = (_kind(left), _kind(right))
    if any(kind not in ("int", "float", "string") for kind in kinds):
        raise FuncError("invalid type for comparison")
    if kinds[0] != kinds[1]:
        raise FuncError("incompatible types for comparison")
    return left < right


def _le(args: Sequence[Any]) -> bool:
    return _lt(args) or _eq(args)


def _len(args: Sequence[Any]) -> int:
    (item,) = args
    if item is None:
        raise FuncError("len of nil pointer")
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, bool | int | float | GoStruct) or not hasattr(item, "__len__"):
        raise FuncError(f"len of type {go_type_name(item)}")
    return len(item)


def _position(index: Any, bound: int) -> int:
    # Go's indexArg: an int within 0..bound
    if index is None:
        raise FuncError("cannot index slice/array with nil")
    if not isinstance(index, int) or isinstance(index, bool):
        raise FuncError(f"cannot index slice/array with type {go_type_name(index)}")
    if index < 0 or index > bound:
        raise FuncError(f"index out of range: {index}")
    return index


def _index(args: Sequence[Any]) -> Any:
    item = args[0]
    if item is None:
        raise FuncError("index of untyped nil")
    for index in args[1:]:
        if item is None:
            raise FuncError("index of nil pointer")
        if isinstance(item, str | bytes | list | tuple):
            items = item.encode() if isinstance(item, str) else item
            position = _position(index, len(items))
            if position == len(items):
                raise FuncError(f"index out of range: {position}")
            item = items[position]
        elif isinstance(item, dict):
            if not isinstance(index, str):
                raise FuncError(f"value has type {go_type_name(index)}; should be string")
            item = item.get(index)
        else:
            raise FuncError(f"can't index item of type {go_type_name(item)}")
    return item


def _slice(args: Sequence[Any]) -> Any:
    item, indexes = args[0], args[1:]
    if item is None:
        raise FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
        items: Any = item.encode()
    elif isinstance(item, bytes | list | tuple):
        items = item
    else:
        raise FuncError(f"can't slice item of type {go_type_name(item)}")
    bounds = [0, len(items), len(items)]
    for i, index in enumerate(indexes):
        bounds[i] = _position(index, len(items))
    for low, high in ((bounds[0], bounds[1]), (bounds[1], bounds[2])):
        if low > high:
            raise FuncError(f"invalid slice index: {low} > {high}")
    part = items[bounds[0]:bounds[1]]
    if isinstance(item, str):
        return part.decode("utf-8", "replace")
    if isinstance(item, GoList):
        return GoList(part, json_stringer=item.json_stringer, go_type=item.go_type)
    return part


def _escape_args(args: Sequence[Any]) -> str:
    # Go's evalArgs: a lone string as is, else fmt.Sprint with nil shown as <no value>
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(["<no value>" if arg is None else arg for arg in args])


_HTML = str.maketrans({'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;",
                       "\0": "\ufffd"})
_JS = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026",
       "=": "\\u003D"}


def _js(args: Sequence[Any]) -> str:
    out = []
    for ch in _escape_args(args):
        if ch in _JS:
            out.append(_JS[ch])
        elif ch < " " or (not ch.isascii() and not ch.isprintable()):
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def _printf(args: Sequence[Any]) -> str:
    if not isinstance(args[0], str):
        raise ArgTypeError(f"wrong type for value; expected string; got {go_type_name(args[0])}")
    return sprintf(args[0], args[1:])


def _call(args: Sequence[Any]) -> Any:
    if args[0] is None:
        raise FuncError("call of nil")
    raise FuncError(f"non-function of type {go_type_name(args[0])}")


def _json(args: Sequence[Any]) -> str:
    try:
        return marshal(args[0])
    except UnsupportedValue:
        return ""  # Ollama ignores json.Marshal's error and prints nothing


def _date(days_back: int) -> Callable[[Sequence[Any]], str]:
    def date(args: Sequence[Any]) -> str:
        # Ollama accepts a format argument and ignores it: always YYYY-MM-DD, local time
        for arg in args:
            if not isinstance(arg, str):
                raise ArgTypeError(
                    f"wrong type for value; expected string; got {go_type_name(arg)}")
        return (datetime.date.today() - datetime.timedelta(days=days_back)).isoformat()
    return date


def _typescript(args: Sequence[Any]) -> str:
    convert = getattr(args[0], "to_typescript_type", None)
    return convert() if convert is not None else "any"


def _not_called(args: Sequence[Any]) -> Any:
    raise AssertionError("and/or are evaluated by the executor, which short-circuits them")


FUNCS: dict[str, Func] = {
    "and": Func(_not_called, 1, None),
    "or": Func(_not_called, 1, None),
    "not": Func(lambda args: not is_true(args[0]), 1, 1),
    "eq": Func(_eq, 1, None),
    "ne": Func(lambda args: not _eq(args), 2, 2),
    "lt": Func(_lt, 2, 2),
    "le": Func(_le, 2, 2),
    "gt": Func(lambda args: not _le(args), 2, 2),
    "ge": Func(lambda args: not _lt(args), 2, 2),
    "len": Func(_len, 1, 1),
    "index": Func(_index, 1, None),
    "slice": Func(_slice, 1, None),
    "print": Func(sprint, 0, None),
    "println": Func(sprintln, 0, None),
    "printf": Func(_printf, 1, None),
    "html": Func(lambda args: _escape_args(args).translate(_HTML), 0, None),
    "js": Func(_js, 0, None),
    "urlquery": Func(lambda args: urllib.parse.quote_plus(_escape_args(args), safe=""), 0, None),
    "call": Func(_call, 1, None),
    # Ollama's additions (template/template.go)
    "json": Func(_json, 1, 1),
    "currentDate": Func(_date(0), 0, None),
    "yesterdayDate": Func(_date(1), 0, None),
    "toTypeScriptType": Func(_typescript, 1, 1),
}
