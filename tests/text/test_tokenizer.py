"""The tokenizer against llama.cpp's ids (tests/data, from llama-cpp-python) on the real GGUF
vocabularies, against transformers' ids on all-minilm, and its rules on tiny vocabularies."""

from __future__ import annotations

import json

import pytest

from ollamapy.text.tokenizer import Tokenizer
from tests.conftest import DATA

MODELS = ["smollm2", "gemma3"]
TOKENS = {name: json.loads((DATA / f"tokens_{name}.json").read_text()) for name in MODELS}
LOGITS = {name: json.loads((DATA / f"logits_{name}.json").read_text()) for name in MODELS}
CORPUS = [case["text"] for case in TOKENS["smollm2"]["cases"]]


@pytest.mark.parametrize("tok", MODELS, indirect=True)
def test_ids_match_llama_cpp_in_every_mode(tok: Tokenizer, request) -> None:
    data = TOKENS[request.node.callspec.params["tok"]]
    # the fields as the data file describes them
    assert "ids_add_special: add_bos per model" in data["fields"]
    assert "ids_no_special: no BOS, special-token text not parsed" in data["fields"]
    assert "ids_parse_special: no BOS, special-token text parsed" in data["fields"]
    for case in data["cases"]:
        text = case["text"]
        assert tok.encode(text, add_special=True, parse_special=False) == \
            case["ids_add_special"], text
        assert tok.encode(text, add_special=False, parse_special=False) == \
            case["ids_no_special"], text
        assert tok.encode(text, add_special=False, parse_special=True) == \
            case["ids_parse_special"], text


@pytest.mark.parametrize("tok", MODELS, indirect=True)
def test_prompt_ids_match_llama_cpp(tok: Tokenizer, request) -> None:
    for case in LOGITS[request.node.callspec.params["tok"]]["cases"]:
        ids = tok.encode(case["prompt"], add_special=True, parse_special=True)
        assert ids == case["input_ids"], case["prompt"]


def test_minilm_ids_match_transformers(minilm_tok: Tokenizer) -> None:
    cases = json.loads((DATA / "embeddings_minilm.json").read_text())["cases"]
    for case in cases:
        ids = minilm_tok.encode(case["text"])
        assert ids[0] == 101 and ids[-1] == 102  # [CLS] … [SEP]
        expected = case["input_ids"]
        if len(ids) > len(expected):  # the reference truncated to 256: middle cut, [SEP] kept
            assert len(expected) == 256
            ids = ids[:255] + ids[-1:]
        assert ids == expected, case["text"]
    # the file's own padding/truncation (Fixed 128) is off: no [PAD] and no cut at 128
    assert minilm_tok.encode("hello world") == [101, 7592, 2088, 102]
    assert minilm_tok.encode("hello world", add_special=False) == [7592, 2088]
    assert len(minilm_tok.encode("a " * 300)) == 302


def test_minilm_special_text_is_parsed_only_when_asked(minilm_tok: Tokenizer) -> None:
    assert minilm_tok.encode("hi [SEP]", add_special=False, parse_special=True)[-1] == 102
    assert 102 not in minilm_tok.encode("hi [SEP]", add_special=False)
    assert minilm_tok.bos_id is None and not minilm_tok.add_bos
    assert minilm_tok.decode([101, 7592, 2088, 102]) == "hello world"


@pytest.mark.parametrize("tok", MODELS, indirect=True)
def test_decode_round_trips_the_corpus(tok: Tokenizer) -> None:
    for text in CORPUS + ["  leading spaces", " x", "tab\tend\n", "emoji 🦙🔥 mixed 中文"]:
        assert tok.decode(tok.encode(text, add_special=False)) == text
        assert tok.decode(tok.encode(text, add_special=True)) == text  # BOS is not shown


def test_gemma3_has_no_space_prefix(gemma3_meta, gemma3_tok: Tokenizer) -> None:
    assert gemma3_meta["tokenizer.ggml.add_space_prefix"] is False
    assert not gemma3_tok.strips_leading_space
    assert gemma3_tok.encode("world", add_special=False) == [12392]  # "world", not "▁world"
    assert gemma3_tok.decode(gemma3_tok.encode(" world", add_special=False)) == " world"


