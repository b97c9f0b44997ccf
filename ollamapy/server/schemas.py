"""Request bodies: JSON in, checked fields out, with the error text Ollama's Go server gives.

Ollama decodes bodies with encoding/json into typed structs, so a wrong type is a 400 such as
`json: cannot unmarshal string into Go struct field GenerateRequest.options of type
map[string]interface {}`; unknown fields are ignored; `null` leaves a field unset. Each
request type here is a table of field → Go type; `decode` checks a parsed body against it and
returns a plain dict holding only the fields that were present. `OPTION_RANGES` bounds the
numeric options. The same tables describe the API in `openapi.py`.

What Python's json would accept and Go's would not is refused here too, as a 400: NaN and
Infinity literals, numbers that overflow a float64, nesting deeper than `MAX_DEPTH` (Python's
parser would raise RecursionError far below Go's limit of 10000, and so could any later walk
of the value), and integers outside int64 where a Go int is expected. A lone UTF-16
surrogate escape (`"\\ud800"`) becomes U+FFFD, as Go decodes it, so no string the handlers see
fails to encode as UTF-8.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from ollamapy.server.errors import APIError, bad_request

MAX_DEPTH = 128  # arrays and objects inside one another: JSON schemas in `format` nest ~10
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _NotGoJSON(ValueError):
    """A literal Go's encoding/json refuses; the message is Go's."""


def _reject_constant(name: str) -> Any:  # NaN, Infinity, -Infinity
    raise _NotGoJSON(f"invalid character '{name.lstrip('-')[0]}' looking for beginning of "
                     "value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: Go's strconv.ParseFloat says out of range
        raise _NotGoJSON(f"json: cannot unmarshal number {text} into Go value of type float64")
    return value


def parse_json_body(body: bytes) -> Any:
    if not body.strip():
        raise bad_request("missing request body")
    try:
        value = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError:
        raise bad_request("invalid character in request body (not UTF-8)") from None
    except json.JSONDecodeError as e:
        raise bad_request(_go_json_message(body, e)) from None
    except _NotGoJSON as e:
        raise bad_request(str(e)) from None
    except RecursionError:
        raise bad_request("exceeded max depth") from None
    except ValueError as e:  # an integer literal of more than 4300 digits
        raise bad_request(f"json: cannot unmarshal number: {e}") from None
    # both walks are skipped unless the raw bytes say they could find something
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise bad_request("exceeded max depth")
    if _SURROGATE_ESCAPE.search(body):
        value = _replace_surrogates(value)
    return value


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in value, without recursion."""
    deepest, stack = 0, [(value, 1)] if isinstance(value, dict | list) else []
    while stack and deepest <= MAX_DEPTH:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _replace_surrogates(value: Any) -> Any:
    """Lone surrogates → U+FFFD in every string and key (the value nests at most MAX_DEPTH
    deep by now, so recursion is safe)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


def _go_json_message(body: bytes, e: json.JSONDecodeError) -> str:
    """Go's wording for the common syntax errors (the position is Python's)."""
    text = body.decode("utf-8", errors="replace")
    if e.pos >= len(text.rstrip()):
        return "unexpected EOF"
    char = text[e.pos]
    if e.msg.startswith("Expecting value"):
        return f"invalid character '{char}' looking for beginning of value"
    if e.msg.startswith("Extra data"):
        return f"invalid character '{char}' after top-level value"
    if "delimiter" in e.msg:
        return f"invalid character '{char}' after object key:value pair"
    if "property name" in e.msg:
        return f"invalid character '{char}' looking for beginning of object key string"
    return f"invalid character '{char}' ({e.msg.lower()})"


def json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_int(v: Any) -> bool:
    """A JSON number that fits Go's int (int64)."""
    return not isinstance(v, bool) and (
        isinstance(v, int) or (isinstance(v, float) and v.is_integer())
    ) and INT64_MIN <= v <= INT64_MAX


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


# Go type name → the check a JSON value must pass ("any" types accept everything)
GO_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": _is_int,
    "float64": _is_number,
    "[]int": _list_of(_is_int),
    "[]string": _list_of(lambda v: isinstance(v, str)),
    "[]api.ImageData": _list_of(lambda v: isinstance(v, str)),
    "map[string]interface {}": lambda v: isinstance(v, dict),
    "map[string]string": lambda v: isinstance(v, dict) and all(
        isinstance(x, str) for x in v.values()),
    "[]api.Message": _list_of(lambda v: isinstance(v, dict)),
    "api.Tools": _list_of(lambda v: isinstance(v, dict)),
    "json.RawMessage": lambda v: True,
    "*api.Duration": lambda v: True,  # checked by parse_keep_alive, with Go's own text
    "*api.ThinkValue": lambda v: isinstance(v, bool | str),
    "interface {}": lambda v: True,
}

Schema = Mapping[str, str]  # field name → Go type name

