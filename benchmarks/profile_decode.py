"""Where a fast decode step's time goes: the compiled step's operators, and what surrounds it.

    .venv/bin/python benchmarks/profile_decode.py [--model smollm2|gemma3|llama-1b|PATH]
        [--threads 2] [--context 512] [--steps 64] [--top 15] [--kv-cache-type f16]

Loads the file as a notebook does (`ollamapy.load(path, fast=True)`), fills the KV cache with
`--context` positions, then times `--steps` decode steps three ways: the whole step as
generation runs it (compiled step, then sampling and stop checks in `Seq.advance`), the
compiled step alone, and each operator inside it (torch.profiler, self CPU time per step).
Beside each linear operator: the bytes it reads per step and the rate that makes. Prints
tables; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_engine import prompt_ids  # noqa: E402
from bench_vs_anchors import FILES, Silent, decode_bytes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--kv-cache-type", default="f16", help="OLLAMA_KV_CACHE_TYPE: f16, f32")
    args = parser.parse_args()

    import torch

    import ollamapy
    from ollamapy.engine.generate import generate
    from ollamapy.engine.kv_cache import KVCache
    from ollamapy.engine.options import Options
    from ollamapy.engine.step import prefill

    torch.set_num_threads(args.threads)
    path = FILES[args.model]() if args.model in FILES else Path(args.model)
    t0 = time.perf_counter()
    m = ollamapy.load(path, device="cpu", fast=True, kv_cache_type=args.kv_cache_type)
    print(f"{path.name}: loaded and compiled in {time.perf_counter() - t0:.1f} s")
    opts = Options(temperature=0.0, num_predict=args.steps + 1)
    num_ctx = opts.num_ctx
    step = m.compiled_decode(num_ctx)
    assert step is not None
    ids = prompt_ids(m.decoder.config.vocab_size, args.context)

    with torch.no_grad():  # not inference_mode: the compiled step takes no inference tensors
        # 1. as generation runs it: prefill, then steps + sampling + stop checks
        *_, done = generate(m.decoder, ids, opts, eos_ids=frozenset(), detokenizer=Silent(),
                            decode=step)
        whole_ms = done.eval_duration / 1e6 / (done.eval_count - 1)

        # 2. the compiled step alone, over the same span of positions
        cache = KVCache(m.decoder.config, num_ctx, dtype=m.decoder.kv_dtype)
        prefill(m.decoder, ids, cache, 0, 512)
        token = torch.tensor([[ids[-1]]])

        def run(i: int) -> torch.Tensor:
            pos = args.context + i
            return step(token, torch.tensor([pos]), torch.arange(pos + 1), cache)

        for i in range(4):
            run(i)
        t0 = time.perf_counter()
        for i in range(args.steps):
            run(i)
        step_ms = (time.perf_counter() - t0) * 1e3 / args.steps

        # 3. its operators
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(args.steps):
                run(i)
    ops: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in prof.key_averages():
        ops[e.key][0] += e.self_cpu_time_total / 1e3 / args.steps
        ops[e.key][1] += e.count / args.steps
    weights = decode_bytes(m)
    print(f"context {args.context}, {args.threads} threads, {args.steps} steps")
    print(f"  whole step as generation runs it: {whole_ms:6.2f} ms ({1e3 / whole_ms:.1f} tok/s)")
    print(f"  compiled step alone:              {step_ms:6.2f} ms "
          f"(weights {weights / 1e6:.0f} MB: {weights / step_ms / 1e6:.1f} GB/s)")
    print(f"  sampling, stops, Python around:   {whole_ms - step_ms:6.2f} ms")
    print(f"\n{'operator (self CPU time)':60} {'ms/step':>8} {'calls/step':>10}")
    total = sum(t for t, _ in ops.values())
    for name, (t, n) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{name[:60]:60} {t:8.3f} {n:10.1f}")
    print(f"{'(all operators)':60} {total:8.3f}")


if __name__ == "__main__":
    main()