def test_smollm2_special_tokens(smollm2_tok: Tokenizer) -> None:
    tok = smollm2_tok
    assert tok.vocab_size == 49152
    assert [tok.token_text(i) for i in range(3)] == ["<|endoftext|>", "<|im_start|>",
                                                     "<|im_end|>"]
    assert tok.bos_id == 1 and not tok.add_bos
    assert tok.eos_id == 2
    assert tok.eos_ids == {0, 2}  # <|im_end|> (declared) and <|endoftext|> (by its text)
    assert tok.token_bytes(2) == b"<|im_end|>"
    # "Hello  world" is [Hello, Ġ, Ġworld] in llama.cpp's ids: byte-level spelling undone
    assert tok.token_text(905) == "Ġworld" and tok.token_bytes(905) == b" world"
    assert tok.token_bytes(216) == b" "


def test_gemma3_special_tokens(gemma3_tok: Tokenizer) -> None:
    tok = gemma3_tok
    assert tok.vocab_size == 262144
    assert tok.token_text(2) == "<bos>" and tok.bos_id == 2 and tok.add_bos
    assert tok.token_text(105) == "<start_of_turn>"
    assert tok.token_text(106) == "<end_of_turn>"
    assert tok.eos_id == 1 and tok.token_text(1) == "<eos>"
    assert tok.eos_ids == {1, 106}
    # "</s>" is gemma's HTML strikethrough tag (user-defined): text, not an end of turn
    assert tok.token_text(212) == "</s>" and 212 not in tok.eos_ids
    assert tok.decode([212]) == "</s>"
    assert tok.token_text(248) == "<0x0A>" and tok.token_bytes(248) == b"\n"
    assert tok.token_bytes(236743) == b" "  # "▁"
    assert tok.token_bytes(138) == b"  "  # user-defined run of spaces, stored raw


def test_decode_hides_control_tokens_and_shows_user_defined_ones(smollm2_tok: Tokenizer,
                                                                 gemma3_tok: Tokenizer) -> None:
    text = "<|im_start|>user\nhi<|im_end|>"
    parsed = smollm2_tok.encode(text, add_special=False, parse_special=True)
    assert parsed == [1, 4093, 198, 6004, 2]
    assert smollm2_tok.decode(parsed) == "user\nhi"
    assert smollm2_tok.decode(smollm2_tok.encode(text, add_special=False)) == text
    assert smollm2_tok.is_control(1) and not smollm2_tok.is_control(4093)
    html = gemma3_tok.encode("<html>Hi</html>", add_special=False)
    assert html[0] == 217 and gemma3_tok.decode(html) == "<html>Hi</html>"


def test_ids_outside_the_vocabulary(smollm2_tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        smollm2_tok.token_text(49152)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        smollm2_tok.token_bytes(-1)
    assert smollm2_tok.decode([19556, 49152]) == "Hello"  # padded embedding rows show nothing


# -- the rules on tiny vocabularies -------------------------------------------------------------

NORMAL, CONTROL, USER_DEFINED, BYTE = 1, 3, 4, 6


def byte_level_meta(**extra) -> dict:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["<s>", "</s>", "<think>", "Ġ", "<", ">", "/", *letters, "ab", "Ġab"]
    types = [CONTROL, CONTROL, USER_DEFINED] + [NORMAL] * (len(tokens) - 3)
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.merges": ["a b", "Ġ ab"], "tokenizer.ggml.bos_token_id": 0,
            "tokenizer.ggml.eos_token_id": 1}
    return meta | extra


def test_user_defined_tokens_are_always_matched_control_tokens_only_when_parsed() -> None:
    tok = Tokenizer.from_gguf_metadata(byte_level_meta())
    ids = {tok.token_text(i): i for i in range(tok.vocab_size)}
    assert tok.encode("ab<think> ab", add_special=False) == [ids["ab"], 2, ids["Ġab"]]
    spelled = [ids["<"], ids["s"], ids[">"]]
    assert tok.encode("<s>ab", add_special=False) == spelled + [ids["ab"]]
    assert tok.encode("<s>ab", add_special=False, parse_special=True) == [0, ids["ab"]]
    assert tok.decode([0, ids["ab"], 2, 1]) == "ab<think>"


