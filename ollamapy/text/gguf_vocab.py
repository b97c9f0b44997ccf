"""GGUF tokenizer metadata → a `tokenizers` engine and a `Vocab`, read the way llama.cpp reads it.

Three vocabulary kinds (`tokenizer.ggml.model`):

    gpt2   byte-level BPE: the file's merges; text first cut into words by the regexes that
           `tokenizer.ggml.pre` names (pretokenize.py), each word spelled in GPT-2's byte
           alphabet.
    llama  SentencePiece BPE: the file has no merges. llama.cpp merges the adjacent pair whose
           concatenation is the best-scoring token, leftmost first, until none is left; symbols
           that are not tokens fall back to <0xXX> byte tokens. We recover that rule as a list of
           merges ranked by the merged token's score, so the Rust BPE engine does the work.
           Spaces are written "▁"; add_space_prefix puts one before the text.
    bert   WordPiece (llama.cpp's WPM): text lowercased and stripped of accents (unless the
           `normalizer.*` keys say otherwise), cut at whitespace and punctuation, then each word
           cut greedily into the longest tokens from its start; a word that cannot be cut is
           [UNK]. The converter stores word-initial pieces as "▁piece" and continuations bare
           (BERT's "##piece"); both are turned back into BERT's spelling for the engine.

Control and user-defined tokens become the engine's added tokens (special and not special): they
are cut out of the text before BPE, user-defined always, control only when special text is
parsed (the engine's `encode_special_tokens` switch, see tokenizer.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as Engine
from tokenizers.models import BPE, WordPiece

from ollamapy.text.pretokenize import PreTokenizer, pre_tokenizer
from ollamapy.text.vocab import EOG_TEXTS, TokenType, Vocab, end_of_generation_ids

_KEY = "tokenizer.ggml."


def engine_from_gguf(meta: Mapping[str, Any]) -> tuple[Engine, Vocab]:
    kind = meta.get(_KEY + "model")
    texts = [text or f"[EMPTY_{i}]" for i, text in enumerate(meta[_KEY + "tokens"])]
    ids = {text: i for i, text in enumerate(texts)}
    if len(ids) != len(texts):
        raise ValueError("tokenizer.ggml.tokens holds the same token twice")
    token_types = meta.get(_KEY + "token_type")
    types = bytearray(list(token_types) if token_types is not None
                      else [TokenType.NORMAL] * len(texts))

    if kind == "gpt2":
        pre = pre_tokenizer(meta.get(_KEY + "pre"))
        engine = _byte_level_bpe(ids, meta.get(_KEY + "merges", []), pre)
        bos, eos, add_bos, prefix = None, None, pre.add_bos, False
    elif kind == "llama":
        prefix = bool(meta.get(_KEY + "add_space_prefix", True))
        unk = _special_id(meta, "unknown", len(texts), default=0)
        scores = meta.get(_KEY + "scores")
        if scores is None:  # llama.cpp scores every token 0: merges then go leftmost first
            scores = [0.0] * len(texts)
        engine = _sentencepiece_bpe(ids, texts, scores, unk, prefix)
        bos, eos, add_bos = 1, 2, True  # llama.cpp's defaults for these vocabularies
    elif kind == "bert":
        lowercase = bool(meta.get(_KEY + "normalizer.lowercase", True))
        strip_accents = bool(meta.get(_KEY + "normalizer.strip_accents", lowercase))
        unk = _special_id(meta, "unknown", len(texts), default=100)
        engine = _wordpiece(texts, types, unk, lowercase, strip_accents)
        # [CLS] text [SEP]: llama.cpp's defaults for BERT vocabularies
        bos, eos, add_bos, prefix = 101, 102, True, True
    else:
        raise ValueError(f"unsupported tokenizer model {kind!r} (tokenizer.ggml.model); "
                         "supported: 'gpt2' (byte-level BPE), 'llama' (SentencePiece), "
                         "'bert' (WordPiece)")

    bos = _special_id(meta, "bos", len(texts), default=bos)
    eos = _special_id(meta, "eos", len(texts), default=eos)
    add_bos = bool(meta.get(_KEY + "add_bos_token", add_bos))
    add_eos = bool(meta.get(_KEY + "add_eos_token", kind == "bert"))
    for flag, token, name in ((add_bos, bos, "bos"), (add_eos, eos, "eos")):
        if flag and token is None:
            raise ValueError(f"tokenizer.ggml.add_{name}_token is true but the {name} token "
                             "is not set")

    declared = (eos, _special_id(meta, "eot", len(texts)), _special_id(meta, "eom", len(texts)))
    eos_ids = end_of_generation_ids(texts, types, declared)
    for i in eos_ids:  # an end-of-turn text typed normal is a conversion slip: make it control
        if texts[i] in EOG_TEXTS and types[i] == TokenType.NORMAL:
            types[i] = TokenType.CONTROL

    _add_special_tokens(engine, texts, types)
    # bert's "▁piece" / "piece" spell their bytes as SentencePiece's do
    vocab = Vocab(texts, types, "byte_level" if kind == "gpt2" else "sentencepiece",
                  bos_id=bos, eos_id=eos, eos_ids=frozenset(eos_ids), add_bos=add_bos,
                  add_eos=add_eos, strip_leading_space=prefix)
    return engine, vocab


def _special_id(meta: Mapping[str, Any], name: str, n_tokens: int,
                default: int | None = None) -> int | None:
    # an id outside the vocabulary falls back to the default, as in llama.cpp
    for token in (meta.get(f"{_KEY}{name}_token_id"), default):
        if token is not None and 0 <= token < n_tokens:
            return int(token)
    return None


def _byte_level_bpe(ids: dict[str, int], merges: Sequence[str], pre: PreTokenizer) -> Engine:
    pairs = []
    for merge in merges:
        cut = merge.find(" ", 1)  # from 1: a token may itself start with a space
        left, right = merge[:cut], merge[cut + 1:]
        # the engine refuses a merge of unknown tokens; llama.cpp just never uses one
        if cut > 0 and left in ids and right in ids and left + right in ids:
            pairs.append((left, right))
    engine = Engine(BPE(ids, pairs, ignore_merges=pre.ignore_merges))
    engine.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(regex), behavior="isolated") for regex in pre.regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return engine


def _sentencepiece_bpe(ids: dict[str, int], texts: Sequence[str], scores: Sequence[float],
                       unk: int | None, add_space_prefix: bool) -> Engine:
    # every way to cut a token into two tokens, as (-score of the whole, its id, left, right),
    # sorted best merge first; ~0.5M pairs for a 262k vocabulary, the bulk of the build time
    ranked = sorted((-scores[i], i, text[:cut], text[cut:])
                    for i, text in enumerate(texts) for cut in range(1, len(text))
                    if text[:cut] in ids and text[cut:] in ids)
    engine = Engine(BPE(ids, [(left, right) for _, _, left, right in ranked],
                        unk_token=texts[unk] if unk is not None else None, byte_fallback=True))
    space = normalizers.Replace(" ", "\u2581")
    engine.normalizer = (normalizers.Sequence([normalizers.Prepend("\u2581"), space])
                         if add_space_prefix else space)
    return engine


def _wordpiece(texts: Sequence[str], types: bytearray, unk: int | None, lowercase: bool,
               strip_accents: bool) -> Engine:
    vocab = {}
    for i, text in enumerate(texts):
        if types[i] != TokenType.NORMAL:
            piece = text  # [CLS], [SEP], [UNK] …: as written
        elif text.startswith("\u2581"):
            piece = text[1:]  # a word's first piece
        else:
            piece = "##" + text  # a continuation
        vocab.setdefault(piece, i)
    engine = Engine(WordPiece(vocab, unk_token=texts[unk] if unk is not None else "[UNK]",
                              max_input_chars_per_word=1 << 30))  # llama.cpp has no limit
    engine.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents,
        lowercase=lowercase)
    engine.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # whitespace and punctuation
    return engine


def _add_special_tokens(engine: Engine, texts: Sequence[str], types: bytearray) -> None:
    # normalized=False: matched in the raw text, before spaces become "▁"
    special = (TokenType.CONTROL, TokenType.UNKNOWN)
    engine.add_special_tokens([AddedToken(texts[i], normalized=False, special=True)
                               for i, kind in enumerate(types) if kind in special])
    engine.add_tokens([AddedToken(texts[i], normalized=False, special=False)
                       for i, kind in enumerate(types) if kind == TokenType.USER_DEFINED])
