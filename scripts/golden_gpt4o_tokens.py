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

import gguf
import llama_cpp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_models import cache_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
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


def relabelled(src: Path, dst: Path, pre: str) -> Path:
    """A copy of a vocabulary-only GGUF with another `tokenizer.ggml.pre`."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue  # written by the writer itself
        kind = field.types[0]
        value = pre if field.name == "tokenizer.ggml.pre" else field.contents()
        writer.add_key_value(field.name, value, kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def main() -> None:
    texts = Path(f"{VOCAB}.inp").read_text(encoding="utf-8").split(SEPARATOR)
    texts = [t for t in texts if t] + EXTRA
    with tempfile.TemporaryDirectory() as tmp:
        path = relabelled(VOCAB, Path(tmp) / "gpt4o.gguf", "gpt-4o")
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
