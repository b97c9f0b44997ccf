"""Bad templates fail at parse time, runtime faults at execution, with Go's messages."""

from __future__ import annotations

import pytest

from ollamapy.text.gotemplate import (
    GoTemplateError,
    execute_go_template,
    parse_go_template,
    render_go_template,
)


@pytest.mark.parametrize(("template", "message"), [
    ("{{ .X", "template: :1: unclosed action"),
    ("a\n{{ .X\n\n", "template: :4: unclosed action started at :2"),
    ("a\n{{ if .X }}b", "template: :2: unexpected EOF"),
    ("{{ range .L }}{{ if .X }}{{ end }}", "template: :1: unexpected EOF"),
    ("{{ end }}", "template: :1: unexpected {{end}}"),
    ("x\n\n{{ else }}", "template: :3: unexpected {{else}}"),
    ("{{ if .A }}{{ else }}{{ else }}{{ end }}", "template: :1: expected end; found {{else}}"),
    ("{{ range .L }}{{ else if .X }}{{ end }}", 'template: :1: unexpected <if> in input'),
    ("{{ foo .X }}", 'template: :1: function "foo" not defined'),
    ("one\ntwo {{ $x }}", 'template: :2: undefined variable "$x"'),
    ("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", 'template: :1: undefined variable "$y"'),
    ("{{ break }}", "template: :1: {{break}} outside {{range}}"),
    ("{{ if true }}{{ continue }}{{ end }}", "template: :1: {{continue}} outside {{range}}"),
    ('{{ "abc }}', "template: :1: unterminated quoted string"),
    ("{{ `abc }}", "template: :1: unterminated raw quoted string"),
    ("{{/* never closed }}", "template: :1: unclosed comment"),
    ("{{/* c */ .X }}", "template: :1: comment ends before closing delimiter"),
    ("{{ if }}{{ end }}", "template: :1: missing value for if"),
    ("{{ }}", "template: :1: missing value for command"),
    ("{{ range $i, $x, $y := .L }}{{ end }}", "template: :1: too many declarations in range"),
    ("{{ $a, $b := 1 }}", "template: :1: too many declarations in command"),
    ("{{ .X | 3 }}", "template: :1: non executable command in pipeline stage 2"),
    ("{{ .X) }}", "template: :1: unexpected right paren"),
    ("{{ (.X }}", "template: :1: unclosed left paren"),
    ('{{ "a""b" }}', 'template: :1: unexpected "\\"b\\"" in operand'),
    ("{{ 3x }}", 'template: :1: bad number syntax: "3x"'),
    ("{{ .X# }}", "template: :1: bad character U+0023 '#'"),
    ('{{ "a".X }}', 'template: :1: unexpected . after term "\\"a\\""'),
    ("{{ 1i }}", "template: :1: complex constants are not supported: 1i"),
])
def test_syntax_errors_carry_gos_message_and_line(template: str, message: str) -> None:
    with pytest.raises(GoTemplateError) as err:
        parse_go_template(template)
    assert str(err.value) == message


@pytest.mark.parametrize("keyword", ["define", "template", "block"])
def test_named_templates_are_rejected_as_unsupported(keyword: str) -> None:
    with pytest.raises(GoTemplateError, match=r"template: :1: \{\{" + keyword
                       + r"\}\} is not supported"):
        parse_go_template(f'{{{{ {keyword} "x" }}}}{{{{ end }}}}')


@pytest.mark.parametrize(("template", "data", "message"), [
    ("{{ len 3 }}", {},
     'template: :1:3: executing "" at <len 3>: error calling len: len of type int'),
    ("a\nbc{{ len 3 }}", {},
     'template: :2:5: executing "" at <len 3>: error calling len: len of type int'),
    ("{{ .A.B }}", {"A": "str"}, "can't evaluate field B in type string"),
    ("{{ .Nope.B }}", {}, "nil pointer evaluating interface {}.B"),
    ("{{ index .L 5 }}", {"L": [1]}, "error calling index: index out of range: 5"),
    ('{{ index .L "a" }}', {"L": [1]},
     "error calling index: cannot index slice/array with type string"),
    ("{{ index .Nope 0 }}", {}, "error calling index: index of untyped nil"),
    ("{{ slice .L 2 1 }}", {"L": [1, 2]}, "error calling slice: invalid slice index: 2 > 1"),
    ('{{ eq 1 "a" }}', {}, "error calling eq: incompatible types for comparison"),
    ("{{ eq 1 }}", {}, "error calling eq: missing argument for comparison"),
    ("{{ eq .L .L }}", {"L": [1]}, "error calling eq: non-comparable type [1]: []interface {}"),
    ("{{ lt .Nope 1 }}", {}, "error calling lt: invalid type for comparison"),
    ("{{ lt 1 2.5 }}", {}, "error calling lt: incompatible types for comparison"),
    ("{{ len .Nope }}", {}, "error calling len: len of nil pointer"),
    ("{{ nil }}", {}, "nil is not a command"),
    ("{{ .X 1 }}", {"X": 1}, "X is not a method but has arguments"),
    ('{{ "a" 1 }}', {}, 'can\'t give argument to non-function "a"'),
    ("{{ printf 3 }}", {}, "wrong type for value; expected string; got int"),
    ("{{ not }}", {}, "wrong number of args for not: want 1 got 0"),
    ("{{ index }}", {}, "wrong number of args for index: want at least 1 got 0"),
    ("{{ range .S }}{{ end }}", {"S": "hello"}, "range can't iterate over hello"),
    ("{{ range $i, $x := 3 }}{{ end }}", {}, "can't use 3 to iterate over more than one variable"),
    ("{{ call .F }}", {}, "error calling call: call of nil"),
])
def test_runtime_errors(template: str, data, message: str) -> None:
    with pytest.raises(GoTemplateError) as err:
        execute_go_template(template, data)
    assert str(err.value).startswith('template: :') and str(err.value).endswith(message)


def test_runtime_errors_through_ollamas_rendering() -> None:
    with pytest.raises(GoTemplateError, match="can't evaluate field Nope in type"):
        render_go_template("{{ range .Messages }}{{ .Nope }}{{ end }}",
                           [{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="message must be a JSON object"):
        render_go_template("{{ .Messages }}", ["not a message"])  # type: ignore[list-item]


def test_the_output_is_bounded(monkeypatch) -> None:
    """A range that would write a gigabyte stops at MAX_CHARS with an error (Go has no such
    cap; a Modelfile TEMPLATE is the model publisher's code). The cap is lowered here so the
    test writes kilobytes, not the real cap's 64 Mi characters."""
    from ollamapy.text import gotemplate_exec
    from ollamapy.text.gotemplate import render_go_template

    monkeypatch.setattr(gotemplate_exec, "MAX_CHARS", 1000)
    msgs = [{"role": "user", "content": "hi"}]
    assert len(render_go_template("{{ range $i := 100 }}0123456789{{ end }}", msgs)) == 1000
    with pytest.raises(GoTemplateError, match="template output would be larger than "
                                              "1000 characters"):
        render_go_template("{{ range $i := 99999999 }}0123456789{{ end }}", msgs)
