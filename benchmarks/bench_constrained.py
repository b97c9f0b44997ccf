"""Structured outputs' cost: time per generated token with and without a JSON schema.

    .venv/bin/python benchmarks/bench_constrained.py [--threads 2] [--repeats 3]

smollm2 decodes through the server's path (a `Batch` of one slot, `Seq` with the grammar's
matcher as its constraint), alternating constrained and free runs of the same prompts and
seeds; a free run generates as many tokens as its constrained twin did, so both time the
same number of steps. Reports the mean time per token (ms) of each, their ratio, and the
grammar's own share (mask + accept). Target: overhead <= 10%. Writes
benchmarks/results/bench_constrained.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
MODEL = Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy")) / \
    "models" / "smollm2-135m.gguf"
SCHEMAS = {
    "person": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"},
        "email": {"type": "string", "maxLength": 40}}, "required": ["name", "age", "email"]},
    "order": {"type": "object", "properties": {
        "items": {"type": "array", "items": {"type": "object", "properties": {
            "sku": {"type": "string", "maxLength": 10}, "qty": {"type": "integer"}},
            "required": ["sku", "qty"]}, "minItems": 1, "maxItems": 3},
        "paid": {"type": "boolean"}}, "required": ["items", "paid"]},
    "json": "json",
}


class Silent:
    def push(self, token_id: int) -> str:
        return ""

    def flush(self) -> str:
        return ""


class Timed:
    """A matcher wrapper that adds up the time spent in the grammar."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds = inner, 0.0

    def mask_(self, logits: torch.Tensor) -> None:
        t = time.perf_counter()
        self.inner.mask_(logits)
        self.seconds += time.perf_counter() - t

    def accept(self, token: int) -> None:
        t = time.perf_counter()
        self.inner.accept(token)
        self.seconds += time.perf_counter() - t

    @property
    def done(self) -> bool:
        return self.inner.done


def run(m, batch, ids, opts, constraint=None):
    from ollamapy.engine.seq import Seq

    seq = Seq(ids, opts, num_ctx=batch.num_ctx, eos_ids=m.tokenizer.eos_ids,
              detokenizer=Silent(), constraint=constraint)
    batch.add(seq)
    while batch.active:
        batch.step()
    done = seq.result()
    return done.eval_count, done.eval_duration / max(done.eval_count - 1, 1) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="seeds per schema")
    parser.add_argument("--out", default=str(HERE / "results" / "bench_constrained.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import ollamapy
    from ollamapy.engine.batch import Batch
    from ollamapy.engine.grammar import Grammars
    from ollamapy.engine.options import Options

    m = ollamapy.load(MODEL, device="cpu")
    tok = m.tokenizer
    grammars = Grammars([b"" if tok.is_control(i) else tok.token_bytes(i)
                         for i in range(tok.vocab_size)], tok.eos_ids,
                        m.model.config.vocab_size)
    batch = Batch(m.model, slots=1, num_ctx=1024)
    rows = []
    for name, fmt in SCHEMAS.items():
        compiled = grammars.compile(fmt)
        prompt = m.prompt_ids(m.render([{"role": "user", "content":
                                         f"Give me an example {name} as JSON."}]))
        for seed in range(args.repeats):
            opts = Options(temperature=0.8, seed=seed, num_predict=400, num_ctx=1024)
            timed = Timed(compiled.matcher())
            n, constrained_ms = run(m, batch, prompt, opts, timed)
            _, free_ms = run(m, batch, prompt, opts.replace(num_predict=n))
            rows.append({"schema": name, "seed": seed, "tokens": n,
                         "constrained_ms_per_token": constrained_ms,
                         "free_ms_per_token": free_ms,
                         "grammar_ms_per_token": 1e3 * timed.seconds / max(n, 1)})
    constrained = statistics.mean(r["constrained_ms_per_token"] for r in rows)
    free = statistics.mean(r["free_ms_per_token"] for r in rows)
    grammar = statistics.mean(r["grammar_ms_per_token"] for r in rows)
    print(f"{'schema':8} {'seed':>4} {'tokens':>6} {'free ms':>8} {'schema ms':>9} "
          f"{'grammar ms':>10}")
    for r in rows:
        print(f"{r['schema']:8} {r['seed']:>4} {r['tokens']:>6} {r['free_ms_per_token']:>8.2f} "
              f"{r['constrained_ms_per_token']:>9.2f} {r['grammar_ms_per_token']:>10.3f}")
    overhead = constrained / free - 1
    print(f"mean ms/token: free {free:.2f}, with schema {constrained:.2f} "
          f"(overhead {100 * overhead:+.1f}%, target <= +10%); grammar itself {grammar:.3f} ms "
          f"({100 * grammar / free:.1f}% of a free step)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "rows": rows, "free_ms": free,
                               "constrained_ms": constrained, "grammar_ms": grammar,
                               "overhead": overhead}, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.bar(["free", "with schema", "grammar alone"], [free, constrained, grammar],
           color=["#4c72b0", "#dd8452", "#55a868"])
    ax.set_ylabel("ms per generated token")
    ax.set_title(f"smollm2, {args.threads} threads: schema overhead {100 * overhead:+.1f}%")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
