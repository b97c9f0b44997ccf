"""Template functions, Go's fmt and Go's json.Marshal, with literal expected output."""

from __future__ import annotations

import pytest

from ollamapy.text.gotemplate import execute_go_template as run
from ollamapy.text.gotemplate_data import to_message


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ eq 1 1 }} {{ eq 1 2 }} {{ eq 1 2 3 1 }} {{ eq 1 2 3 }}", "true false true false"),
    ('{{ eq "a" "a" }} {{ eq true false }} {{ ne 1 2 }} {{ ne "x" "x" }}', "true false true false"),
    ("{{ lt 1 2 }} {{ lt 2 1 }} {{ le 2 2 }} {{ gt 2 1 }} {{ ge 1 2 }}",
     "true false true true false"),
    ('{{ lt "apple" "banana" }} {{ gt "b" "a" }} {{ lt 1.5 2.5 }}', "true true true"),
    ("{{ eq .F 2.5 }} {{ lt .I 10 }}", "true true"),
])
def test_comparisons(template: str, expected: str) -> None:
    assert run(template, {"F": 2.5, "I": 3}) == expected


def test_and_or_return_an_argument_and_short_circuit() -> None:
    assert run('{{ and 1 0 2 }} {{ and 1 "x" }} {{ or 0 "" "z" }} {{ or 0 "" }}', {}) == "0 x z "
    # the second argument would fail (field of a missing value): it is never evaluated
    assert run("{{ and false .Nope.Field }} {{ or true .Nope.Field }}", {}) == "false true"
    assert run("{{ not 0 }} {{ not 1 }} {{ not .Nope }}", {}) == "true false true"
    assert run("{{ if and .A (not .B) }}yes{{ end }}", {"A": 1, "B": ""}) == "yes"


def test_len_index_slice() -> None:
    data = {"S": "héllo", "L": ["a", "b", "c"], "M": {"k": "v"}, "N": [[1, 2], [3, 4]]}
    # len counts a string's bytes, as Go does
    assert run("{{ len .S }} {{ len .L }} {{ len .M }} {{ len \"\" }}", data) == "6 3 1 0"
    assert run('{{ index .L 1 }} {{ index .M "k" }} {{ index .M "x" }} {{ index .N 1 0 }}',
               data) == "b v <no value> 3"
    assert run("{{ index .S 0 }}", data) == "104"
    assert run("{{ slice .L 1 }} {{ slice .L 1 2 }} {{ slice .L }} {{ slice .S 0 1 }}", data) == (
        "[b c] [b] [a b c] h")
    assert run("{{ len (slice .L 2) }} {{ slice .L 3 }}", data) == "1 []"


def test_print_println() -> None:
    # Sprint puts a space only between operands that are both non-strings
    assert run('{{ print 1 2 "a" "b" 3 }}', {}) == "1 2ab3"
    assert run('{{ println 1 "a" }}', {}) == "1 a\n"
    assert run("{{ print }}|{{ print .L }}", {"L": [1, "x"]}) == "|[1 x]"


@pytest.mark.parametrize(("template", "expected"), [
    ('{{ printf "%s|%v|%d|%q|%t" "str" .L 42 "q\\"\\n" true }}', 'str|[1 x]|42|"q\\"\\n"|true'),
    ('{{ printf "[%5s][%-5s][%.2s][%05d][%-4d][%+d][%x][%X][%o][%b][%c]" "ab" "ab" "abc" 42 7 5 '
     '255 255 8 5 65 }}', "[   ab][ab   ][ab][00042][7   ][+5][ff][FF][10][101][A]"),
    ('{{ printf "%f %.2f %e %g %v %6.1f %G" 3.14159 2.5 1234.5 0.000012 2.0 -2.25 1e21 }}',
     "3.141590 2.50 1.234500e+03 1.2e-05 2   -2.2 1E+21"),
    ('{{ printf "%x %X % x %q %#q" "hi" "hi" "hi" 97 "back" }}', "6869 6869 68 69 'a' `back`"),
    ('{{ printf "%v %+v %s" .M .M .B }}', "map[a:1 b:<nil>] map[a:1 b:<nil>] [x y]"),
    ('{{ printf "100%% %*d|%.*f" 4 7 1 2.25 }}', "100%    7|2.2"),
])
def test_printf_verbs(template: str, expected: str) -> None:
    assert run(template, {"L": [1, "x"], "M": {"b": None, "a": 1}, "B": ["x", "y"]}) == expected


