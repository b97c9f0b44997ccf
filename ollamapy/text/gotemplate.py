"""Ollama's TEMPLATE layers: Go templates, rendered the way Ollama's `template.Execute` does.

A model's TEMPLATE (and the `template` of /api/generate and /api/create) is a Go text/template
program. This module is the Ollama side of it; the language itself is `gotemplate_lex` →
`gotemplate_parse` → `gotemplate_exec` (with `gofmt`, `gojson`, `gotemplate_funcs`).

Rendering picks one of Ollama's three paths:

- fill-in-the-middle (a suffix and a non-empty prompt): one run on `{Prompt, Suffix, Response:
  "", Think, ThinkLevel, IsThinkSet}`, the prompt being the last user message;
- the template mentions `.Messages`: one run on `{System, Messages, Tools, Response: "", Think,
  ThinkLevel, IsThinkSet}`, after `collate` (same-role runs merged, system contents gathered);
- otherwise the legacy path: one run per (system, prompt, response) turn, the last turn through
  a copy of the tree cut right after its first `{{ .Response }}`, so the prompt ends where the
  model starts writing. A legacy template without `.Response` gets one appended at parse time,
  as Ollama's `Parse` does.

`template_vars` is Ollama's `Vars()`: the lower-cased field and variable names a template uses
(capabilities: `tools` when it uses `.Tools`, `insert` when it uses `.Suffix`). Parsed
templates are cached by their text.

Not supported, with a clear `GoTemplateError` at parse time: `define`, `template`, `block`
(Ollama's templates are one unnamed template; custom delimiters do not arise). Numbers in the
data keep their Python type (an int prints as 1000000 where Go's float64 would print 1e+06).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ollamapy.text.gotemplate_data import collate, to_tools
from ollamapy.text.gotemplate_exec import execute
from ollamapy.text.gotemplate_funcs import FUNCS
from ollamapy.text.gotemplate_lex import GoTemplateError
from ollamapy.text.gotemplate_nodes import (
    ActionNode,
    CommandNode,
    FieldNode,
    IfNode,
    ListNode,
    Node,
    PipeNode,
    RangeNode,
    VariableNode,
    WithNode,
)
from ollamapy.text.gotemplate_parse import parse
from ollamapy.text.govalues import GoList

__all__ = ["GoTemplate", "GoTemplateError", "execute_go_template", "parse_go_template",
           "render_go_template", "template_vars"]


@dataclass(frozen=True, slots=True)
class GoTemplate:
    source: str
    root: ListNode  # with Ollama's appended {{ .Response }} where it adds one
    prompt_root: ListNode  # root cut right after its first {{ .Response }}: the legacy last turn
    vars: frozenset[str]


@lru_cache(maxsize=256)
def _tree(template: str) -> ListNode:
    return parse(template, FUNCS)


@lru_cache(maxsize=128)
def parse_go_template(template: str) -> GoTemplate:
    """The template as Ollama holds it; raises GoTemplateError where Go's parser would."""
    root = _tree(template)
    names = _identifiers(root)
    if "messages" not in names and "response" not in names:
        response = ActionNode(len(template), 0, PipeNode(len(template), 0, False, (), (
            CommandNode(len(template), (FieldNode(len(template), ("Response",)),)),)))
        root = dataclasses.replace(root, nodes=root.nodes + (response,))
        names = _identifiers(root)
    return GoTemplate(template, root, _cut_after_response(root), frozenset(names))


def template_vars(template: str) -> set[str]:
    """Ollama's `Vars()`: lower-cased field and variable names (`$` and `$x` included)."""
    return set(parse_go_template(template).vars)


def execute_go_template(template: str, data: Any) -> str:
    """Plain Go execution of `template` on `data`, without any of Ollama's rewriting."""
    return execute(_tree(template), data, template)


