"""The decode fast path, applied from outside the model: a compiled batched decode step.

The reference `Transformer.forward` stays the readable definition; this module only wraps
the batch's decode step (`Batch.decode`) in `torch.compile`:

- fullgraph, static shapes but one: the span of cached positions attended over
  (`key_positions`, marked dynamic), so a sequence that grows never recompiles; positions
  are tensors, so nothing in the step syncs with the host;
- the batch is padded to a bucket (1, 2, 4, … up to the slot count), so joins and leaves
  reuse a few graphs, all compiled when the model loads;
- inductor's Python wrapper (its C++ wrapper, faster for plain bf16/int4 graphs per
  perf-anchors.md §6.1, calls our quantized kernels back through Python and was slower here:
  kernels/README.md), and a persistent cache directory (`OLLAMAPY_COMPILE_CACHE`, default
  ~/.cache/ollamapy/inductor) so a restart loads the compiled step in seconds instead of
  compiling it again (minutes on a small CPU).

The server compiles when `OLLAMAPY_COMPILE` is not 0 (settings.py); with 0 it runs the same
step eagerly, and `OLLAMAPY_FAST=0` goes back to the float reference model entirely.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ollamapy.engine.kv_cache import KVCache

log = logging.getLogger(__name__)


def configure_inductor(device: torch.device) -> None:
    """Where compiled artifacts live and how CPU code is wrapped; before the first compile."""
    cache = os.environ.get("OLLAMAPY_COMPILE_CACHE") or str(
        Path(os.environ.get("OLLAMAPY_CACHE", Path.home() / ".cache" / "ollamapy")) / "inductor")
    # set, not defaulted: torch writes its own default (/tmp/torchinductor_$USER) into this
    # variable the first time it asks, which loading a model may already have done
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = True
    # not the C++ wrapper: with it the int4/int8 kernels (aten ops without a C shim) are
    # called back through Python, which made a decode step slower (kernels/README.md)
    inductor.cpp_wrapper = False


class CompiledDecode:
    """A drop-in for `Batch.decode`: (tokens (B, 1), positions (B,), key_positions (S,),
    cache) → logits (B, vocab), compiled once per batch bucket."""

    def __init__(self, decode, slots: int, device: torch.device) -> None:
        configure_inductor(device)
        # powers of two up to the slot count: two sequences do not pay for eight rows
        self.buckets = sorted({min(2**i, slots) for i in range(slots.bit_length() + 1)})
        self.compiled = torch.compile(decode, fullgraph=True, dynamic=False)

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor,
                 key_positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        B = tokens.shape[0]
        bucket = next(b for b in self.buckets if b >= B)
        if bucket != B:  # padding rows decode token 0 at position 0 of slots nobody uses
            pad = bucket - B
            tokens = torch.cat([tokens, tokens.new_zeros(pad, 1)])
            positions = torch.cat([positions, positions.new_zeros(pad)])
        torch._dynamo.mark_dynamic(key_positions, 0)
        return self.compiled(tokens, positions, key_positions, cache)[:B]

    def warm_up(self, cache: KVCache) -> None:
        """Compile every bucket now (from the cache directory when it has them), with dummy
        rows at the start of the cache, which real sequences overwrite when they come."""
        device = cache.k[0].device
        for bucket in self.buckets:
            tokens = torch.zeros(bucket, 1, dtype=torch.long, device=device)
            positions = torch.zeros(bucket, dtype=torch.long, device=device)
            self(tokens, positions, torch.arange(2, device=device), cache)
