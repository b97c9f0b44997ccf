"""Go's text encodings, reproduced so our bytes match what Ollama writes and shows.

A layer's digest is the hash of its bytes, so a params or config blob only dedupes with one
written by Ollama if it is encoded exactly as Go's `json.Encoder.Encode` does it: compact, map
keys sorted (callers sort), `<`, `>` and `&` escaped as `\\u003c` `\\u003e` `\\u0026`, floats in
Go's shortest form, and a trailing newline. `/api/show` prints parameters with Go's `%v` and
`%#v` verbs, whose float and string spellings differ from Python's too. The number and
string spellings themselves are shared with the Go template engine (`ollamapy.text.gojson`,
`ollamapy.text.gofmt`); this module adds what the store writes: ordered JSON documents and
strconv.Quote.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ollamapy.text.gofmt import format_value as go_format_value
from ollamapy.text.gojson import json_float
from ollamapy.text.gojson import quote as json_quote


def _encode(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, str):
        return json_quote(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json_quote(str(k))}:{_encode(v)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def json_bytes(value: Any) -> bytes:
    """Go's json.Marshal: compact, in the mapping's own key order."""
    return _encode(value).encode("utf-8")


def json_line(value: Any) -> bytes:
    """Go's json.Encoder.Encode: json_bytes plus the newline it always appends."""
    return json_bytes(value) + b"\n"


def sorted_map(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Go marshals a map with its keys sorted."""
    return {k: mapping[k] for k in sorted(mapping)}


_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                  "\t": "\\t", "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def quote(s: str) -> str:
    """strconv.Quote: printable characters as they are, the rest as Go escapes."""
    out = ['"']
    for char in s:
        code = ord(char)
        if char in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def format_value(value: Any) -> str:
    """fmt's %v for the JSON values a params blob holds."""
    return go_format_value(value)


def format_go_syntax(value: Any) -> str:
    """fmt's %#v: like %v, but strings are quoted."""
    return quote(value) if isinstance(value, str) else format_value(value)
