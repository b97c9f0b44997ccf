"""The parse tree of a Go template: one frozen node type per node kind of Go's `parse` package.

Trees are immutable so a parsed template can be cached and shared, and Ollama's rewrite of a
tree (cutting it after `{{ .Response }}`) builds new nodes instead of editing shared ones. Each
node keeps its source offset for error positions, and `str(node)` prints it back the way Go's
`Node.String()` does, which execution errors quote (`executing "" at <.Foo>`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TextNode:
    pos: int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class FieldNode:
    """`.A.B`: field or map-key lookups starting from dot."""
    pos: int
    ident: tuple[str, ...]

    def __str__(self) -> str:
        return "".join("." + name for name in self.ident)


@dataclass(frozen=True, slots=True)
class VariableNode:
    """`$x.A.B`: ident[0] is the variable (`$` is the root data), the rest are fields."""
    pos: int
    ident: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.ident)


@dataclass(frozen=True, slots=True)
class IdentifierNode:
    """A function name."""
    pos: int
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class DotNode:
    pos: int

    def __str__(self) -> str:
        return "."


@dataclass(frozen=True, slots=True)
class NilNode:
    pos: int

    def __str__(self) -> str:
        return "nil"


@dataclass(frozen=True, slots=True)
class BoolNode:
    pos: int
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass(frozen=True, slots=True)
class NumberNode:
    pos: int
    text: str  # as written: Go prints constants back in their source form
    value: int | float

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class StringNode:
    pos: int
    quoted: str  # as written, quotes included
    text: str

    def __str__(self) -> str:
        return self.quoted


@dataclass(frozen=True, slots=True)
class ChainNode:
    """`(pipeline).A.B`: fields looked up on the value of a parenthesised pipeline."""
    pos: int
    node: Node
    field: tuple[str, ...]

    def __str__(self) -> str:
        head = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return head + "".join("." + name for name in self.field)


@dataclass(frozen=True, slots=True)
class CommandNode:
    """One stage of a pipeline: a function and its arguments, or a single operand."""
    pos: int
    args: tuple[Node, ...]

    def __str__(self) -> str:
        return " ".join(f"({arg})" if isinstance(arg, PipeNode) else str(arg)
                        for arg in self.args)


@dataclass(frozen=True, slots=True)
class PipeNode:
    """`$x := a | b c`: commands whose results feed the next stage as its last argument."""
    pos: int
    line: int
    is_assign: bool  # `=` (set existing variables) rather than `:=` (declare new ones)
    decl: tuple[VariableNode, ...]
    cmds: tuple[CommandNode, ...]

    def __str__(self) -> str:
        head = ""
        if self.decl:
            head = ", ".join(map(str, self.decl)) + (" = " if self.is_assign else " := ")
        return head + " | ".join(map(str, self.cmds))


@dataclass(frozen=True, slots=True)
class ActionNode:
    """`{{ pipeline }}`: prints the value, unless the pipeline declares or assigns variables."""
    pos: int
    line: int
    pipe: PipeNode

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


@dataclass(frozen=True, slots=True)
class ListNode:
    pos: int
    nodes: tuple[Node, ...]

    def __str__(self) -> str:
        return "".join(map(str, self.nodes))


@dataclass(frozen=True, slots=True)
class IfNode:
    pos: int
    line: int
    pipe: PipeNode
    body: ListNode
    else_body: ListNode | None  # `{{ else if }}` is an else body holding one nested IfNode

    def __str__(self) -> str:
        return _branch("if", self.pipe, self.body, self.else_body)


@dataclass(frozen=True, slots=True)
class WithNode:
    pos: int
    line: int
    pipe: PipeNode
    body: ListNode
    else_body: ListNode | None

    def __str__(self) -> str:
        return _branch("with", self.pipe, self.body, self.else_body)


@dataclass(frozen=True, slots=True)
class RangeNode:
    pos: int
    line: int
    pipe: PipeNode
    body: ListNode
    else_body: ListNode | None  # runs when there is nothing to iterate

    def __str__(self) -> str:
        return _branch("range", self.pipe, self.body, self.else_body)


@dataclass(frozen=True, slots=True)
class BreakNode:
    pos: int
    line: int

    def __str__(self) -> str:
        return "{{break}}"


@dataclass(frozen=True, slots=True)
class ContinueNode:
    pos: int
    line: int

    def __str__(self) -> str:
        return "{{continue}}"


def _branch(name: str, pipe: PipeNode, body: ListNode, else_body: ListNode | None) -> str:
    if else_body is None:
        return f"{{{{{name} {pipe}}}}}{body}{{{{end}}}}"
    return f"{{{{{name} {pipe}}}}}{body}{{{{else}}}}{else_body}{{{{end}}}}"


Node = (TextNode | FieldNode | VariableNode | IdentifierNode | DotNode | NilNode | BoolNode
        | NumberNode | StringNode | ChainNode | CommandNode | PipeNode | ActionNode | ListNode
        | IfNode | WithNode | RangeNode | BreakNode | ContinueNode)
Branch = IfNode | WithNode | RangeNode

