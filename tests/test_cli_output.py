"""What the CLI prints and reads as Ollama's does: Go's duration format, `run --verbose`, the
values of `/set parameter`."""

from __future__ import annotations

import pytest

from ollamapy.cli import WordWrap, go_duration, metrics_summary, parameter_value


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (512, "512ns"), (1_500, "1.5µs"), (12_500_000, "12.5ms"), (130_000_000, "130ms"),
    (1_000_000_000, "1s"), (1_234_567_891, "1.234567891s"), (62_500_000_000, "1m2.5s"),
    (3_600_000_000_000, "1h0m0s"), (3_723_000_000_000, "1h2m3s"), (-1_500_000, "-1.5ms")])
def test_durations_print_as_go_prints_them(ns: int, text: str) -> None:
    assert go_duration(ns) == text


def test_the_verbose_summary_has_ollamas_lines_and_skips_what_is_zero() -> None:
    final = {"total_duration": 2_345_678_901, "load_duration": 12_345_678,
             "prompt_eval_count": 26, "prompt_eval_duration": 130_000_000,
             "eval_count": 10, "eval_duration": 250_000_000}
    assert metrics_summary(final).splitlines() == [
        "total duration:       2.345678901s",
        "load duration:        12.345678ms",
        "prompt eval count:    26 token(s)",
        "prompt eval duration: 130ms",
        "prompt eval rate:     200.00 tokens/s",
        "eval count:           10 token(s)",
        "eval duration:        250ms",
        "eval rate:            40.00 tokens/s"]
    # a load that took nothing (the model was resident) and a cached prompt are left out
    assert metrics_summary({"total_duration": 1_000, "eval_count": 1, "eval_duration": 1_000}
                           ).splitlines() == ["total duration:       1µs",
                                              "eval count:           1 token(s)",
                                              "eval duration:        1µs",
                                              "eval rate:            1000000.00 tokens/s"]


def test_set_parameter_values_take_the_options_types() -> None:
    assert parameter_value("num_predict", ["3"]) == 3
    assert parameter_value("temperature", ["0.7"]) == 0.7
    assert parameter_value("stop", ["<|im_end|>", "\n\n"]) == ["<|im_end|>", "\n\n"]
    assert parameter_value("use_mmap", ["false"]) is False
    assert parameter_value("temperature", ["warm"]) == "warm"  # the server's 400 names it


def test_word_wrap_breaks_lines_between_words_only() -> None:
    text = ("The quick brown fox jumps over the lazy dog, then keeps running far away.\n"
            "A second paragraph with an extraordinarily-long-hyphenated-word in it.")
    wrap = WordWrap(20)
    # streamed in pieces that split words, as tokens do
    out = "".join(wrap.write(text[i:i + 3]) for i in range(0, len(text), 3)) + wrap.end()
    assert out.split() == text.split()  # only line breaks changed
    lines = out.split("\n")
    assert all(len(line) <= 20 for line in lines if " " in line.strip())
    assert "extraordinarily-long-hyphenated-word" in lines  # too long for a line: its own
    assert len(lines) > text.count("\n") + 1
