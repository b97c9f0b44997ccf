"""Runs a parse tree on data, with the semantics of Go's `text/template` `Execute`.

Data is plain Python plus the Go-typed values of `govalues`. `.Name` on a dict looks up the key
"Name"; a missing key gives nil, as Ollama's `missingkey=zero` on a `map[string]any` does: it
prints `<no value>`, is false, and compares unequal to anything; looking a field up *on* it
fails (`nil pointer evaluating interface {}.Name`). `.Name` on a struct reads the field or
fails (`can't evaluate field Name in type …`). Variables are scoped like Go's: one declared in
a control structure lives until its `end`; `range` binds its variables afresh each iteration
and visits maps in key order. Errors read `template: :LINE:COL: executing "" at <node>: …`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

from ollamapy.text.bounded import MAX_CHARS
from ollamapy.text.gofmt import format_value
from ollamapy.text.gotemplate_funcs import FUNCS, ArgTypeError, FuncError
from ollamapy.text.gotemplate_lex import GoTemplateError
from ollamapy.text.gotemplate_nodes import (
    ActionNode,
    BoolNode,
    BreakNode,
    ChainNode,
    CommandNode,
    ContinueNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    IfNode,
    ListNode,
    NilNode,
    Node,
    NumberNode,
    PipeNode,
    RangeNode,
    StringNode,
    TextNode,
    VariableNode,
    WithNode,
)
from ollamapy.text.govalues import GoStruct, go_type_name, is_true, sorted_items

_MISSING = object()  # no value piped in from a previous pipeline stage


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def execute(root: ListNode, data: Any, source: str) -> str:
    """The text `root` produces on `data`; `source` is the template text, for error positions."""
    state = _State(data, source)
    state.walk(data, root)
    return "".join(state.out)


class _State:
    def __init__(self, data: Any, source: str) -> None:
        self.source = source
        self.out: list[str] = []
        self.size = 0  # characters in out
        self.vars: list[list[Any]] = [["$", data]]  # [name, value], innermost last
        self.node: Node | None = None  # where we are, for error messages

    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > MAX_CHARS:  # Go has no such cap; a template's output is bounded here
            self.error(f"template output would be larger than {MAX_CHARS} characters")
        self.out.append(text)

    def error(self, message: str) -> NoReturn:
        if self.node is None:
            raise GoTemplateError(f"template: : {message}")
        pos = min(self.node.pos, len(self.source))
        line_start = self.source.rfind("\n", 0, pos) + 1
        line = self.source.count("\n", 0, pos) + 1
        column = len(self.source[line_start:pos].encode())
        context = str(self.node)
        if len(context) > 20:
            context = context[:20] + "..."
        raise GoTemplateError(
            f'template: :{line}:{column}: executing "" at <{context}>: {message}')

    # -- variables -----------------------------------------------------------------------

    def lookup(self, name: str) -> list[Any]:
        for var in reversed(self.vars):
            if var[0] == name:
                return var
        self.error(f"undefined variable: {name}")

    def declare(self, pipe: PipeNode, value: Any) -> None:
        for var in pipe.decl:
            if pipe.is_assign:
                self.lookup(var.ident[0])[1] = value
            else:
                self.vars.append([var.ident[0], value])

    # -- statements ----------------------------------------------------------------------

    def walk(self, dot: Any, node: Node) -> None:
        if isinstance(node, TextNode):
            self.write(node.text)
        elif isinstance(node, ListNode):
            for child in node.nodes:
                self.walk(dot, child)
        elif isinstance(node, ActionNode):
            self.node = node
            value = self.pipeline(dot, node.pipe)
            if not node.pipe.decl:
                # a missing value prints as Go's "<no value>"
                self.write("<no value>" if value is None else format_value(value))
        elif isinstance(node, IfNode | WithNode):
            self.if_or_with(dot, node)
        elif isinstance(node, RangeNode):
            self.range(dot, node)
        elif isinstance(node, BreakNode):
            raise _Break
        elif isinstance(node, ContinueNode):
            raise _Continue
        else:
            raise AssertionError(f"unexpected node {node!r}")

    def if_or_with(self, dot: Any, node: IfNode | WithNode) -> None:
        scope = len(self.vars)
        try:
            value = self.pipeline(dot, node.pipe)
            if is_true(value):
                self.walk(value if isinstance(node, WithNode) else dot, node.body)
            elif node.else_body is not None:
                self.walk(dot, node.else_body)
        finally:
            del self.vars[scope:]

    def range(self, dot: Any, node: RangeNode) -> None:
        scope = len(self.vars)
        try:
            self.node = node
            value = self.pipeline(dot, node.pipe)
            ran = False
            for index, elem in self.iterate(value, node):
                ran = True
                self.bind(node.pipe, index, elem)
                inner = len(self.vars)
                try:
                    self.walk(elem, node.body)
                except _Continue:
                    pass
                except _Break:
                    break
                finally:
                    del self.vars[inner:]
            if not ran and node.else_body is not None:
                self.walk(dot, node.else_body)
        finally:
            del self.vars[scope:]

    def iterate(self, value: Any, node: RangeNode) -> Iterable[tuple[Any, Any]]:
        if value is None:
            return []  # nothing to visit: the else branch runs
        if isinstance(value, dict):
            return sorted_items(value)
        if isinstance(value, list | tuple | bytes):
            return list(enumerate(value))
        if isinstance(value, int) and not isinstance(value, bool):
            if len(node.pipe.decl) > 1:
                self.error(f"can't use {value} to iterate over more than one variable")
            return ((i, i) for i in range(value))  # lazily: `range 999999999` is legal
        self.node = node
        self.error(f"range can't iterate over {format_value(value)}")

    def bind(self, pipe: PipeNode, index: Any, elem: Any) -> None:
        # `range $e := …` binds the element; `range $i, $e := …` the index, then the element
        # (`pipeline` already declared them, or found them for `=`: set the innermost ones)
        values = (elem,) if len(pipe.decl) == 1 else (index, elem)
        for var, value in zip(pipe.decl, values, strict=False):
            self.lookup(var.ident[0])[1] = value

    # -- expressions ---------------------------------------------------------------------

    def pipeline(self, dot: Any, pipe: PipeNode) -> Any:
        value: Any = _MISSING
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        self.declare(pipe, value)
        return value

    def command(self, dot: Any, cmd: CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, FieldNode):
            self.node = first
            return self.field_chain(dot, dot, first, first.ident, cmd.args, final)
        if isinstance(first, ChainNode):
            self.node = first
            self.no_arguments(cmd.args, final)
            receiver = self.argument(dot, first.node)
            self.node = first
            return self.field_chain(dot, receiver, first, first.field, cmd.args, final)
        if isinstance(first, IdentifierNode):
            return self.call(dot, first, cmd, cmd.args[1:], final)
        if isinstance(first, VariableNode):
            self.node = first
            value = self.lookup(first.ident[0])[1]
            if len(first.ident) == 1:
                self.no_arguments(cmd.args, final)
                return value
            return self.field_chain(dot, value, first, first.ident[1:], cmd.args, final)
        self.node = first
        self.no_arguments(cmd.args, final)
        if isinstance(first, PipeNode):
            return self.pipeline(dot, first)
        if isinstance(first, NilNode):
            self.error("nil is not a command")
        return self.constant(dot, first)

    def no_arguments(self, args: tuple[Node, ...], final: Any) -> None:
        if len(args) > 1 or final is not _MISSING:
            self.error(f"can't give argument to non-function {args[0]}")

    def constant(self, dot: Any, node: Node) -> Any:
        if isinstance(node, DotNode):
            return dot
        if isinstance(node, BoolNode | NumberNode):
            return node.value
        if isinstance(node, StringNode):
            return node.text
        raise AssertionError(f"not a constant: {node!r}")

    def field_chain(self, dot: Any, receiver: Any, node: Node, names: tuple[str, ...],
                    args: tuple[Node, ...], final: Any) -> Any:
        for name in names[:-1]:
            receiver = self.field(receiver, name, False)
        return self.field(receiver, names[-1], len(args) > 1 or final is not _MISSING)

    def field(self, receiver: Any, name: str, has_args: bool) -> Any:
        if receiver is None:
            self.error(f"nil pointer evaluating interface {{}}.{name}")
        if isinstance(receiver, GoStruct):
            # exported (capitalised) dataclass fields only: the lower-case names are ClassVars
            if name[:1].isupper() and name in receiver.__dataclass_fields__:  # type: ignore[attr-defined]
                if has_args:
                    self.error(f"{name} has arguments but cannot be invoked as function")
                return getattr(receiver, name)
        elif isinstance(receiver, dict):
            if has_args:
                self.error(f"{name} is not a method but has arguments")
            return receiver.get(name)
        self.error(f"can't evaluate field {name} in type {go_type_name(receiver)}")

    def argument(self, dot: Any, node: Node) -> Any:
        self.node = node
        if isinstance(node, NilNode):
            return None
        if isinstance(node, FieldNode):
            return self.field_chain(dot, dot, node, node.ident, (node,), _MISSING)
        if isinstance(node, VariableNode):
            value = self.lookup(node.ident[0])[1]
            if len(node.ident) == 1:
                return value
            return self.field_chain(dot, value, node, node.ident[1:], (node,), _MISSING)
        if isinstance(node, ChainNode):
            receiver = self.argument(dot, node.node)
            self.node = node
            return self.field_chain(dot, receiver, node, node.field, (node,), _MISSING)
        if isinstance(node, PipeNode):
            return self.pipeline(dot, node)
        if isinstance(node, IdentifierNode):
            return self.call(dot, node, node, (), _MISSING)
        return self.constant(dot, node)

    def call(self, dot: Any, name: IdentifierNode, cmd: Node, arg_nodes: tuple[Node, ...],
             final: Any) -> Any:
        func = FUNCS[name.name]
        count = len(arg_nodes) + (final is not _MISSING)
        self.node = name
        if count < func.min_args or (func.max_args is not None and count > func.max_args):
            if func.max_args is None:
                self.error(f"wrong number of args for {name.name}: "
                           f"want at least {func.min_args} got {count}")
            self.error(f"wrong number of args for {name.name}: want {func.max_args} got {count}")
        if name.name in ("and", "or"):
            # short-circuit: stop at the first false (and) or true (or) argument
            value: Any = None
            for node in arg_nodes:
                value = self.argument(dot, node)
                if is_true(value) == (name.name == "or"):
                    return value
            return final if final is not _MISSING else value
        args = [self.argument(dot, node) for node in arg_nodes]
        if final is not _MISSING:
            args.append(final)
        try:
            return func.call(args)
        except FuncError as err:
            self.node = cmd
            self.error(f"error calling {name.name}: {err}")
        except ArgTypeError as err:
            self.node = cmd
            self.error(str(err))
