"""Ollama's API messages and tools as the Go values its templates see (`api.Message`, `api.Tool`).

Templates read them by Go field name (`.Role`, `.ToolCalls`, `.Function.Arguments`,
`.Function.Parameters.Properties`) and `json` writes them with the structs' JSON tags, in
declared order, omitting the omitempty fields that are empty. As in Ollama, some print as JSON
through a String method: the tool list, a tool, its function and parameters, a call's arguments
and a tool's properties (`{{ .Function }}` writes `{"name":…,"description":…,"parameters":…}`).
Keys Ollama's structs do not declare are dropped, as Go's JSON decoding drops them; objects
held as maps (arguments, properties) come out with sorted keys, as Go writes maps.

`collate` is Ollama's: consecutive messages of one role (tool results aside) merge into the
first, contents joined by a blank line, and every system content is collected for `.System`.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ollamapy.text.gojson import marshal
from ollamapy.text.govalues import GoList, GoMap, GoStruct


@dataclass(frozen=True, slots=True)
class PropertyType:
    """api.PropertyType: one JSON-schema type name or several (`["string", "null"]`)."""

    types: tuple[str, ...]
    go_type: ClassVar[str] = "api.PropertyType"

    def __len__(self) -> int:
        return len(self.types)

    def go_string(self) -> str:
        if not self.types:
            return ""
        return self.types[0] if len(self.types) == 1 else "[" + " ".join(self.types) + "]"

    def go_json(self) -> str:
        return marshal(self.types[0]) if len(self.types) == 1 else marshal(list(self.types))


_TYPESCRIPT = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
               "array": "any[]", "object": "Record<string, any>", "null": "null"}


@dataclass(frozen=True, slots=True)
class ToolProperty(GoStruct):
    AnyOf: GoList
    Type: PropertyType
    Items: Any
    Description: str
    Enum: GoList
    Properties: GoMap
    Required: GoList
    go_type: ClassVar[str] = "api.ToolProperty"
    json_tags: ClassVar[Mapping[str, str]] = {
        "AnyOf": "anyOf,omitempty", "Type": "type,omitempty", "Items": "items,omitempty",
        "Description": "description,omitempty", "Enum": "enum,omitempty",
        "Properties": "properties,omitempty", "Required": "required,omitempty"}

    def to_typescript_type(self) -> str:
        """What Ollama's `toTypeScriptType` template function writes for this property."""
        if self.AnyOf:
            return " | ".join(option.to_typescript_type() for option in self.AnyOf)
        if not self.Type.types:
            return "any"
        return " | ".join(_TYPESCRIPT.get(name, "any") for name in self.Type.types)


@dataclass(frozen=True, slots=True)
class ToolFunctionParameters(GoStruct):
    Type: str
    Defs: Any
    Items: Any
    Required: GoList
    Properties: GoMap
    go_type: ClassVar[str] = "api.ToolFunctionParameters"
    json_stringer: ClassVar[bool] = True
    json_tags: ClassVar[Mapping[str, str]] = {
        "Type": "type", "Defs": "$defs,omitempty", "Items": "items,omitempty",
        "Required": "required,omitempty", "Properties": "properties"}


@dataclass(frozen=True, slots=True)
class ToolFunction(GoStruct):
    Name: str
    Description: str
    Parameters: ToolFunctionParameters
    go_type: ClassVar[str] = "api.ToolFunction"
    json_stringer: ClassVar[bool] = True
    json_tags: ClassVar[Mapping[str, str]] = {
        "Name": "name", "Description": "description,omitempty", "Parameters": "parameters"}


@dataclass(frozen=True, slots=True)
class Tool(GoStruct):
    Type: str
    Items: Any
    Function: ToolFunction
    go_type: ClassVar[str] = "api.Tool"
    json_stringer: ClassVar[bool] = True
    json_tags: ClassVar[Mapping[str, str]] = {
        "Type": "type", "Items": "items,omitempty", "Function": "function"}


@dataclass(frozen=True, slots=True)
class ToolCallFunction(GoStruct):
    Index: int
    Name: str
    Arguments: GoMap
    go_type: ClassVar[str] = "api.ToolCallFunction"
    json_tags: ClassVar[Mapping[str, str]] = {
        "Index": "index", "Name": "name", "Arguments": "arguments"}


@dataclass(frozen=True, slots=True)
class ToolCall(GoStruct):
    ID: str
    Function: ToolCallFunction
    go_type: ClassVar[str] = "api.ToolCall"
    json_tags: ClassVar[Mapping[str, str]] = {"ID": "id,omitempty", "Function": "function"}