GENERATE: Schema = {
    "model": "string", "prompt": "string", "suffix": "string", "system": "string",
    "template": "string", "context": "[]int", "stream": "bool", "raw": "bool",
    "format": "json.RawMessage", "keep_alive": "*api.Duration", "images": "[]api.ImageData",
    "options": "map[string]interface {}", "think": "*api.ThinkValue", "truncate": "bool",
    "shift": "bool", "logprobs": "bool", "top_logprobs": "int",
}
CHAT: Schema = {
    "model": "string", "messages": "[]api.Message", "stream": "bool",
    "format": "json.RawMessage", "keep_alive": "*api.Duration", "tools": "api.Tools",
    "options": "map[string]interface {}", "think": "*api.ThinkValue", "truncate": "bool",
    "shift": "bool", "logprobs": "bool", "top_logprobs": "int",
}
MESSAGE: Schema = {
    "role": "string", "content": "string", "thinking": "string", "images": "[]api.ImageData",
    "tool_calls": "interface {}", "tool_name": "string", "tool_call_id": "string",
}
EMBED: Schema = {
    "model": "string", "input": "interface {}", "truncate": "bool", "dimensions": "int",
    "options": "map[string]interface {}", "keep_alive": "*api.Duration",
}
EMBEDDINGS: Schema = {
    "model": "string", "prompt": "string", "options": "map[string]interface {}",
    "keep_alive": "*api.Duration",
}
SHOW: Schema = {"model": "string", "name": "string", "verbose": "bool", "system": "string",
                "template": "string", "options": "map[string]interface {}"}
CREATE: Schema = {
    "model": "string", "name": "string", "stream": "bool", "from": "string",
    "files": "map[string]string", "adapters": "map[string]string", "template": "string",
    "license": "interface {}", "system": "string", "parameters": "map[string]interface {}",
    "messages": "[]api.Message", "quantize": "string", "quantization": "string",
}
TOKENIZE: Schema = {"model": "string", "content": "string", "add_special": "bool",
                    "parse_special": "bool", "keep_alive": "*api.Duration"}
DETOKENIZE: Schema = {"model": "string", "tokens": "[]int", "keep_alive": "*api.Duration"}
COPY: Schema = {"source": "string", "destination": "string"}
# username and password are read and ignored, as Ollama does
PULL: Schema = {"model": "string", "name": "string", "insecure": "bool", "stream": "bool",
                "username": "string", "password": "string"}
PUSH: Schema = PULL
DELETE: Schema = {"model": "string", "name": "string"}


# option → (minimum, maximum), inclusive, None for no bound; every integer option must also fit
# an int64, as Go's does. Values whose meaning Ollama documents are allowed: num_predict -1
# (no limit) and -2 (fill the context), repeat_last_n -1 (num_ctx), num_ctx 0 (the default).
OPTION_RANGES: dict[str, tuple[float | None, float | None]] = {
    "num_ctx": (0, None), "num_batch": (0, None), "num_gpu": (-1, None), "main_gpu": (0, None),
    "num_thread": (0, None), "num_keep": (-1, None), "num_predict": (-2, None),
    "repeat_last_n": (-1, None), "top_k": (0, None),
}


def check_option_ranges(options: Mapping[str, Any], int_options: frozenset[str]) -> None:
    """Raise a 400 for a numeric option outside its range (types are checked already)."""
    for key, value in options.items():
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key in int_options and not INT64_MIN <= value <= INT64_MAX:
            raise bad_request(f'option "{key}" must be of type integer (out of range)')
        low, high = OPTION_RANGES.get(key, (None, None))
        if low is not None and value < low:
            raise bad_request(f'option "{key}" must be at least {low}')
        if high is not None and value > high:
            raise bad_request(f'option "{key}" must be at most {high}')


def decode(body: bytes, schema: Schema, struct: str) -> dict[str, Any]:
    """Parse a request body and check it against schema; → {field: value} for the fields
    present and non-null. struct is the Go type name used in error messages."""
    data = parse_json_body(body)
    if not isinstance(data, dict):
        raise bad_request(f"json: cannot unmarshal {json_kind(data)} into Go value of type "
                          f"api.{struct}")
    return check_fields(data, schema, struct)


def check_fields(data: Mapping[str, Any], schema: Schema, struct: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        go_type = schema.get(key)
        if go_type is None or value is None:
            continue  # unknown fields are ignored; null leaves the default
        if not GO_TYPES[go_type](value):
            raise bad_request(f"json: cannot unmarshal {json_kind(value)} into Go struct field "
                              f"{struct}.{key} of type {go_type.removeprefix('*')}")
        out[key] = int(value) if go_type == "int" else value
    return out


def messages(raw: list[dict[str, Any]], struct: str) -> list[dict[str, Any]]:
    """Check each message; roles are lower-cased as api.Message decodes them, and a missing
    role or content is "" as in Go's struct (the ollama client leaves empty fields out, and
    templates read `message.content` of an assistant turn that only called tools)."""
    out = []
    for m in raw:
        msg = {"role": "", "content": ""} | check_fields(m, MESSAGE, f"{struct}.messages")
        msg["role"] = msg["role"].lower()
        out.append(msg)
    return out


def require_model(fields: Mapping[str, Any], *aliases: str) -> str:
    for key in ("model", *aliases):
        if fields.get(key):
            return fields[key]
    raise APIError(400, "model is required")
