"""llama.cpp's own converter as a test oracle: a tiny transformers model becomes a GGUF laid out
exactly as llama.cpp (and so Ollama's library) lays it out.

`make setup` fetches the converter from the llama-cpp-python sdist
(scripts/fetch_llama_cpp.py). It runs in a subprocess with its own vendored gguf-py, on the
folder `save_pretrained` writes plus a tokenizer, one of three kinds the converter reads:
- `tiny_tokenizer`: a Llama-2-shaped BPE with byte fallback (tokenizer.json), trained here;
- `write_spm_tokenizer`: a SentencePiece model (tokenizer.model), trained here, for the
  families whose converter reads only that (gemma2, phi3);
- `write_gpt2_tokenizer`: GPT-2's byte-level BPE rebuilt from llama.cpp's own
  ggml-vocab-gpt-2.gguf, for the families whose converter identifies a BPE pre-tokenizer by
  hashing its output (qwen3moe, olmo2): a vocabulary it knows;
- `write_qwen2_tokenizer`: Qwen2's byte-level BPE from ggml-vocab-qwen2.gguf, for qwen2,
  whose folder transformers tokenizes with Qwen2's pre-tokenizer whatever it holds (so
  GPT-2's vocabulary hashes to something the converter does not know).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import sentencepiece
import transformers
from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from ollamapy.loading.gguf import read_gguf
from tests.conftest import CACHE, require

LLAMA_CPP = CACHE / "llama.cpp"
SPECIAL = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2
CORPUS = ["The quick brown fox jumps over the lazy dog.",
          "Hello world! How are you today? I am fine, thank you.",
          "Rotary position embeddings rotate pairs of features by an angle.",
          "0 1 2 3 4 5 6 7 8 9, and again: 0123456789."] * 8
CONVERT_HANG_GUARD_S = 600  # a conversion takes a few seconds


def tiny_tokenizer(merged: int = 120) -> Tokenizer:
    """SentencePiece-style BPE (Llama 2's tokenizer.json shape): "▁" for spaces, <unk> <s>
    </s>, then the 256 byte tokens <0xNN> that spell any character the vocabulary lacks, then
    `merged` characters and merges learned from CORPUS. Deterministic: the same every run."""
    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.normalizer = _SPACES
    learner.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=len(SPECIAL) + merged, special_tokens=SPECIAL, show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    pieces = [p for p, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1])
              if p not in SPECIAL]
    vocab = SPECIAL + [f"<0x{b:02X}>" for b in range(256)] + pieces
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    return _llama_shaped(vocab, merges)


_SPACES = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])


def _llama_shaped(vocab: list[str], merges: list[tuple[str, str]], space_prefix: bool = True
                  ) -> Tokenizer:
    """A byte-fallback BPE over `vocab` (ids in order; <unk> <s> </s> first) as Llama 2's
    tokenizer.json: spaces as "▁", one prepended (space_prefix), <s> before every text."""
    tok = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(vocab)}, merges=merges,
                               unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = _SPACES if space_prefix else normalizers.Replace(" ", "▁")
    strip = [decoders.Strip(" ", 1, 0)] if space_prefix else []
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), *strip])
    tok.add_special_tokens(SPECIAL)
    tok.post_processor = processors.TemplateProcessing(  # <s> first, as Llama 2's
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok


def save_with_tokenizer(model: transformers.PreTrainedModel, folder: Path,
                        tokenizer: Tokenizer) -> Path:
    """A Hugging Face folder as a user downloads one: weights, config.json, tokenizer.json."""
    model.save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    _write_llama_tokenizer_config(folder)
    return folder


def _write_llama_tokenizer_config(folder: Path) -> None:
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}))


def write_spm_tokenizer(folder: Path, space_prefix: bool = True) -> Path:
    """A SentencePiece BPE of 400 pieces with byte fallback (<unk> <s> </s> = 0 1 2), trained
    on CORPUS (deterministic), as tokenizer.model (what the converter reads), and the same
    tokenizer as tokenizer.json (what transformers and our folder loader read): SentencePiece
    BPE merges the adjacent pair whose merged piece scores best, so the merges are every
    split of every piece, ranked by the piece's score. space_prefix: a "▁" before the text
    (Llama 2's, phi3's); gemma's has none."""
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, num_threads=1, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, add_dummy_prefix=space_prefix, minloglevel=2,
        normalization_rule_name="identity", remove_extra_whitespaces=False)  # as Llama 2's
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    spm = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = [spm.id_to_piece(i) for i in range(spm.get_piece_size())]
    ids = {p: i for i, p in enumerate(vocab)}
    ranked = sorted(((spm.get_score(i), ids[p[:k]], ids[p[k:]], p[:k], p[k:])
                     for i, p in enumerate(vocab) if spm.is_unknown(i) is False
                     and not spm.is_control(i) and not spm.is_byte(i)
                     for k in range(1, len(p)) if p[:k] in ids and p[k:] in ids),
                    key=lambda m: (-m[0], m[1], m[2]))
    tok = _llama_shaped(vocab, [(a, b) for *_, a, b in ranked], space_prefix)
    tok.save(str(folder / "tokenizer.json"))
    _write_llama_tokenizer_config(folder)
    return folder


