"""Go text/template source → tokens, following the rules of Go's `text/template/parse` lexer.

Text runs between `{{` and `}}` actions; `{{- ` trims all whitespace (newlines included) before
the action and ` -}}` all whitespace after it, and the marker counts only with the space (so
`{{-3}}` is the number -3). Comments `{{/* … */}}` vanish, trimming too if marked. Inside an
action, spaces are tokens of their own: the parser needs them to tell `.A.B` (one chain) from
`.A .B` (two arguments). A lexical error ends the token list with an ERROR token, which the
parser reports when it reaches it, as Go does.

Also home to `GoTemplateError`, the one error every stage raises, since all of them import this.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class GoTemplateError(ValueError):
    """A template that does not parse, or fails while executing; the message reads as Go's."""


class Kind(enum.Enum):
    TEXT = enum.auto()
    LEFT_DELIM = enum.auto()
    RIGHT_DELIM = enum.auto()
    SPACE = enum.auto()
    LEFT_PAREN = enum.auto()
    RIGHT_PAREN = enum.auto()
    PIPE = enum.auto()
    ASSIGN = enum.auto()  # =
    DECLARE = enum.auto()  # :=
    CHAR = enum.auto()  # a lone printable ASCII character, such as the ',' of `$i, $m`
    BOOL = enum.auto()
    NUMBER = enum.auto()
    CHAR_CONSTANT = enum.auto()
    STRING = enum.auto()
    RAW_STRING = enum.auto()
    FIELD = enum.auto()  # .Name
    VARIABLE = enum.auto()  # $name, or $ alone
    IDENTIFIER = enum.auto()  # a function name
    DOT = enum.auto()
    EOF = enum.auto()
    ERROR = enum.auto()
    # keywords
    BLOCK = enum.auto()
    BREAK = enum.auto()
    CONTINUE = enum.auto()
    DEFINE = enum.auto()
    ELSE = enum.auto()
    END = enum.auto()
    IF = enum.auto()
    NIL = enum.auto()
    RANGE = enum.auto()
    TEMPLATE = enum.auto()
    WITH = enum.auto()


KEYWORDS = {"block": Kind.BLOCK, "break": Kind.BREAK, "continue": Kind.CONTINUE,
            "define": Kind.DEFINE, "else": Kind.ELSE, "end": Kind.END, "if": Kind.IF,
            "nil": Kind.NIL, "range": Kind.RANGE, "template": Kind.TEMPLATE, "with": Kind.WITH}
_KEYWORD_KINDS = frozenset(KEYWORDS.values())

SPACES = " \t\r\n"
_TERMINATORS = frozenset(".,|:()")


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    val: str
    pos: int  # offset in the source, where the token starts
    line: int  # 1-based line where the token starts

    def __str__(self) -> str:
        # Go's item.String(), which parse errors quote
        if self.kind is Kind.EOF:
            return "EOF"
        if self.kind is Kind.ERROR:
            return self.val
        if self.kind in _KEYWORD_KINDS:
            return f"<{self.val}>"
        if len(self.val) > 10:
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)


