"""A Hugging Face tokenizer.json (+ tokenizer_config.json) → a `tokenizers` engine and a `Vocab`.

The engine is the file itself: its normalizer, pre-tokenizer, model and post-processor (which
adds [CLS] … [SEP] or BOS when asked for special tokens). Padding and truncation stored in the
file are switched off; the engine layer truncates. The rest is read from the file's JSON: which
spelling the decoder undoes, which added tokens are special, and the BOS/EOS named in
tokenizer_config.json.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as Engine

from ollamapy.text.vocab import Spelling, TokenType, Vocab, end_of_generation_ids

_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def engine_from_tokenizer_json(path: Path, tok_config: Mapping[str, Any]) -> tuple[Engine, Vocab]:
    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    engine = Engine.from_file(str(path))
    engine.no_padding()
    engine.no_truncation()

    n = engine.get_vocab_size(with_added_tokens=True)
    texts = [engine.id_to_token(i) or f"[EMPTY_{i}]" for i in range(n)]
    types = bytearray([TokenType.NORMAL] * n)
    model = spec.get("model") or {}
    if model.get("byte_fallback"):
        for i, text in enumerate(texts):
            if _BYTE_TOKEN.fullmatch(text):
                types[i] = TokenType.BYTE
    for i, added in engine.get_added_tokens_decoder().items():
        if i < n:
            types[i] = TokenType.CONTROL if added.special else TokenType.USER_DEFINED

    bos = _config_token_id(engine, tok_config, "bos_token")
    eos = _config_token_id(engine, tok_config, "eos_token")
    decoders = _decoder_types(spec.get("decoder"))
    # does the post-processor put BOS first? (Llama-style folders do; BERT's [CLS] is not BOS)
    probe = engine.encode("a", add_special_tokens=True).ids
    vocab = Vocab(texts, types, _spelling(model, decoders), bos_id=bos, eos_id=eos,
                  eos_ids=frozenset(end_of_generation_ids(texts, types, (eos,))),
                  add_bos=bos is not None and probe[:1] == [bos],
                  strip_leading_space=_strips_leading_space(spec.get("decoder"),
                                                            model.get("type") == "WordPiece"))
    return engine, vocab


def _config_token_id(engine: Engine, tok_config: Mapping[str, Any], key: str) -> int | None:
    token = tok_config.get(key)
    if isinstance(token, dict):  # {"content": "<s>", "lstrip": false, ...}
        token = token.get("content")
    return engine.token_to_id(token) if isinstance(token, str) else None


def _decoder_types(decoder: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not decoder:
        return []
    if decoder.get("type") == "Sequence":
        return [d for inner in decoder.get("decoders", []) for d in _decoder_types(inner)]
    return [decoder]


def _spelling(model: Mapping[str, Any], decoders: list[Mapping[str, Any]]) -> Spelling:
    kinds = {d.get("type") for d in decoders}
    if "ByteLevel" in kinds:
        return "byte_level"
    if model.get("type") == "WordPiece" or "WordPiece" in kinds:
        return "wordpiece"
    metaspace = any(d.get("type") == "Replace" and d.get("pattern", {}).get("String") == "\u2581"
                    for d in decoders)
    if model.get("byte_fallback") or metaspace or "Metaspace" in kinds or "ByteFallback" in kinds:
        return "sentencepiece"
    return "plain"


def _strips_leading_space(decoder: Mapping[str, Any] | None, wordpiece: bool) -> bool:
    """Llama-2 style decoders drop the space the normalizer put first (Strip, or Metaspace
    that prepends); WordPiece pieces each start a word, so the first one's space goes too."""
    if wordpiece:
        return True
    for d in _decoder_types(decoder):
        if d.get("type") == "Strip" and d.get("start", 0) > 0:
            return True
        if d.get("type") == "Metaspace" and (d.get("prepend_scheme") in ("always", "first")
                                             or d.get("add_prefix_space")):
            return True
    return False