def write_gpt2_tokenizer(folder: Path) -> int:
    """GPT-2's tokenizer (vocabulary and merges from ggml-vocab-gpt-2.gguf) as tokenizer.json
    and tokenizer_config.json; returns its vocabulary size."""
    with read_gguf(require(LLAMA_CPP / "models" / "ggml-vocab-gpt-2.gguf")) as vocab:
        tokens = vocab.metadata["tokenizer.ggml.tokens"]
        merges = [tuple(m.split(" ")) for m in vocab.metadata["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))
    return len(tokens)


QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def write_qwen2_tokenizer(folder: Path) -> int:
    """Qwen2's tokenizer (vocabulary, merges and its three control tokens from
    ggml-vocab-qwen2.gguf, Qwen2's pre-tokenizer split) as tokenizer.json and
    tokenizer_config.json; returns the vocabulary size the converter pads to (151936)."""
    with read_gguf(require(LLAMA_CPP / "models" / "ggml-vocab-qwen2.gguf")) as vocab:
        tokens = vocab.metadata["tokenizer.ggml.tokens"]
        kinds = vocab.metadata["tokenizer.ggml.token_type"]
        merges = [tuple(m.split(" ")) for m in vocab.metadata["tokenizer.ggml.merges"]]
    normal = [t for t, k in zip(tokens, kinds, strict=True) if k == 1]
    control = [t for t, k in zip(tokens, kinds, strict=True) if k == 3]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(normal)}, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(control)  # <|endoftext|> <|im_start|> <|im_end|>, after the rest
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer", "bos_token": None,
        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": None}))
    return len(tokens)


def convert(folder: Path, out: Path, outtype: str = "f32") -> Path:
    """llama.cpp's convert_hf_to_gguf.py on `folder` → `out`."""
    script = require(LLAMA_CPP / "convert_hf_to_gguf.py")
    done = subprocess.run([sys.executable, str(script), str(folder), "--outfile", str(out),
                           "--outtype", outtype], capture_output=True, text=True,
                          timeout=CONVERT_HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def rewrite_gguf(src: Path, dst: Path, *, types: dict[str, str] | None = None,
                 metadata: dict[str, Any] | None = None) -> Path:
    """A copy of the GGUF `src` with the tensors named in `types` stored in another ggml type
    (gguf-py's quantizer; e.g. gpt-oss's experts in MXFP4, as Ollama's files hold them) and
    the metadata keys in `metadata` given other values of the same kind."""
    types, metadata = types or {}, metadata or {}
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue  # written by the writer itself
        kind = field.types[0]
        writer.add_key_value(field.name, metadata.get(field.name, field.contents()), kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    for t in reader.tensors:
        if t.name in types:
            kind = gguf.GGMLQuantizationType[types[t.name]]
            writer.add_tensor(t.name, gguf.quants.quantize(np.asarray(t.data), kind),
                              raw_dtype=kind)
        else:
            plain = t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
            writer.add_tensor(t.name, np.asarray(t.data),
                              raw_dtype=None if plain else t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst
