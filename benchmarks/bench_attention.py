"""Measure decode attention (one query per row over the KV cache): the kernel of
kernels/attention.py against torch's fused attention, µs per call and the cache's read rate.

    .venv/bin/python benchmarks/bench_attention.py [--threads 2]

Head layouts of the three benchmark files (smollm2: 9 query heads over 3 kv heads of 64;
gemma3 270m: 4 over 1 of 256; Llama 3.2 1B: 32 over 8 of 64), cached spans of 512 to 8192
positions, the cache in float32 (the fast path's default on CPU) and float16. Calls rotate over
enough layers' caches to overflow the 32 MiB L3, so each reads its keys and values from DRAM,
as a decode step does. torch's attention gets float32 keys (it takes one dtype for q, k, v);
for a float16 cache its time includes the conversion, as the engine would pay it. Prints a
table; writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ollamapy_kernels import native
from ollamapy_kernels.attention import SpanAttention

HEADS = {"smollm2": (9, 3, 64), "gemma3": (4, 1, 256), "llama-1b": (32, 8, 64)}
_L3_BYTES = 32 << 20


def _time(fn, copies: int, rounds: int = 5, calls: int = 200) -> float:
    """Median over rounds of the mean µs per call, rotating over `copies` inputs."""
    for i in range(copies):
        fn(i)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(calls):
            fn(i % copies)
        times.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not native.load():
        raise SystemExit("the kernel needs an x86-64 CPU with AVX-512 VNNI and a C++ compiler")
    torch.set_num_threads(args.threads)
    kernel = SpanAttention()
    print(f"{args.threads} threads; µs per call, cache read from DRAM")
    print(f"{'model':9} {'span':>5} {'cache':8} {'torch':>8} {'kernel':>8} {'speedup':>7} "
          f"{'GB/s':>6}")
    for model, (h, h_kv, d) in HEADS.items():
        for span in (512, 2048, 8192):
            for dtype in (torch.float32, torch.float16):
                one = 2 * h_kv * span * d * dtype.itemsize  # k and v of one layer
                copies = max(2, 2 * _L3_BYTES // one + 1)
                q = torch.randn(1, 1, h * d).view(1, 1, h, d).transpose(1, 2)
                kv = [(torch.randn(1, h_kv, span, d).to(dtype),
                       torch.randn(1, h_kv, span, d).to(dtype)) for _ in range(copies)]
                mask = torch.ones(1, 1, 1, span, dtype=torch.bool)

                def fused(i: int, q=q, kv=kv, mask=mask, scale=d**-0.5, gqa=h != h_kv
                          ) -> torch.Tensor:
                    k, v = kv[i]
                    return F.scaled_dot_product_attention(
                        q, k.float(), v.float(), attn_mask=mask, scale=scale, enable_gqa=gqa)

                def ours(i: int, q=q, kv=kv, mask=mask, scale=d**-0.5) -> torch.Tensor:
                    return kernel(q, *kv[i], mask, scale)

                t_torch, t_ours = _time(fused, copies), _time(ours, copies)
                print(f"{model:9} {span:5} {str(dtype)[6:]:8} {t_torch:8.1f} {t_ours:8.1f} "
                      f"{t_torch / t_ours:6.2f}x {one / t_ours / 1e3:6.1f}")


if __name__ == "__main__":
    main()
