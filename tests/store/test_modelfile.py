"""Modelfiles: parsing (§8.5), every error text, writing back, and /api/show's texts."""

from __future__ import annotations

import pytest

from ollamapy.store import (
    Modelfile,
    ModelfileError,
    Store,
    create_model,
    format_parameters,
    parse_modelfile,
    render_modelfile,
)
from ollamapy.store.modelfile import ERR_COMMAND, quote
from tests.store.conftest import upload, write_gguf

FULL = '''# a comment line
from llama3.2
  TEMPLATE """{{ if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>{{ end }}"""
System "You are Mario from Super Mario Bros."
PARAMETER temperature 1
parameter num_ctx 4096
PARAMETER stop <|start_header_id|>
PARAMETER stop "<|eot_id|>"
PARAMETER use_mmap false
PARAMETER seed -3
MESSAGE user Is Toronto in Canada?
MESSAGE assistant "yes"
LICENSE """MIT
text"""
LICENSE second
'''


def test_parse_a_full_modelfile() -> None:
    mf = parse_modelfile(FULL)
    assert mf.from_ == "llama3.2"
    assert mf.template == ("{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n"
                           "{{ .System }}<|eot_id|>{{ end }}")
    assert mf.system == "You are Mario from Super Mario Bros."
    assert mf.parameters == {"temperature": 1.0, "num_ctx": 4096, "use_mmap": False, "seed": -3,
                             "stop": ["<|start_header_id|>", "<|eot_id|>"]}
    assert type(mf.parameters["temperature"]) is float
    assert type(mf.parameters["num_ctx"]) is int
    assert mf.messages == ({"role": "user", "content": "Is Toronto in Canada?"},
                           {"role": "assistant", "content": "yes"})
    assert mf.licenses == ("MIT\ntext", "second")
    assert mf.create_kwargs()["license"] == ["MIT\ntext", "second"]


def test_quoted_values_keep_inner_space_and_span_lines() -> None:
    mf = parse_modelfile('FROM x\r\nSYSTEM "  padded  "\nTEMPLATE "a\nb"\n')
    assert mf.system == "  padded  " and mf.template == "a\nb"
    assert parse_modelfile('\ufeffFROM  x  \n').from_ == "x"


def test_float_parameters_are_float32_as_ollama_sends_them() -> None:
    mf = parse_modelfile("FROM x\nPARAMETER top_p 0.1234567891\nPARAMETER min_p .5")
    assert mf.parameters == {"top_p": 0.12345679, "min_p": 0.5}


def test_deprecated_parameters_are_accepted_with_a_warning() -> None:
    mf = parse_modelfile("FROM x\nPARAMETER mirostat 2\nPARAMETER penalize_newline true")
    assert mf.parameters == {}
    assert mf.warnings == ("parameter mirostat is deprecated",
                           "parameter penalize_newline is deprecated")


@pytest.mark.parametrize(("text", "error"), [
    ("FROM x\nFROB y", f"(line 2): {ERR_COMMAND}"),
    ("FROM x\nSYSTEM\n", f"(line 2): {ERR_COMMAND}"),
    ("FROM x\n  1FROM y", f"(line 2): {ERR_COMMAND}"),
    ("SYSTEM hi", "no FROM line"),
    ("# only a comment\n", "no FROM line"),
    ("", "no FROM line"),
    ("FROM x\nMESSAGE bot hi", '(line 2): message role must be one of "system", "user", or '
                               '"assistant"'),
    ("FROM x\nMESSAGE User hi", '(line 2): message role must be one of "system", "user", or '
                                '"assistant"'),
    ("FROM x\nADAPTER ./lora.gguf", "ADAPTER is not supported by ollamapy"),
    ("FROM x\nDRAFT ./small.gguf", "DRAFT is not supported by ollamapy"),
    ("FROM x\nPARAMETER foo 1", "unknown parameter 'foo'"),
    ("FROM x\nPARAMETER num_ctx 4k", "invalid int value [4k]"),
    ("FROM x\nPARAMETER num_ctx 1.5", "invalid int value [1.5]"),
    ("FROM x\nPARAMETER temperature warm", "invalid float value [warm]"),
    ("FROM x\nPARAMETER temperature 1e39", "invalid float value [1e39]"),
    ("FROM x\nPARAMETER use_mmap yes", "invalid bool value [yes]"),
    ("FROM x\nSYSTEM \"\"\"never closed\n", "(line 2): unexpected EOF: unterminated quoted value"),
    ("FROM x\nREQUIRES soon", "requires must be a valid semver (e.g. 0.14.0)"),
    ("FROM x\nFROM y", "(line 2): only one FROM line is supported by ollamapy"),
])
def test_errors(text: str, error: str) -> None:
    with pytest.raises(ModelfileError) as info:
        parse_modelfile(text)
    assert str(info.value) == error
    assert info.value.status == 400