def render_go_template(template: str, messages: Sequence[Mapping[str, Any]], *,
                       tools: Sequence[Mapping[str, Any]] | None = None,
                       suffix: str | None = None, think: bool | str | None = None) -> str:
    """The prompt Ollama renders from this template for a conversation in API JSON form.

    `think` is the request's: True/False, a level ("high", "medium", "low", "max": thinking on
    at that level; True is "medium", as Ollama's ThinkValue.String) or None when unset.
    """
    parsed = parse_go_template(template)
    system, collated = collate(messages)
    thinking = {"Think": think is not None and think is not False and think != "",
                "ThinkLevel": think if isinstance(think, str) else "medium" if think else "",
                "IsThinkSet": think is not None}
    prompt = next((m.Content for m in reversed(collated) if m.Role == "user"), "")
    if prompt and suffix:
        return execute(parsed.root, {"Prompt": prompt, "Suffix": suffix, "Response": "",
                                     **thinking}, template)
    if "messages" in parsed.vars:
        return execute(parsed.root, {"System": system, "Messages": GoList(collated or None),
                                     "Tools": to_tools(tools), "Response": "", **thinking},
                       template)
    return _render_legacy(parsed, collated, thinking)


def _render_legacy(parsed: GoTemplate, collated: Sequence[Any], thinking: dict[str, Any]) -> str:
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}
    for message in collated:
        # a turn is complete when a system message follows it, or a user message its response
        role = message.Role
        if (role == "system" and (turn["Prompt"] or turn["Response"])) or (
                role == "user" and turn["Response"]):
            out.append(execute(parsed.root, {**turn, **thinking}, parsed.source))
            turn = {"System": "", "Prompt": "", "Response": ""}
        if role in ("system", "user", "assistant"):
            turn[{"system": "System", "user": "Prompt", "assistant": "Response"}[role]] = (
                message.Content)
    out.append(execute(parsed.prompt_root, {**turn, **thinking}, parsed.source))
    return "".join(out)


def _identifiers(node: Node) -> set[str]:
    """Ollama's `Identifiers`, lower-cased: field and variable names in actions and conditions
    (not inside parenthesised chains, which Ollama does not look into either)."""
    if isinstance(node, ListNode):
        return set().union(*(_identifiers(child) for child in node.nodes))
    if isinstance(node, ActionNode):
        return _identifiers(node.pipe)
    if isinstance(node, IfNode | RangeNode | WithNode):
        names = _identifiers(node.pipe) | _identifiers(node.body)
        return names | (_identifiers(node.else_body) if node.else_body is not None else set())
    if isinstance(node, PipeNode):
        return set().union(*(_identifiers(arg) for cmd in node.cmds for arg in cmd.args))
    if isinstance(node, FieldNode | VariableNode):
        return {name.lower() for name in node.ident}
    return set()


def _cut_after_response(root: ListNode) -> ListNode:
    """A copy of the tree with everything after its first `.Response` field removed.

    Ollama's `deleteNode` walk: it looks at action pipelines and at the bodies of if/range/with
    (not at their conditions); once it has seen `.Response`, every node it visits is dropped,
    and a pipeline stage left with no arguments drops its whole action.
    """
    cut = False

    def walk(node: Any) -> Any:
        nonlocal cut
        if cut:
            return None
        if isinstance(node, FieldNode):
            cut = "Response" in node.ident
            return node
        if isinstance(node, ListNode):
            kept = [child for child in map(walk, node.nodes) if child is not None]
            return dataclasses.replace(node, nodes=tuple(kept))
        if isinstance(node, IfNode | RangeNode | WithNode):
            body = walk(node.body)
            # Go would crash on an else branch after the cut; it is simply dropped here
            else_body = walk(node.else_body) if node.else_body is not None else None
            return dataclasses.replace(node, body=body, else_body=else_body)
        if isinstance(node, ActionNode):
            pipe = walk(node.pipe)
            return None if pipe is None else dataclasses.replace(node, pipe=pipe)
        if isinstance(node, PipeNode):
            cmds = []
            for cmd in node.cmds:
                args = tuple(arg for arg in map(walk, cmd.args) if arg is not None)
                if not args:
                    return None
                cmds.append(dataclasses.replace(cmd, args=args))
            return dataclasses.replace(node, cmds=tuple(cmds))
        return node

    return walk(root)
