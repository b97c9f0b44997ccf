"""Tokens → parse tree, with the grammar and the error messages of Go's `text/template/parse`.

Checked here, as Go checks them before anything runs: balanced `if`/`range`/`with` … `end`,
`else` and `end` only where they belong, `break`/`continue` only inside `range`, variables used
only where declared, and functions known by name. Errors read `template: :LINE: message`.

Not supported, and rejected with a clear error rather than half-working: `define`, `template`
and `block` (Ollama's templates are a single unnamed template), complex-number constants.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import NoReturn

from ollamapy.text.gotemplate_lex import GoTemplateError, Kind, Token, go_quote, lex
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

_OPERAND_START = frozenset({Kind.BOOL, Kind.CHAR_CONSTANT, Kind.DOT, Kind.FIELD, Kind.IDENTIFIER,
                            Kind.NUMBER, Kind.NIL, Kind.RAW_STRING, Kind.STRING, Kind.VARIABLE,
                            Kind.LEFT_PAREN})
_NOT_EXECUTABLE = (BoolNode, DotNode, NilNode, NumberNode, StringNode)


class _End:
    """`{{ end }}`: closes a control structure, never part of the tree."""
    def __str__(self) -> str:
        return "{{end}}"


class _Else:
    def __str__(self) -> str:
        return "{{else}}"


def parse(text: str, functions: Collection[str]) -> ListNode:
    """The tree of `text`; `functions` are the names a template may call."""
    return _Parser(lex(text), functions).parse()


class _Parser:
    def __init__(self, tokens: list[Token], functions: Collection[str]) -> None:
        self.tokens = tokens
        self.i = 0
        self.functions = functions
        self.line = 1  # of the token read last: Go's errors report that line
        self.vars = ["$"]  # variables in scope
        self.range_depth = 0
        self.action_line = 0  # line of the `{{` being parsed, for lexer errors spanning lines

    # -- token stream --------------------------------------------------------------------

    def next(self) -> Token:
        tok = self.tokens[min(self.i, len(self.tokens) - 1)]
        self.i += 1
        self.line = tok.line
        return tok

    def backup(self) -> None:
        self.i -= 1

    def peek(self) -> Token:
        tok = self.next()
        self.backup()
        return tok

    def next_non_space(self) -> Token:
        tok = self.next()
        while tok.kind is Kind.SPACE:
            tok = self.next()
        return tok

    def peek_non_space(self) -> Token:
        # spaces before the peeked token stay consumed, as in Go
        tok = self.next_non_space()
        self.backup()
        return tok

    def expect(self, kind: Kind, context: str) -> Token:
        tok = self.next_non_space()
        if tok.kind is not kind:
            self.unexpected(tok, context)
        return tok

    def error(self, message: str) -> NoReturn:
        raise GoTemplateError(f"template: :{self.line}: {message}")

    def unexpected(self, tok: Token, context: str) -> NoReturn:
        if tok.kind is Kind.ERROR:
            extra = ""
            if self.action_line and self.action_line != tok.line:
                extra = f" in action started at :{self.action_line}"
                if tok.val.endswith(" action"):
                    extra = extra[len(" in action"):]
            self.error(tok.val + extra)
        self.error(f"unexpected {tok} in {context}")

    # -- structure -----------------------------------------------------------------------

    def parse(self) -> ListNode:
        nodes: list[Node] = []
        while self.peek().kind is not Kind.EOF:
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                self.error(f"unexpected {node}")
            nodes.append(node)
        return ListNode(0, tuple(nodes))

    def text_or_action(self) -> Node | _End | _Else:
        tok = self.next_non_space()
        if tok.kind is Kind.TEXT:
            return TextNode(tok.pos, tok.val)
        if tok.kind is Kind.LEFT_DELIM:
            self.action_line = tok.line
            try:
                return self.action()
            finally:
                self.action_line = 0
        self.unexpected(tok, "input")

    def item_list(self) -> tuple[ListNode, _End | _Else]:
        nodes: list[Node] = []
        pos = self.peek_non_space().pos
        while self.peek_non_space().kind is not Kind.EOF:
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                return ListNode(pos, tuple(nodes)), node
            nodes.append(node)
        self.error("unexpected EOF")

    def action(self) -> Node | _End | _Else:
        tok = self.next_non_space()
        kind = tok.kind
        if kind in (Kind.DEFINE, Kind.TEMPLATE, Kind.BLOCK):
            self.error(f"{{{{{tok.val}}}}} is not supported: ollamapy runs single templates, "
                       "the subset of Go's text/template that Ollama's models use")
        if kind in (Kind.BREAK, Kind.CONTINUE):
            end = self.next_non_space()
            if end.kind is not Kind.RIGHT_DELIM:
                self.unexpected(end, f"{{{{{tok.val}}}}}")
            if not self.range_depth:
                self.error(f"{{{{{tok.val}}}}} outside {{{{range}}}}")
            return (BreakNode if kind is Kind.BREAK else ContinueNode)(tok.pos, tok.line)
        if kind is Kind.END:
            self.expect(Kind.RIGHT_DELIM, "end")
            return _End()
        if kind is Kind.ELSE:
            # `{{ else if …` / `{{ else with …` leave the keyword for parse_control to read
            if self.peek_non_space().kind not in (Kind.IF, Kind.WITH):
                self.expect(Kind.RIGHT_DELIM, "else")
            return _Else()
        if kind is Kind.IF:
            return IfNode(tok.pos, tok.line, *self.parse_control("if"))
        if kind is Kind.RANGE:
            return RangeNode(tok.pos, tok.line, *self.parse_control("range"))
        if kind is Kind.WITH:
            return WithNode(tok.pos, tok.line, *self.parse_control("with"))
        self.backup()
        start = self.peek()
        return ActionNode(start.pos, start.line, self.pipeline("command", Kind.RIGHT_DELIM))

    def parse_control(self, context: str) -> tuple[PipeNode, ListNode, ListNode | None]:
        scope = len(self.vars)  # variables declared in the pipeline or body end with `end`
        try:
            pipe = self.pipeline(context, Kind.RIGHT_DELIM)
            if context == "range":
                self.range_depth += 1
            body, closer = self.item_list()
            if context == "range":
                self.range_depth -= 1
            else_body = None
            if isinstance(closer, _Else):
                nested = self.peek()
                if context in ("if", "with") and nested.kind is {"if": Kind.IF,
                                                                  "with": Kind.WITH}[context]:
                    # `{{ else if b }}…{{ end }}` is `{{ else }}{{ if b }}…{{ end }}{{ end }}`
                    self.next()
                    node_type = IfNode if context == "if" else WithNode
                    inner = node_type(nested.pos, nested.line, *self.parse_control(context))
                    else_body = ListNode(nested.pos, (inner,))
                else:
                    else_body, closer = self.item_list()
                    if not isinstance(closer, _End):
                        self.error(f"expected end; found {closer}")
            return pipe, body, else_body
        finally:
            del self.vars[scope:]

    # -- pipelines and operands ----------------------------------------------------------

    def pipeline(self, context: str, end: Kind) -> PipeNode:
        first = self.peek_non_space()
        decl: list[VariableNode] = []
        is_assign = False
        while True:
            start = self.i
            var = self.next_non_space()
            if var.kind is not Kind.VARIABLE:
                self.i = start
                break
            after = self.next_non_space()
            if after.kind in (Kind.ASSIGN, Kind.DECLARE):
                is_assign = after.kind is Kind.ASSIGN
                decl.append(VariableNode(var.pos, (var.val,)))
                self.vars.append(var.val)
                break
            if after.kind is Kind.CHAR and after.val == ",":
                decl.append(VariableNode(var.pos, (var.val,)))
                self.vars.append(var.val)
                if context == "range" and len(decl) < 2:
                    if self.peek_non_space().kind in (Kind.VARIABLE, Kind.RIGHT_DELIM,
                                                      Kind.RIGHT_PAREN):
                        continue
                    self.error("range can only initialize variables")
                self.error(f"too many declarations in {context}")
            self.i = start  # `$x` was an operand, not a declaration
            break
        cmds: list[CommandNode] = []
        while True:
            tok = self.next_non_space()
            if tok.kind is end:
                if not cmds:
                    self.error(f"missing value for {context}")
                for stage, cmd in enumerate(cmds[1:], start=2):
                    if isinstance(cmd.args[0], _NOT_EXECUTABLE):
                        self.error(f"non executable command in pipeline stage {stage}")
                return PipeNode(first.pos, first.line, is_assign, tuple(decl), tuple(cmds))
            if tok.kind not in _OPERAND_START:
                self.unexpected(tok, context)
            self.backup()
            cmds.append(self.command())

    def command(self) -> CommandNode:
        pos = self.peek_non_space().pos
        args: list[Node] = []
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                args.append(operand)
            tok = self.next()
            if tok.kind is Kind.SPACE:
                continue
            if tok.kind in (Kind.RIGHT_DELIM, Kind.RIGHT_PAREN):
                self.backup()
            elif tok.kind is not Kind.PIPE:
                self.unexpected(tok, "operand")
            break
        if not args:
            self.error("empty command")
        return CommandNode(pos, tuple(args))

    def operand(self) -> Node | None:
        node = self.term()
        if node is None or self.peek().kind is not Kind.FIELD:
            return node
        pos = self.peek().pos
        fields: list[str] = []
        while self.peek().kind is Kind.FIELD:
            fields.append(self.next().val[1:])
        if isinstance(node, FieldNode):
            return FieldNode(pos, node.ident + tuple(fields))
        if isinstance(node, VariableNode):
            return VariableNode(pos, node.ident + tuple(fields))
        if isinstance(node, _NOT_EXECUTABLE):
            self.error(f"unexpected . after term {go_quote(str(node))}")
        return ChainNode(pos, node, tuple(fields))

    def term(self) -> Node | None:
        tok = self.next_non_space()
        kind, pos = tok.kind, tok.pos
        if kind is Kind.IDENTIFIER:
            if tok.val not in self.functions:
                self.error(f'function "{tok.val}" not defined')
            return IdentifierNode(pos, tok.val)
        if kind is Kind.DOT:
            return DotNode(pos)
        if kind is Kind.NIL:
            return NilNode(pos)
        if kind is Kind.VARIABLE:
            if tok.val not in self.vars:
                self.error(f'undefined variable "{tok.val}"')
            return VariableNode(pos, (tok.val,))
        if kind is Kind.FIELD:
            return FieldNode(pos, (tok.val[1:],))
        if kind is Kind.BOOL:
            return BoolNode(pos, tok.val == "true")
        if kind in (Kind.NUMBER, Kind.CHAR_CONSTANT):
            return NumberNode(pos, tok.val, self.number(tok))
        if kind is Kind.LEFT_PAREN:
            return self.pipeline("parenthesized pipeline", Kind.RIGHT_PAREN)
        if kind in (Kind.STRING, Kind.RAW_STRING):
            return StringNode(pos, tok.val, self.unquote(tok.val))
        self.backup()
        return None

    def number(self, tok: Token) -> int | float:
        text = tok.val
        if tok.kind is Kind.CHAR_CONSTANT:
            rune = self.unquote(text)
            if len(rune) != 1:
                self.error(f"malformed character constant: {text}")
            return ord(rune)
        if text.endswith("i"):
            self.error(f"complex constants are not supported: {text}")
        value = _go_number(text)
        if value is None:
            self.error(f"illegal number syntax: {go_quote(text)}")
        if isinstance(value, int) and not -(1 << 63) <= value < (1 << 63):
            self.error(f"{text} overflows int")
        return value

    def unquote(self, quoted: str) -> str:
        if quoted[0] == "`":
            return quoted[1:-1].replace("\r", "")
        body = quoted[1:-1]
        out: list[str] = []
        i = 0
        while i < len(body):
            ch = body[i]
            if ch != "\\":
                if ch == quoted[0]:
                    self.error("invalid syntax")
                out.append(ch)
                i += 1
                continue
            escape = _ESCAPE.match(body, i)
            if escape is None or escape.group(1) == ("'" if quoted[0] == '"' else '"'):
                self.error("invalid syntax")
            code = escape.group(1)
            if code in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[code])
            else:
                base = 8 if code[0] in "01234567" else 16
                value = int(code if base == 8 else code[1:], base)
                if value > 0x10FFFF or (base == 8 and value > 255):
                    self.error("invalid syntax")
                out.append(chr(value))
            i = escape.end()
        return "".join(out)


_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"', "'": "'"}
_ESCAPE = re.compile(r"\\([abfnrtv\\'\"]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}"
                     r"|[0-7]{3})")
_INT = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|0[0-7_]*|[1-9][0-9_]*)")


def _go_number(text: str) -> int | float | None:
    """A number constant's value: an int unless written with a point or exponent, as in Go."""
    if _INT.fullmatch(text):
        sign = -1 if text[0] == "-" else 1
        digits = text.lstrip("+-").replace("_", "")
        if len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
            digits = "0o" + digits[1:]  # Go's legacy octal, 017
        try:
            return sign * int(digits, 0)
        except ValueError:
            return None
    try:
        if text.lstrip("+-")[:2] in ("0x", "0X"):
            return float.fromhex(text.replace("_", ""))
        return float(text.replace("_", ""))
    except ValueError:
        return None

