"""Go's `json.Marshal` for template values, and Go's spelling of floats (`strconv.FormatFloat`).

The output is compact and HTML-safe as Go's: `<`, `>`, `&`, U+2028 and U+2029 inside strings
become `\\u003c`, `\\u003e`, `\\u0026`, `\\u2028`, `\\u2029`; other non-ASCII text stays as is. Map
keys come out sorted, struct fields in declared order under their JSON tags (with omitempty),
nil slices and maps as `null`, []byte as base64, floats in Go's shortest form (1e+21 and up, or
below 1e-6, in exponent form). NaN and ±Inf cannot be marshalled (`UnsupportedValue`).
"""

from __future__ import annotations

import base64
import json
import math
from decimal import Decimal
from typing import Any

from ollamapy.text.govalues import GoList, GoMap, GoStruct, sorted_items, struct_fields


class UnsupportedValue(ValueError):
    """What json.Marshal refuses (NaN, ±Inf, values with no JSON form)."""


def marshal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json_float(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, bytes):
        return '"' + base64.b64encode(value).decode("ascii") + '"'
    if hasattr(value, "go_json"):
        return value.go_json()
    if isinstance(value, GoStruct):
        return _struct(value)
    if isinstance(value, GoList | GoMap) and value.nil:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(marshal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(quote(str(key)) + ":" + marshal(item)
                              for key, item in sorted_items(value)) + "}"
    raise UnsupportedValue(f"json: unsupported type: {type(value).__name__}")


def _struct(value: GoStruct) -> str:
    parts = []
    for name, item in struct_fields(value):
        tag = value.json_tags.get(name, name)
        key, _, options = tag.partition(",")
        if key == "-" or ("omitempty" in options.split(",") and _is_empty(item)):
            continue
        parts.append(quote(key or name) + ":" + marshal(item))
    return "{" + ",".join(parts) + "}"


def _is_empty(value: Any) -> bool:
    # omitempty drops false, 0, "", nil and empty slices/maps, never structs
    if value is None or isinstance(value, bool | int | float):
        return not value
    if isinstance(value, GoStruct):
        return False
    try:
        return len(value) == 0
    except TypeError:
        return False


_HTML_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                            "\u2028": "\\u2028", "\u2029": "\\u2029"})


def quote(text: str) -> str:
    """A JSON string as Go writes it: short escapes for \\b \\f \\n \\r \\t, HTML-safe."""
    return json.dumps(text, ensure_ascii=False).translate(_HTML_SAFE)


def json_float(value: float) -> str:
    if not math.isfinite(value):
        raise UnsupportedValue(f"json: unsupported value: {format_float(value, 'g')}")
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        text = format_float(value, "e")
        # Go writes 1e-07 as 1e-7 in JSON
        if text[-4:-1] == "e-0":
            text = text[:-2] + text[-1]
        return text
    return format_float(value, "f")


def shortest_digits(value: float) -> tuple[str, int]:
    """The fewest decimal digits that read back as `abs(value)`, and where the point goes:
    abs(value) == 0.DIGITS × 10**point."""
    if value == 0:
        return "0", 1
    _, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    return text, len(text) + int(exponent)


def format_float(value: float, fmt: str) -> str:
    """strconv.FormatFloat(value, fmt, -1, 64) for fmt in 'e', 'f', 'g': shortest digits."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    digits, point = shortest_digits(value)
    exponent = point - 1
    # shortest %g switches to exponent form outside 1e-4 ≤ |x| < 1e+06 (Go's eprec of 6)
    if fmt == "e" or (fmt == "g" and (exponent < -4 or exponent >= 6) and value != 0):
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        if value == 0:
            exponent = 0
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"
