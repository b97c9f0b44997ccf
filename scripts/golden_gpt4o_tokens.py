"""Make tests/text/data/tokens_gpt4o.json: llama.cpp's ids for the `gpt-4o` pre-tokenizer.

gpt-oss files (and llama4's) say `tokenizer.ggml.pre = "gpt-4o"`, and the llama-cpp-python
sdist ships no vocabulary with that pre-tokenizer. The split is what the pre-tokenizer decides
(its regex); the byte-level BPE after it is the one qwen2's vocabulary already tests. So this
script relabels llama.cpp's own `ggml-vocab-qwen2.gguf` as `gpt-4o` and records the ids
llama.cpp gives for qwen2's test texts and for texts aimed at the gpt-4o regex (case-aware
contractions, CamelCase, digit runs, punctuation runs, line breaks). The test relabels the
same vocabulary and compares.

Needs llama-cpp-python 0.3.36 importable (not a project dependency; on this project's 2-core
machine a native `-DGGML_NATIVE=ON` build dies on AMX instructions, so build it with
`CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"`), and the sdist's
models fetched by `make setup`:

    PYTHONPATH=<llama-cpp-python install> .venv/bin/python scripts/golden_gpt4o_tokens.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import llama_cpp

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO)]
from fetch_models import cache_dir  # noqa: E402

from tests.llama_cpp import rewrite_gguf  # noqa: E402

OUT = REPO / "tests" / "text" / "data" / "tokens_gpt4o.json"
VOCAB = cache_dir() / "llama.cpp" / "models" / "ggml-vocab-qwen2.gguf"
SEPARATOR = "\n__ggml_vocab_test__\n"  # test-tokenizer-0.cpp's
EXTRA = [
    "I'M HERE, YOU'RE THERE, WE'LL SEE; they'd've known",
    "HelloWorld camelCaseWords XMLHttpRequest iPhone McDonald's",
    "1234567890 12.5% 3,141,592 v2.0.1 0x1F",
    "ÉCOLE Ünïcödé ΑΘΗΝΑ Straße İstanbul",
    "!!!??? ... --- *** ((()))",
    "line one\r\nline two\n\n\n   indented\ttabbed   trailing   ",
    "def f(x):\n    return x**2  # square\n",
    "日本語のテキスト 中文 한국어 العربية",
    "emoji 🦙🔥 and <|endoftext|> as plain text",
    "don't DON'T Don't dOn'T",
    "getElementById parseHTTPResponse JSONDecoder toUpperCase",
    "THE QUICK BrownFox JumpsOver theLazyDog",
    "ABCdef GHIjkl MNOpqr STUvwx",
    "useState useEffect NSString UITableViewController",
]


def main() -> None:
    texts = Path(f"{VOCAB}.inp").read_text(encoding="utf-8").split(SEPARATOR)
    texts = [t for t in texts if t] + EXTRA
    with tempfile.TemporaryDirectory() as tmp:
        path = rewrite_gguf(VOCAB, Path(tmp) / "gpt4o.gguf",
                            metadata={"tokenizer.ggml.pre": "gpt-4o"})
        llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        cases = [{"text": text, "ids": llm.tokenize(text.encode(), add_bos=False,
                                                    special=False)} for text in texts]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "source": f"llama.cpp tokenizer via llama-cpp-python {llama_cpp.__version__}",
        "vocabulary": VOCAB.name, "pre": "gpt-4o",
        "fields": "ids: no BOS/EOS added, special-token text not parsed", "cases": cases,
    }, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(cases)} cases → {OUT}")


if __name__ == "__main__":
    main()