def go_quote(s: str) -> str:
    """strconv.Quote: a double-quoted Go string literal, printable Unicode kept as is."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == " " or ch.isprintable():
            out.append(ch)
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


_SHORT_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                  "\v": "\\v"}


def _is_alnum(ch: str) -> bool:
    return ch == "_" or ch.isalpha() or ch.isdecimal()


def _rune(ch: str) -> str:
    # Go's %#U, used in "bad character" errors
    code = f"U+{ord(ch):04X}"
    return f"{code} '{ch}'" if ch.isprintable() else code


def has_left_trim_marker(text: str, pos: int) -> bool:
    return text[pos:pos + 1] == "-" and text[pos + 1:pos + 2] != "" and text[pos + 1] in SPACES


def has_right_trim_marker(text: str, pos: int) -> bool:
    return text[pos:pos + 1] != "" and text[pos] in SPACES and text[pos + 1:pos + 2] == "-"


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.tokens: list[Token] = []

    def emit(self, kind: Kind, start: int, line: int | None = None) -> None:
        self.tokens.append(Token(kind, self.text[start:self.pos], start,
                                 self.line if line is None else line))

    def fail(self, message: str) -> None:
        self.tokens.append(Token(Kind.ERROR, message, self.pos, self.line))

    def at_right_delim(self, pos: int) -> tuple[bool, bool]:
        """(at `}}`, preceded by a trim marker)."""
        if has_right_trim_marker(self.text, pos) and self.text.startswith("}}", pos + 2):
            return True, True
        return self.text.startswith("}}", pos), False

    def at_terminator(self) -> bool:
        if self.pos >= len(self.text):
            return True
        ch = self.text[self.pos]
        return ch in SPACES or ch in _TERMINATORS or self.text.startswith("}}", self.pos)

    def run(self) -> list[Token]:
        trim_text = False
        while True:
            start = self.pos
            if trim_text:
                while start < len(self.text) and self.text[start] in SPACES:
                    start += 1
                self.line += self.text.count("\n", self.pos, start)
                self.pos = start
            delim = self.text.find("{{", self.pos)
            end = len(self.text) if delim < 0 else delim
            text_end = end
            if delim >= 0 and has_left_trim_marker(self.text, delim + 2):
                while text_end > start and self.text[text_end - 1] in SPACES:
                    text_end -= 1
            if text_end > start:
                self.tokens.append(Token(Kind.TEXT, self.text[start:text_end], start, self.line))
            self.line += self.text.count("\n", start, end)
            self.pos = end
            if delim < 0:
                self.tokens.append(Token(Kind.EOF, "", self.pos, self.line))
                return self.tokens
            after = delim + 2 + (2 if has_left_trim_marker(self.text, delim + 2) else 0)
            if self.text.startswith("/*", after):
                trim = self.comment(after)
            else:
                self.pos = delim + 2
                self.emit(Kind.LEFT_DELIM, delim)
                self.pos = after
                trim = self.action()
            if trim is None:
                return self.tokens
            trim_text = trim

    def comment(self, start: int) -> bool | None:
        close = self.text.find("*/", start + 2)
        if close < 0:
            self.fail("unclosed comment")
            return None
        self.line += self.text.count("\n", start, close)
        self.pos = close + 2
        delim, trim = self.at_right_delim(self.pos)
        if not delim:
            self.fail("comment ends before closing delimiter")
            return None
        self.pos += 4 if trim else 2
        return trim

    def action(self) -> bool | None:
        """Tokens up to and including `}}`; returns whether it trims the text after it."""
        depth = 0
        text = self.text
        while True:
            delim, trim = self.at_right_delim(self.pos)
            if delim:
                if depth:
                    self.fail("unclosed left paren")
                    return None
                start = self.pos + (2 if trim else 0)
                self.pos = start + 2
                self.emit(Kind.RIGHT_DELIM, start)
                return trim
            if self.pos >= len(text):
                self.fail("unclosed action")
                return None
            start, ch = self.pos, text[self.pos]
            self.pos += 1
            if ch in SPACES:
                self.space(start)
            elif ch == "=":
                self.emit(Kind.ASSIGN, start)
            elif ch == ":":
                if text[self.pos:self.pos + 1] != "=":
                    self.fail("expected :=")
                    return None
                self.pos += 1
                self.emit(Kind.DECLARE, start)
            elif ch == "|":
                self.emit(Kind.PIPE, start)
            elif ch in "\"'`":
                if not self.quoted(start, ch):
                    return None
            elif ch == "$" or (ch == "." and not text[self.pos:self.pos + 1].isdigit()):
                # `.5` is a number, `.Name` (or `.` alone) a field
                if not self.field_or_variable(start, Kind.VARIABLE if ch == "$" else Kind.FIELD):
                    return None
            elif ch in "+-." or ch.isdigit():
                if not self.number(start):
                    return None
            elif _is_alnum(ch):
                if not self.identifier(start):
                    return None
            elif ch == "(":
                depth += 1
                self.emit(Kind.LEFT_PAREN, start)
            elif ch == ")":
                depth -= 1
                if depth < 0:
                    self.fail("unexpected right paren")
                    return None
                self.emit(Kind.RIGHT_PAREN, start)
            elif ch.isascii() and ch.isprintable():
                self.emit(Kind.CHAR, start)
            else:
                self.fail(f"unrecognized character in action: {_rune(ch)}")
                return None

    def space(self, start: int) -> None:
        line = self.line
        while self.pos < len(self.text) and self.text[self.pos] in SPACES:
            self.pos += 1
        # the last space may belong to a trim-marked ` -}}`, which lexes as the delimiter
        if (has_right_trim_marker(self.text, self.pos - 1)
                and self.text.startswith("}}", self.pos + 1)):
            self.pos -= 1
        self.line += self.text.count("\n", start, self.pos)
        if self.pos > start:
            self.emit(Kind.SPACE, start, line)

    def quoted(self, start: int, quote: str) -> bool:
        text, line = self.text, self.line
        if quote == "`":
            close = text.find("`", self.pos)
            if close < 0:
                self.fail("unterminated raw quoted string")
                return False
            self.pos = close + 1
            self.line += text.count("\n", start, self.pos)
            self.emit(Kind.RAW_STRING, start, line)
            return True
        while True:
            ch = text[self.pos] if self.pos < len(text) else ""
            self.pos += 1
            if ch == "\\" and text[self.pos:self.pos + 1] not in ("", "\n"):
                self.pos += 1
            elif ch in ("", "\n"):
                self.pos -= 1
                self.fail("unterminated quoted string" if quote == '"'
                          else "unterminated character constant")
                return False
            elif ch == quote:
                break
        self.emit(Kind.STRING if quote == '"' else Kind.CHAR_CONSTANT, start)
        return True

    def field_or_variable(self, start: int, kind: Kind) -> bool:
        if self.at_terminator():
            self.emit(Kind.VARIABLE if kind is Kind.VARIABLE else Kind.DOT, start)
            return True
        while self.pos < len(self.text) and _is_alnum(self.text[self.pos]):
            self.pos += 1
        if not self.at_terminator():
            self.fail(f"bad character {_rune(self.text[self.pos])}")
            return False
        self.emit(kind, start)
        return True

    def identifier(self, start: int) -> bool:
        while self.pos < len(self.text) and _is_alnum(self.text[self.pos]):
            self.pos += 1
        if not self.at_terminator():
            self.fail(f"bad character {_rune(self.text[self.pos])}")
            return False
        word = self.text[start:self.pos]
        if word in KEYWORDS:
            self.emit(KEYWORDS[word], start)
        elif word in ("true", "false"):
            self.emit(Kind.BOOL, start)
        else:
            self.emit(Kind.IDENTIFIER, start)
        return True

    def number(self, start: int) -> bool:
        # Go's scanNumber: the shape is checked here, the value when the parser reads it
        self.pos = start
        self.accept("+-")
        digits = "0123456789_"
        if self.accept("0"):
            if self.accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self.accept("oO"):
                digits = "01234567_"
            elif self.accept("bB"):
                digits = "01_"
        self.accept_run(digits)
        if self.accept("."):
            self.accept_run(digits)
        if len(digits) == 11 and self.accept("eE"):
            self.accept("+-")
            self.accept_run("0123456789_")
        if len(digits) == 23 and self.accept("pP"):
            self.accept("+-")
            self.accept_run("0123456789_")
        self.accept("i")
        if self.pos < len(self.text) and _is_alnum(self.text[self.pos]):
            self.pos += 1
            self.fail(f"bad number syntax: {go_quote(self.text[start:self.pos])}")
            return False
        self.emit(Kind.NUMBER, start)
        return True

    def accept(self, valid: str) -> bool:
        if self.pos < len(self.text) and self.text[self.pos] in valid:
            self.pos += 1
            return True
        return False

    def accept_run(self, valid: str) -> None:
        while self.accept(valid):
            pass


def lex(text: str) -> list[Token]:
    """All tokens of `text`, ending with EOF or, at the first lexical error, with ERROR."""
    return _Lexer(text).run()
