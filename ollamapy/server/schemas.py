"""Request bodies: JSON in, checked fields out, with the error text Ollama's Go server gives.

Ollama decodes bodies with encoding/json into typed structs, so a wrong type is a 400 such as
`json: cannot unmarshal string into Go struct field GenerateRequest.options of type
map[string]interface {}`; unknown fields are ignored; `null` leaves a field unset. Each
request type here is a table of field → Go type; `decode` checks a parsed body against it and
returns a plain dict holding only the fields that were present.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ollamapy.server.errors import APIError, bad_request


def parse_json_body(body: bytes) -> Any:
    if not body.strip():
        raise bad_request("missing request body")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise bad_request("invalid character in request body (not UTF-8)") from None
    except json.JSONDecodeError as e:
        raise bad_request(_go_json_message(body, e)) from None


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


def _json_kind(value: Any) -> str:
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
    return not isinstance(v, bool) and (
        isinstance(v, int) or (isinstance(v, float) and v.is_integer()))


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


def decode(body: bytes, schema: Schema, struct: str) -> dict[str, Any]:
    """Parse a request body and check it against schema; → {field: value} for the fields
    present and non-null. struct is the Go type name used in error messages."""
    data = parse_json_body(body)
    if not isinstance(data, dict):
        raise bad_request(f"json: cannot unmarshal {_json_kind(data)} into Go value of type "
                          f"api.{struct}")
    return check_fields(data, schema, struct)


def check_fields(data: Mapping[str, Any], schema: Schema, struct: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        go_type = schema.get(key)
        if go_type is None or value is None:
            continue  # unknown fields are ignored; null leaves the default
        if not GO_TYPES[go_type](value):
            raise bad_request(f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
                              f"{struct}.{key} of type {go_type.removeprefix('*')}")
        out[key] = int(value) if go_type == "int" else value
    return out


def messages(raw: list[dict[str, Any]], struct: str) -> list[dict[str, Any]]:
    """Check each message; roles are lower-cased as api.Message decodes them."""
    out = []
    for m in raw:
        msg = check_fields(m, MESSAGE, f"{struct}.messages")
        if "role" in msg:
            msg["role"] = msg["role"].lower()
        out.append(msg)
    return out


def require_model(fields: Mapping[str, Any], *aliases: str) -> str:
    for key in ("model", *aliases):
        if fields.get(key):
            return fields[key]
    raise APIError(400, "model is required")
