"""Generation options on the real smollm2 through the public API: seeds, stops, lengths,
truncation and context shift."""

from __future__ import annotations

import pytest


def run(m, prompt: str, **options) -> tuple[str, dict, list[str]]:
    chunks = list(m.generate(prompt, raw=True, **options))
    final = chunks[-1]
    assert final["done"] and all(not c["done"] for c in chunks[:-1])
    deltas = [c["response"] for c in chunks[:-1]]
    return "".join(deltas), final, deltas


PROMPT = "The meaning of life is"


def test_greedy_is_deterministic_and_seed_reproducible(smollm2) -> None:
    a, _, _ = run(smollm2, PROMPT, temperature=0, num_predict=16)
    b, _, _ = run(smollm2, PROMPT, temperature=0, num_predict=16, seed=123)
    assert a == b and a
    s1, _, _ = run(smollm2, PROMPT, temperature=1.5, top_k=0, top_p=1.0, seed=7, num_predict=16)
    s2, _, _ = run(smollm2, PROMPT, temperature=1.5, top_k=0, top_p=1.0, seed=7, num_predict=16)
    s3, _, _ = run(smollm2, PROMPT, temperature=1.5, top_k=0, top_p=1.0, seed=8, num_predict=16)
    assert s1 == s2
    assert s1 != s3


def test_num_predict_gives_length_and_counters(smollm2) -> None:
    text, final, _ = run(smollm2, PROMPT, temperature=0, num_predict=5)
    assert final["done_reason"] == "length"
    assert final["eval_count"] == 5
    assert final["prompt_eval_count"] == len(smollm2.tokenize(PROMPT))
    for key in ("total_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int) and final[key] > 0
    assert final["total_duration"] >= final["prompt_eval_duration"] + final["eval_duration"]


def test_eos_gives_stop(smollm2) -> None:
    chunks = list(smollm2.chat([{"role": "user", "content": "What is the capital of France?"}],
                               temperature=0, num_predict=64))
    text = "".join(c["message"]["content"] for c in chunks)
    assert "Paris" in text
    assert chunks[-1]["done_reason"] == "stop" and chunks[-1]["eval_count"] < 64


def test_stop_string_never_leaks(smollm2) -> None:
    full, _, _ = run(smollm2, PROMPT, temperature=0, num_predict=24)
    words = full.split()
    assert len(words) > 6
    stop = " " + words[4]  # a word in the middle, which arrives as one or more tokens
    cut = full[: full.index(stop)]
    text, final, deltas = run(smollm2, PROMPT, temperature=0, num_predict=24, stop=[stop])
    assert text == cut
    assert final["done_reason"] == "stop"
    assert all(stop.strip() not in d for d in deltas)


def test_stop_string_split_across_tokens(smollm2) -> None:
    full, _, _ = run(smollm2, PROMPT, temperature=0, num_predict=24)
    # a stop that starts inside one token and ends inside a later one
    start = len(full) // 2
    stop = full[start - 2 : start + 3]
    text, final, _ = run(smollm2, PROMPT, temperature=0, num_predict=24, stop=["zzzq", stop])
    assert text == full[: full.index(stop)] and final["done_reason"] == "stop"


def test_long_prompt_is_truncated_to_num_ctx(smollm2) -> None:
    prompt = " ".join(f"word{i}" for i in range(200))
    n = len(smollm2.tokenize(prompt))
    assert n > 64
    text, final, _ = run(smollm2, prompt, temperature=0, num_ctx=64, num_predict=4)
    assert final["prompt_eval_count"] <= 64
    assert final["eval_count"] == 4 and text


def test_generation_past_num_ctx_shifts_context(smollm2) -> None:
    text, final, _ = run(smollm2, PROMPT, temperature=0, num_ctx=24, num_predict=40)
    assert final["eval_count"] == 40 and final["done_reason"] == "length"
    assert len(text) > 40


def test_bad_option_type_is_a_clear_error(smollm2) -> None:
    from ollamapy.engine.options import OptionsError

    with pytest.raises(OptionsError, match="temperature"):
        next(smollm2.generate(PROMPT, temperature="hot"))


def test_deprecated_options_are_accepted(smollm2) -> None:
    _, final, _ = run(smollm2, PROMPT, temperature=0, num_predict=2, mirostat=1, tfs_z=1.0,
                      penalize_newline=True)
    assert final["eval_count"] == 2


def test_gemma3_generates_without_a_chat_template(gemma3) -> None:
    import json

    from tests.conftest import DATA

    golden = json.loads((DATA / "logits_gemma3.json").read_text())["cases"][0]
    text, final, _ = run(gemma3, golden["prompt"], temperature=0, num_predict=8)
    assert text == gemma3.detokenize(golden["greedy_32"][:8])
    assert final["done_reason"] == "length"
    chunks = list(gemma3.chat([{"role": "user", "content": "The capital of France is"}],
                              temperature=0, num_predict=8))
    assert chunks[-1]["done"] and chunks[-1]["eval_count"] >= 1
