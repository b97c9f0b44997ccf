"""The Go template language, construct by construct, with literal expected output.

Expectations follow Go's text/template rules (as Ollama runs it, missingkey=zero on a map).
"""

from __future__ import annotations

import pytest

from ollamapy.text.gotemplate import execute_go_template as run


def test_text_only_and_empty_templates() -> None:
    assert run("", {}) == ""
    assert run("plain {text} }} {", {}) == "plain {text} }} {"


@pytest.mark.parametrize(("template", "expected"), [
    ("a  \n {{- .X }}", "a1"),  # {{- eats all whitespace before, newlines included
    ("{{ .X -}} \n\t b", "1b"),  # -}} eats all whitespace after
    ("a \n{{- .X -}}\n b", "a1b"),
    ("a {{- .X }} b", "a1 b"),
    ("a{{-3}}b", "a-3b"),  # no space after the dash: a negative number, no trimming
    ("a {{ 3 -}} b", "a 3b"),
    ("x\n{{- /* note */ -}}\ny", "xy"),  # trimming comments
    ("x\n{{/* note */}}\ny", "x\n\ny"),
    ("x{{/* a\nmulti-line\ncomment */}}y", "xy"),
    ("a.\n{{- if true }}\n  b\n{{- end }}\n", "a.\n  b\n"),
])
def test_trim_markers_and_comments(template: str, expected: str) -> None:
    assert run(template, {"X": 1}) == expected


def test_printing_values_as_go_prints_them() -> None:
    data = {"S": "héllo", "I": 42, "F": 2.5, "Big": 1e6, "Whole": 3.0, "Tiny": 1e-5, "T": True,
            "N": None, "L": ["a", 1, None], "M": {"b": 2, "a": [1]}, "Bytes": b"hi"}
    template = ("{{ .S }}|{{ .I }}|{{ .F }}|{{ .Big }}|{{ .Whole }}|{{ .Tiny }}|{{ .T }}|{{ .N }}|"
                "{{ .L }}|{{ .M }}|{{ .Bytes }}|{{ .Absent }}")
    assert run(template, data) == (
        "héllo|42|2.5|1e+06|3|1e-05|true|<no value>|[a 1 <nil>]|map[a:[1] b:2]|[104 105]|"
        "<no value>")


@pytest.mark.parametrize(("template", "expected"), [
    ('{{ "a\\tb\\u00e9\\x41" }}', "a\tbéA"),
    ("{{ `raw\\n` }}", "raw\\n"),
    ("{{ 'a' }} {{ '\\n' }}", "97 10"),  # character constants are numbers
    ("{{ 0x1F }} {{ 0o17 }} {{ 017 }} {{ 0b101 }} {{ 1_000 }}", "31 15 15 5 1000"),
    ("{{ 1e3 }} {{ 2.50 }} {{ -7 }} {{ +3 }} {{ .5 }}", "1000 2.5 -7 3 0.5"),
    ("{{ true }} {{ false }}", "true false"),
])
def test_literals(template: str, expected: str) -> None:
    assert run(template, {}) == expected


def test_fields_chains_dot_and_root() -> None:
    data = {"A": {"B": {"C": "deep"}}, "L": [{"Name": "x"}, {"Name": "y"}], "Top": "T"}
    assert run("{{ .A.B.C }} {{ $.A.B.C }} {{ .A.Missing }}", data) == "deep deep <no value>"
    assert run("{{ range .L }}{{ .Name }}{{ $.Top }}{{ end }}", data) == "xTyT"
    assert run("{{ with .A.B }}{{ . }}{{ end }}", data) == "map[C:deep]"
    assert run("{{ (index .L 1).Name }} {{ (.A).B.C }}", data) == "y deep"
    assert run("{{ . }}", "scalar") == "scalar"


def test_variables_declare_assign_and_scope() -> None:
    assert run("{{ $x := 1 }}{{ $x }}{{ $x = 2 }}{{ $x }}", {}) == "12"
    # an assignment inside a block changes the outer variable; a declaration ends with the block
    assert run("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ $x := 3 }}{{ $x }}{{ end }}{{ $x }}",
               {}) == "32"
    assert run("{{ $v := .A }}{{ with .B }}{{ $v }}{{ . }}{{ $ }}{{ end }}",
               {"A": "a", "B": "b"}) == "abmap[A:a B:b]"
    assert run("{{ $n := len .L | printf \"%d items\" }}{{ $n }}", {"L": [1, 2]}) == "2 items"


def test_pipelines_pass_the_value_as_the_last_argument() -> None:
    assert run('{{ "x" | printf "%s-%s" "a" }}', {}) == "a-x"
    assert run("{{ .L | len | printf \"%03d\" }}", {"L": [1, 2, 3]}) == "003"
    assert run("{{ 3 | eq 3 }} {{ .S | eq \"b\" \"a\" }}", {"S": "b"}) == "true true"
    assert run("{{ (len .L) }} {{ eq (len .L) 3 }}", {"L": [1, 2, 3]}) == "3 true"


