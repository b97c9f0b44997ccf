"""Coverage-guided fuzzing of the GGUF reader with atheris (libFuzzer for Python).

    .venv/bin/python tests/fuzz/fuzz_gguf.py [CORPUS_DIR …] [-max_total_time=600]
        [-atheris_runs=N] [-rss_limit_mb=2048] [-timeout=5]
    .venv/bin/python tests/fuzz/fuzz_gguf.py --seed CORPUS_DIR   # write the seed corpus

Each input is a whole file given to `read_gguf`; it must parse, with the guarantees of
gguf_cases.check_parsed, or raise `GGUFError`. Any other exception, a guarantee broken, a
slow input (-timeout) or one that allocates past -rss_limit_mb is a finding: libFuzzer stops
and writes the input to crash-<sha1> in the current directory; keep it as a regression case in
tests/loading/test_gguf_reader.py. The seed corpus is the valid test file, every case of
test_gguf_reader.MALFORMED, and a few generated files of every tensor type. The suite runs
this for a bounded number of inputs (test_fuzz_gguf.py); run it longer by hand.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: make `tests` and `ollamapy` importable
    sys.path.insert(0, str(REPO))

with atheris.instrument_imports(include=["ollamapy.loading"]):
    from ollamapy.loading.gguf import GGUFError, read_gguf

from tests.fuzz.gguf_cases import KV, Tensor, as_file, build, check_parsed  # noqa: E402


def test_one_input(data: bytes) -> None:
    with as_file(data) as path:
        try:
            f = read_gguf(path)
        except GGUFError:
            return  # a refusal is the expected outcome for most inputs
        with f:
            check_parsed(f, len(data))


def seeds() -> list[bytes]:
    from ollamapy.loading.ggml_types import GGML_TYPES
    from tests.loading.test_gguf_reader import MALFORMED, Spec

    out = [Spec().build(), *(spec.build() for spec, _ in MALFORMED.values())]
    meta = [KV("general.architecture", 8, "llama"), KV("general.alignment", 4, 64),
            KV("tokenizer.ggml.tokens", 9, (8, ["a", "bc"])),
            KV("tokenizer.ggml.scores", 9, (6, [0.5, -1.0]))]
    for t in GGML_TYPES.values():
        data, _ = build(meta, [Tensor("w", (t.block_size, 2), t.id), Tensor("b", (t.block_size,),
                                                                            t.id)], 64)
        out.append(data)
    return out


def write_seeds(corpus: Path) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    for data in seeds():
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
    return len(list(corpus.iterdir()))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seed":
        print(f"{write_seeds(Path(sys.argv[2]))} seeds in {sys.argv[2]}")
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