def test_add_bos_and_add_eos_follow_the_metadata() -> None:
    tok = Tokenizer.from_gguf_metadata(byte_level_meta())
    ab = tok.encode("ab", add_special=False)
    assert tok.encode("ab") == ab and not tok.add_bos  # gpt-2 pre: no BOS by default
    tok = Tokenizer.from_gguf_metadata(byte_level_meta(**{
        "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": True}))
    assert tok.add_bos and tok.encode("ab") == [0, *ab, 1]
    assert tok.encode("ab", add_special=False) == ab
    llama3 = Tokenizer.from_gguf_metadata(byte_level_meta(**{"tokenizer.ggml.pre": "llama-bpe"}))
    assert llama3.add_bos  # llama.cpp's default for the llama3 pre-tokenizer


def test_unknown_pre_tokenizer_and_model_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown pre-tokenizer 'no-such-split'"):
        Tokenizer.from_gguf_metadata(byte_level_meta(**{"tokenizer.ggml.pre": "no-such-split"}))
    with pytest.raises(ValueError, match="unsupported tokenizer model 't5'"):
        Tokenizer.from_gguf_metadata(byte_level_meta(**{"tokenizer.ggml.model": "t5"}))
    with pytest.raises(ValueError, match="add_bos_token is true but the bos token is not set"):
        meta = byte_level_meta(**{"tokenizer.ggml.add_bos_token": True})
        del meta["tokenizer.ggml.bos_token_id"]
        Tokenizer.from_gguf_metadata(meta)


def sentencepiece_meta(scores: dict[str, float], **extra) -> dict:
    special = ["<unk>", "<s>", "</s>"]
    pieces = ["▁", "a", "b", "c", "ab", "bc", "▁a"]
    byte_tokens = ["<0xC3>", "<0xA9>"]  # é, which has no piece of its own
    tokens = special + pieces + byte_tokens
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [0.0] * 3 + [scores.get(p, -10.0) for p in pieces]
            + [0.0, 0.0],
            "tokenizer.ggml.token_type": [2, CONTROL, CONTROL] + [NORMAL] * len(pieces)
            + [BYTE, BYTE],
            "tokenizer.ggml.add_space_prefix": False}
    return meta | extra


def test_sentencepiece_merges_the_best_scoring_pair_first() -> None:
    tok = Tokenizer.from_gguf_metadata(sentencepiece_meta({"ab": -1.0, "bc": -2.0}))
    texts = [tok.token_text(i) for i in tok.encode("abc", add_special=False)]
    assert texts == ["ab", "c"]
    tok = Tokenizer.from_gguf_metadata(sentencepiece_meta({"ab": -2.0, "bc": -1.0}))
    texts = [tok.token_text(i) for i in tok.encode("abc", add_special=False)]
    assert texts == ["a", "bc"]
    assert tok.encode("abc") == [1, *tok.encode("abc", add_special=False)]  # BOS by default


def test_sentencepiece_byte_fallback_and_space_prefix() -> None:
    tok = Tokenizer.from_gguf_metadata(sentencepiece_meta({}))
    texts = [tok.token_text(i) for i in tok.encode("aé", add_special=False)]
    assert texts == ["a", "<0xC3>", "<0xA9>"]
    assert tok.decode(tok.encode("a é", add_special=False)) == "a é"
    prefixed = Tokenizer.from_gguf_metadata(sentencepiece_meta(
        {}, **{"tokenizer.ggml.add_space_prefix": True}))
    ids = prefixed.encode("a a", add_special=False)
    assert [prefixed.token_text(i) for i in ids] == ["▁a", "▁a"]
    assert prefixed.decode(ids) == "a a"  # the prefixed space is not shown
    # after a special token the next text gets the prefix again, as in llama.cpp
    ids = prefixed.encode("a</s>a", add_special=False, parse_special=True)
    assert [prefixed.token_text(i) for i in ids] == ["▁a", "</s>", "▁a"]
