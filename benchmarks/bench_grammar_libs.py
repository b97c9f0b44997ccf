"""llguidance vs xgrammar for Ollama's `format`, on smollm2's real 49,152-token vocabulary.

    .venv/bin/python benchmarks/bench_grammar_libs.py [--model PATH] [--seeds 3]

The measurements behind ollamapy/engine/grammar.py's choice of library, printed as a table:

* setup: vocabulary → the library's tokenizer object, once per loaded model;
* compile: a `format` → a grammar ready for its first mask (no cache), for "json" and for
  each of the 20 schemas of tests/engine/test_grammar.py;
* per token: computing the allowed-token mask and applying it to (vocab,) float32 logits,
  and accepting the sampled token, over random-logit decodes of those schemas, against a
  ~40 ms smollm2 decode step on this CPU;
* correctness: how many of those decodes parse and validate (jsonschema, with formats);
* footprint: import time and the installed size of the library with its requirements.

llguidance is measured through ollamapy.engine.grammar (what ships); xgrammar directly, with
the nearest settings: any whitespace capped at 20 characters, objects closed (strict_mode).
xgrammar must be installed by hand for this (`pip install xgrammar`; it pulls triton).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the schemas live with the tests

from tests.engine.test_grammar import MAX_STEPS, SCHEMAS  # noqa: E402

DEFAULT_MODEL = Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy")) / \
    "models" / "smollm2-135m.gguf"
DECODE_STEP_MS = 40.0  # smollm2-135m on this 2-core CPU (benchmarks/results/bench_engine.json)


@dataclass
class Row:
    library: str
    setup_s: float
    compile_s: dict[str, float] = field(default_factory=dict)  # format name → seconds
    mask_s: list[float] = field(default_factory=list)  # per token
    accept_s: list[float] = field(default_factory=list)
    ok: int = 0
    total: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # format name → why
    import_s: float = 0.0
    size_mb: float = 0.0
    installs: list[str] = field(default_factory=list)


class Backend:
    """One library behind four calls: compile, and per matcher mask_/accept/done."""

    name: str
    compile: Callable[[Any], Any]  # format → something with .matcher()


class Ollamapy(Backend):
    name = "llguidance"

    def __init__(self, vocab: list[bytes], eos: set[int], vocab_size: int) -> None:
        from ollamapy.engine.grammar import Grammars

        self.grammars = Grammars(vocab, eos, vocab_size, cache_size=0)  # no cache: cold compiles

    def compile(self, format: Any) -> Any:
        return self.grammars.compile(format)


class XGrammar(Backend):
    name = "xgrammar"

    def __init__(self, vocab: list[bytes], eos: set[int], vocab_size: int) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        info = xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=vocab_size,
                                 stop_token_ids=sorted(eos))
        self.compiler = xgr.GrammarCompiler(info, max_threads=2, cache_enabled=False)
        self.vocab_size = vocab_size

    def compile(self, format: Any) -> Any:
        json_mode = format == "json"
        compiled = self.compiler.compile_json_schema(
            {"type": "object"} if json_mode else format, any_whitespace=True,
            max_whitespace_cnt=20, strict_mode=not json_mode)
        return _XCompiled(self.xgr, compiled, self.vocab_size)


class _XCompiled:
    def __init__(self, xgr: Any, compiled: Any, vocab_size: int) -> None:
        self.xgr, self.compiled, self.vocab_size = xgr, compiled, vocab_size

    def matcher(self) -> Any:
        return _XMatcher(self.xgr, self.xgr.GrammarMatcher(self.compiled), self.vocab_size)


class _XMatcher:
    def __init__(self, xgr: Any, inner: Any, vocab_size: int) -> None:
        self.xgr, self.inner = xgr, inner
        self.bits = xgr.allocate_token_bitmask(1, vocab_size)

    def mask_(self, logits: torch.Tensor) -> None:
        self.inner.fill_next_token_bitmask(self.bits)
        self.xgr.apply_token_bitmask_inplace(logits.unsqueeze(0), self.bits)

    def accept(self, token: int) -> None:
        if not self.inner.accept_token(token):
            raise RuntimeError(f"token {token} rejected")

    @property
    def done(self) -> bool:
        return self.inner.is_terminated()


def decode(matcher: Any, eos: set[int], closers: torch.Tensor, seed: int,
           mask_s: list[float], accept_s: list[float]) -> list[int] | None:
    """tests/engine/test_grammar.py's random model; None when it did not finish."""
    gen = torch.Generator().manual_seed(seed)
    out: list[int] = []
    for step in range(MAX_STEPS):
        logits = torch.randn(closers.shape[0], generator=gen) + closers * min(step / 50, 4)
        t0 = time.perf_counter()
        matcher.mask_(logits)
        t1 = time.perf_counter()
        token = int(logits.argmax())
        mask_s.append(t1 - t0)
        if token in eos:
            return out
        t2 = time.perf_counter()
        matcher.accept(token)
        accept_s.append(time.perf_counter() - t2)
        out.append(token)
        if matcher.done:
            return out
    return None