@pytest.mark.parametrize(("template", "expected"), [
    ('{{ printf "%d" "x" }}', "%!d(string=x)"),
    ('{{ printf "%s %s" "a" }}', "a %!s(MISSING)"),
    ('{{ printf "%s" "a" 2 "b" }}', "a%!(EXTRA int=2, string=b)"),
    ('{{ printf "%z" 1 }}', "%!z(int=1)"),
    ('{{ printf "%d %s" .Nope .Nope }}', "%!d(<nil>) %!s(<nil>)"),
    ('{{ printf "%f" 3 }}', "%!f(int=3)"),
    ('{{ printf "end%" }}', "end%!(NOVERB)"),
    # fmt's tooLarge: a width or precision past 1e6 is refused, not built (a template cannot
    # ask for a gigabyte of padding); parsenum gives up on a literal one and the rest is lost
    ('{{ printf "%999999999d" 1 }}', "%!(NOVERB)%!(EXTRA int=1)"),
    ('{{ printf "a%.99999999fb" 1.0 }}', "a%!(NOVERB)%!(EXTRA float64=1)"),
    ('{{ printf "%*d|" 2000000 1 }}', "%!(BADWIDTH)1|"),
    ('{{ printf "%.*f" -2000000 1.5 }}', "%!(BADPREC)1.500000"),
    ('{{ printf "%1000000d" 1 | len }}', "1000000"),
])
def test_printf_reports_bad_verbs_and_arguments_like_go(template: str, expected: str) -> None:
    assert run(template, {}) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (None, "null"), (True, "true"), (0, "0"), (-12, "-12"),
    (2.0, "2"), (0.1, "0.1"), (1e20, "100000000000000000000"), (1e21, "1e+21"),
    (1e-6, "0.000001"), (1e-7, "1e-7"), (-2.5e-9, "-2.5e-9"),
    ("<a href='x'>&</a>", '"\\u003ca href=\'x\'\\u003e\\u0026\\u003c/a\\u003e"'),
    ('é "q" \\ \n\t\x01\u2028', '"é \\"q\\" \\\\ \\n\\t\\u0001\\u2028"'),
    ([], "[]"), ([1, "a", None], '[1,"a",null]'),
    ({"b": 1, "a": {"d": [], "c": {}}}, '{"a":{"c":{},"d":[]},"b":1}'),
    (b"\x00\x01\x02", '"AAEC"'),
    (float("nan"), ""),  # json.Marshal fails; Ollama's json prints nothing
])
def test_json_is_gos_json_marshal(value, expected: str) -> None:
    assert run("{{ json .V }}", {"V": value}) == expected


def test_json_of_a_struct_keeps_field_order_and_omits_empty_omitempty_fields() -> None:
    message = to_message({"role": "USER", "content": "", "thinking": "", "tool_name": "t",
                          "unknown": "dropped"})
    assert run("{{ json . }}", message) == '{"role":"user","content":"","tool_name":"t"}'
    assert run("{{ .Role }} {{ .ToolName }} {{ if .ToolCalls }}x{{ end }}", message) == "user t "


def test_html_js_urlquery() -> None:
    assert run('{{ html "<a href=\\"x\\">Tom & Jerry\'s</a>" }}', {}) == (
        "&lt;a href=&#34;x&#34;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;")
    assert run('{{ js "it\'s <b>=\\\\" }}', {}) == "it\\'s \\u003Cb\\u003E\\u003D\\\\"
    assert run('{{ urlquery "a b&c/é" }} {{ html .Nope }}', {}) == (
        "a+b%26c%2F%C3%A9 &lt;no value&gt;")
    assert run('{{ "<b>" | html }}', {}) == "&lt;b&gt;"
