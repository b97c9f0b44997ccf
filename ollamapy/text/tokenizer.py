"""Text ↔ token ids for one model, with llama.cpp's semantics for GGUF vocabularies.

    tok = Tokenizer.from_gguf_metadata(meta)        # or .from_tokenizer_json(path, config)
    ids = tok.encode("<|im_start|>user\\nhi", parse_special=True)
    tok.decode(ids)

The splitting and merging run in the Hugging Face `tokenizers` engine (Rust); this class owns
the rules around it:

* `add_special` puts BOS first when the model asks for it (and EOS last where it asks for
  that); for a tokenizer.json the file's post-processor decides, e.g. BERT's [CLS] … [SEP].
* `parse_special` lets control-token text ("<|im_start|>") become its id. User-defined tokens
  ("<think>", gemma's runs of spaces) are matched either way, as llama.cpp does.
* `decode` shows what an Ollama user sees: control tokens (BOS, EOS, "<|im_end|>", …) render
  as nothing, user-defined tokens as their text, byte tokens as their bytes, and invalid UTF-8
  as U+FFFD. Where the tokenizer put a space before the text (SentencePiece's
  add_space_prefix), decode removes that first space.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as Engine

from ollamapy.text.gguf_vocab import engine_from_gguf
from ollamapy.text.hf_vocab import engine_from_tokenizer_json
from ollamapy.text.vocab import Vocab


class Tokenizer:
    def __init__(self, engine: Engine, vocab: Vocab, *, adds_specials_itself: bool) -> None:
        self._engine = engine
        self._vocab = vocab
        # GGUF: BOS/EOS are added here; tokenizer.json: by the engine's post-processor
        here = not adds_specials_itself
        self._prefix = [vocab.bos_id] if here and vocab.add_bos and vocab.bos_id is not None else []
        self._suffix = [vocab.eos_id] if here and vocab.add_eos and vocab.eos_id is not None else []
        # encode_special_tokens is one switch on a shared engine: flip it and encode together
        self._lock = threading.Lock()

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any]) -> Tokenizer:
        engine, vocab = engine_from_gguf(meta)
        return cls(engine, vocab, adds_specials_itself=False)

    @classmethod
    def from_tokenizer_json(cls, path: Path, tok_config: Mapping[str, Any]) -> Tokenizer:
        engine, vocab = engine_from_tokenizer_json(path, tok_config)
        return cls(engine, vocab, adds_specials_itself=True)

    # -- what the model declares --------------------------------------------------------------
    @property
    def bos_id(self) -> int | None:
        return self._vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        """The model's own end-of-sequence token (its `eos_token`)."""
        return self._vocab.eos_id

    @property
    def eos_ids(self) -> frozenset[int]:
        """Every id that ends generation: eos, eot, eom and the end-of-turn control tokens."""
        return self._vocab.eos_ids

    @property
    def add_bos(self) -> bool:
        return self._vocab.add_bos

    @property
    def vocab_size(self) -> int:
        return len(self._vocab.texts)

    # -- text → ids ---------------------------------------------------------------------------
    def encode(self, text: str, add_special: bool = True, parse_special: bool = False
               ) -> list[int]:
        with self._lock:
            self._engine.encode_special_tokens = not parse_special
            ids = self._engine.encode(text, add_special_tokens=add_special).ids
        return self._prefix + ids + self._suffix if add_special else ids

    # -- ids → text ---------------------------------------------------------------------------
    def decode(self, ids: Sequence[int]) -> str:
        text = b"".join(self.piece(i) for i in ids).decode("utf-8", errors="replace")
        return text[1:] if self._vocab.strip_leading_space and text[:1] == " " else text

    def token_text(self, token_id: int) -> str:
        """The token as the vocabulary spells it: "<|im_start|>", "Ġworld", "▁world"."""
        self._vocab.token_bytes(token_id)  # the same range check
        return self._vocab.texts[token_id]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes the token stands for, control tokens included (b"<|im_end|>"); a byte
        token or a piece of a multi-byte character may not be valid UTF-8 on its own."""
        return self._vocab.token_bytes(token_id)

    def is_control(self, token_id: int) -> bool:
        """True for tokens decode leaves out: control, unknown and unused ones."""
        return self._vocab.is_hidden(token_id)

    def piece(self, token_id: int) -> bytes:
        """The bytes decode shows for the token: token_bytes, or b"" for a control token."""
        return b"" if self._vocab.is_hidden(token_id) else self._vocab.token_bytes(token_id)

    @property
    def strips_leading_space(self) -> bool:
        """decode drops one leading space (the one add_space_prefix put in front)."""
        return self._vocab.strip_leading_space

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, {self._vocab.spelling}, "
                f"bos={self.bos_id}, eos={sorted(self.eos_ids)})")
