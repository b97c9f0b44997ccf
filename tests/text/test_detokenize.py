"""Streaming detokenization: the pieces join to decode(ids), and a character split over tokens
is held back until it is whole, never shown as U+FFFD."""

from __future__ import annotations

import pytest

from ollamapy.text.detokenize import IncrementalDetokenizer
from ollamapy.text.tokenizer import Tokenizer
from tests.text.test_tokenizer import CORPUS, MODELS

EXTRA = ["emoji 🦙🔥👍🏽 and flags 🇫🇷", "CJK 日本語のテキスト、中文文本",
         "combining e\u0301 a\u0308 n\u0303", "Zalgo z\u0351\u0352a\u0353l\u0354g\u0355o"]


def stream(tok: Tokenizer, ids: list[int]) -> list[str]:
    detok = IncrementalDetokenizer(tok)
    return [detok.push(i) for i in ids] + [detok.flush()]


def byte_token_ids(tok: Tokenizer) -> dict[int, int]:
    """byte value → id of its <0xXX> token."""
    found = {}
    for i in range(tok.vocab_size):
        text = tok.token_text(i)
        if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            found[int(text[3:5], 16)] = i
    return found


@pytest.mark.parametrize("tok", MODELS, indirect=True)
def test_stream_equals_decode(tok: Tokenizer) -> None:
    for text in CORPUS + EXTRA:
        for ids in (tok.encode(text, add_special=False), tok.encode(text, add_special=True)):
            pieces = stream(tok, ids)
            assert "".join(pieces) == tok.decode(ids) == text
            assert not any("\ufffd" in p for p in pieces), text


def test_byte_level_pieces_of_one_character_are_held_back(smollm2_tok: Tokenizer) -> None:
    ids = smollm2_tok.encode("日本", add_special=False)
    assert len(ids) > 2  # byte-level BPE cuts these characters between tokens
    pieces = stream(smollm2_tok, ids)
    assert "".join(pieces) == "日本"
    assert all(p in ("", "日", "本", "日本") for p in pieces)


def test_emoji_in_byte_fallback_tokens(gemma3_tok: Tokenizer) -> None:
    byte_ids = byte_token_ids(gemma3_tok)
    assert len(byte_ids) == 256
    ids = [byte_ids[b] for b in "🦙".encode()]  # F0 9F A6 99
    detok = IncrementalDetokenizer(gemma3_tok)
    assert [detok.push(i) for i in ids[:3]] == ["", "", ""]
    assert detok.push(ids[3]) == "🦙"
    assert detok.flush() == ""
    assert gemma3_tok.decode(ids) == "🦙"


def test_flush_releases_an_incomplete_tail(gemma3_tok: Tokenizer) -> None:
    byte_ids = byte_token_ids(gemma3_tok)
    a = gemma3_tok.encode("a", add_special=False)
    ids = a + [byte_ids[0xF0], byte_ids[0x9F]]  # the first half of a four-byte emoji
    detok = IncrementalDetokenizer(gemma3_tok)
    assert [detok.push(i) for i in ids] == ["a", "", ""]
    assert detok.flush() == "\ufffd"
    assert gemma3_tok.decode(ids) == "a\ufffd"


def test_invalid_bytes_are_replaced_at_once(gemma3_tok: Tokenizer) -> None:
    byte_ids = byte_token_ids(gemma3_tok)
    ids = [byte_ids[0xFF], *gemma3_tok.encode("ok", add_special=False)]  # 0xFF never starts one
    pieces = stream(gemma3_tok, ids)
    assert pieces[0] == "\ufffd" and "".join(pieces) == gemma3_tok.decode(ids) == "\ufffdok"


def test_control_tokens_emit_nothing(smollm2_tok: Tokenizer, gemma3_tok: Tokenizer) -> None:
    detok = IncrementalDetokenizer(smollm2_tok)
    assert [detok.push(i) for i in (1, 4093, 198, 2, 0)] == ["", "user", "\n", "", ""]
    detok = IncrementalDetokenizer(gemma3_tok)
    assert [detok.push(i) for i in (2, 105, 106, 1)] == ["", "", "", ""]
    assert detok.flush() == ""
