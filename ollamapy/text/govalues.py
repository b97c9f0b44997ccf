"""Python values as a Go template sees them: the mapping of types, truthiness, and Go type names.

Plain data maps the way `json.Unmarshal` into `any` would: str → string, int → int, float →
float64, bool → bool, None → nil, list/tuple → []interface {}, dict → map[string]interface {}
(visited in sorted key order by `range`, printing and JSON, as Go does with maps), bytes →
[]byte. Ollama's template data also holds typed Go values, which these classes stand for:

- `GoStruct`: a struct; fields are looked up by their Go names, JSON uses the struct's tags.
- `GoList` / `GoMap`: a typed slice or map that can be nil (JSON null, where an empty one is
  `[]`/`{}`), optionally with a String method returning its JSON (`json_stringer`).

Any object may also define `go_string()` (Go's fmt.Stringer) or `go_json()` (json.Marshaler).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar


class GoStruct:
    """Base of the frozen dataclasses that stand for Go structs."""

    __slots__ = ()
    go_type: ClassVar[str] = "struct"
    # field name → JSON tag ("name" or "name,omitempty"); an untagged field keeps its Go name
    json_tags: ClassVar[Mapping[str, str]] = {}
    json_stringer: ClassVar[bool] = False  # has a String() method returning its JSON


class GoList(list):
    """A typed Go slice: remembers being nil, and may print as its JSON."""

    __slots__ = ("nil", "json_stringer", "go_type")

    def __init__(self, items: Iterable[Any] | None = None, *, json_stringer: bool = False,
                 go_type: str = "[]interface {}") -> None:
        super().__init__(items or ())
        self.nil = items is None
        self.json_stringer = json_stringer
        self.go_type = go_type


class GoMap(dict):
    """A typed Go map with string keys: remembers being nil, and may print as its JSON.

    Ollama's printable maps (tool-call arguments, tool properties) print a nil map as `{}`.
    """

    __slots__ = ("nil", "json_stringer", "go_type")

    def __init__(self, items: Mapping[str, Any] | None = None, *, json_stringer: bool = False,
                 go_type: str = "map[string]interface {}") -> None:
        super().__init__(items or {})
        self.nil = items is None
        self.json_stringer = json_stringer
        self.go_type = go_type


def is_true(value: Any) -> bool:
    """Go's truth (`if`, `with`, `and`, `or`, `not`): zero values and empty things are false."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, GoStruct):
        return True  # a struct is never empty
    try:
        return len(value) > 0
    except TypeError:
        return True


def go_type_name(value: Any) -> str:
    """The Go type a value stands for, as Go's error messages print it."""
    if value is None:
        return "interface {}"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "[]uint8"
    if isinstance(value, GoList | GoMap | GoStruct):
        return value.go_type
    if isinstance(value, list | tuple):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return getattr(value, "go_type", type(value).__name__)


def struct_fields(value: GoStruct) -> list[tuple[str, Any]]:
    """(Go field name, value) in declared order."""
    return [(field.name, getattr(value, field.name))
            for field in dataclasses.fields(value)]  # type: ignore[arg-type]


def sorted_items(mapping: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    # Go visits map keys in sorted order; Ollama's maps all have string keys
    return sorted(mapping.items(), key=lambda item: str(item[0]))
