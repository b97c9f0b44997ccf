"""What each token id is: its text, its kind, and the bytes it stands for.

Both vocabulary sources (GGUF metadata and Hugging Face tokenizer.json) are reduced to one
`Vocab`: every token's text as the vocabulary spells it, its `TokenType` (GGUF's numbering) and
the spelling rule that turns a normal token's text back into bytes. Which ids end generation is
decided here too, from the declared ids plus llama.cpp's list of end-of-turn texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal


class TokenType(IntEnum):  # the values of GGUF's tokenizer.ggml.token_type
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3  # <bos>, <|im_end|>: matched in text only when special text is parsed
    USER_DEFINED = 4  # always matched in text, and shown as written (e.g. "<think>")
    UNUSED = 5
    BYTE = 6  # <0x0A>: one raw byte (SentencePiece's byte fallback)


# How a normal token's text spells its bytes:
#   byte_level    GPT-2's printable alphabet, one character per byte ("Ġ" is a space)
#   sentencepiece UTF-8 text with "▁" for a space; <0xXX> byte tokens
#   wordpiece     BERT's "##" continuation marker; other pieces start a new word
#   plain         UTF-8 text as is
Spelling = Literal["byte_level", "sentencepiece", "wordpiece", "plain"]

# Texts llama.cpp treats as end of generation whatever the metadata says (llama-vocab.cpp)
EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
})

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's reversible map: printable Latin-1 bytes stand for themselves, the other 68
    bytes (controls, space, 0x7F-0xA0, 0xAD) take the characters from U+0100 on, in order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    to_char = {b: chr(b) for b in printable}
    for b in range(256):
        if b not in to_char:
            to_char[b] = chr(256 + len(to_char) - len(printable))
    return {c: b for b, c in to_char.items()}


BYTE_LEVEL_DECODER = _byte_level_decoder()


def byte_level_bytes(text: str) -> bytes:
    # a character outside the alphabet (a mislabelled token) stands for its own UTF-8
    return b"".join(bytes([BYTE_LEVEL_DECODER[c]]) if c in BYTE_LEVEL_DECODER
                    else c.encode() for c in text)


def end_of_generation_ids(texts: Sequence[str], types: bytearray,
                          declared: Iterable[int | None]) -> set[int]:
    """The declared eos/eot/eom ids plus every token whose text llama.cpp knows as an end of
    turn, unless the vocabulary marks it user-defined: gemma3's "</s>" is the HTML
    strikethrough tag, shown as text, not an end. gpt-oss style vocabularies that have
    <|return|> and <|call|> use <|end|> between messages, so there it does not end generation
    (llama.cpp's rule)."""
    eog = {i for i in declared if i is not None and 0 <= i < len(texts)}
    eog |= {i for i, text in enumerate(texts)
            if text in EOG_TEXTS and types[i] != TokenType.USER_DEFINED}
    found = {texts[i] for i in eog}
    if {"<|return|>", "<|call|>"} <= found or {"<|calls|>", "<|flush|>"} <= found:
        eog = {i for i in eog if texts[i] != "<|end|>"}
    return eog


@dataclass(eq=False, slots=True)
class Vocab:
    texts: list[str]
    types: bytearray  # one TokenType per id
    spelling: Spelling
    bos_id: int | None = None
    eos_id: int | None = None  # the model's declared end-of-sequence token
    eos_ids: frozenset[int] = frozenset()  # every id that ends generation
    add_bos: bool = False
    add_eos: bool = False
    strip_leading_space: bool = False  # the tokenizer prefixed a space that decode removes
    _bytes: dict[int, bytes] = field(default_factory=dict, init=False, repr=False)

    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < len(self.texts):
            raise ValueError(f"token id {token_id} is outside the vocabulary "
                             f"(0..{len(self.texts) - 1})")
        cached = self._bytes.get(token_id)
        if cached is None:
            cached = self._bytes[token_id] = self._spell(token_id)
        return cached

    def is_hidden(self, token_id: int) -> bool:
        """Control, unknown and unused tokens (and ids past the vocabulary, which padded
        embedding rows can produce) are not shown in decoded text."""
        if not 0 <= token_id < len(self.types):
            return True
        return self.types[token_id] not in (TokenType.NORMAL, TokenType.USER_DEFINED,
                                            TokenType.BYTE)

    def _spell(self, token_id: int) -> bytes:
        text, kind = self.texts[token_id], self.types[token_id]
        if kind == TokenType.BYTE and (m := _BYTE_TOKEN.fullmatch(text)):
            return bytes([int(m.group(1), 16)])
        if kind != TokenType.NORMAL:  # special and user-defined tokens are stored raw
            return text.encode()
        if self.spelling == "byte_level":
            return byte_level_bytes(text)
        if self.spelling == "sentencepiece":
            return text.replace("\u2581", " ").encode()
        if self.spelling == "wordpiece":
            return text[2:].encode() if text.startswith("##") else b" " + text.encode()
        return text.encode()