def footprint(dist: str, seen: set[str] | None = None) -> tuple[float, list[str]]:
    """MB on disk of `dist` and the requirements it installs that our project doesn't
    already need (torch, numpy, pydantic, transformers... are counted once, elsewhere)."""
    shared = {"torch", "numpy", "pydantic", "transformers", "typing-extensions"}
    seen = seen if seen is not None else set()
    seen.add(dist)
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        return 0.0, [f"{dist} (not installed)"]
    size = sum((f.size or 0) for f in d.files or []) / 1e6
    names = [f"{dist} {size:.0f} MB"]
    for req in d.requires or []:
        if "extra ==" in req:
            continue
        name = req.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0]
        name = name.split("!")[0].split("~")[0].strip().lower()
        if name in shared or name in seen:
            continue
        if ";" in req and "platform_system" in req and sys.platform != "linux":
            continue
        sub, sub_names = footprint(name, seen)
        size += sub
        names += sub_names
    return size, names


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def ms(seconds: list[float], q: float | None = None) -> str:
    if not seconds:
        return "-"
    if q is None:
        return f"{1e3 * statistics.fmean(seconds):.3f}"
    return f"{1e3 * sorted(seconds)[min(len(seconds) - 1, int(q * len(seconds)))]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    from ollamapy.loading.gguf import read_gguf
    from ollamapy.text.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf_metadata(read_gguf(args.model).metadata)
    vocab = [b"" if tok.is_control(i) else tok.token_bytes(i) for i in range(tok.vocab_size)]
    eos = set(tok.eos_ids)
    closers = torch.tensor([any(c in v for c in b'"}]') for v in vocab], dtype=torch.float32)
    closers[sorted(eos)] = 1.0
    checker = jsonschema.FormatChecker()
    formats: dict[str, Any] = {"json": "json", **SCHEMAS}

    rows: list[Row] = []
    for cls, module, dist in ((Ollamapy, "llguidance", "llguidance"),
                              (XGrammar, "xgrammar", "xgrammar")):
        try:
            __import__(module)
        except ImportError:
            print(f"{module}: not installed, skipped")
            continue
        t0 = time.perf_counter()
        backend = cls(vocab, eos, tok.vocab_size)
        row = Row(backend.name, time.perf_counter() - t0)
        for name, fmt in formats.items():
            try:
                t0 = time.perf_counter()
                compiled = backend.compile(fmt)
                compiled.matcher().mask_(torch.zeros(tok.vocab_size))  # ready for a first mask
                row.compile_s[name] = time.perf_counter() - t0
            except Exception as e:  # noqa: BLE001 - a schema the library refuses is a result
                row.failed[name] = f"compile: {str(e).splitlines()[0][:80]}"
                row.total += args.seeds
                continue
            for seed in range(args.seeds):
                row.total += 1
                try:
                    ids = decode(compiled.matcher(), eos, closers, seed, row.mask_s,
                                 row.accept_s)
                    if ids is None:
                        row.failed[name] = "did not finish"
                        continue
                    value = json.loads(tok.decode(ids))
                    if fmt == "json":
                        assert isinstance(value, dict), "not an object"
                    else:
                        jsonschema.validate(value, fmt, format_checker=checker)
                    row.ok += 1
                except Exception as e:  # noqa: BLE001
                    row.failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
        row.size_mb, row.installs = footprint(dist)
        row.import_s = import_seconds(module)
        rows.append(row)

    nested = ("nested_object", "defs_ref", "pydantic_style", "deep_nesting")
    print(f"\nsmollm2 vocabulary: {tok.vocab_size} tokens; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.seeds} seeds x {len(formats)} formats\n")
    head = (f"{'library':12s} {'setup s':>8s} {'json ms':>8s} {'nested ms':>10s} "
            f"{'max ms':>7s} {'mask ms':>8s} {'p99':>7s} {'accept':>7s} {'% step':>7s} "
            f"{'valid':>7s} {'import s':>8s} {'MB':>6s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        nested_ms = [1e3 * r.compile_s[n] for n in nested if n in r.compile_s]
        per_token = statistics.fmean(r.mask_s) + statistics.fmean(r.accept_s) if r.mask_s else 0
        print(f"{r.library:12s} {r.setup_s:8.2f} {1e3 * r.compile_s.get('json', 0):8.1f} "
              f"{statistics.fmean(nested_ms) if nested_ms else 0:10.1f} "
              f"{1e3 * max(r.compile_s.values(), default=0):7.1f} {ms(r.mask_s):>8s} "
              f"{ms(r.mask_s, 0.99):>7s} {ms(r.accept_s):>7s} "
              f"{100 * 1e3 * per_token / DECODE_STEP_MS:6.2f}% {r.ok:3d}/{r.total:<3d} "
              f"{r.import_s:8.2f} {r.size_mb:6.0f}")
    print("\nsetup: vocabulary -> tokenizer object; json/nested/max: cold compile to a first "
          "mask; mask: compute + apply per token (mean, p99); accept: per token; % step: "
          f"(mask + accept) / {DECODE_STEP_MS:.0f} ms decode step")
    for r in rows:
        print(f"\n{r.library}: installs {', '.join(r.installs)}")
        for schema, why in sorted(r.failed.items()):
            print(f"  {schema}: {why}")


if __name__ == "__main__":
    main()