@pytest.mark.parametrize(("value", "expected"), [(1, "one"), (2, "two"), (3, "other")])
def test_if_else_if_else(value: int, expected: str) -> None:
    template = "{{ if eq .V 1 }}one{{ else if eq .V 2 }}two{{ else }}other{{ end }}"
    assert run(template, {"V": value}) == expected


@pytest.mark.parametrize("empty", ["", 0, 0.0, False, None, [], {}, ()])
def test_empty_values_are_false(empty) -> None:
    assert run("{{ if .V }}T{{ else }}F{{ end }}{{ if not .V }}!{{ end }}", {"V": empty}) == "F!"


@pytest.mark.parametrize("full", [" ", "0", 1, -1, 0.5, True, [0], {"k": None}, [None]])
def test_non_empty_values_are_true(full) -> None:
    assert run("{{ if .V }}T{{ else }}F{{ end }}", {"V": full}) == "T"


def test_range_over_lists_with_index_and_else() -> None:
    assert run("{{ range .L }}[{{ . }}]{{ end }}", {"L": ["a", "b"]}) == "[a][b]"
    assert run("{{ range $i, $x := .L }}{{ $i }}:{{ $x }},{{ end }}", {"L": ["a", "b"]}) == (
        "0:a,1:b,")
    assert run("{{ range $x := .L }}{{ $x }}{{ end }}", {"L": ["a", "b"]}) == "ab"
    for empty in ([], None, {}):
        assert run("{{ range .L }}x{{ else }}none{{ end }}", {"L": empty}) == "none"
    assert run("{{ range .Missing }}x{{ else }}none{{ end }}", {}) == "none"
    # the else branch sees the outer dot
    assert run("{{ range .L }}x{{ else }}{{ .K }}{{ end }}", {"L": [], "K": "k"}) == "k"


def test_range_over_maps_in_key_order_and_over_integers() -> None:
    data = {"M": {"b": 2, "a": 1, "c": 3}}
    assert run("{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}", data) == "a=1;b=2;c=3;"
    assert run("{{ range .M }}{{ . }}{{ end }}", data) == "123"
    assert run("{{ range 3 }}{{ . }}{{ end }}", {}) == "012"


def test_range_variables_are_fresh_each_iteration_and_assignable() -> None:
    template = ("{{ $last := \"\" }}{{ range $i, $m := .L }}{{ $last = $m }}{{ $t := $i }}"
                "{{ end }}{{ $last }}")
    assert run(template, {"L": ["a", "b", "c"]}) == "c"
    template = "{{ $i := 9 }}{{ range $i, $x := .L }}{{ end }}{{ $i }}"
    assert run(template, {"L": ["a"]}) == "9"
    template = "{{ $i := 9 }}{{ $x := 0 }}{{ range $i, $x = .L }}{{ end }}{{ $i }}{{ $x }}"
    assert run(template, {"L": ["a", "b"]}) == "1b"


def test_break_and_continue() -> None:
    template = ("{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ if eq . 4 }}{{ break }}"
                "{{ end }}{{ . }}{{ end }}")
    assert run(template, {"L": [1, 2, 3, 4, 5]}) == "13"
    nested = ("{{ range .L }}{{ range .L2 }}{{ break }}{{ end }}{{ . }}{{ end }}")
    assert run(nested, {"L": [{"L2": [1]}, {"L2": []}]}) == "map[L2:[1]]map[L2:[]]"


def test_with_else_and_else_with() -> None:
    assert run("{{ with .A }}<{{ . }}>{{ else }}none{{ end }}", {"A": "x"}) == "<x>"
    assert run("{{ with .A }}<{{ . }}>{{ else }}none{{ end }}", {"A": ""}) == "none"
    template = "{{ with .A }}a{{ else with .B }}b={{ . }}{{ else }}c{{ end }}"
    assert run(template, {"A": 0, "B": "y"}) == "b=y"
    assert run(template, {"A": 0, "B": 0}) == "c"
    # a variable declared in with's pipeline lives in both branches
    assert run("{{ with $x := .A }}{{ $x }}{{ else }}[{{ $x }}]{{ end }}", {"A": 0}) == "[0]"


def test_missing_keys_give_no_value_and_compare_unequal() -> None:
    assert run('{{ .Nope }}|{{ eq .Nope "x" }}|{{ ne .Nope "" }}|{{ if .Nope }}y{{ end }}', {}) == (
        "<no value>|false|true|")
    assert run("{{ print .Nope }} {{ printf \"%v\" .Nope }} {{ json .Nope }}", {}) == (
        "<nil> <nil> null")