@pytest.mark.parametrize(("value", "written"), [
    ("plain", "plain"),
    ("two words", "two words"),
    (" lead", '" lead"'),
    ("trail ", '"trail "'),
    ("line\nbreak", '"line\nbreak"'),
    ('say "hi"\nthere', '"""say "hi"\nthere"""'),
    ('"quoted"', '""""quoted""""'),  # would lose its quotes if written bare
    ('a "b" c', 'a "b" c'),
])
def test_quote(value: str, written: str) -> None:
    assert quote(value) == written


TRICKY = Modelfile(
    from_="/models/blobs/sha256-" + "a" * 64,
    parameters={"stop": ["<|im_end|>", " spaced ", '"q"'], "temperature": 0.7, "num_ctx": 8192,
                "use_mmap": True},
    template='{{ .System }}\n"{{ .Prompt }}"', system=" leading space", licenses=("A\nB", "C"),
    messages=({"role": "user", "content": "multi\nline"}, {"role": "assistant", "content": "ok"}),
    requires="0.14.0")


def test_write_then_parse_round_trips() -> None:
    text = TRICKY.to_text()
    assert text.startswith(f"FROM {TRICKY.from_}\nTEMPLATE \"\"\"")
    assert ("PARAMETER num_ctx 8192\nPARAMETER stop <|im_end|>\n"
            'PARAMETER stop " spaced "\n') in text
    assert parse_modelfile(text) == TRICKY


@pytest.fixture
def model_store(tmp_path) -> Store:
    store = Store(tmp_path / "models")
    digest = upload(store, write_gguf(tmp_path / "tiny.gguf"))
    list(create_model(store, "tiny", files={"tiny.gguf": digest}, template="{{ .Prompt }}",
                      system="Be brief.", parameters={"stop": ["<|end|>"], "num_ctx": 2048},
                      license="MIT"))
    return store


def test_render_modelfile_for_show(model_store: Store) -> None:
    model = model_store.model("tiny")
    assert render_modelfile(model) == (
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        "# FROM tiny:latest\n\n"
        f"FROM {model.model_path}\n"
        "TEMPLATE {{ .Prompt }}\n"
        "SYSTEM Be brief.\n"
        "PARAMETER num_ctx 2048\n"
        "PARAMETER stop <|end|>\n"
        "LICENSE MIT\n")
    shown = render_modelfile(model, system="Be long.", options={"temperature": 0.5})
    assert "SYSTEM Be long.\n" in shown and "PARAMETER temperature 0.5\n" in shown
    # the body parses back into what the model holds
    body = parse_modelfile(shown)
    assert body.from_ == str(model.model_path) and body.template == "{{ .Prompt }}"


def test_format_parameters_is_gos_percent_v_table() -> None:
    params = {"stop": ["<|start_header_id|>", "<|eot_id|>"], "num_keep": 24,
              "temperature": 0.6, "num_ctx": 1e6, "use_mmap": False, "penalty\ttab": "a\"b"}
    assert format_parameters(params) == (
        "num_ctx                        1e+06\n"
        "num_keep                       24\n"
        'penalty\ttab                    "a\\"b"\n'
        'stop                           "<|start_header_id|>"\n'
        'stop                           "<|eot_id|>"\n'
        "temperature                    0.6\n"
        "use_mmap                       false")
    assert format_parameters({}) == ""