@dataclass(frozen=True, slots=True)
class Message(GoStruct):
    Role: str
    Content: str
    Thinking: str
    Images: GoList
    ToolCalls: GoList
    ToolName: str
    ToolCallID: str
    go_type: ClassVar[str] = "*api.Message"
    json_tags: ClassVar[Mapping[str, str]] = {
        "Role": "role", "Content": "content", "Thinking": "thinking,omitempty",
        "Images": "images,omitempty", "ToolCalls": "tool_calls,omitempty",
        "ToolName": "tool_name,omitempty", "ToolCallID": "tool_call_id,omitempty"}


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _list(value: Any, item_type: str, convert: Any = None) -> GoList:
    # a JSON null or absent list stays nil (JSON null); an empty one stays empty
    if value is None:
        return GoList(None, go_type=f"[]{item_type}")
    return GoList([convert(item) if convert else item for item in value],
                  go_type=f"[]{item_type}")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def to_message(raw: Mapping[str, Any]) -> Message:
    raw = _object(raw, "message")
    calls = raw.get("tool_calls")
    return Message(
        Role=_text(raw.get("role")).lower(),  # Ollama lower-cases roles when decoding
        Content=_text(raw.get("content")),
        Thinking=_text(raw.get("thinking")),
        Images=_list(raw.get("images") or None, "api.ImageData",
                     lambda image: base64.b64decode(image, validate=True)),
        ToolCalls=_list(calls or None, "api.ToolCall", _tool_call),
        ToolName=_text(raw.get("tool_name")),
        ToolCallID=_text(raw.get("tool_call_id")),
    )


def _tool_call(raw: Any) -> ToolCall:
    raw = _object(raw, "tool call")
    function = _object(raw.get("function") or {}, "tool call function")
    arguments = function.get("arguments")
    return ToolCall(_text(raw.get("id")), ToolCallFunction(
        Index=int(function.get("index") or 0),
        Name=_text(function.get("name")),
        Arguments=GoMap(_object(arguments or {}, "tool call arguments"), json_stringer=True,
                        go_type="api.ToolCallFunctionArguments")))


def to_tools(raw: Sequence[Mapping[str, Any]] | None) -> GoList:
    """The request's tools as `api.Tools`: nil when there are none, printing as JSON."""
    tools = None if raw is None else [_tool(tool) for tool in raw]
    return GoList(tools, json_stringer=True, go_type="api.Tools")


def _tool(raw: Any) -> Tool:
    raw = _object(raw, "tool")
    function = _object(raw.get("function") or {}, "tool function")
    params = _object(function.get("parameters") or {}, "tool parameters")
    return Tool(_text(raw.get("type")), raw.get("items"), ToolFunction(
        Name=_text(function.get("name")),
        Description=_text(function.get("description")),
        Parameters=ToolFunctionParameters(
            Type=_text(params.get("type")),
            Defs=params.get("$defs"),
            Items=params.get("items"),
            Required=_list(params.get("required"), "string"),
            Properties=_properties(params.get("properties")))))


def _properties(raw: Any) -> GoMap:
    if raw is None:
        return GoMap(None, json_stringer=True, go_type="map[string]api.ToolProperty")
    return GoMap({name: _property(prop) for name, prop in _object(raw, "properties").items()},
                 json_stringer=True, go_type="map[string]api.ToolProperty")


def _property(raw: Any) -> ToolProperty:
    raw = _object(raw, "tool property")
    kind = raw.get("type")
    types = () if kind is None else (kind,) if isinstance(kind, str) else tuple(kind)
    return ToolProperty(
        AnyOf=_list(raw.get("anyOf"), "api.ToolProperty", _property),
        Type=PropertyType(types),
        Items=raw.get("items"),
        Description=_text(raw.get("description")),
        Enum=_list(raw.get("enum"), "interface {}"),
        Properties=_properties(raw.get("properties")),
        Required=_list(raw.get("required"), "string"),
    )


def collate(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[Message]]:
    """(all system contents joined by blank lines, the messages with same-role runs merged)."""
    system: list[str] = []
    collated: list[Message] = []
    for raw in messages:
        message = to_message(raw)
        if message.Role == "system":
            system.append(message.Content)
        previous = collated[-1] if collated else None
        if previous is not None and previous.Role == message.Role and message.Role != "tool":
            # only the content merges: the later message's other fields are dropped, as in Go
            collated[-1] = dataclasses.replace(
                previous, Content=previous.Content + "\n\n" + message.Content)
        else:
            collated.append(message)
    return "\n\n".join(system), collated
