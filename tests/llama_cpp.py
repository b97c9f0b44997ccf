"""llama.cpp's own converter as a test oracle: a tiny transformers model becomes a GGUF laid out
exactly as llama.cpp (and so Ollama's library) lays it out.

`make setup` fetches the converter from the llama-cpp-python sdist
(scripts/fetch_llama_cpp.py). It runs in a subprocess with its own vendored gguf-py, on the
folder `save_pretrained` writes plus a tiny tokenizer: a Llama-2-shaped BPE with byte
fallback, trained here, which the converter reads as a SentencePiece-style vocabulary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

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
    learner.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
    learner.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=len(SPECIAL) + merged, special_tokens=SPECIAL, show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    pieces = [p for p, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1])
              if p not in SPECIAL]
    vocab = SPECIAL + [f"<0x{b:02X}>" for b in range(256)] + pieces
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(vocab)}, merges=merges,
                               unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = learner.normalizer
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(SPECIAL)
    tok.post_processor = processors.TemplateProcessing(  # <s> first, as Llama 2's
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok


def save_with_tokenizer(model: transformers.PreTrainedModel, folder: Path,
                        tokenizer: Tokenizer) -> Path:
    """A Hugging Face folder as a user downloads one: weights, config.json, tokenizer.json."""
    model.save_pretrained(folder)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}))
    return folder


def convert(folder: Path, out: Path, outtype: str = "f32") -> Path:
    """llama.cpp's convert_hf_to_gguf.py on `folder` → `out`."""
    script = require(LLAMA_CPP / "convert_hf_to_gguf.py")
    done = subprocess.run([sys.executable, str(script), str(folder), "--outfile", str(out),
                           "--outtype", outtype], capture_output=True, text=True,
                          timeout=CONVERT_HANG_GUARD_S)
    assert done.returncode == 0, done.stderr[-4000:]
    return out
