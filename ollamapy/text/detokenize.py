"""Streaming ids → text: each new token yields exactly the text it completes.

A character can span tokens (an emoji as four <0xXX> byte tokens, a CJK character cut by
byte-level BPE), so bytes are fed through an incremental UTF-8 decoder: an incomplete sequence
is held back, never shown as U+FFFD, until a later token completes it; a sequence that can no
longer become valid is replaced at once, as `Tokenizer.decode` does. Control tokens add no
bytes (unless asked for: a harmony model's answer is structured by them). The pieces of a
stream joined equal `tokenizer.decode(ids)`.
"""

from __future__ import annotations

import codecs

from ollamapy.text.tokenizer import Tokenizer


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, *, specials: bool = False) -> None:
        """specials: control tokens are shown as written (a harmony answer's structure)."""
        self._piece = tokenizer.token_bytes if specials else tokenizer.piece
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # decode drops the space add_space_prefix put first; so does the stream, once
        self._strip_space = tokenizer.strips_leading_space

    def push(self, token_id: int) -> str:
        return self._emit(self._utf8.decode(self._piece(token_id)))

    def flush(self) -> str:
        """What is held back (an unfinished character) becomes U+FFFD; the stream can go on."""
        return self._emit(self._utf8.decode(b"", final=True))

    def _emit(self, text: str) -> str:
        if self._strip_space and text:
            self._strip_space = False
            if text[0] == " ":
                return text[1:]
        return text
