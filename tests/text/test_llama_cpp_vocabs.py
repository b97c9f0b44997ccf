"""Our GGUF tokenizers against llama.cpp's own test vectors: every `models/ggml-vocab-*.gguf` of
the llama-cpp-python 0.3.36 sdist (fetched by `make setup`) with its `.inp` texts and the ids
llama.cpp's test-tokenizer-0 expects in `.out` (no BOS/EOS added, special text not parsed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ollamapy.loading.gguf import read_gguf
from ollamapy.text.tokenizer import Tokenizer
from tests.conftest import require
from tests.llama_cpp import LLAMA_CPP

SEPARATOR = "\n__ggml_vocab_test__\n"  # test-tokenizer-0.cpp's
DATA = Path(__file__).parent / "data"

VOCABS = ["bert-bge", "command-r", "deepseek-coder", "deepseek-llm", "falcon", "gpt-2",
          "llama-bpe", "llama-spm", "mpt", "phi-3", "qwen2", "qwen35", "refact", "starcoder"]


def vocab_file(name: str) -> Path:
    return require(LLAMA_CPP / "models" / f"ggml-vocab-{name}.gguf")


def cases(path: Path) -> list[tuple[str, list[int]]]:
    texts = Path(f"{path}.inp").read_text(encoding="utf-8").split(SEPARATOR)
    if texts and texts[-1] == "":  # the file ends with a separator
        texts.pop()
    ids = [[int(i) for i in line.split()]
           for line in Path(f"{path}.out").read_text().splitlines()]
    assert len(texts) == len(ids) > 10
    return list(zip(texts, ids, strict=True))


@pytest.mark.parametrize("name", VOCABS)
def test_ids_equal_llama_cpp(name: str) -> None:
    path = vocab_file(name)
    with read_gguf(path) as gguf:
        tokenizer = Tokenizer.from_gguf_metadata(gguf.metadata)
    wrong = [(text, want, got) for text, want in cases(path)
             if (got := tokenizer.encode(text, add_special=False)) != want]
    assert wrong == []


def test_every_vocabulary_file_is_covered_or_refused_clearly() -> None:
    found = {p.name.removeprefix("ggml-vocab-").removesuffix(".gguf.inp")
             for p in (LLAMA_CPP / "models").glob("ggml-vocab-*.gguf.inp")}
    assert set(VOCABS) <= found
    for name in sorted(found - set(VOCABS)):  # gemma-4's new tokenizer model, today
        with read_gguf(vocab_file(name)) as gguf, \
                pytest.raises(ValueError, match="unsupported tokenizer model"):
            Tokenizer.from_gguf_metadata(gguf.metadata)


def test_gpt4o_pre_tokenizer_equals_llama_cpp() -> None:
    """gpt-oss's `gpt-4o` pre-tokenizer (no sdist vocabulary has it): qwen2's vocabulary
    relabelled, against the ids llama.cpp gave for the same relabelled file
    (scripts/golden_gpt4o_tokens.py)."""
    golden = json.loads((DATA / "tokens_gpt4o.json").read_text(encoding="utf-8"))
    with read_gguf(vocab_file("qwen2")) as gguf:
        meta = dict(gguf.metadata)
    as_qwen2 = Tokenizer.from_gguf_metadata(meta)
    tokenizer = Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.pre": golden["pre"]})
    wrong = [(case["text"], case["ids"], got) for case in golden["cases"]
             if (got := tokenizer.encode(case["text"], add_special=False)) != case["ids"]]
    assert wrong == []
    # the relabelling is seen: the two regexes split some of these texts differently
    assert sum(as_qwen2.encode(case["text"], add_special=False) != case["ids"]
               for case in golden["cases"]) >= 3
